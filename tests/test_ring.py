"""Semantics of the shared-memory ring in one process: empty, full, wrap-around, order, timeouts,
validation on attach, lifecycle, doorbells; plus a property test against a plain-Python model."""

from __future__ import annotations

import os
import struct
import threading
import time
from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexnpu import shm
from flexnpu.errors import FlexNPUError, RingClosed, RingCorrupt, RingFull
from flexnpu.ring import RECORD_DTYPE, RECORD_SIZE, Doorbell, Ring, Segment


def rec(i: int, stream: int = 0) -> bytes:
    """A 64-byte record carrying i in args[0] (its seq field belongs to the ring)."""
    return struct.pack("<HBBIQ6Q", 1, 0, 0, stream, 0, i, 0, 0, 0, 0, 0)


def seqs(arr: np.ndarray) -> list[int]:
    """The payload numbers (args[0]) of popped records."""
    return arr["args"][:, 0].tolist()


def numbered(values) -> np.ndarray:
    """Records carrying `values` in args[0]."""
    values = np.asarray(values)
    arr = np.zeros(len(values), RECORD_DTYPE)
    arr["args"][:, 0] = values
    return arr


@pytest.fixture
def ring():
    with Ring.create(capacity=8) as r:
        yield r


def test_record_layout_is_64_bytes():
    assert RECORD_SIZE == 64
    assert RECORD_DTYPE.itemsize == 64
    assert [RECORD_DTYPE.fields[f][1] for f in ("opcode", "flags", "phase", "stream", "seq", "args")] == [
        0, 2, 3, 4, 8, 16]


def test_empty_ring_pops_nothing(ring):
    out = ring.pop_many(16)
    assert out.dtype == RECORD_DTYPE and len(out) == 0
    assert ring.pop() is None
    assert len(ring) == 0


def test_fill_to_capacity_then_full(ring):
    for i in range(ring.capacity):
        ring.push(rec(i), timeout=0)
    assert len(ring) == ring.capacity
    with pytest.raises(RingFull):
        ring.push(rec(99), timeout=0)
    assert seqs(ring.pop_many(100)) == list(range(ring.capacity))
    ring.push(rec(100), timeout=0)  # space again
    assert seqs(ring.pop_many(1)) == [100]


def test_wraps_around_many_times_in_order(ring):
    expected = deque()
    nxt = 0
    for lap in range(500):
        for _ in range(min(lap % 5 + 1, ring.capacity - len(expected))):
            ring.push(rec(nxt), timeout=0)
            expected.append(nxt)
            nxt += 1
        got = seqs(ring.pop_many(lap % 4 + 1))
        assert got == [expected.popleft() for _ in got]
    assert seqs(ring.pop_many(ring.capacity)) == list(expected)


def test_seq_field_is_the_ring_position(ring):
    """The ring owns each record's seq field: position in the ring's total order + 1."""
    for lap in range(5):
        ring.push(struct.pack("<HBBIQ6Q", 1, 0, 0, 0, 12345, lap, 0, 0, 0, 0, 0))
        ring.push_many(numbered([lap, lap]))
        out = ring.pop_many(8)
        assert out["seq"].tolist() == [3 * lap + 1, 3 * lap + 2, 3 * lap + 3]
        assert seqs(out) == [lap, lap, lap]


def test_push_accepts_any_64_byte_buffer(ring):
    ring.push(numbered([7])[0])
    ring.push(bytearray(rec(8)))
    ring.push(memoryview(rec(9)))
    assert seqs(ring.pop_many(3)) == [7, 8, 9]
    with pytest.raises(ValueError, match="64 bytes"):
        ring.push(b"x" * 63)
    with pytest.raises(TypeError):
        ring.push(12345)


def test_push_many_forms_and_partial_push(ring):
    assert ring.push_many(numbered(range(5))) == 5
    raw = np.frombuffer(b"".join(rec(i) for i in (5, 6)), np.uint8).reshape(2, 64)
    assert ring.push_many(raw) == 2
    # one slot left: timeout=0 pushes what fits
    assert ring.push_many(b"".join(rec(i) for i in (7, 8, 9)), timeout=0) == 1
    assert seqs(ring.pop_many(100)) == list(range(8))
    with pytest.raises(ValueError, match="whole number"):
        ring.push_many(b"x" * 65)
    assert ring.push_many(np.zeros(0, RECORD_DTYPE)) == 0


