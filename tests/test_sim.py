"""The cluster simulator: workloads, exact single-request timing, policy behaviour, determinism, goodput
search, and the ``flexnpu sim`` / ``flexnpu sim sweep`` commands."""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace

import numpy as np
import pytest

from flexnpu.cli import main
from flexnpu.models import BatchShape, StepCoster, get_model
from flexnpu.sim import SimConfig, Workload, concat, load_trace, replay, simulate, synthetic
from flexnpu.sim.cli import markdown_table, parse_seconds
from flexnpu.sim.metrics import LogHistogram
from flexnpu.sim.sweep import WorkloadSpec, goodput
from flexnpu.timing import Efficiency, get_chip

TRACES = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "traces")
CONV = os.path.join(TRACES, "azure_llm_2023_conv.csv")
CODE = os.path.join(TRACES, "azure_llm_2023_code.csv")
MOONCAKE = os.path.join(TRACES, "mooncake_fast25_conversation.jsonl")

REQUIRED_KEYS = {"policy", "ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "tpot_mean_s", "tpot_p50_s",
                 "tpot_p90_s", "itl_p99_s", "output_tokens_per_s", "requests_per_s", "completed",
                 "slo_attainment"}


def one_request(prompt: int, output: int, at: float = 0.0, duration: float = 10.0) -> Workload:
    return Workload("one", np.array([at]), np.array([prompt]), np.array([output]), duration)


# -- workloads ---------------------------------------------------------------------------------------


def test_traces_load_with_their_known_statistics():
    conv, code, moon = load_trace(CONV), load_trace(CODE), load_trace(MOONCAKE)
    assert len(conv.times) == 19366 and len(code.times) == 8819 and len(moon.times) == 12031
    assert np.median(conv.prompt) == 1020 and np.median(conv.output) == 129  # traces/README.md
    assert np.median(code.prompt) == 1469 and np.median(code.output) == 13
    assert np.median(moon.prompt) == 6909
    assert conv.mean_rate == pytest.approx(5.5, rel=0.02)
    assert np.all(np.diff(conv.times) >= 0) and conv.times[0] == 0.0


def test_replay_scales_the_rate_and_wraps_around():
    conv = load_trace(CONV)
    w1 = replay(conv, 600, 1.0, seed=3)
    w4 = replay(conv, 600, 4.0, seed=3)
    # four times the rate = the same stretch of trace (same seed, same offset) compressed four times
    w1_long = replay(conv, 2400, 1.0, seed=3)
    assert np.allclose(w4.arrivals * 4, w1_long.arrivals) and np.array_equal(w4.prompt, w1_long.prompt)
    assert w1.arrivals.max() < 600 and len(w4) > 3 * len(w1) * 0.5
    assert w4.arrivals.min() >= 0 and w4.arrivals.max() < 600 and np.all(np.diff(w4.arrivals) >= 0)
    long = replay(conv, 7200, 1.0, seed=0)  # longer than the trace (~58 min): it repeats
    assert len(long) == pytest.approx(7200 / conv.span_s * len(conv.times), rel=0.02)
    again = replay(conv, 600, 4.0, seed=3)
    assert np.array_equal(again.arrivals, w4.arrivals) and np.array_equal(again.prompt, w4.prompt)
    assert not np.array_equal(replay(conv, 600, 4.0, seed=4).prompt[:50], w4.prompt[:50])


def test_synthetic_arrivals():
    conv = load_trace(CONV)
    p = synthetic(conv, 2000, 5.0, arrival="poisson", seed=1)
    assert p.rate == pytest.approx(5.0, rel=0.05)
    gaps = np.diff(p.arrivals)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.08)
    g = synthetic(conv, 2000, 5.0, arrival="gamma", cv=3.0, seed=1)
    gaps = np.diff(g.arrivals)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.25)
    ln = synthetic(conv, 2000, 5.0, lengths="lognormal", seed=2)
    logs = np.log(conv.prompt.astype(float))
    assert np.log(ln.prompt).mean() == pytest.approx(logs.mean(), rel=0.02)
    assert np.log(ln.prompt).std() == pytest.approx(logs.std(), rel=0.1)
    both = concat([p, g])
    assert both.duration_s == 4000 and len(both) == len(p) + len(g) and both.arrivals[len(p)] >= 2000
    with pytest.raises(ValueError):
        synthetic(conv, 10, 1.0, arrival="uniform")


# -- timing of a lone request is exactly the model's --------------------------------------------------


@pytest.mark.parametrize("policy", ["fifo", "static-coloc", "dynamic"])
def test_single_request_timing_is_the_step_cost(policy):
    cfg = SimConfig(policy=policy, chips=1)
    res = simulate(cfg, one_request(prompt=400, output=5))
    coster = StepCoster(get_model("qwen2.5-7b"), get_chip("910B2"), Efficiency(), 1, cfg.host_overhead_s)
    ttft = coster.seconds(BatchShape(prefill=((400, 400),)))
    decode = sum(coster.seconds(BatchShape(n_decode=1, decode_kv=float(400 + 1 + i))) for i in range(1, 5))
    assert res.record.first_token[0] == pytest.approx(ttft, rel=1e-9)
    assert res.record.finish[0] - res.record.first_token[0] == pytest.approx(decode, rel=1e-9)
    assert res.metrics["tpot_p50_s"] == pytest.approx(decode / 4, rel=1e-9)
    assert res.metrics["completed"] == 1 and res.metrics["slo_attainment"] == 1.0


