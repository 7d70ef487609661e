"""PNG plots of a sweep: TTFT and TPOT CDFs per policy, SLO attainment vs rate, throughput bars.
matplotlib is imported lazily with the Agg backend (it is an optional dependency: ``.[plot]``)."""

from __future__ import annotations

import os

import numpy as np

from flexnpu.sim.engine import SimResult
from flexnpu.sim.metrics import tpot_of


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _cdf(ax, values: np.ndarray, label: str) -> None:
    v = np.sort(values[np.isfinite(values)])
    if len(v):
        ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=label)


def _save(plt, fig, out_dir: str, name: str) -> str:
    fig.tight_layout()
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_plots(results: dict[str, dict[float, SimResult]], out_dir: str, cdf_rate: float,
                ttft_slo_s: float, tpot_slo_s: float) -> list[str]:
    """Write the four plots into ``out_dir``; return their paths."""
    plt = _plt()
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    policies = list(results)
    rates = sorted({r for per in results.values() for r in per})

    for name, pick, slo, xlabel in (
        ("ttft_cdf.png", lambda r: r.record.first_token - r.record.arrival, ttft_slo_s, "TTFT (s)"),
        ("tpot_cdf.png", lambda r: tpot_of(r.record), tpot_slo_s, "TPOT (s)"),
    ):
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for p in policies:
            if cdf_rate in results[p]:
                _cdf(ax, np.asarray(pick(results[p][cdf_rate]), dtype=float), p)
        ax.axvline(slo, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"{xlabel.split()[0]} CDF at rate x{cdf_rate:g}")
        ax.legend(fontsize=8)
        paths.append(_save(plt, fig, out_dir, name))

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for p in policies:
        xs = [r for r in rates if r in results[p]]
        ax.plot(xs, [results[p][r].metrics["slo_attainment"] for r in xs], marker="o", label=p)
    ax.axhline(0.9, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("rate scale")
    ax.set_ylabel("SLO attainment")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    paths.append(_save(plt, fig, out_dir, "attainment_vs_rate.png"))

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    width = 0.8 / max(1, len(policies))
    for i, p in enumerate(policies):
        ys = [results[p][r].metrics["output_tokens_per_s"] if r in results[p] else 0.0 for r in rates]
        ax.bar(np.arange(len(rates)) + i * width, ys, width, label=p)
    ax.set_xticks(np.arange(len(rates)) + width * (len(policies) - 1) / 2)
    ax.set_xticklabels([f"x{r:g}" for r in rates])
    ax.set_xlabel("rate scale")
    ax.set_ylabel("output tokens/s")
    ax.legend(fontsize=8)
    paths.append(_save(plt, fig, out_dir, "throughput.png"))
    return paths
