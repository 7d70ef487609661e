"""Roofline timing model of NPU/GPU chips: chip profiles, per-operator cost, and how operators on
different streams share a chip.  Used by the emulated device backend and by the simulator."""

from __future__ import annotations

from flexnpu.timing.chips import CHIPS, ChipProfile, Efficiency, get_chip
from flexnpu.timing.ops import KNOWN_OPS, Op, OpCost, Tensor, attention_cost, causal_pairs, op_cost
from flexnpu.timing.roofline import ZERO_WORK, Work, cost_work, op_time, op_work, ops_work
from flexnpu.timing.sharing import DEFAULT_BW_SATURATION, SharedChip, share_rates

__all__ = [
    "CHIPS", "DEFAULT_BW_SATURATION", "KNOWN_OPS", "ZERO_WORK", "ChipProfile", "Efficiency", "Op", "OpCost",
    "SharedChip", "Tensor", "Work", "attention_cost", "causal_pairs", "cost_work", "get_chip", "op_cost",
    "op_time", "op_work", "ops_work", "share_rates",
]
