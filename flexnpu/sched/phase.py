"""Which phase a client's work belongs to.

Sources, strongest first (DESIGN.md, "Phase-aware dispatch"):

1. the client's declaration -- a launcher flag or the ``FLEXNPU_PHASE`` environment variable;
2. operator evidence -- ``PromptFlashAttention`` is prefill, ``IncreFlashAttention`` is decode,
   ``FusedInferAttentionScore`` is decode when every request contributes one query token (vllm-ascend
   passes cumulative query lengths, so: every delta of ``actual_seq_lengths`` is 1), prefill when none
   does, mixed otherwise (a chunked-prefill batch);
3. shape evidence -- a query of one token per request.

Operators without evidence (MatMul, RmsNorm, ...) take the phase of the last attention operator their
stream issued (:class:`PhaseTracker`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from flexnpu.sched.base import Phase

PHASE_ENV = "FLEXNPU_PHASE"

_DECLARED = {
    "prefill": Phase.PREFILL, "p": Phase.PREFILL, "prompt": Phase.PREFILL,
    "decode": Phase.DECODE, "d": Phase.DECODE, "generate": Phase.DECODE,
    "mixed": Phase.MIXED, "both": Phase.MIXED, "colocated": Phase.MIXED,
}


def phase_from_declaration(value: str | None) -> Phase | None:
    """A client's declared phase (``prefill``/``decode``/``mixed`` and short forms), or None."""
    if value is None or not value.strip():
        return None
    try:
        return _DECLARED[value.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown phase declaration {value!r}; use prefill, decode or mixed") from None


def phase_from_env(environ: Mapping[str, str] | None = None) -> Phase | None:
    env = os.environ if environ is None else environ
    return phase_from_declaration(env.get(PHASE_ENV))


def phase_from_query_lengths(query_lengths: Sequence[int]) -> Phase:
    """Per-request query token counts: all 1 -> decode, none 1 -> prefill, else mixed."""
    if not query_lengths:
        return Phase.UNKNOWN
    ones = sum(1 for q in query_lengths if q == 1)
    if ones == len(query_lengths):
        return Phase.DECODE
    return Phase.PREFILL if ones == 0 else Phase.MIXED


def phase_from_cumulative_lengths(actual_seq_lengths: Sequence[int]) -> Phase:
    """``FusedInferAttentionScore`` in TND layout: cumulative query lengths -> phase."""
    deltas = [b - a for a, b in zip([0, *actual_seq_lengths[:-1]], actual_seq_lengths)]
    return phase_from_query_lengths(deltas)


def phase_from_op(op_type: str, attrs: Mapping[str, Any] | None = None) -> Phase | None:
    """Phase evidence carried by one operator, or None when it carries none."""
    if op_type == "PromptFlashAttention":
        return Phase.PREFILL
    if op_type == "IncreFlashAttention":
        return Phase.DECODE
    if op_type == "FusedInferAttentionScore":
        lengths = (attrs or {}).get("actual_seq_lengths")
        if lengths:
            return phase_from_cumulative_lengths(list(lengths))
        return Phase.UNKNOWN
    return None


class PhaseTracker:
    """Labels every operator of every (client, stream) with a phase.

    A declaration wins.  Otherwise the last attention operator seen on the stream sets the phase of the
    operators around it (a decoder step issues a handful of operators before the first attention, so the
    first few of a new step inherit the previous step's label; the next attention corrects it).
    """

    def __init__(self) -> None:
        self._declared: dict[int, Phase] = {}
        self._last: dict[tuple[int, int], Phase] = {}

    def declare(self, client: int, phase: Phase | str | None) -> None:
        if phase is None:
            self._declared.pop(client, None)
            return
        self._declared[client] = phase if isinstance(phase, Phase) else phase_from_declaration(phase)

    def observe(self, client: int, stream: int, op_type: str,
                attrs: Mapping[str, Any] | None = None) -> Phase:
        declared = self._declared.get(client)
        if declared is not None and declared is not Phase.MIXED:
            return declared
        evidence = phase_from_op(op_type, attrs)
        key = (client, stream)
        if evidence is not None and evidence is not Phase.UNKNOWN:
            self._last[key] = evidence
            return evidence
        return self._last.get(key, declared or Phase.UNKNOWN)
