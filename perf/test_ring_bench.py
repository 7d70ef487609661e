"""pytest-benchmark microbenchmarks of the shared-memory ring (``pytest perf/``; not in the default run).

* one ``push`` from Python while a consumer process drains the ring (the cache lines cross cores);
* ``push_many`` + ``pop_many`` of 256 records in one process (the batched path, no crossing);
* ``pop`` and ``pop_many`` of an empty ring (what a polling consumer pays when idle).

The side-by-side comparison with the floor and the other IPC mechanisms is ``perf/ring_peers.py``.
Rings get the benchmark's own segment names (see ring_peers.SEG_PREFIX) and are closed and unlinked
by the fixtures; the consumer child is joined (or killed) before the test returns.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ring_peers import (  # perf/ is not a package: import by path
    BATCH,
    DEFAULT_SPIN_NS,
    REC,
    RECORD_DTYPE,
    RING_CAPACITY,
    Children,
    leftovers,
    new_ring,
)

from flexnpu.errors import RingClosed


def drain_until_closed(ring, spin_ns: int) -> None:
    """Child: pop everything until the owner closes the ring."""
    ring.spin_ns = spin_ns
    try:
        pop_many = ring.pop_many
        while True:
            pop_many(RING_CAPACITY, None)
    except RingClosed:
        pass
    finally:
        ring.close()


def _cpus():
    usable = sorted(os.sched_getaffinity(0))
    return (usable[0], usable[1]) if len(usable) >= 2 else None


@pytest.fixture
def ring():
    r = new_ring()
    try:
        yield r
    finally:
        r.close()
        r.unlink()
    assert not leftovers()


@pytest.fixture
def live_consumer_ring():
    """A ring drained by a consumer process pinned to another core (this process on the first)."""
    cpus = _cpus()
    saved = os.sched_getaffinity(0)
    r = new_ring()
    try:
        with Children(mp.get_context("spawn"), cpus[1] if cpus else None) as kids:
            if cpus:
                os.sched_setaffinity(0, {cpus[0]})
            kids.start(drain_until_closed, r, DEFAULT_SPIN_NS)
            r.push(REC)
            deadline = time.monotonic() + 30
            while len(r):  # the consumer is attached and draining before the clock starts
                assert time.monotonic() < deadline, "the consumer process did not start draining"
                time.sleep(0.005)
            try:
                yield r
            finally:
                r.close()  # the owner's close wakes the child, whose pop raises RingClosed
                kids.join_ok(timeout=10)
    finally:
        os.sched_setaffinity(0, saved)
        r.close()
        r.unlink()
    assert not leftovers()


def test_push_live_consumer(benchmark, live_consumer_ring):
    """ns per Ring.push(64 bytes) from Python; a consumer process drains (goal: < 100 ns)."""
    benchmark.extra_info["records_per_call"] = 1
    benchmark(live_consumer_ring.push, REC)


def test_push_many_pop_many_256(benchmark, ring):
    """One push_many of 256 records and one pop_many of 256, same process (divide by 256 per record)."""
    batch = np.zeros(BATCH, dtype=RECORD_DTYPE)
    batch["args"][:, 0] = np.arange(BATCH)
    push_many, pop_many = ring.push_many, ring.pop_many

    def step():
        push_many(batch)
        return pop_many(BATCH)

    benchmark.extra_info["records_per_call"] = BATCH
    out = benchmark(step)
    assert len(out) == BATCH and out["args"][-1, 0] == BATCH - 1


def test_push_many_pop_into_256(benchmark, ring):
    """As above, popping into a preallocated array (no numpy allocation per call)."""
    batch = np.zeros(BATCH, dtype=RECORD_DTYPE)
    buf = np.empty(BATCH, dtype=RECORD_DTYPE)
    push_many, pop_into = ring.push_many, ring.pop_into

    def step():
        push_many(batch)
        return pop_into(buf)

    benchmark.extra_info["records_per_call"] = BATCH
    assert benchmark(step) == BATCH


def test_pop_empty(benchmark, ring):
    """Ring.pop() of an empty ring (timeout 0): returns None."""
    assert benchmark(ring.pop) is None


def test_pop_many_empty(benchmark, ring):
    """Ring.pop_many(256) of an empty ring (timeout 0): an empty array."""
    assert len(benchmark(ring.pop_many, BATCH)) == 0
