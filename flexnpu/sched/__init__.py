"""Phase-aware scheduling policies as pure, clock-driven Python objects, shared by the daemon and the
simulator, and the phase-detection helpers they rely on."""

from __future__ import annotations

from flexnpu.sched.base import ChipView, Decision, EngineRule, OpRecord, Phase, Policy, RequestInfo
from flexnpu.sched.phase import (
    PHASE_ENV,
    PhaseTracker,
    phase_from_cumulative_lengths,
    phase_from_declaration,
    phase_from_env,
    phase_from_op,
    phase_from_query_lengths,
)
from flexnpu.sched.policies import (
    MAX_PREFILL_TOKENS,
    POLICIES,
    POLICY_NAMES,
    SARATHI_TOKEN_BUDGET,
    Dynamic,
    Fifo,
    StaticColoc,
    StaticDisagg,
    make_policy,
    size_pools,
)

__all__ = [
    "MAX_PREFILL_TOKENS", "PHASE_ENV", "POLICIES", "POLICY_NAMES", "SARATHI_TOKEN_BUDGET", "ChipView",
    "Decision", "Dynamic", "EngineRule", "Fifo", "OpRecord", "Phase", "PhaseTracker", "Policy",
    "RequestInfo", "StaticColoc", "StaticDisagg", "make_policy", "phase_from_cumulative_lengths",
    "phase_from_declaration", "phase_from_env", "phase_from_op", "phase_from_query_lengths", "size_pools",
]
