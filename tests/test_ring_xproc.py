"""The ring across processes (spawn): a million records from 4 producer threads, a producer
killed mid-stream, a consumer killed while a producer waits, doorbell wake-ups, and `shm gc`."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time

import numpy as np
import pytest

from flexnpu import shm
from flexnpu.errors import RingClosed
from flexnpu.ring import RECORD_DTYPE, Doorbell, Ring

CTX = mp.get_context("spawn")
PRODUCERS = 4
TOTAL = 1_000_000


def _produce(ring: Ring, producer_id: int, count: int, seed: int) -> None:
    """Push `count` records with stream=producer_id and seq=0..count-1 in random batch sizes.

    Batches above 64 records are pushed with the GIL released (see Ring.push_many), so the four
    threads really push concurrently; a few single pushes mix in the other path.
    """
    rng = np.random.default_rng(seed)
    seq = 0
    while seq < count:
        n = int(min(count - seq, rng.integers(65, 400)))
        if rng.random() < 0.05:
            n = 1
        batch = np.zeros(n, RECORD_DTYPE)
        batch["stream"] = producer_id
        batch["args"][:, 1] = np.arange(seq, seq + n)  # this producer's own numbering
        batch["args"][:, 0] = batch["args"][:, 1] * 7 + producer_id  # a checksum word
        if n == 1:
            ring.push(batch[0])
        else:
            assert ring.push_many(batch) == n
        seq += n


def producer_process(ring: Ring, per_thread: int) -> None:
    threads = [threading.Thread(target=_produce, args=(ring, p, per_thread, p)) for p in range(PRODUCERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ring.close()


def test_million_records_four_threads_no_loss_no_duplicate_in_order():
    per_thread = TOTAL // PRODUCERS
    with Ring.create(capacity=4096) as ring:
        proc = CTX.Process(target=producer_process, args=(ring, per_thread))
        proc.start()
        try:
            next_seq = np.zeros(PRODUCERS, np.int64)
            received = 0
            deadline = time.monotonic() + 120
            while received < TOTAL:
                assert time.monotonic() < deadline, f"only {received} records after 120 s"
                batch = ring.pop_many(4096, timeout=1.0)
                if not len(batch):
                    assert proc.is_alive() or ring.pop_many(1).size, "producer died early"
                    continue
                assert np.all(batch["args"][:, 0] == batch["args"][:, 1] * 7 + batch["stream"]), "corrupt record"
                assert np.all(np.diff(batch["seq"].astype(np.int64)) == 1), "ring seqs must be consecutive"
                for p in range(PRODUCERS):
                    mine = batch["args"][:, 1][batch["stream"] == p]
                    expected = np.arange(next_seq[p], next_seq[p] + len(mine))
                    assert np.array_equal(mine, expected), f"producer {p}: order broken or record lost"
                    next_seq[p] += len(mine)
                assert np.all(batch["stream"] < PRODUCERS)
                received += len(batch)
            assert list(next_seq) == [per_thread] * PRODUCERS
            assert len(ring.pop_many(10, timeout=0.1)) == 0  # no duplicates trailing
        finally:
            proc.join(30)
        assert proc.exitcode == 0


def endless_producer(ring: Ring, ready) -> None:
    ready.set()
    seq = 0
    while True:
        batch = np.zeros(64, RECORD_DTYPE)
        batch["args"][:, 0] = np.arange(seq, seq + 64)
        seq += ring.push_many(batch, timeout=None)


def test_producer_killed_mid_stream_consumer_drains_and_never_blocks():
    with Ring.create(capacity=1024) as ring:
        ready = CTX.Event()
        proc = CTX.Process(target=endless_producer, args=(ring, ready))
        proc.start()
        assert ready.wait(30)
        got = []
        t_end = time.monotonic() + 0.5
        while time.monotonic() < t_end:  # consume while it runs
            got.extend(ring.pop_many(1024, timeout=0.05)["args"][:, 0].tolist())
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        while True:  # drain what was published before the kill
            batch = ring.pop_many(1024, timeout=0.2)
            if not len(batch):
                break
            got.extend(batch["args"][:, 0].tolist())
        assert got == list(range(len(got))), "records lost or reordered"
        assert len(got) > 0
        t0 = time.monotonic()
        assert len(ring.pop_many(16, timeout=0.3)) == 0
        assert time.monotonic() - t0 < 3.0, "consumer blocked past its timeout"
    assert not os.path.exists("/dev/shm" + ring.name)


def test_claimed_but_unpublished_slot_never_blocks_the_consumer():
    """Simulates a producer killed between claiming a slot and publishing it."""
    with Ring.create(capacity=8) as ring:
        ring.push(np.zeros(1, RECORD_DTYPE)[0])
        # bump `tail` (line 1 of the header, offset 128) as a claim would, without publishing
        path = "/dev/shm" + ring.name
        with open(path, "r+b") as f:
            f.seek(128)
            tail = int.from_bytes(f.read(8), "little")
            f.seek(128)
            f.write((tail + 1).to_bytes(8, "little"))
        other = Ring.attach(ring.name)
        try:
            other.push(np.ones(1, RECORD_DTYPE)[0])  # claimed after the dead slot
        finally:
            other.close()
        assert len(ring.pop_many(8)) == 1  # the record before the dead slot
        t0 = time.monotonic()
        assert len(ring.pop_many(8, timeout=0.2)) == 0
        assert time.monotonic() - t0 < 3.0
    assert not os.path.exists("/dev/shm" + ring.name)


def consume_once_then_sleep(ring: Ring, ready) -> None:
    ring.pop_many(1)  # registers this process as the ring's consumer
    ready.set()
    time.sleep(600)


def test_consumer_killed_blocked_producer_returns():
    with Ring.create(capacity=4) as ring:
        ready = CTX.Event()
        proc = CTX.Process(target=consume_once_then_sleep, args=(ring, ready))
        proc.start()
        assert ready.wait(30)
        for _i in range(4):
            ring.push(np.zeros(1, RECORD_DTYPE)[0])
        threading.Timer(0.2, os.kill, args=(proc.pid, signal.SIGKILL)).start()
        t0 = time.monotonic()
        with pytest.raises(RingClosed, match="died"):
            ring.push(np.zeros(1, RECORD_DTYPE)[0], timeout=None)
        assert time.monotonic() - t0 < 10
        proc.join(10)


def push_after(name: str, delay: float, pushed_at) -> None:
    ring = Ring.attach(name)
    time.sleep(delay)
    pushed_at.value = time.monotonic()
    ring.push(np.zeros(1, RECORD_DTYPE)[0])
    ring.close()


def test_consumer_parked_on_doorbell_is_woken_promptly_by_another_process():
    with Doorbell.create() as db, Ring.create(capacity=16) as a, Ring.create(capacity=16) as b:
        for r in (a, b):
            r.bind_doorbell(db)
            r.spin_ns = 0  # park at once
        pushed_at = CTX.Value("d", 0.0)
        proc = CTX.Process(target=push_after, args=(b.name, 0.5, pushed_at))
        proc.start()
        try:
            assert db.wait([a, b], timeout=30) is True
            woke = time.monotonic()
            assert len(b.pop_many(4)) == 1
            assert pushed_at.value > 0
            assert woke - pushed_at.value < 1.0, "parked consumer was not woken promptly"
        finally:
            proc.join(30)
        assert proc.exitcode == 0


def create_and_abandon(conn) -> None:
    ring = Ring.create(capacity=4)
    conn.send(ring.name)  # a Pipe sends synchronously (a Queue's feeder thread would die with us)
    os._exit(0)  # dies without closing or unlinking


def test_shm_gc_removes_only_dead_owners_segments():
    receiver, sender = CTX.Pipe(duplex=False)
    proc = CTX.Process(target=create_and_abandon, args=(sender,))
    proc.start()
    assert receiver.poll(30)
    abandoned = receiver.recv()
    proc.join(30)
    receiver.close()
    sender.close()
    with Ring.create(capacity=4) as mine:
        names = [s.name for s in shm.gc(dry_run=True)]
        assert abandoned in names and mine.name not in names
        removed = [s.name for s in shm.gc()]
        assert abandoned in removed
        assert not os.path.exists("/dev/shm" + abandoned)
        assert os.path.exists("/dev/shm" + mine.name)