def test_push_many_non_contiguous_input(ring):
    assert ring.push_many(numbered(range(6))[::2]) == 3
    assert seqs(ring.pop_many(8)) == [0, 2, 4]


def test_pop_into_buffer(ring):
    for i in range(5):
        ring.push(rec(i))
    out = np.zeros(3, RECORD_DTYPE)
    assert ring.pop_into(out) == 3
    assert seqs(out) == [0, 1, 2]
    with pytest.raises(BufferError, match="not writable"):
        ring.pop_into(b"read-only" * 64)


def test_blocking_push_times_out(ring):
    for i in range(ring.capacity):
        ring.push(rec(i))
    t0 = time.monotonic()
    with pytest.raises(RingFull):
        ring.push(rec(0), timeout=0.2)
    assert time.monotonic() - t0 >= 0.19


def test_blocking_pop_times_out_and_returns_empty(ring):
    ring.spin_ns = 0
    t0 = time.monotonic()
    assert len(ring.pop_many(4, timeout=0.2)) == 0
    assert ring.pop(timeout=0.05) is None
    assert time.monotonic() - t0 >= 0.24


def test_blocked_pop_is_woken_by_a_push(ring):
    ring.spin_ns = 0
    threading.Timer(0.05, ring.push, args=(rec(42),)).start()
    t0 = time.monotonic()
    out = ring.pop_many(4, timeout=10)
    assert seqs(out) == [42]
    assert time.monotonic() - t0 < 5


def test_blocked_push_resumes_when_space_frees(ring):
    for i in range(ring.capacity):
        ring.push(rec(i))
    threading.Timer(0.05, ring.pop_many, args=(2,)).start()
    ring.push(rec(100), timeout=10)
    assert seqs(ring.pop_many(100))[-1] == 100


def test_invalid_arguments():
    with pytest.raises(ValueError, match="power of two"):
        Ring.create(capacity=1000)
    with pytest.raises(ValueError, match="power of two"):
        Ring.create(capacity=1)
    with Ring.create(capacity=4) as r:
        with pytest.raises(ValueError, match="timeout"):
            r.pop_many(1, timeout=-1)
        with pytest.raises(ValueError, match="max_records"):
            r.pop_many(-1)


def test_attach_sees_the_same_ring(ring):
    other = Ring.attach(ring.name)
    try:
        assert other.capacity == ring.capacity and not other.owner and ring.owner
        other.push(rec(5))
        assert seqs(ring.pop_many(1)) == [5]
    finally:
        other.close()


def test_attach_missing_segment_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="no shared-memory segment"):
        Ring.attach("/flexnpu-0-1-ring-doesnotexist")


def _raw_segment(size: int, content: bytes = b"") -> Segment:
    seg = Segment.create("test", size)
    path = os.path.join("/dev/shm", seg.name.lstrip("/"))
    with open(path, "r+b") as f:
        f.write(content)
    return seg


@pytest.mark.parametrize(
    "size, content, message",
    [
        (4096, b"", "not a FlexNPU ring"),  # zero magic
        (4096, b"garbage!" * 16, "not a FlexNPU ring"),
        (100, b"", "truncated"),
    ],
)
def test_attach_wrong_or_truncated_segment(size, content, message):
    seg = _raw_segment(size, content)
    try:
        with pytest.raises(RingCorrupt, match=message):
            Ring.attach(seg.name)
    finally:
        seg.close()
        seg.unlink()


def test_attach_detects_tampered_header(ring):
    path = os.path.join("/dev/shm", ring.name.lstrip("/"))
    with open(path, "rb") as f:
        original = f.read(16)
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<I", 99))  # version
    with pytest.raises(RingCorrupt, match="incompatible FlexNPU version"):
        Ring.attach(ring.name)
    with open(path, "r+b") as f:
        f.write(original)
    with open(path, "r+b") as f:
        f.seek(16)
        f.write(struct.pack("<Q", 12))  # capacity, not a power of two
    with pytest.raises(RingCorrupt, match="invalid capacity"):
        Ring.attach(ring.name)


def test_close_and_unlink_are_idempotent():
    r = Ring.create(capacity=4)
    name = r.name
    r.close()
    r.close()
    assert r.closed
    r.unlink()
    r.unlink()
    assert not os.path.exists("/dev/shm" + name)


def test_use_after_close_is_a_clear_error():
    r = Ring.create(capacity=4)
    r.close()
    r.unlink()
    for call in (lambda: r.push(rec(1)), lambda: r.pop_many(1), lambda: r.pop(), lambda: len(r)):
        with pytest.raises(RingClosed, match="closed"):
            call()


