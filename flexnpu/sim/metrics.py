"""Per-run serving metrics: TTFT, TPOT, ITL, throughput, SLO attainment.

Definitions (anchors §1): TTFT = first token - arrival (queueing included); TPOT = (finish - first
token) / (output tokens - 1); ITL = every gap between consecutive tokens of a request; attainment =
share of the requests that *arrived* in the window which finished with TTFT <= SLO and TPOT <= SLO
(unfinished requests count as misses).  Throughput counts tokens and requests produced inside the
arrival window ``[0, duration)``, so an overloaded system shows its capacity, not the offered load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


class LogHistogram:
    """Counts of positive values in log-spaced bins (0.1% wide), for percentiles over millions of
    inter-token gaps without storing them."""

    _PER_E = 1000.0  # bins per factor e
    _LO = math.log(1e-6)

    def __init__(self) -> None:
        self.counts: dict[int, float] = {}
        self.total = 0.0

    def add(self, value: float, weight: float = 1.0) -> None:
        if weight <= 0:
            return
        b = int((math.log(max(value, 1e-6)) - self._LO) * self._PER_E)
        self.counts[b] = self.counts.get(b, 0.0) + weight
        self.total += weight

    def quantile(self, q: float) -> float:
        if self.total <= 0:
            return math.nan
        target = q * self.total
        acc = 0.0
        for b in sorted(self.counts):
            acc += self.counts[b]
            if acc >= target:
                return math.exp(self._LO + (b + 0.5) / self._PER_E)
        return math.exp(self._LO + (max(self.counts) + 0.5) / self._PER_E)


@dataclass
class RunRecord:
    """Raw outcome of one simulation, indexed by request."""

    arrival: np.ndarray
    output: np.ndarray
    first_token: np.ndarray  # NaN where none came
    finish: np.ndarray  # NaN where unfinished
    duration_s: float
    tokens_in_window: int
    itl: LogHistogram = field(default_factory=LogHistogram)


def _pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) if len(a) else math.nan


def tpot_of(rec: RunRecord) -> np.ndarray:
    """TPOT of the finished requests (0 for single-token outputs)."""
    done = ~np.isnan(rec.finish)
    span = rec.finish[done] - rec.first_token[done]
    steps = np.maximum(rec.output[done] - 1, 1)
    return np.where(rec.output[done] > 1, span / steps, 0.0)


def summarize(rec: RunRecord, ttft_slo_s: float, tpot_slo_s: float) -> dict[str, float]:
    n = len(rec.arrival)
    has_first = ~np.isnan(rec.first_token)
    done = ~np.isnan(rec.finish)
    ttft_all = rec.first_token - rec.arrival
    ttft = ttft_all[has_first]
    tpot = tpot_of(rec)
    ok = np.zeros(n, dtype=bool)
    ok[done] = (ttft_all[done] <= ttft_slo_s) & (tpot <= tpot_slo_s)
    finished_in_window = int(np.sum(rec.finish[done] <= rec.duration_s))
    return {
        "ttft_p50_s": _pct(ttft, 50), "ttft_p90_s": _pct(ttft, 90), "ttft_p99_s": _pct(ttft, 99),
        "ttft_mean_s": float(ttft.mean()) if len(ttft) else math.nan,
        "tpot_mean_s": float(tpot.mean()) if len(tpot) else math.nan,
        "tpot_p50_s": _pct(tpot, 50), "tpot_p90_s": _pct(tpot, 90), "tpot_p99_s": _pct(tpot, 99),
        "itl_p50_s": rec.itl.quantile(0.50), "itl_p99_s": rec.itl.quantile(0.99),
        "output_tokens_per_s": rec.tokens_in_window / rec.duration_s,
        "requests_per_s": finished_in_window / rec.duration_s,
        "offered_requests_per_s": n / rec.duration_s,
        "requests": n,
        "completed": int(done.sum()),
        "slo_attainment": float(ok.mean()) if n else math.nan,
        "ttft_attainment": float(np.sum(ttft_all[has_first] <= ttft_slo_s) / n) if n else math.nan,
        "tpot_attainment": float(np.sum(tpot <= tpot_slo_s) / n) if n else math.nan,
    }