def test_chunked_prefill_splits_a_long_prompt_by_the_budget():
    cfg = SimConfig(policy="static-coloc", chips=1)
    res = simulate(cfg, one_request(prompt=1200, output=2))
    coster = StepCoster(get_model("qwen2.5-7b"), get_chip("910B2"), Efficiency(), 1, cfg.host_overhead_s)
    # logits only once the prompt is done
    chunks = [BatchShape(prefill=((512, 512),), n_logits=0), BatchShape(prefill=((512, 1024),), n_logits=0),
              BatchShape(prefill=((176, 1200),))]
    assert res.record.first_token[0] == pytest.approx(sum(coster.seconds(b) for b in chunks), rel=1e-9)


def test_disaggregation_pays_the_kv_transfer():
    w = one_request(prompt=4000, output=3)
    fast = simulate(SimConfig(policy="static-disagg", chips=2, pd_ratio=(1, 1)), w)
    slow = simulate(SimConfig(policy="static-disagg", chips=2, pd_ratio=(1, 1), link_bw=1e9), w)
    kv = get_model("qwen2.5-7b").kv_bytes_per_token() * 4000
    extra = kv / (1e9 * Efficiency().link) - kv / (get_chip("910B2").link_bw * Efficiency().link)
    def decode_span(r):
        return r.record.finish[0] - r.record.first_token[0]

    gap = decode_span(slow) - decode_span(fast)
    assert gap == pytest.approx(extra, rel=1e-6)
    assert fast.record.first_token[0] == slow.record.first_token[0]
    with pytest.raises(ValueError, match="does not match"):
        simulate(SimConfig(policy="static-disagg", chips=3, pd_ratio=(1, 1)), w)
    with pytest.raises(ValueError, match="two instances"):
        simulate(SimConfig(policy="static-disagg", chips=1), w)


# -- behaviour under load ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def busy_runs():
    """One busy minute of the conversation trace on one 910B2, every co-located policy."""
    w = replay(load_trace(CONV), 90, 1.45, seed=1)
    return {p: simulate(SimConfig(policy=p, chips=1), w) for p in ("fifo", "static-coloc", "dynamic")}


def test_every_request_is_served_once(busy_runs):
    for res in busy_runs.values():
        rec = res.record
        done = ~np.isnan(rec.finish)
        assert done.sum() == res.metrics["completed"] > 0.9 * len(rec.arrival)
        assert np.all(rec.first_token[done] >= rec.arrival[done])
        assert np.all(rec.finish[done] >= rec.first_token[done])
        # output tokens produced inside the window never exceed what the finished requests asked for
        assert res.metrics["output_tokens_per_s"] * rec.duration_s <= rec.output.sum()


def test_fifo_stalls_decode_and_the_others_do_not(busy_runs):
    fifo, coloc, dyn = (busy_runs[p].metrics for p in ("fifo", "static-coloc", "dynamic"))
    # a whole-prompt prefill batch stops every decode: long inter-token gaps
    assert fifo["itl_p99_s"] > 3 * coloc["itl_p99_s"]
    assert coloc["itl_p99_s"] < 0.06 and dyn["itl_p99_s"] < 0.06
    # dynamic overlaps prefill with decode: faster first tokens and steps than the fixed budget
    assert dyn["ttft_p50_s"] < coloc["ttft_p50_s"]
    assert dyn["tpot_p50_s"] < coloc["tpot_p50_s"]


def test_dynamic_variants_run_and_differ():
    w = replay(load_trace(CONV), 60, 1.45, seed=2)
    base = SimConfig(policy="dynamic", chips=1)
    out = {}
    for name, opts in {"cores": {}, "time": {"split": "time"}, "layer": {"granularity": "layer"},
                       "step-fixed": {"granularity": "step", "controller": "fixed"}}.items():
        res = simulate(base.with_options(**opts), w)
        assert res.metrics["completed"] > 0
        out[name] = res.metrics
    # time-slicing gives up the overlap: slower prefill, so later first tokens
    assert out["time"]["ttft_p50_s"] > out["cores"]["ttft_p50_s"]
    assert len({round(m["ttft_p90_s"], 9) for m in out.values()}) == len(out)


def test_deepseek_cluster_runs_both_pools():
    w = replay(load_trace(CONV), 30, 20.0, seed=0)
    cfg = SimConfig(model="deepseek-r1", chip="910C", chips=64, ttft_slo_s=5.0)
    dis = simulate(replace(cfg, policy="static-disagg"), w)
    dyn = simulate(cfg, w)
    assert dis.notes["instances"] == dyn.notes["instances"] == 4
    assert dis.notes["pd_ratio"] in {"1:3", "2:2", "3:1"}
    for res in (dis, dyn):
        assert res.metrics["completed"] == len(w)
        assert 0.01 < res.metrics["tpot_p50_s"] < 0.1


