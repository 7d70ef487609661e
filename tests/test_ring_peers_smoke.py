"""Smoke test of the ring benchmark (perf/ring_peers.py --quick).

A behaviour check, never a speed assertion: the script builds its C floors, runs every experiment,
prints exactly one JSON object on stdout with every expected figure present, positive and finite,
and leaves no shared-memory segment, message queue or child process behind.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "perf" / "ring_peers.py"
PEERS = ("pipe", "queue", "posix_mq", "sysv_mq", "socketpair")
FLOOR_KEYS = ("cacheline_rtt_ns", "futex_rtt_ns")
OURS_KEYS = (
    "rtt_spin_ns",
    "rtt_spin_poll_ns",
    "rtt_parked_ns",
    "push_ns",
    "push_local_ns",
    "python_call_floor_ns",
    "batch_rps",
    "batch_pop_into_rps",
    "oneway_rps",
)
PEER_KEYS = ("rtt_ns", "oneway_rps", "ours_rtt_spin_ns", "ours_oneway_rps")
RATIO_KEYS = ("rtt_vs_ours_spin", "rtt_vs_ours_parked", "ours_oneway_vs_peer", "ours_batch_vs_peer")
GOAL_KEYS = (
    "rtt_spin_vs_cacheline_floor",
    "best_peer_rtt_vs_rtt_spin",
    "push_ns",
    "batch_mrps",
    "rtt_parked_vs_futex_floor",
)


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _series_ok(s) -> bool:
    return (isinstance(s, dict) and all(_positive(s[k]) for k in ("median", "min", "max"))
            and s["reps"] and all(_positive(x) for x in s["reps"]))


def _sysv_keys() -> set[int]:
    try:
        lines = Path("/proc/sysvipc/msg").read_text().splitlines()[1:]
    except OSError:
        return set()
    return {int(ln.split()[0]) for ln in lines if ln.strip()}


def _posix_mq_exists(name: str) -> bool:
    posix_ipc = pytest.importorskip("posix_ipc")
    try:
        posix_ipc.MessageQueue(name).close()
    except posix_ipc.ExistentialError:
        return False
    return True


@pytest.mark.slow
def test_ring_peers_quick_prints_every_figure(tmp_path):
    if not (os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")):
        pytest.skip("no C compiler to build the floor programs")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--quick"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, f"ring_peers.py --quick failed ({proc.returncode}):\n{err}"
    res = json.loads(out)  # exactly one JSON object on stdout

    m = res["machine"]
    assert isinstance(m["cpu_model"], str) and m["cpu_model"]
    assert _positive(m["cores"]) and isinstance(m["kernel"], str) and isinstance(m["python"], str)
    assert isinstance(m["pinned"], bool)
    assert m["pinned"] == (len(os.sched_getaffinity(0)) >= 2)

    for k in FLOOR_KEYS:
        assert _series_ok(res["floor"][k]), k
    for k in OURS_KEYS:
        assert _series_ok(res["ours"][k]), k
    assert set(res["peers"]) == set(PEERS)
    for kind in PEERS:
        for k in PEER_KEYS:
            assert _series_ok(res["peers"][kind][k]), (kind, k)
        for k in RATIO_KEYS:
            assert _positive(res["ratios_peer_to_ours"][kind][k]), (kind, k)
    for k in GOAL_KEYS:
        g = res["goals"][k]
        assert _positive(g["value"]), k
        assert isinstance(g["met"], bool), k
    assert all(_positive(x) for v in res["rounds"].values() for x in v)
    probes = res["noise"]["floor_probes"]
    assert probes and all(_positive(pr["rtt_ns"]) for pr in probes)
    assert isinstance(res["noise"]["placement_changed"], bool)
    for k in ("push_ns", "batch_rps", "oneway_rps"):
        assert all(_positive(x) for x in res["ours"][k]["floor_probe_ns"]), k
    assert _positive(res["elapsed_s"])

    # Nothing left behind: the script's own accounting, then what the system itself shows.
    assert res["leftovers"] == []
    created = res["resources_created"]
    assert created["shm"] and created["posix_mq"] and created["sysv_mq"]
    assert not [e for e in os.listdir("/dev/shm") if e.startswith(f"flexnpubench-{os.getuid()}-{proc.pid}-")]
    assert not [n for n in created["shm"] if os.path.exists("/dev/shm" + n)]
    assert not [n for n in created["posix_mq"] if _posix_mq_exists(n)]
    assert not set(created["sysv_mq"]) & _sysv_keys()
