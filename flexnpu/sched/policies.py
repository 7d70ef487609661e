"""The four policies: ``fifo``, ``static-coloc``, ``static-disagg``, ``dynamic``.

All of them serve the same request stream on the same chips; they differ in how the serving engine
batches (:class:`~flexnpu.sched.base.EngineRule`) and in what the dispatcher releases when
(:meth:`decide`).
"""

from __future__ import annotations

from dataclasses import replace

from flexnpu.sched.base import ChipView, Decision, EngineRule, OpRecord, Phase, Policy, RequestInfo

# Sarathi-Serve's stall-free batching token budget for strict TBT SLOs, and MindIE SplitFuse's
# ``splitChunkTokens`` default (anchors §1 [S5], [S24]).  Counts decode tokens too, as Sarathi-Serve's
# budget and vLLM's ``max_num_batched_tokens`` do.
SARATHI_TOKEN_BUDGET = 512

# Largest prefill batch (tokens) an engine that runs whole prompts forms at once; prompts longer than
# this still run alone.  vLLM's ``max_num_batched_tokens`` for non-chunked engines must cover the
# model length; 8192 is a common setting and our assumption.
MAX_PREFILL_TOKENS = 8192


class Fifo(Policy):
    """Passthrough: the engine prefers prefill and runs whole prompts (no chunking, vLLM's pre-chunking
    default); the device runs records in arrival order with no limits."""

    name = "fifo"
    engine = EngineRule("prefill-first", max_prefill_tokens=MAX_PREFILL_TOKENS)


class StaticColoc(Policy):
    """Static co-location, the strongest fixed rule we know: Sarathi-Serve stall-free batching (also
    vLLM V1's chunked-prefill scheduler and MindIE SplitFuse).  Every step carries all running decodes
    first, then prefill chunks until ``token_budget`` tokens (decodes counted).

    When prefill and decode come as separate clients (the daemon), the same rule is applied to records:
    decode records first; prefill records only while the prefill tokens released since the last decode
    record completed stay within the budget left after the decodes.
    """

    name = "static-coloc"
    engine = EngineRule("hybrid", token_budget=SARATHI_TOKEN_BUDGET)

    def __init__(self, *, token_budget: int = SARATHI_TOKEN_BUDGET, **kw):
        super().__init__(**kw)
        if token_budget < 1:
            raise ValueError("token_budget must be positive")
        self.token_budget = token_budget
        self.engine = replace(self.engine, batching="hybrid", token_budget=token_budget)
        self._prefill_since_decode = 0
        self._decode_tokens = 0

    def on_op_completed(self, now: float, op: OpRecord) -> None:
        if op.phase in (Phase.DECODE, Phase.MIXED):
            self._prefill_since_decode = 0
            self._decode_tokens = op.tokens if op.phase is Phase.DECODE else 0

    def decide(self, now: float, view: ChipView) -> Decision:
        pending = list(view.pending())
        first = [op for op in pending if op.phase is not Phase.PREFILL]
        release = list(first)
        decode_busy = bool(first) or any(op.phase is Phase.DECODE for op in view.running())
        room = self.token_budget - self._decode_tokens
        for op in pending:
            if op.phase is not Phase.PREFILL:
                continue
            if decode_busy and self._prefill_since_decode + op.tokens > room and self._prefill_since_decode:
                break  # quota for this decode step used up; keep stream order by stopping here
            self._prefill_since_decode += op.tokens
            release.append(op)
        return Decision(release=release)

    def describe(self) -> str:
        return f"static-coloc (Sarathi-Serve stall-free batching, token budget {self.token_budget})"


class StaticDisagg(Policy):
    """Static disaggregation: instances split once into a prefill pool and a decode pool, sized for the
    workload's mean mix (DistServe-style; :func:`size_pools` and ``flexnpu.sim.sizing``); KV moves
    between pools over the link.  On each chip there is only one phase, so records go in order."""

    name = "static-disagg"
    engine = EngineRule("split", max_prefill_tokens=MAX_PREFILL_TOKENS, disaggregated=True)

    def __init__(self, *, pd_ratio: tuple[int, int] | None = None, **kw):
        super().__init__(**kw)
        self.pd_ratio = pd_ratio

    def describe(self) -> str:
        ratio = f"{self.pd_ratio[0]}P:{self.pd_ratio[1]}D" if self.pd_ratio else "sized for the mean mix"
        return f"static-disagg ({ratio})"


