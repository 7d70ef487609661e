"""Request streams for the simulator: trace replay (Azure LLM 2023 CSV, Mooncake JSONL) and synthetic
open-loop arrivals (Poisson, Gamma with a chosen CV) with lengths drawn from a trace.

All arrivals are open-loop: a request arrives at its time whatever the system does.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Trace:
    """A request trace: arrival offsets from the first request (s), prompt and output token counts."""

    name: str
    times: np.ndarray
    prompt: np.ndarray
    output: np.ndarray

    @property
    def span_s(self) -> float:
        return float(self.times[-1] - self.times[0]) if len(self.times) > 1 else 0.0

    @property
    def mean_rate(self) -> float:
        return len(self.times) / self.span_s if self.span_s > 0 else 0.0


@dataclass(frozen=True)
class Workload:
    """What a simulation runs: arrival times within ``[0, duration_s)`` and lengths."""

    name: str
    arrivals: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    duration_s: float

    def __len__(self) -> int:
        return len(self.arrivals)

    @property
    def rate(self) -> float:
        return len(self.arrivals) / self.duration_s if self.duration_s > 0 else 0.0


def _azure_seconds(stamp: str) -> float:
    """``2023-11-16 18:15:46.6805900`` -> seconds since midnight (the traces span under a day)."""
    clock = stamp.split(" ")[1]
    h, m, s = clock.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


@functools.lru_cache(maxsize=8)
def load_trace(path: str) -> Trace:
    """Read an Azure LLM inference CSV (``TIMESTAMP,ContextTokens,GeneratedTokens``) or a Mooncake JSONL
    trace (``timestamp`` in ms, ``input_length``, ``output_length``)."""
    name = os.path.splitext(os.path.basename(path))[0]
    times, prompt, output = [], [], []
    if path.endswith(".jsonl"):
        with open(path) as f:
            for line in f:
                if line.strip():
                    d = json.loads(line)
                    times.append(d["timestamp"] / 1000.0)
                    prompt.append(d["input_length"])
                    output.append(d["output_length"])
    else:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                times.append(_azure_seconds(row["TIMESTAMP"]))
                prompt.append(int(row["ContextTokens"]))
                output.append(int(row["GeneratedTokens"]))
    if not times:
        raise ValueError(f"{path}: no requests")
    t = np.asarray(times, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    t = t[order] - t[order][0]
    return Trace(name, t, np.maximum(1, np.asarray(prompt, np.int64)[order]),
                 np.maximum(1, np.asarray(output, np.int64)[order]))


def replay(trace: Trace, duration_s: float, rate_scale: float = 1.0, seed: int = 0) -> Workload:
    """Replay ``trace`` with its inter-arrival times divided by ``rate_scale``, starting at an offset
    drawn from ``seed`` and wrapping around (the trace repeats) until ``duration_s`` is filled."""
    if rate_scale <= 0:
        raise ValueError("rate_scale must be positive")
    n = len(trace.times)
    # the gap from the last request back to the first, when the trace wraps: its mean inter-arrival
    period = trace.span_s + (trace.span_s / max(1, n - 1))
    rng = np.random.default_rng(seed)
    offset = float(rng.uniform(0.0, period))
    need = duration_s * rate_scale  # trace seconds to cover
    reps = math.ceil((offset + need) / period) + 1
    t = (np.concatenate([trace.times + k * period for k in range(reps)]) - offset) / rate_scale
    idx = np.tile(np.arange(n), reps)
    keep = (t >= 0.0) & (t < duration_s)
    return Workload(f"{trace.name} x{rate_scale:g}", t[keep], trace.prompt[idx[keep]],
                    trace.output[idx[keep]], duration_s)


def synthetic(trace: Trace, duration_s: float, rate: float, *, arrival: str = "poisson", cv: float = 1.0,
              lengths: str = "empirical", seed: int = 0) -> Workload:
    """Open-loop arrivals at ``rate`` req/s: ``poisson`` or ``gamma`` inter-arrivals with coefficient of
    variation ``cv``; lengths resampled from ``trace`` jointly (``empirical``) or from log-normal fits of
    its prompt and output lengths (``lognormal``)."""
    rng = np.random.default_rng(seed)
    n_max = int(rate * duration_s * 1.5 + 50 * math.sqrt(rate * duration_s + 1) + 10)
    if arrival == "poisson":
        gaps = rng.exponential(1.0 / rate, n_max)
    elif arrival == "gamma":
        shape = 1.0 / (cv * cv)
        gaps = rng.gamma(shape, 1.0 / (rate * shape), n_max)
    else:
        raise ValueError(f"arrival must be poisson or gamma, not {arrival!r}")
    t = np.cumsum(gaps)
    t = t[t < duration_s]
    n = len(t)
    if lengths == "empirical":
        pick = rng.integers(0, len(trace.prompt), n)
        prompt, output = trace.prompt[pick], trace.output[pick]
    elif lengths == "lognormal":
        prompt = _lognormal_like(trace.prompt, n, rng)
        output = _lognormal_like(trace.output, n, rng)
    else:
        raise ValueError(f"lengths must be empirical or lognormal, not {lengths!r}")
    label = f"{arrival}{'' if arrival == 'poisson' else f'(cv={cv:g})'} {rate:g}/s, {trace.name} lengths"
    return Workload(label, t, prompt, output, duration_s)


def _lognormal_like(sample: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    logs = np.log(sample.astype(np.float64))
    draw = rng.lognormal(float(logs.mean()), float(logs.std()), n)
    return np.clip(np.rint(draw), 1, int(sample.max())).astype(np.int64)


def concat(parts: list[Workload]) -> Workload:
    """Run workloads one after another (e.g. conversation, then code: a mix that shifts)."""
    arrivals, prompt, output, t0 = [], [], [], 0.0
    for w in parts:
        arrivals.append(w.arrivals + t0)
        prompt.append(w.prompt)
        output.append(w.output)
        t0 += w.duration_s
    return Workload(" then ".join(w.name for w in parts), np.concatenate(arrivals), np.concatenate(prompt),
                    np.concatenate(output), t0)


def mean_mix(w: Workload) -> tuple[float, float]:
    """Mean prompt and output tokens."""
    return float(np.mean(w.prompt)), float(np.mean(w.output))
