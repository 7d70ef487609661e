"""Roofline time of operators and of operator sequences.

``time = max(FLOPs / (peak * eta_c * core_share), bytes / (HBM bw * eta_m), link bytes / (link bw * eta_l))
+ launch``.

A :class:`Work` is the cost of a sequence of operators run back to back on one stream: its time alone
on the whole chip plus how much of that time it keeps the cores, HBM and the link busy.  The sharing
model (:mod:`flexnpu.timing.sharing`) runs Works concurrently from those fractions, so one Work can
stand for a single operator or for a whole engine step (the simulator's granularity).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flexnpu.timing.chips import ChipProfile, Efficiency
from flexnpu.timing.ops import Op, OpCost, op_cost


@dataclass(frozen=True)
class Work:
    """Cost of operators run in sequence on one stream.

    ``alone_s``: time on the whole, otherwise idle chip.  ``compute_s`` / ``mem_s`` / ``link_s``: time the
    sequence would need from each resource alone at full efficiency-adjusted speed (summed per operator,
    so ``max(compute_s, mem_s, link_s) <= alone_s``).  ``latency_s``: the part of ``alone_s`` that uses
    no resource (launch and host overhead).
    """

    alone_s: float
    compute_s: float = 0.0
    mem_s: float = 0.0
    link_s: float = 0.0
    latency_s: float = 0.0
    n_ops: int = 0

    def __add__(self, other: Work) -> Work:
        return Work(self.alone_s + other.alone_s, self.compute_s + other.compute_s,
                    self.mem_s + other.mem_s, self.link_s + other.link_s,
                    self.latency_s + other.latency_s, self.n_ops + other.n_ops)

    def scaled(self, k: float) -> Work:
        """``k`` repetitions (e.g. identical layers)."""
        return Work(self.alone_s * k, self.compute_s * k, self.mem_s * k, self.link_s * k,
                    self.latency_s * k, round(self.n_ops * k))

    def plus_latency(self, seconds: float) -> Work:
        return Work(self.alone_s + seconds, self.compute_s, self.mem_s, self.link_s,
                    self.latency_s + seconds, self.n_ops)

    @property
    def demand(self) -> tuple[float, float, float]:
        """Fractions of (cores, HBM bandwidth, link) the work keeps busy when it runs alone."""
        if self.alone_s <= 0.0:
            return (0.0, 0.0, 0.0)
        return (self.compute_s / self.alone_s, self.mem_s / self.alone_s, self.link_s / self.alone_s)


ZERO_WORK = Work(0.0)


def cost_work(cost: OpCost, chip: ChipProfile, eff: Efficiency) -> Work:
    peak = chip.peak_flops if cost.unit == "cube" else chip.vector_flops
    compute_s = cost.flops / (peak * eff.compute)
    mem_s = cost.bytes / (chip.hbm_bw * eff.memory)
    link_s = cost.link_bytes / (chip.link_bw * eff.link)
    busy = max(compute_s, mem_s, link_s)
    latency = chip.launch_s + cost.latency_s
    return Work(busy + latency, compute_s, mem_s, link_s, latency, 1)


def op_work(op: Op, chip: ChipProfile, eff: Efficiency | None = None) -> Work:
    return cost_work(op_cost(op), chip, eff or Efficiency())


def op_time(op: Op, chip: ChipProfile, eff: Efficiency | None = None, core_share: float = 1.0) -> float:
    """Roofline time of one operator alone on the chip, on ``core_share`` of its AI cores."""
    if not 0.0 < core_share <= 1.0:
        raise ValueError(f"core_share {core_share} must be in (0, 1]")
    w = op_work(op, chip, eff)
    return max(w.compute_s / core_share, w.mem_s, w.link_s) + w.latency_s


def ops_work(ops: Iterable[Op], chip: ChipProfile, eff: Efficiency | None = None) -> Work:
    """Sum of the per-operator roofline costs of a sequence run back to back on one stream."""
    eff = eff or Efficiency()
    total = ZERO_WORK
    for op in ops:
        total = total + cost_work(op_cost(op), chip, eff)
    return total