def size_pools(n_instances: int, prefill_s_per_req: float, decode_s_per_req: float) -> tuple[int, int]:
    """Prefill:decode instance counts that balance the two pools' busy time for the mean request:
    ``n_p / n_d = prefill instance-seconds / decode instance-seconds`` per request (each side at its
    efficient batch), rounded, at least one instance each."""
    if n_instances < 2:
        raise ValueError("static-disagg needs at least two instances")
    share = prefill_s_per_req / (prefill_s_per_req + decode_s_per_req)
    n_p = min(max(1, round(n_instances * share)), n_instances - 1)
    return n_p, n_instances - n_p


class Dynamic(Policy):
    """Dynamic phase-aware co-location.

    A prefill client and a decode client share each chip.  Every decode step is protected by its TPOT
    target; prefill fills the slack; the share adapts to queue lengths:

    * ``split="cores"``: both run at once.  The decode stream is never limited; the prefill stream is held
      to a share of the AI cores (a per-stream core limit) only when the chip's own arbitration would
      slow the decode step past its target.  The target moves with prefill pressure (waiting prefill
      work over half the TTFT SLO): from ``(1 + knee_slowdown)`` x the decode step's time alone when no
      prefill waits -- the nearly free overlap, since decode is memory-bound -- up to ``margin *
      tpot_slo`` under full pressure.  The share is the largest that keeps the predicted decode step
      within the target.
    * ``split="time"``: one phase at a time; after each decode step, prefill runs for ``pressure *
      (margin * tpot_slo - decode step)``, then is paused at its next dispatch boundary.

    ``controller``: ``slo`` (the above), ``fixed`` (prefill held to ``fixed_share`` of the cores
    whenever both run), or ``none`` (never limited: the chip's own arbitration).  ``granularity``: how
    quickly the dispatcher applies a limit change or a pause to work already running (``op``, ``layer``
    or ``step`` boundaries).
    """

    name = "dynamic"
    engine = EngineRule("split", max_prefill_tokens=MAX_PREFILL_TOKENS)

    def __init__(self, *, split: str = "cores", controller: str = "slo", granularity: str = "op",
                 margin: float = 0.9, knee_slowdown: float = 0.10, fixed_share: float = 0.5, **kw):
        super().__init__(**kw)
        if split not in ("cores", "time"):
            raise ValueError(f"split must be 'cores' or 'time', not {split!r}")
        if controller not in ("slo", "fixed", "none"):
            raise ValueError(f"controller must be 'slo', 'fixed' or 'none', not {controller!r}")
        if granularity not in ("op", "layer", "step"):
            raise ValueError(f"granularity must be 'op', 'layer' or 'step', not {granularity!r}")
        self.split = split
        self.controller = controller
        self.granularity = granularity
        self.margin = margin
        self.knee_slowdown = knee_slowdown
        self.fixed_share = fixed_share
        self.exclusive = split == "time"  # the dispatcher runs one stream at a time
        self._backlog_tokens = 0  # prefill tokens waiting or running
        self._s_per_token = 0.0  # learned from prefill records: estimated seconds per prefill token
        self._last_decode_s = 0.0
        self._hold_until = -1.0  # time-split: prefill's turn lasts until then

    # -- events --------------------------------------------------------------------------------------

    def on_request_arrived(self, now: float, req: RequestInfo) -> None:
        self._backlog_tokens += req.prompt_tokens

    def on_op_arrived(self, now: float, op: OpRecord) -> None:
        if op.phase is Phase.PREFILL and op.tokens > 0:
            rate = op.est_s / op.tokens
            self._s_per_token = rate if self._s_per_token == 0.0 else 0.8 * self._s_per_token + 0.2 * rate

    def on_op_completed(self, now: float, op: OpRecord) -> None:
        if op.phase is Phase.PREFILL:
            self._backlog_tokens = max(0, self._backlog_tokens - op.tokens)
        elif op.phase is Phase.DECODE:
            self._last_decode_s = op.est_s
            if self.split == "time":
                slack = self.margin * self.tpot_slo_s - op.est_s
                self._hold_until = now + self.pressure() * max(0.0, slack)

    def pressure(self) -> float:
        """0 with no prefill waiting, 1 once waiting prefill work reaches half the TTFT SLO."""
        backlog_s = self._backlog_tokens * self._s_per_token
        return min(1.0, backlog_s / (0.5 * self.ttft_slo_s))

    # -- decisions -----------------------------------------------------------------------------------

    def decide(self, now: float, view: ChipView) -> Decision:
        pending, running = list(view.pending()), list(view.running())
        dec = _first(running, Phase.DECODE) or _first(pending, Phase.DECODE)
        pre = _first(running, Phase.PREFILL) or _first(pending, Phase.PREFILL)
        if self.split == "time":
            return self._decide_time(now, view, pending, running, dec, pre)
        d = Decision(release=pending)
        share = self.prefill_share(view, dec, pre) if dec is not None and pre is not None else None
        if pre is not None and view.core_limit(pre.stream) != share:
            d.core_limits[pre.stream] = share
        return d

    def prefill_share(self, view: ChipView, dec: OpRecord, pre: OpRecord) -> float | None:
        """Share of the AI cores for prefill while a decode step runs beside it (None: no limit)."""
        n = view.n_cores
        if self.controller == "none":
            return None
        if self.controller == "fixed":
            return max(1, min(n - 1, round(self.fixed_share * n))) / n
        alone = view.predict([(dec, None)])[0]
        target = alone * (1.0 + self.knee_slowdown)
        target += self.pressure() * max(0.0, self.margin * self.tpot_slo_s - target)
        if view.predict([(dec, None), (pre, None)])[0] <= target:
            return None
        lo, hi = 1, n - 1  # most prefill cores keeping the decode step within the target; at least one
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if view.predict([(dec, None), (pre, mid / n)])[0] <= target:
                lo = mid
            else:
                hi = mid - 1
        return lo / n

    def _decide_time(self, now: float, view: ChipView, pending: list[OpRecord], running: list[OpRecord],
                     dec: OpRecord | None, pre: OpRecord | None) -> Decision:
        d = Decision()
        pre_running = pre is not None and pre in running
        if dec is not None and dec in pending:
            if pre is not None and now < self._hold_until:  # prefill's turn: hold the decode step
                if pre_running:
                    if view.paused(pre.stream):
                        d.resume.append(pre.stream)
                else:
                    d.release.append(pre)
                d.wake_at = self._hold_until
            else:
                if pre_running and not view.paused(pre.stream):
                    d.pause.append(pre.stream)
                d.release.append(dec)
        elif dec is not None:  # a decode step runs: keep prefill off the chip
            if pre_running and not view.paused(pre.stream):
                d.pause.append(pre.stream)
        elif pre is not None:  # no decode work: prefill has the chip
            if pre_running and view.paused(pre.stream):
                d.resume.append(pre.stream)
            elif not pre_running:
                d.release.append(pre)
        d.release += [op for op in pending if op.phase not in (Phase.PREFILL, Phase.DECODE)]
        return d

    def describe(self) -> str:
        return (f"dynamic (split={self.split}, controller={self.controller}, granularity={self.granularity}, "
                f"TPOT target {self.margin:g} x SLO)")


def _first(ops: list[OpRecord], phase: Phase) -> OpRecord | None:
    for op in ops:
        if op.phase is phase:
            return op
    return None


POLICIES = {p.name: p for p in (Fifo, StaticColoc, StaticDisagg, Dynamic)}
POLICY_NAMES = tuple(POLICIES)


def make_policy(name: str, **kw) -> Policy:
    """A fresh policy object by name; ``kw`` go to its constructor (SLOs, options)."""
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICY_NAMES)}") from None
    return cls(**kw)
