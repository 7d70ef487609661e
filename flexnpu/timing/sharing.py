"""Operators of different streams running at once on one chip: a fluid sharing model.

Each running :class:`~flexnpu.timing.roofline.Work` would, alone, progress at rate 1 while keeping
fractions ``(c, m, l)`` of the cores' compute, the HBM bandwidth and the link busy.  A kernel occupies
AI cores both to compute and to keep enough memory requests in flight: pulling a fraction ``m`` of the
HBM bandwidth takes ``bw_saturation * m`` of the cores (``bw_saturation`` is the core share that
saturates HBM).  So at rate ``r`` a work occupies ``r * max(c, bw_saturation * m)`` of the cores.  Run
together, work ``i`` progresses at rate ``r_i`` subject to

* cores:  ``sum r_i k_i <= 1`` with ``k_i = max(c_i, bw_saturation * m_i)``, and, per stream with a core
  limit ``f`` (``aclrtSetStreamResLimit``), ``r_i k_i <= f``;
* HBM:    ``sum r_i m_i <= 1``;
* link:   ``sum r_i l_i <= 1``;  and ``r_i <= 1``.

Rates are the max-min fair point (progressive filling): every stream speeds up equally until a resource
it uses is exhausted.  A compute-bound and a memory-bound work overlap well (the memory-bound one needs
only part of the cores), two compute-bound ones split the cores (rate 1/2 each), two memory-bound ones
split the bandwidth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flexnpu.timing.roofline import Work

# Share of the AI cores a kernel must occupy to saturate HBM bandwidth.  No Ascend measurement was
# found; 0.5 is our assumption (GPU microbenchmarks saturate HBM with roughly a third to a half of the
# SMs).  The ablation in perf/PD_RESULTS.md varies it.
DEFAULT_BW_SATURATION = 0.5

_EPS = 1e-12


def share_rates(demands: Sequence[tuple[float, float, float]], core_caps: Sequence[float] | None = None,
                bw_saturation: float = DEFAULT_BW_SATURATION) -> list[float]:
    """Max-min fair progress rates of concurrently running works (see the module docstring).

    ``demands[i] = (c, m, l)``; ``core_caps[i]`` is the core share work ``i``'s stream may use (1.0 when
    unlimited).  Returns one rate in ``[0, 1]`` per work.
    """
    n = len(demands)
    upper = [1.0] * n
    # per work: (core occupancy, HBM, link) per unit of rate
    use = [(max(c, bw_saturation * m), m, li) for c, m, li in demands]
    for i in range(n):
        cap = 1.0 if core_caps is None else core_caps[i]
        k = use[i][0]
        upper[i] = cap / k if k > cap else 1.0
    if n == 1:  # alone: only its own limits bind (each demand fraction is at most 1)
        return upper
    rates = [0.0] * n
    active = list(range(n))
    used = [0.0, 0.0, 0.0]  # resource use of frozen works
    level = 0.0
    while active:
        new_level = min(upper[i] for i in active)
        binding = -1
        for k in range(3):
            load = 0.0
            for i in active:
                load += use[i][k]
            if load > _EPS:
                t = (1.0 - used[k]) / load
                if t < new_level - _EPS:
                    new_level, binding = t, k
        if new_level < level:
            new_level = level
        keep = []
        for i in active:
            if (upper[i] <= new_level + _EPS) if binding < 0 else (use[i][binding] > _EPS):
                rates[i] = new_level
                d = use[i]
                used[0] += new_level * d[0]
                used[1] += new_level * d[1]
                used[2] += new_level * d[2]
            else:
                keep.append(i)
        active = keep
        level = new_level
    return rates


@dataclass
class _Running:
    work: Work
    remaining: float  # alone-seconds of work still to do
    demand: tuple[float, float, float]
    tag: Any
    rate: float = 0.0
    paused: bool = False


class SharedChip:
    """One chip's streams, each running at most one Work at a time, advanced through time.

    The owner starts works, sets per-stream core limits, and calls :meth:`advance`; completions come back
    in time order.  Used by the simulator (one per instance) and usable by an emulated device to pace
    operators.
    """

    def __init__(self, bw_saturation: float = DEFAULT_BW_SATURATION):
        if not 0.0 < bw_saturation <= 1.0:
            raise ValueError(f"bw_saturation {bw_saturation} must be in (0, 1]")
        self.now = 0.0
        self.bw_saturation = bw_saturation
        self._running: dict[int, _Running] = {}
        self._limits: dict[int, float] = {}

    # -- state ---------------------------------------------------------------------------------------

    def busy(self, stream: int) -> bool:
        return stream in self._running

    def running_tag(self, stream: int) -> Any:
        r = self._running.get(stream)
        return r.tag if r else None

    def core_limit(self, stream: int) -> float | None:
        return self._limits.get(stream)

    def rate(self, stream: int) -> float:
        r = self._running.get(stream)
        return r.rate if r else 0.0

    def progress(self, stream: int) -> float:
        """Fraction of the running work already done (0 when idle)."""
        r = self._running.get(stream)
        if r is None or r.work.alone_s <= 0.0:
            return 0.0
        return 1.0 - r.remaining / r.work.alone_s

    def is_paused(self, stream: int) -> bool:
        r = self._running.get(stream)
        return bool(r and r.paused)

    def remaining(self, stream: int) -> float:
        r = self._running.get(stream)
        return r.remaining if r else 0.0

    # -- control -------------------------------------------------------------------------------------

    def start(self, stream: int, work: Work, tag: Any = None) -> None:
        if stream in self._running:
            raise RuntimeError(f"stream {stream} is busy")
        self._running[stream] = _Running(work, work.alone_s, work.demand, tag)
        self._rebalance()

    def set_core_limit(self, stream: int, share: float | None) -> None:
        """Limit ``stream`` to ``share`` of the AI cores (None: no limit)."""
        if share is None:
            changed = self._limits.pop(stream, None) is not None
        else:
            if not 0.0 < share <= 1.0:
                raise ValueError(f"core share {share} must be in (0, 1]")
            changed = self._limits.get(stream) != share
            self._limits[stream] = share
        if changed:
            self._rebalance()

    def pause(self, stream: int) -> None:
        self._running[stream].paused = True
        self._rebalance()

    def resume(self, stream: int) -> None:
        self._running[stream].paused = False
        self._rebalance()

    def add_latency(self, stream: int, seconds: float) -> None:
        """Extend the running work by ``seconds`` (a control call such as re-limiting or a switch)."""
        r = self._running[stream]
        r.remaining += seconds

    def next_completion(self) -> float:
        best = math.inf
        for r in self._running.values():
            if r.rate > 0.0:
                best = min(best, self.now + r.remaining / r.rate)
        return best

    def advance(self, t: float) -> list[tuple[int, Any, float]]:
        """Move time to ``t``; return ``(stream, tag, finish_time)`` of the works that completed."""
        done = []
        while True:
            tc = self.next_completion()
            if tc > t:
                break
            self._progress(tc - self.now)
            self.now = tc
            for s in [s for s, r in self._running.items()
                      if r.rate > 0.0 and r.remaining <= _EPS * max(1.0, r.work.alone_s)]:
                done.append((s, self._running.pop(s).tag, tc))
            self._rebalance()
        if t > self.now:
            self._progress(t - self.now)
            self.now = t
        return done

    # -- prediction ----------------------------------------------------------------------------------

    def predict(self, works: Sequence[tuple[Work, float | None]]) -> list[float]:
        """Durations of ``works`` (each with its stream's core share, None = unlimited) if they all start
        together on an otherwise idle chip; each speeds up as the others finish."""
        probe = SharedChip(self.bw_saturation)
        for i, (w, share) in enumerate(works):
            if share is not None:
                probe._limits[i] = share
            probe._running[i] = _Running(w, w.alone_s, w.demand, i)
        probe._rebalance()
        out = [0.0] * len(works)
        while probe._running:
            for s, _tag, t in probe.advance(probe.next_completion()):
                out[s] = t
        return out

    # -- internals -----------------------------------------------------------------------------------

    def _progress(self, dt: float) -> None:
        if dt <= 0.0:
            return
        for r in self._running.values():
            r.remaining = max(0.0, r.remaining - r.rate * dt)

    def _rebalance(self) -> None:
        live = [(s, r) for s, r in self._running.items() if not r.paused]
        for _s, r in self._running.items():
            r.rate = 0.0
        if not live:
            return
        rates = share_rates([r.demand for _s, r in live], [self._limits.get(s, 1.0) for s, _r in live],
                            self.bw_saturation)
        for (_s, r), rate in zip(live, rates):
            r.rate = rate
