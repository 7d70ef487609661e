"""The interface between a phase-aware policy and whatever dispatches work to a chip.

A policy is a plain Python object driven by a clock and by events.  The dispatcher -- the live daemon
(one policy object per physical device) or the simulator (one per serving instance) -- calls

* :meth:`Policy.on_request_arrived` / :meth:`Policy.on_request_finished` when it learns of requests
  (a client may declare them; the daemon may never know, and policies cope);
* :meth:`Policy.on_op_arrived` for each unit of work a client submits (an :class:`OpRecord`: one operator
  in the daemon, an aggregate of operators in the simulator) and :meth:`Policy.on_op_completed` when it
  finishes;
* :meth:`Policy.decide` per batch of records drained or per interval, and whenever the policy asked to be
  woken (:attr:`Decision.wake_at`).  It gets a :class:`ChipView` -- what is pending, what runs, current
  core limits, a cost predictor -- and returns a :class:`Decision`: which pending records to release now,
  in order, and which per-stream core limits to apply (``aclrtSetStreamResLimit`` on the chip).

Records of one stream complete in order (stream semantics); the dispatcher keeps that order, so a
policy releases per stream in arrival order and chooses only *when* and *how much of the chip*.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Protocol


class Phase(str, Enum):
    PREFILL = "prefill"
    DECODE = "decode"
    MIXED = "mixed"  # one launch carrying both (a chunked-prefill hybrid batch)
    UNKNOWN = "unknown"


@dataclass
class OpRecord:
    """A unit of device work as a policy sees it.

    ``est_s`` is its estimated time alone on the whole chip and ``demand`` the fractions of (AI cores,
    HBM bandwidth, link) it keeps busy meanwhile -- from the timing model, or from measurement on a real
    chip.  ``tokens``: prefill tokens it processes, or decode requests it advances.  ``units``: how many
    dispatchable pieces (operators) it consists of -- 1 for a single operator in the daemon.
    ``payload`` is the dispatcher's own handle (ring record, simulator batch); policies never touch it.
    """

    seq: int
    client: int
    stream: int
    phase: Phase
    est_s: float
    demand: tuple[float, float, float] = (1.0, 0.0, 0.0)
    tokens: int = 0
    units: int = 1
    name: str = ""
    arrived_s: float = 0.0
    payload: Any = None


@dataclass
class RequestInfo:
    req_id: int
    client: int = 0
    prompt_tokens: int = 0
    output_tokens: int | None = None  # unknown to a live system until the request finishes
    arrived_s: float = 0.0


@dataclass
class Decision:
    """What to do now.  ``release``: pending records to dispatch, in order.  ``core_limits``: stream ->
    share of AI cores (None lifts the limit); streams not named keep theirs.  ``pause`` / ``resume``:
    running streams to stop at their next dispatch boundary / let go on (time-slicing).  ``wake_at``:
    call :meth:`Policy.decide` again at this time even if nothing happens."""

    release: list[OpRecord] = field(default_factory=list)
    core_limits: dict[int, float | None] = field(default_factory=dict)
    pause: list[int] = field(default_factory=list)
    resume: list[int] = field(default_factory=list)
    wake_at: float | None = None


class ChipView(Protocol):
    """What a dispatcher shows a policy about one chip."""

    n_cores: int

    def pending(self) -> Sequence[OpRecord]:
        """Records that arrived and were not released yet, in arrival order."""

    def running(self) -> Sequence[OpRecord]:
        """Records released and not completed (paused ones included)."""

    def paused(self, stream: int) -> bool: ...

    def core_limit(self, stream: int) -> float | None: ...

    def predict(self, ops: Sequence[tuple[OpRecord, float | None]]) -> list[float]:
        """Durations of ``ops`` if they ran together throughout, each on its stream's core share."""


@dataclass(frozen=True)
class EngineRule:
    """How a co-operating serving engine batches for this policy.  The simulator's engines follow it;
    the daemon cannot impose it and only passes it to clients as advice.

    ``batching``: ``prefill-first`` (whole prompts, prefill preferred, one stream), ``hybrid`` (every
    step carries all decodes plus prefill chunks up to ``token_budget`` tokens, decode tokens counted,
    one stream), or ``split`` (a prefill client and a decode client on two streams of the chip).
    ``disaggregated``: instances are split once into prefill and decode pools.  Token counts are per
    chip: an instance of several chips (data-parallel attention) runs one such engine per chip.
    """

    batching: str
    token_budget: int | None = None
    max_prefill_tokens: int = 8192
    disaggregated: bool = False


class Policy:
    """Base class: release everything in arrival order, no core limits (what passthrough gives)."""

    name = "base"
    engine = EngineRule("prefill-first")
    # How finely the dispatcher may interleave or re-limit work: "op", "layer" or "step".
    granularity = "op"

    def __init__(self, *, ttft_slo_s: float = 1.0, tpot_slo_s: float = 0.05,
                 max_prefill_tokens: int | None = None):
        self.ttft_slo_s = ttft_slo_s
        self.tpot_slo_s = tpot_slo_s
        if max_prefill_tokens is not None:  # an engine option, kept on the instance's rule
            self.engine = replace(self.engine, max_prefill_tokens=max_prefill_tokens)

    def on_request_arrived(self, now: float, req: RequestInfo) -> None:
        pass

    def on_request_finished(self, now: float, req: RequestInfo) -> None:
        pass

    def on_op_arrived(self, now: float, op: OpRecord) -> None:
        pass

    def on_op_completed(self, now: float, op: OpRecord) -> None:
        pass

    def decide(self, now: float, view: ChipView) -> Decision:
        return Decision(release=list(view.pending()))

    def describe(self) -> str:
        """One line for reports: the rule and its parameters."""
        return self.name