def test_same_seed_same_result_other_seed_other_result():
    spec = WorkloadSpec((CONV,), duration_s=40)
    cfg = SimConfig(policy="dynamic", chips=2)
    a = simulate(cfg, spec.build(2.0, seed=5)).as_json()
    b = simulate(cfg, spec.build(2.0, seed=5)).as_json()
    c = simulate(cfg, spec.build(2.0, seed=6)).as_json()
    for key in ("sim_wall_s",):
        a.pop(key), b.pop(key), c.pop(key)
    assert a == b
    assert a["ttft_p50_s"] != c["ttft_p50_s"]


def test_goodput_search_brackets_the_attainment_target():
    spec = WorkloadSpec((CONV,), duration_s=40)
    cfg = SimConfig(policy="static-coloc", chips=1)
    g = goodput(cfg, spec, seed=0, start=1.0, rel_tol=0.1)
    assert g.rate_scale > 0 and g.result is not None
    assert g.result.metrics["slo_attainment"] >= 0.9
    above = [a for s, a in g.probes if s > g.rate_scale]
    assert above and all(a < 0.9 for a in above)
    assert min(s for s, _ in g.probes if s > g.rate_scale) <= g.rate_scale * 1.1 + 1e-9
    assert g.requests_per_s == pytest.approx(g.rate_scale * spec.base_rate())


def test_log_histogram_quantiles():
    h = LogHistogram()
    rng = np.random.default_rng(0)
    values = rng.lognormal(-3, 1, 20000)
    for v in values:
        h.add(float(v))
    h.add(0.5, 0.0)  # zero weight is ignored
    for q in (0.5, 0.9, 0.99):
        assert h.quantile(q) == pytest.approx(np.quantile(values, q), rel=0.01)
    assert math.isnan(LogHistogram().quantile(0.5))


# -- command line ------------------------------------------------------------------------------------


def test_parse_seconds():
    assert parse_seconds("1s") == 1.0 and parse_seconds("50ms") == pytest.approx(0.05)
    assert parse_seconds("600") == 600 and parse_seconds("2m") == 120
    assert parse_seconds("200us") == pytest.approx(2e-4)
    with pytest.raises(Exception, match="not a duration"):
        parse_seconds("fast")


def test_sim_command_writes_the_json_keys(tmp_path, capsys):
    out = tmp_path / "out.json"
    rc = main(["sim", "--model", "qwen2.5-7b", "--chip", "910B2", "--chips", "1", "--policy", "dynamic",
               "--trace", CONV, "--rate-scale", "1.0", "--duration", "30", "--ttft-slo", "1s",
               "--tpot-slo", "50ms", "--seed", "0", "--json", str(out), "--no-progress"])
    assert rc == 0
    data = json.loads(out.read_text())
    assert set(data) >= REQUIRED_KEYS
    assert data["policy"] == "dynamic" and data["completed"] > 0 and 0 <= data["slo_attainment"] <= 1
    assert "TTFT p50/p90/p99" in capsys.readouterr().out


def test_sweep_command_writes_table_and_plots(tmp_path, capsys):
    out = tmp_path / "results"
    rc = main(["sim", "sweep", "--model", "qwen2.5-7b", "--chips", "2", "--trace", CONV, "--duration", "20",
               "--policies", "static-coloc,static-disagg,dynamic", "--rates", "1,2", "--out", str(out),
               "--no-progress"])
    assert rc == 0
    data = json.loads((out / "results.json").read_text())
    assert {(r["policy"], r["rate_scale"]) for r in data["runs"]} == {
        (p, r) for p in ("static-coloc", "static-disagg", "dynamic") for r in (1.0, 2.0)}
    for name in ("ttft_cdf.png", "tpot_cdf.png", "attainment_vs_rate.png", "throughput.png"):
        assert (out / name).stat().st_size > 1000
    assert "| dynamic | x2 |" in (out / "results.md").read_text()
    assert "| static-coloc | x1 |" in capsys.readouterr().out


def test_markdown_table_handles_missing_values():
    text = markdown_table([{"policy": "fifo", "rate_scale": 1.0, "ttft_p50_s": None}])
    assert "| fifo | x1 | n/a |" in text


def test_results_script_smoke(tmp_path):
    """perf/pd_results.py --smoke: every part through the same code as the full run, in seconds."""
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "perf", "pd_results.py")
    spec = importlib.util.spec_from_file_location("pd_results", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--smoke", "--out", str(tmp_path), "--no-plots"]) == 0
    data = json.loads((tmp_path / "pd_results.json").read_text())
    assert {"qwen", "deepseek", "ablation", "speed"} <= set(data)
    row = data["qwen"]["poisson"][0]
    assert {"ttft_p50_cut", "throughput_change", "tpot_p50_change", "goal_met"} <= set(row)
    assert any(k.startswith("dynamic on conv") for k in data["deepseek"]["goodput"])
    assert "## Simulator speed" in (tmp_path / "pd_summary.md").read_text()
