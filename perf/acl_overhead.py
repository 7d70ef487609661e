"""What FlexNPU's interposition costs an application, measured side by side with --direct.

Prints one JSON object:
- client-side cost of one asynchronous launch (acl.op.execute_v2 of a small Add), through the
  daemon vs --direct (the in-process emulated device, no daemon, no rings): medians over blocks;
- launches per second from one client, sustained (launches, then a synchronize);
- round trip of one synchronous request to the daemon (acl runtime ping), spinning;
- qwen_tiny decode tokens/s and TTFT through FlexNPU vs --direct, runs alternated (ABAB...) so
  that drifts of a shared machine hit both alike; medians and their ratio.

    python perf/acl_overhead.py [--quick] [--runs 5] [--tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
LAUNCH_PROBE = r"""
import json, os, statistics, sys, time
from flexnpu.acl._select import make_runtime
from flexnpu.acl._api import bind
acl = bind(make_runtime())
assert acl.init() == 0 and acl.rt.set_device(0) == 0
stream, _ = acl.rt.create_stream()
ptrs = [acl.rt.malloc(64, 0)[0] for _ in range(3)]
desc = acl.create_tensor_desc(0, [16], 2)
bufs = [acl.create_data_buffer(p, 64) for p in ptrs]
ex, ins, outs = acl.op.execute_v2, bufs[:2], bufs[2:]
blocks, per_block = int(sys.argv[1]), int(sys.argv[2])
call_us, sustained = [], []
for b in range(blocks + 2):
    t0 = time.perf_counter()
    for _ in range(per_block):
        ex("Add", [desc, desc], ins, [desc], outs, 0, stream)
    t1 = time.perf_counter()
    assert acl.rt.synchronize_stream(stream) == 0
    t2 = time.perf_counter()
    if b >= 2:  # two warm-up blocks
        call_us.append((t1 - t0) / per_block * 1e6)
        sustained.append(per_block / (t2 - t0))
ping_us = None
if hasattr(acl.runtime, "ping"):
    n = per_block
    for _ in range(100):
        acl.runtime.ping()
    t0 = time.perf_counter()
    for _ in range(n):
        acl.runtime.ping()
    ping_us = (time.perf_counter() - t0) / n * 1e6
acl.finalize()
print(json.dumps({"launch_us_median": statistics.median(call_us), "launch_us_min": min(call_us),
                  "launches_per_s_median": statistics.median(sustained), "ping_rtt_us": ping_us}))
"""


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()}


def child_env(mode: str, runtime_dir: str) -> dict:
    """What `flexnpu run [--direct]` gives a program (import acl -> flexnpu.acl)."""
    from flexnpu.commands.run import preload_dir

    env = dict(os.environ)
    env.update(FLEXNPU_MODE=mode, FLEXNPU_RUNTIME_DIR=runtime_dir, FLEXNPU_MEMORY=str(1 << 30),
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [preload_dir(), os.environ.get("PYTHONPATH")])))
    return env


def run_json(cmd: list[str], env: dict) -> dict:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds: a smoke run for CI")
    parser.add_argument("--runs", type=int, default=5, help="qwen_tiny runs per mode (alternated)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per qwen_tiny run")
    args = parser.parse_args()
    blocks, per_block = (3, 500) if args.quick else (15, 2000)
    runs, tokens = (1, 8) if args.quick else (args.runs, args.tokens)

    from flexnpu import daemon_process

    result: dict = {"machine": machine(), "quick": args.quick}
    with tempfile.TemporaryDirectory(prefix="flexnpu-bench-") as runtime_dir:
        os.environ["FLEXNPU_RUNTIME_DIR"] = runtime_dir
        daemon = daemon_process.spawn(0, "emulated", 1 << 30)
        try:
            launch = {}
            for mode in ("direct", "daemon", "direct", "daemon"):  # alternated; keep each mode's better
                r = run_json([sys.executable, "-c", LAUNCH_PROBE, str(blocks), str(per_block)],
                             child_env(mode, runtime_dir))
                if mode not in launch or r["launch_us_median"] < launch[mode]["launch_us_median"]:
                    launch[mode] = r
            result["launch"] = launch
            result["launch_added_us_median"] = (launch["daemon"]["launch_us_median"]
                                                - launch["direct"]["launch_us_median"])
            result["ping_rtt_us"] = launch["daemon"]["ping_rtt_us"]
            qwen = {"direct": [], "daemon": []}
            cmd = [sys.executable, "-m", "flexnpu.examples.qwen_tiny", "--tokens", str(tokens), "--json"]
            for _ in range(runs):
                for mode in ("direct", "daemon"):
                    qwen[mode].append(run_json(cmd, child_env(mode, runtime_dir)))
            summary = {}
            for mode, rs in qwen.items():
                summary[mode] = {
                    "decode_tokens_per_s_median": statistics.median(r["decode_tokens_per_s"] for r in rs),
                    "ttft_ms_median": statistics.median(r["ttft_s"] for r in rs) * 1e3,
                    "runs": [round(r["decode_tokens_per_s"], 1) for r in rs],
                }
            same_tokens = all(r["tokens"] == qwen["direct"][0]["tokens"] for rs in qwen.values() for r in rs)
            result["qwen_tiny"] = {
                **summary,
                "tokens": tokens,
                "same_tokens": same_tokens,
                "daemon_over_direct_decode": summary["daemon"]["decode_tokens_per_s_median"]
                / summary["direct"]["decode_tokens_per_s_median"],
            }
        finally:
            daemon_process.stop(0, daemon)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
