"""``flexnpu sim`` (one run) and ``flexnpu sim sweep`` (policies x loads, table and plots).

Registration stays light; the simulator is imported inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys

DEFAULT_TRACE = os.path.join("..", "shared", "data", "traces", "azure_llm_2023_conv.csv")

_UNITS = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_seconds(text: str) -> float:
    """``1s``, ``50ms``, ``600`` (seconds), ``10m``, ``1h``, ``200us`` -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-z]*)\s*", text)
    if not m or m.group(2) not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 1s, 50ms, 600)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _ratio(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a P:D ratio: {text!r} (use e.g. 3:5)")
    return int(m.group(1)), int(m.group(2))


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None


def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster")
    g.add_argument("--model", default="qwen2.5-7b", help="qwen2.5-7b, qwen2-tiny, deepseek-r1, deepseek-v3")
    g.add_argument("--chip", default="910B2", help="910B2, 910B3, 910C-die, 910C, H100, H200")
    g.add_argument("--chips", type=int, default=1, help="chips in the cluster")
    g.add_argument("--instance-chips", type=int, default=None,
                   help="chips per serving instance (default: the model's deployment unit)")
    g = p.add_argument_group("workload")
    g.add_argument("--trace", default=DEFAULT_TRACE,
                   help="Azure CSV or Mooncake JSONL; several, comma-separated, run one after another")
    g.add_argument("--arrival", choices=("trace", "poisson", "gamma"), default="trace",
                   help="replay the trace's arrival times, or draw Poisson / Gamma arrivals")
    g.add_argument("--rate", type=float, default=None,
                   help="req/s at rate scale 1 for synthetic arrivals (default: the trace's mean rate)")
    g.add_argument("--cv", type=float, default=2.0, help="coefficient of variation for --arrival gamma")
    g.add_argument("--lengths", choices=("empirical", "lognormal"), default="empirical",
                   help="synthetic arrivals: resample the trace's lengths, or draw from log-normal fits")
    g.add_argument("--duration", type=parse_seconds, default=600.0, help="arrival window (default 600 s)")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("SLOs")
    g.add_argument("--ttft-slo", type=parse_seconds, default=1.0, help="default 1s")
    g.add_argument("--tpot-slo", type=parse_seconds, default=0.05, help="default 50ms")
    g = p.add_argument_group("policy options")
    g.add_argument("--token-budget", type=int, default=None, help="static-coloc tokens per step and chip")
    g.add_argument("--max-prefill-tokens", type=int, default=None, help="prefill batch cap per chip")
    g.add_argument("--pd-ratio", type=_ratio, default=None, help="static-disagg instances, e.g. 3:5")
    g.add_argument("--size-search", action="store_true",
                   help="static-disagg: pick the P:D ratio by goodput search around the analytic one")
    g.add_argument("--size-on", default=None, help="static-disagg: size the pools on this trace instead")
    g.add_argument("--split", choices=("cores", "time"), default=None, help="dynamic: spatial or temporal")
    g.add_argument("--controller", choices=("slo", "fixed", "none"), default=None, help="dynamic controller")
    g.add_argument("--granularity", choices=("op", "layer", "step"), default=None,
                   help="dynamic: boundary at which limit changes and pauses reach running work")
    g = p.add_argument_group("model parameters")
    g.add_argument("--compute-eff", type=float, default=None, help="fraction of peak FLOP/s (default 0.55)")
    g.add_argument("--memory-eff", type=float, default=None, help="fraction of HBM bandwidth (default 0.65)")
    g.add_argument("--link-eff", type=float, default=None, help="fraction of link bandwidth (default 0.65)")
    g.add_argument("--link-bw", type=float, default=None, help="chip-to-chip GB/s (default: the chip's)")
    g.add_argument("--host-overhead", type=parse_seconds, default=None, help="engine time per step (3ms)")
    g.add_argument("--bw-saturation", type=float, default=None,
                   help="core share that saturates HBM (default 0.5)")
    g.add_argument("--switch-cost", type=parse_seconds, default=None, help="per limit change/switch (60us)")
    g.add_argument("--drain", type=parse_seconds, default=None, help="simulated time after the last arrival")
    g = p.add_argument_group("output")
    g.add_argument("--goodput", action="store_true", help="also search the goodput (90%% attainment)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="simulate serving on a modelled NPU cluster",
                       description="Simulate LLM serving on modelled chips under one scheduling policy.")
    _add_common(p)
    p.add_argument("--policy", default="dynamic", help="fifo, static-coloc, static-disagg, dynamic")
    p.add_argument("--rate-scale", type=float, default=1.0, help="multiply the arrival rate")
    p.add_argument("--json", default=None, metavar="PATH", help="write the metrics as one JSON object")
    p.set_defaults(func=_run_one)
    sim_sub = p.add_subparsers(dest="sim_command", metavar="[sweep]")
    s = sim_sub.add_parser("sweep", help="several policies at several loads: table and PNG plots")
    _add_common(s)
    s.add_argument("--policies", default="fifo,static-coloc,static-disagg,dynamic")
    s.add_argument("--rates", type=_floats, default=[0.5, 1.0, 2.0, 4.0], help="rate scales, e.g. 0.5,1,2,4")
    s.add_argument("--out", default="results", help="directory for results.json, results.md and PNGs")
    s.add_argument("--cdf-rate", type=float, default=None,
                   help="rate scale of the CDF plots (default: the middle one)")
    s.add_argument("--no-plots", action="store_true")
    s.set_defaults(func=_run_sweep)


def _config(args, policy: str):
    from flexnpu.sim import SimConfig

    cfg = SimConfig(model=args.model, chip=args.chip, chips=args.chips, instance_chips=args.instance_chips,
                    policy=policy, ttft_slo_s=args.ttft_slo, tpot_slo_s=args.tpot_slo, pd_ratio=args.pd_ratio)
    fields = {"compute_eff": args.compute_eff, "memory_eff": args.memory_eff, "link_eff": args.link_eff,
              "host_overhead_s": args.host_overhead, "bw_saturation": args.bw_saturation,
              "switch_s": args.switch_cost, "drain_s": args.drain,
              "link_bw": None if args.link_bw is None else args.link_bw * 1e9}
    from dataclasses import replace

    cfg = replace(cfg, **{k: v for k, v in fields.items() if v is not None})
    opts = {}
    if policy == "static-coloc" and args.token_budget is not None:
        opts["token_budget"] = args.token_budget
    if policy in ("fifo", "static-disagg", "dynamic") and args.max_prefill_tokens is not None:
        opts["max_prefill_tokens"] = args.max_prefill_tokens
    if policy == "dynamic":
        for key in ("split", "controller", "granularity"):
            if getattr(args, key) is not None:
                opts[key] = getattr(args, key)
    return cfg.with_options(**opts) if opts else cfg


def _spec(args, traces: str | None = None):
    from flexnpu.sim.sweep import WorkloadSpec

    paths = tuple(t.strip() for t in (traces or args.trace).split(",") if t.strip())
    for path in paths:
        if not os.path.exists(path):
            raise SystemExit(f"flexnpu sim: trace {path!r} not found (pass --trace PATH)")
    return WorkloadSpec(paths, args.duration, args.arrival, args.rate, args.cv, args.lengths)


def _sized(args, cfg):
    """static-disagg: fix the pools once, on the --size-on trace if given, by search if asked."""
    from dataclasses import replace

    from flexnpu.sim import Cluster
    from flexnpu.sim.sweep import search_pd_ratio

    if cfg.policy != "static-disagg" or cfg.pd_ratio is not None:
        return cfg, {}
    spec = _spec(args, args.size_on)
    if args.size_search:
        ratio, info = search_pd_ratio(cfg, spec, args.seed)
    else:
        cl = Cluster(cfg, spec.build(1.0, args.seed))
        ratio, info = cl.pd_ratio, {}
    info["sized_on"] = ",".join(spec.traces)
    return replace(cfg, pd_ratio=ratio), info


def _clean(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _run_one(args) -> int:
    from flexnpu.sim import Cluster
    from flexnpu.sim.sweep import goodput

    cfg = _config(args, args.policy)
    try:
        cfg, sizing = _sized(args, cfg)
        spec = _spec(args)
        cluster = Cluster(cfg, spec.build(args.rate_scale, args.seed))
    except ValueError as e:
        raise SystemExit(f"flexnpu sim: {e}") from None
    result = cluster.run(progress=not args.no_progress)
    out = result.as_json()
    out.update({"rate_scale": args.rate_scale, "seed": args.seed, **sizing})
    if args.goodput:
        g = goodput(cfg, spec, args.seed, start=args.rate_scale)
        out.update({"goodput_rate_scale": g.rate_scale, "goodput_requests_per_s": g.requests_per_s})
    out = _clean(out)
    _print_summary(out)
    if args.json:
        text = json.dumps(out, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 0


def _print_summary(m: dict) -> None:
    def ms(key):
        v = m.get(key)
        return "n/a" if v is None else f"{v * 1e3:.1f} ms"

    print(f"{m['policy_detail']} | {m['model']} on {m['chips']} x {m['chip']} "
          f"({m['instances']} instance(s) of {m['instance_chips']}) | {m['workload']}")
    print(f"  TTFT p50/p90/p99  {ms('ttft_p50_s')} / {ms('ttft_p90_s')} / {ms('ttft_p99_s')}")
    print(f"  TPOT mean/p50/p90 {ms('tpot_mean_s')} / {ms('tpot_p50_s')} / {ms('tpot_p90_s')}"
          f"   ITL p99 {ms('itl_p99_s')}")
    print(f"  throughput        {m['output_tokens_per_s']:.1f} tok/s, {m['requests_per_s']:.3f} req/s "
          f"(offered {m['offered_requests_per_s']:.3f} req/s)")
    print(f"  completed         {m['completed']}/{m['requests']}   SLO attainment {m['slo_attainment']:.3f}")
    if "goodput_requests_per_s" in m:
        print(f"  goodput           {m['goodput_requests_per_s']:.3f} req/s"
              f" (rate scale {m['goodput_rate_scale']:.3g})")
    print(f"  simulated in {m['sim_wall_s']:.1f} s ({m['events']} events)")


TABLE_KEYS = [("ttft_p50_s", "TTFT p50 s"), ("ttft_p90_s", "TTFT p90 s"), ("tpot_p50_s", "TPOT p50 s"),
              ("tpot_p90_s", "TPOT p90 s"), ("itl_p99_s", "ITL p99 s"), ("output_tokens_per_s", "out tok/s"),
              ("requests_per_s", "req/s"), ("slo_attainment", "SLO att.")]


def markdown_table(rows: list[dict]) -> str:
    head = "| policy | rate | " + " | ".join(label for _, label in TABLE_KEYS) + " |"
    lines = [head, "|" + "---|" * (len(TABLE_KEYS) + 2)]
    for r in rows:
        cells = []
        for key, _ in TABLE_KEYS:
            v = r.get(key)
            cells.append("n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)))
        lines.append(f"| {r['policy']} | x{r['rate_scale']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _run_sweep(args) -> int:
    from dataclasses import replace

    from flexnpu.sim import simulate
    from flexnpu.sim.plots import write_plots
    from flexnpu.sim.sweep import goodput

    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    spec = _spec(args)
    results: dict = {}
    rows, goodputs, skipped = [], {}, {}
    todo = [(p, r) for p in policies for r in args.rates]
    from tqdm import tqdm

    bar = tqdm(todo, desc="sweep", unit="run", disable=True if args.no_progress else None, leave=False)
    configs = {}
    for policy, rate in bar:
        bar.set_postfix_str(f"{policy} x{rate:g}")
        if policy in skipped:
            continue
        if policy not in configs:
            try:
                configs[policy], _ = _sized(args, _config(args, policy))
            except ValueError as e:
                skipped[policy] = str(e)
                print(f"flexnpu sim sweep: skipping {policy}: {e}", file=sys.stderr)
                continue
        try:
            res = simulate(configs[policy], spec.build(rate, args.seed))
        except ValueError as e:
            skipped[policy] = str(e)
            print(f"flexnpu sim sweep: skipping {policy}: {e}", file=sys.stderr)
            continue
        results.setdefault(policy, {})[rate] = res
        row = res.as_json()
        row["rate_scale"] = rate
        rows.append(_clean(row))
    if args.goodput:
        for policy in results:
            g = goodput(replace(configs[policy]), spec, args.seed, start=args.rates[len(args.rates) // 2])
            goodputs[policy] = {"rate_scale": g.rate_scale, "requests_per_s": g.requests_per_s,
                                "probes": g.probes}
    os.makedirs(args.out, exist_ok=True)
    table = markdown_table(rows)
    print(table)
    if goodputs:
        for p, g in goodputs.items():
            print(f"goodput {p}: {g['requests_per_s']:.3f} req/s (rate scale {g['rate_scale']:.3g})")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(_clean({"runs": rows, "goodput": goodputs, "skipped": skipped}), f, indent=2)
        f.write("\n")
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table + "\n")
    if not args.no_plots and results:
        cdf_rate = args.cdf_rate if args.cdf_rate is not None else args.rates[len(args.rates) // 2]
        for path in write_plots(results, args.out, cdf_rate, args.ttft_slo, args.tpot_slo):
            print(f"wrote {path}")
    return 0