def test_only_the_creator_unlinks(ring):
    other = Ring.attach(ring.name)
    try:
        with pytest.raises(FlexNPUError, match="only the process that created"):
            other.unlink()
    finally:
        other.close()
    assert os.path.exists("/dev/shm" + ring.name)


def test_owner_close_is_seen_by_attached_views(ring):
    other = Ring.attach(ring.name)
    try:
        ring.close()
        with pytest.raises(RingClosed, match="closed by its owner"):
            other.push(rec(1))
    finally:
        other.close()


def test_owner_close_wakes_a_blocked_producer():
    r = Ring.create(capacity=2)
    other = Ring.attach(r.name)
    try:
        other.push(rec(0))
        other.push(rec(1))
        errors = []

        def blocked_push():
            try:
                other.push(rec(2), timeout=30)
            except RingClosed as exc:
                errors.append(exc)

        t = threading.Thread(target=blocked_push)
        t.start()
        time.sleep(0.1)
        r.close()
        t.join(5)
        assert not t.is_alive() and errors
    finally:
        other.close()
        r.unlink()


def test_local_close_waits_for_and_wakes_its_own_waiter():
    r = Ring.create(capacity=4)
    r.spin_ns = 0
    results = []
    t = threading.Thread(target=lambda: results.append(_pop_or_closed(r)))
    t.start()
    time.sleep(0.1)
    r.close()  # must not unmap under the waiting thread
    t.join(5)
    assert results == ["closed"]
    r.unlink()


def _pop_or_closed(r):
    try:
        return r.pop_many(1, timeout=30)
    except RingClosed:
        return "closed"


def test_doorbell_wakes_consumer_of_many_rings():
    with Doorbell.create() as db, Ring.create(capacity=4) as a, Ring.create(capacity=4) as b:
        a.bind_doorbell(db)
        b.bind_doorbell(db)
        a.spin_ns = b.spin_ns = 0
        assert db.wait([a, b], timeout=0.05) is False
        producer = Ring.attach(b.name)  # picks up the binding from the segment
        try:
            threading.Timer(0.05, producer.push, args=(rec(3),)).start()
            assert db.wait([a, b], timeout=10) is True
            assert len(a.pop_many(4)) == 0
            assert seqs(b.pop_many(4)) == [3]
        finally:
            time.sleep(0.01)
            producer.close()


def test_doorbell_wait_rejects_unbound_ring():
    with Doorbell.create() as db, Ring.create(capacity=4) as r, pytest.raises(ValueError, match="not bound"):
        db.wait([r], timeout=0)


def test_ring_pickles_as_attach(ring):
    import pickle

    other = pickle.loads(pickle.dumps(ring))
    try:
        assert other.name == ring.name and not other.owner
    finally:
        other.close()


def test_segment_names_and_permissions(ring):
    st_ = os.stat("/dev/shm" + ring.name)
    assert st_.st_mode & 0o777 == 0o600
    info = [s for s in shm.list_segments(os.getuid()) if s.name == ring.name]
    assert info and info[0].owner_pid == os.getpid() and info[0].kind == "ring"
    with pytest.raises(FileExistsError):
        Ring.create(name=ring.name)


# ---- property test: the ring against a plain-Python model -----------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(1, 20)),
        st.tuples(st.just("pop"), st.integers(0, 20)),
        st.tuples(st.just("push1"), st.just(1)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(capacity_log2=st.integers(1, 4), script=ops)
def test_ring_matches_model(capacity_log2, script):
    capacity = 1 << capacity_log2
    model: deque[int] = deque()
    nxt = 0
    with Ring.create(capacity=capacity) as r:
        for op, k in script:
            if op == "push":
                n = r.push_many(numbered(range(nxt, nxt + k)), timeout=0)
                assert n == min(k, capacity - len(model))
                model.extend(range(nxt, nxt + n))
                nxt += k
            elif op == "push1":
                if len(model) == capacity:
                    with pytest.raises(RingFull):
                        r.push(rec(nxt), timeout=0)
                else:
                    r.push(rec(nxt), timeout=0)
                    model.append(nxt)
                nxt += 1
            else:
                expected = [model.popleft() for _ in range(min(k, len(model)))]
                assert seqs(r.pop_many(k)) == expected
            assert len(r) == len(model)
