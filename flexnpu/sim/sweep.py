"""Runs over several policies and loads, goodput by search, and DistServe-style pool sizing."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from flexnpu.sim.engine import Cluster, SimConfig, SimResult, simulate
from flexnpu.sim.workload import Workload, concat, load_trace, replay, synthetic

# Goodput: the highest load at which at least this share of requests meets both SLOs (anchors §1).
GOODPUT_ATTAINMENT = 0.9


@dataclass(frozen=True)
class WorkloadSpec:
    """How to build the request stream for a given load (``rate_scale``) and seed.

    ``traces``: one or more trace files; several run one after another, each for an equal share of
    ``duration_s`` (a mix that shifts).  ``arrival``: ``trace`` replays the files' timestamps (divided by
    the rate scale); ``poisson`` / ``gamma`` draw arrivals at ``rate`` x scale with lengths from the
    (first) trace.
    """

    traces: tuple[str, ...]
    duration_s: float = 600.0
    arrival: str = "trace"
    rate: float | None = None  # req/s at rate scale 1 for synthetic arrivals; None: the trace's mean
    cv: float = 1.0
    lengths: str = "empirical"

    def build(self, rate_scale: float, seed: int) -> Workload:
        share = self.duration_s / len(self.traces)
        parts = []
        for i, path in enumerate(self.traces):
            trace = load_trace(path)
            if self.arrival == "trace":
                parts.append(replay(trace, share, rate_scale, seed + i))
            else:
                base = self.rate if self.rate is not None else trace.mean_rate
                parts.append(synthetic(trace, share, base * rate_scale, arrival=self.arrival, cv=self.cv,
                                       lengths=self.lengths, seed=seed + i))
        return parts[0] if len(parts) == 1 else concat(parts)

    def base_rate(self) -> float:
        """Requests per second at rate scale 1 (time-weighted over the parts)."""
        rates = []
        for path in self.traces:
            trace = load_trace(path)
            rates.append(self.rate if self.rate is not None and self.arrival != "trace" else trace.mean_rate)
        return sum(rates) / len(rates)


@dataclass
class Goodput:
    rate_scale: float  # highest rate scale found that meets the attainment target (0 if none)
    requests_per_s: float
    result: SimResult | None  # the run at that rate scale
    probes: list[tuple[float, float]] = field(default_factory=list)  # (rate scale, attainment) tried


def goodput(config: SimConfig, spec: WorkloadSpec, seed: int = 0, *, start: float = 1.0,
            target: float = GOODPUT_ATTAINMENT, rel_tol: float = 0.03, max_runs: int = 14) -> Goodput:
    """Highest rate scale with SLO attainment >= ``target``: double or halve from ``start`` to bracket it,
    then bisect geometrically until the bracket is within ``rel_tol``."""
    probes: list[tuple[float, float]] = []
    results: dict[float, SimResult] = {}

    def attain(scale: float) -> float:
        r = simulate(config, spec.build(scale, seed))
        results[scale] = r
        a = r.metrics["slo_attainment"]
        probes.append((scale, a))
        return a

    lo, hi = None, None
    scale = start
    while len(probes) < max_runs:
        if attain(scale) >= target:
            lo = scale
            if hi is not None:
                break
            scale *= 2.0
        else:
            hi = scale
            if lo is not None:
                break
            scale /= 2.0
            if scale < 1e-3:
                break
    if lo is None:
        return Goodput(0.0, 0.0, None, probes)
    while hi is not None and hi / lo - 1.0 > rel_tol and len(probes) < max_runs:
        mid = math.sqrt(lo * hi)
        if attain(mid) >= target:
            lo = mid
        else:
            hi = mid
    return Goodput(lo, lo * spec.base_rate(), results[lo], probes)


def sweep(config: SimConfig, spec: WorkloadSpec, policies: list[str], rates: list[float], seed: int = 0,
          progress: Callable[[str], None] | None = None) -> dict[str, dict[float, SimResult]]:
    """Every policy at every rate scale, the same request stream for each policy at a given rate."""
    out: dict[str, dict[float, SimResult]] = {}
    for policy in policies:
        out[policy] = {}
        for rate in rates:
            if progress:
                progress(f"{policy} x{rate:g}")
            out[policy][rate] = simulate(replace(config, policy=policy), spec.build(rate, seed))
    return out


def search_pd_ratio(config: SimConfig, spec: WorkloadSpec, seed: int = 0, start: float = 1.0,
                    max_runs: int = 14) -> tuple[tuple[int, int], dict[str, Any]]:
    """DistServe-style placement search for ``static-disagg``: start from the ratio that balances the
    pools' busy time for the mean mix, then climb to the neighbouring prefill:decode split with the
    higher goodput until neither neighbour is better (goodput is unimodal in the split)."""
    cfg = replace(config, policy="static-disagg", pd_ratio=None)
    cluster = Cluster(cfg, spec.build(start, seed))
    n = cluster.n_instances
    analytic = cluster.pd_ratio
    assert analytic is not None
    scores: dict[int, float] = {}

    def score(n_p: int) -> float:
        if n_p not in scores:
            hint = max(scores.values(), default=start) or start
            scores[n_p] = goodput(replace(cfg, pd_ratio=(n_p, n - n_p)), spec, seed, start=hint,
                                  max_runs=max_runs).rate_scale
        return scores[n_p]

    cur = analytic[0]
    while True:
        options = [x for x in (cur - 1, cur + 1) if 1 <= x <= n - 1]
        best = max(options, key=score, default=cur)
        if score(best) > score(cur) * (1 + 1e-9):
            cur = best
        else:
            break
    info = {"analytic": f"{analytic[0]}:{analytic[1]}",
            "goodput_rate_scale_by_ratio": {f"{k}:{n - k}": v for k, v in sorted(scores.items())}}
    return (cur, n - cur), info
