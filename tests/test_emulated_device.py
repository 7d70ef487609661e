"""The emulated device: memory accounting and bounds, streams, sticky errors, events, pacing."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from device_support import Recorder, raises
from flexnpu_daemon.backends import make_device
from flexnpu_daemon.backends.base import (
    CopyOnDevice,
    CopyToDevice,
    CopyToHost,
    HostFunc,
    LaunchOp,
    Memset,
    RecordEvent,
    ResetEvent,
    TensorArg,
    WaitEvent,
    acl_malloc_size,
)
from flexnpu_daemon.backends.emulated import BASE_ADDRESS, EmulatedDevice

from flexnpu.acl import constants as C

MiB = 1 << 20


@pytest.fixture
def dev():
    device = EmulatedDevice(memory_bytes=64 * MiB, workers=2)
    yield device
    device.close()


def blocker(dev, stream):
    """Occupy one executor thread on `stream` until the returned threading.Event is set."""
    gate = threading.Event()
    dev.submit(stream, HostFunc(lambda: gate.wait(5)))
    return gate


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# ---- memory ------------------------------------------------------------------------------------------


def test_malloc_sizes_follow_acl_rules(dev):
    assert acl_malloc_size(1) == 64 and acl_malloc_size(100) == 160 and acl_malloc_size(100, True) == 128
    a = dev.malloc(1)
    b = dev.malloc(100)
    c = dev.malloc(100, align32=True)
    assert a == BASE_ADDRESS != 0
    for addr in (a, b, c):
        assert addr % 64 == 0
    assert dev.allocation_of(b + 159) == (b, 160)  # usable: 100 -> 128 + 32
    raises(C.ACL_ERROR_INVALID_PARAM, dev.allocation_of, b + 160)
    assert dev.allocation_of(c + 127) == (c, 128)  # align32: no +32
    assert [dev.allocation_size(x) for x in (a, b, c)] == [64, 192, 128]
    free, total = dev.mem_info()
    assert total == 64 * MiB and free == total - 64 - 192 - 128
    for bad in (0, -5, 1.5):
        raises(C.ACL_ERROR_INVALID_PARAM, dev.malloc, bad)


def test_accounting_is_exact_and_blocks_never_overlap(dev):
    rng = np.random.default_rng(7)
    live = []
    for _ in range(600):
        if live and rng.random() < 0.45:
            dev.free(live.pop(rng.integers(len(live))))
        else:
            live.append(dev.malloc(int(rng.integers(1, 200_000)), align32=bool(rng.random() < 0.3)))
        free, total = dev.mem_info()
        assert free + sum(dev.live_allocations().values()) == total
    spans = sorted((a, a + dev.allocation_of(a)[1]) for a in live)
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:]))
    for addr in live:
        dev.free(addr)
    assert dev.mem_info() == (64 * MiB, 64 * MiB)
    assert dev.malloc(64 * MiB - 32) == BASE_ADDRESS  # everything coalesced back into one extent


def test_out_of_memory_and_coalescing():
    with EmulatedDevice(memory_bytes=4096, workers=1) as dev:
        blocks = [dev.malloc(1024 - 32) for _ in range(4)]  # four 1 KiB blocks fill the device
        raises(C.ACL_ERROR_RT_MEMORY_ALLOCATION, dev.malloc, 1)
        dev.free(blocks[1])
        dev.free(blocks[2])
        raises(C.ACL_ERROR_RT_MEMORY_ALLOCATION, dev.malloc, 2048)  # 2048 + 32 does not fit
        assert dev.malloc(2048 - 32) == blocks[1]  # the two freed neighbours merged
        raises(C.ACL_ERROR_RT_MEMORY_ALLOCATION, dev.malloc, 5000)


def test_free_of_a_non_allocation_is_invalid_param(dev):
    a = dev.malloc(256)
    raises(C.ACL_ERROR_INVALID_PARAM, dev.free, a + 64)  # interior pointer
    raises(C.ACL_ERROR_INVALID_PARAM, dev.free, 0)
    raises(C.ACL_ERROR_INVALID_PARAM, dev.free, BASE_ADDRESS + 32 * MiB)
    dev.free(a)
    raises(C.ACL_ERROR_INVALID_PARAM, dev.free, a)  # double free


def test_copies_inside_an_allocation_and_pointer_arithmetic(dev):
    a = dev.malloc(256)
    data = np.arange(64, dtype=np.float32)
    dev.write(a, data)
    dev.write(a + 16, b"\xff" * 4)  # pointer arithmetic inside the allocation
    back = np.empty(64, np.float32)
    dev.read_into(back, a)
    expected = data.copy()
    expected[4] = np.frombuffer(b"\xff" * 4, np.float32)[0]
    np.testing.assert_array_equal(back.view(np.uint32), expected.view(np.uint32))
    b = dev.malloc(256)
    dev.copy(b, a + 8, 64)
    dev.memset(b + 64, 0x1AB, 16)  # only the low byte counts
    out = bytearray(80)
    dev.read_into(out, b)
    assert bytes(out[:64]) == expected.tobytes()[8:72] and bytes(out[64:]) == b"\xab" * 16
    dev.copy(a + 4, a, 128)  # overlapping: like memmove
    dev.read_into(back, a)
    assert back[1:33].tobytes() == expected[:32].tobytes()


def test_out_of_bounds_accesses_fail_and_never_touch_a_neighbour(dev):
    a = dev.malloc(100)  # usable 160
    b = dev.malloc(100)
    assert b == a + 192
    dev.memset(b, 0x5A, 160)
    raises(C.ACL_ERROR_INVALID_PARAM, dev.write, a, b"x" * 161)
    raises(C.ACL_ERROR_INVALID_PARAM, dev.write, a + 150, b"x" * 11)
    raises(C.ACL_ERROR_INVALID_PARAM, dev.memset, a, 0, 192)
    raises(C.ACL_ERROR_INVALID_PARAM, dev.copy, a + 100, b, 61)
    raises(C.ACL_ERROR_INVALID_PARAM, dev.read_into, bytearray(200), a)
    raises(C.ACL_ERROR_INVALID_PARAM, dev.write, a + 160, b"x")  # the padding up to the next block
    raises(C.ACL_ERROR_INVALID_PARAM, dev.write, BASE_ADDRESS - 1, b"x")
    raises(C.ACL_ERROR_INVALID_PARAM, dev.write, BASE_ADDRESS + 64 * MiB, b"x")
    out = bytearray(160)
    dev.read_into(out, b)
    assert out == b"\x5a" * 160
    dev.free(b)
    raises(C.ACL_ERROR_INVALID_PARAM, dev.write, b, b"x")  # freed memory is no allocation


def test_a_16_gib_device_costs_only_the_pages_it_touches():
    before = rss_bytes()
    with EmulatedDevice() as dev:  # the default: 16 GiB
        assert dev.mem_info() == (16 * 2**30, 16 * 2**30)
        big = dev.malloc(12 * 2**30)
        dev.write(big + 11 * 2**30, b"end")
        dev.memset(big, 1, 64 * MiB)
        assert rss_bytes() - before < 200 * MiB
        touched = rss_bytes()
        dev.free(big)  # large freed blocks go back to the OS
        assert rss_bytes() < touched - 32 * MiB
        assert dev.malloc(16 * 2**30 - 32) == BASE_ADDRESS


# ---- operators through streams ---------------------------------------------------------------------


def tensor(addr, shape, dtype=C.ACL_FLOAT, nbytes=None, fmt=C.ACL_FORMAT_ND):
    size = int(np.prod(shape)) * 4 if nbytes is None else nbytes
    return TensorArg(dtype, fmt, tuple(shape), addr, size)


def test_launch_op_reads_and_writes_device_memory(dev):
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((3, 4)).astype(np.float32)
    x2 = rng.standard_normal((5, 4)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    a, b, c, y = (dev.malloc(arr.nbytes) for arr in (x1, x2, bias, np.empty((3, 5), np.float32)))
    for addr, arr in ((a, x1), (b, x2), (c, bias)):
        dev.write(addr, arr)
    s = dev.create_stream()
    rec = Recorder()
    op = LaunchOp(
        "MatMulV2",
        [tensor(a, (3, 4)), tensor(b, (5, 4)), tensor(c, (5,))],
        [tensor(y, (3, 5))],
        {"transpose_x2": True},
    )
    dev.submit(s, op, rec("mm"))
    absent = TensorArg(C.ACL_DT_UNDEFINED, C.ACL_FORMAT_ND, (), 0, 0)  # an omitted optional input
    dev.submit(
        s,
        LaunchOp(
            "MatMul",
            [tensor(a, (3, 4)), tensor(b, (5, 4)), absent],
            [tensor(y, (3, 5))],
            {"transpose_x2": True},
        ),
    )
    dev.submit(s, LaunchOp("Add", [tensor(y, (3, 5)), tensor(c, (5,))], [tensor(y, (3, 5))]))  # in place
    assert dev.synchronize_stream(s) == 0
    out = np.empty((3, 5), np.float32)
    dev.read_into(out, y)
    np.testing.assert_allclose(out, x1 @ x2.T + bias, rtol=1e-5, atol=1e-6)
    assert rec.calls == [("mm", 0)]


def test_launch_op_tensor_errors_are_sticky_codes(dev):
    a = dev.malloc(64)  # usable 96: room for 24 floats
    neighbour = dev.malloc(64)
    dev.memset(neighbour, 0x33, 96)
    s = dev.create_stream()
    cases = [
        (
            LaunchOp("Add", [tensor(a, (24,)), tensor(a, (24,))], [tensor(a, (25,))]),
            C.ACL_ERROR_INVALID_PARAM,
        ),
        (
            LaunchOp("Add", [tensor(a, (8,)), tensor(a, (8,))], [tensor(a, (8,), nbytes=16)]),
            C.ACL_ERROR_INVALID_PARAM,
        ),
        (
            LaunchOp(
                "Add", [tensor(a, (8,)), tensor(a, (8,))], [tensor(a, (8,), fmt=C.ACL_FORMAT_FRACTAL_NZ)]
            ),
            C.ACL_ERROR_FORMAT_NOT_MATCH,
        ),
        (
            LaunchOp("Add", [tensor(a, (8,), dtype=C.ACL_STRING)] * 2, [tensor(a, (8,))]),
            C.ACL_ERROR_UNSUPPORTED_DATA_TYPE,
        ),
        (LaunchOp("Frobnicate", [tensor(a, (8,))], [tensor(a, (8,))]), C.ACL_ERROR_OP_NOT_FOUND),
    ]
    for op, code in cases:
        dev.submit(s, op)
        assert dev.synchronize_stream(s) == code, op
    out = bytearray(96)
    dev.read_into(out, neighbour)
    assert out == b"\x33" * 96


# ---- streams -----------------------------------------------------------------------------------------


def test_commands_on_a_stream_run_in_order(dev):
    s = dev.create_stream()
    ran, rec = [], Recorder()
    for i in range(300):
        dev.submit(s, HostFunc(lambda i=i: ran.append(i)), rec(i))
    assert dev.synchronize_stream(s) == 0
    assert ran == list(range(300))
    assert rec.calls == [(i, 0) for i in range(300)]
    assert dev.stream_query(s)


def test_async_copies_in_stream_order(dev):
    a = dev.malloc(1024)
    s = dev.create_stream()
    out = bytearray(8)
    dev.submit(s, CopyToDevice(a, b"12345678"))
    dev.submit(s, Memset(a + 2, ord("x"), 2))
    dev.submit(s, CopyOnDevice(a + 512, a, 8))
    dev.submit(s, CopyToHost(out, a + 512))
    assert dev.synchronize_stream(s) == 0
    assert out == b"12xx5678"


def test_a_stream_waiting_on_an_event_does_not_block_other_streams(dev):
    held, waiting, free = dev.create_stream(), dev.create_stream(), dev.create_stream()
    ev = dev.create_event()
    gate = blocker(dev, held)  # one of the two executor threads is busy until the gate opens
    dev.submit(held, RecordEvent(ev))
    ran = []
    dev.submit(waiting, WaitEvent(ev))
    dev.submit(waiting, HostFunc(lambda: ran.append("waiter")))
    for i in range(50):  # the other thread must not be stuck on the wait
        dev.submit(free, HostFunc(lambda i=i: ran.append(i)))
    assert dev.synchronize_stream(free, timeout=2) == 0
    assert ran == list(range(50))
    assert not dev.stream_query(waiting) and not dev.event_query(ev)
    gate.set()
    assert dev.synchronize_stream(waiting, timeout=2) == 0
    assert ran[-1] == "waiter" and dev.event_query(ev)


def test_one_worker_serves_many_streams_while_one_is_parked():
    with EmulatedDevice(memory_bytes=MiB, workers=1) as dev:
        ev = dev.create_event()
        first, second, recorder = dev.create_stream(), dev.create_stream(), dev.create_stream()
        dev.submit(recorder, WaitEvent(ev))  # never recorded: passes at once
        dev.submit(recorder, RecordEvent(ev))
        order = []
        dev.submit(first, RecordEvent(ev))
        dev.submit(second, WaitEvent(ev))
        dev.submit(second, HostFunc(lambda: order.append("second")))
        assert dev.synchronize_device(timeout=2) == 0
        assert order == ["second"]


def test_a_wait_waits_for_the_latest_record_submitted_before_it(dev):
    a, b, c = dev.create_stream(), dev.create_stream(), dev.create_stream()
    ev = dev.create_event()
    dev.submit(a, RecordEvent(ev))
    assert dev.synchronize_stream(a) == 0
    gate = blocker(dev, c)
    dev.submit(c, RecordEvent(ev))  # a second record, held back by the gate
    dev.submit(b, WaitEvent(ev))  # must wait for the second record, not the first
    ran = []
    dev.submit(b, HostFunc(lambda: ran.append("b")))
    assert dev.synchronize_stream(b, timeout=0.1) == C.ACL_ERROR_RT_STREAM_SYNC_TIMEOUT
    assert ran == []
    gate.set()
    assert dev.synchronize_stream(b, timeout=2) == 0 and ran == ["b"]


def test_reset_event_lets_later_waits_pass(dev):
    a, b = dev.create_stream(), dev.create_stream()
    ev = dev.create_event()
    gate = blocker(dev, a)
    dev.submit(a, RecordEvent(ev))
    dev.submit(b, ResetEvent(ev))
    dev.submit(b, WaitEvent(ev))  # after the reset: nothing to wait for
    assert dev.synchronize_stream(b, timeout=2) == 0
    assert dev.event_query(ev)
    gate.set()
    assert dev.synchronize_device(timeout=2) == 0


def test_sticky_error_skips_later_commands_until_synchronize(dev):
    s, other = dev.create_stream(), dev.create_stream()
    a = dev.malloc(64)
    rec, ran = Recorder(), []
    dev.submit(s, HostFunc(lambda: ran.append("before")), rec("before"))
    dev.submit(s, CopyToDevice(a, b"x" * 200), rec("overflow"))  # fails: past the allocation
    dev.submit(s, HostFunc(lambda: ran.append("skipped")), rec("skipped"))
    dev.submit(s, LaunchOp("NoSuchOp", [], []), rec("also skipped"))
    dev.submit(other, HostFunc(lambda: ran.append("other")), rec("other"))
    assert dev.synchronize_stream(other) == 0
    assert dev.synchronize_stream(s) == C.ACL_ERROR_INVALID_PARAM
    assert sorted(ran) == ["before", "other"]
    bad = C.ACL_ERROR_INVALID_PARAM
    assert [c for c in rec.calls if c[0] != "other"] == [
        ("before", 0),
        ("overflow", bad),
        ("skipped", bad),
        ("also skipped", bad),
    ]
    assert dev.synchronize_stream(s) == 0  # reported once, then cleared
    dev.submit(s, HostFunc(lambda: ran.append("after")))
    assert dev.synchronize_stream(s) == 0 and ran[-1] == "after"


def test_synchronize_device_reports_the_first_error_and_clears_all(dev):
    s1, s2, s3 = dev.create_stream(), dev.create_stream(), dev.create_stream()
    dev.submit(s2, LaunchOp("NoSuchOp", [], []))
    dev.submit(s3, CopyToDevice(0, b"x"))
    dev.submit(s1, HostFunc(lambda: None))
    assert dev.synchronize_device() == C.ACL_ERROR_OP_NOT_FOUND
    assert [dev.synchronize_stream(s) for s in (s1, s2, s3)] == [0, 0, 0]
    assert dev.synchronize_device() == 0


def test_skipped_record_still_releases_waiters(dev):
    bad, waiter = dev.create_stream(), dev.create_stream()
    ev = dev.create_event()
    dev.submit(bad, LaunchOp("NoSuchOp", [], []))
    dev.submit(bad, RecordEvent(ev))
    dev.submit(waiter, WaitEvent(ev))
    assert dev.synchronize_stream(waiter, timeout=2) == 0
    assert dev.synchronize_stream(bad) == C.ACL_ERROR_OP_NOT_FOUND
    raises(C.ACL_ERROR_INVALID_PARAM, dev.event_elapsed_ms, ev, ev)  # no timestamp: it did not run


def test_event_timestamps_and_elapsed_time(dev):
    s = dev.create_stream()
    start, end, never = dev.create_event(), dev.create_event(), dev.create_event()
    dev.submit(s, RecordEvent(start))
    dev.submit(s, HostFunc(lambda: time.sleep(0.03)))
    dev.submit(s, RecordEvent(end))
    assert dev.synchronize_event(end, timeout=2) == 0
    elapsed = dev.event_elapsed_ms(start, end)
    assert 29 <= elapsed < 500
    assert dev.event_elapsed_ms(end, start) == pytest.approx(-elapsed)
    assert dev.event_query(never) and dev.synchronize_event(never, timeout=0) == 0
    raises(C.ACL_ERROR_INVALID_PARAM, dev.event_elapsed_ms, start, never)


def test_timeouts(dev):
    s, t = dev.create_stream(), dev.create_stream()
    ev = dev.create_event()
    gate = blocker(dev, s)
    dev.submit(s, RecordEvent(ev))
    t0 = time.monotonic()
    assert dev.synchronize_stream(s, timeout=0.05) == C.ACL_ERROR_RT_STREAM_SYNC_TIMEOUT
    assert dev.synchronize_event(ev, timeout=0.05) == C.ACL_ERROR_RT_EVENT_SYNC_TIMEOUT
    assert dev.synchronize_device(timeout=0.05) == C.ACL_ERROR_RT_STREAM_SYNC_TIMEOUT
    assert dev.synchronize_stream(t, timeout=0) == 0  # an idle stream never times out
    assert 0.15 <= time.monotonic() - t0 < 1.5
    gate.set()
    assert dev.synchronize_stream(s, timeout=-1) == 0  # negative: wait as long as it takes


def test_destroy_stream_discarding_pending_waits_only_for_the_running_command(dev):
    s, waiter = dev.create_stream(), dev.create_stream()
    ev = dev.create_event()
    started, gate, ran, rec = threading.Event(), threading.Event(), [], Recorder()
    dev.submit(s, HostFunc(lambda: (started.set(), gate.wait(5))), rec("running"))
    for i in range(100):
        dev.submit(s, HostFunc(lambda i=i: ran.append(i)), rec(i))
    dev.submit(s, RecordEvent(ev))
    dev.submit(waiter, WaitEvent(ev))
    assert started.wait(2)
    done = threading.Event()
    threading.Thread(target=lambda: (dev.destroy_stream(s, discard_pending=True), done.set())).start()
    assert not done.wait(0.1)  # still waiting for the running command
    gate.set()
    assert done.wait(2)
    assert ran == [] and rec.calls == [("running", 0)]
    assert dev.synchronize_stream(waiter, timeout=2) == 0  # the dropped record released its waiter
    raises(C.ACL_ERROR_RT_INVALID_HANDLE, dev.submit, s, HostFunc(lambda: None))
    assert dev.synchronize_device(timeout=2) == 0


def test_destroy_stream_without_discard_runs_what_was_queued(dev):
    s = dev.create_stream()
    ran = []
    for i in range(20):
        dev.submit(s, HostFunc(lambda i=i: (time.sleep(0.001), ran.append(i))))
    dev.destroy_stream(s)
    assert ran == list(range(20))
    dev.destroy_stream(dev.create_stream(), discard_pending=True)  # an idle stream
    assert dev.synchronize_device(timeout=1) == 0


def test_invalid_handles(dev):
    other = EmulatedDevice(memory_bytes=MiB, workers=1)
    try:
        s = dev.create_stream()
        ev = dev.create_event()
        for bad_stream in (None, 12345, other.create_stream()):
            raises(C.ACL_ERROR_RT_INVALID_HANDLE, dev.submit, bad_stream, HostFunc(lambda: None))
        raises(C.ACL_ERROR_RT_INVALID_HANDLE, dev.submit, s, RecordEvent(other.create_event()))
        dev.destroy_event(ev)
        raises(C.ACL_ERROR_RT_INVALID_HANDLE, dev.submit, s, WaitEvent(ev))
        raises(C.ACL_ERROR_INVALID_PARAM, dev.submit, s, object())
    finally:
        other.close()


def test_close_stops_threads_is_idempotent_and_interrupts_waiters():
    dev = EmulatedDevice(memory_bytes=MiB, workers=2)
    s = dev.create_stream()
    ev = dev.create_event()
    waiter_stream = dev.create_stream()
    gate = blocker(dev, s)
    dev.submit(s, RecordEvent(ev))
    dev.submit(waiter_stream, WaitEvent(ev))
    ran = []
    dev.submit(s, HostFunc(lambda: ran.append("dropped")))
    codes = []
    t = threading.Thread(target=lambda: codes.append(dev.synchronize_stream(waiter_stream)))
    t.start()
    time.sleep(0.05)
    opener = threading.Timer(0.1, gate.set)
    opener.start()
    t0 = time.monotonic()
    dev.close()  # drops what is queued, then waits for the running command
    assert time.monotonic() - t0 >= 0.09
    dev.close()
    t.join(2)
    opener.join()
    assert not t.is_alive() and codes == [C.ACL_ERROR_RT_FAILURE] and ran == []
    assert not any(th.is_alive() for th in dev._threads)
    raises(C.ACL_ERROR_RT_FAILURE, dev.malloc, 64)
    raises(C.ACL_ERROR_RT_FAILURE, dev.submit, s, HostFunc(lambda: None))
    raises(C.ACL_ERROR_RT_FAILURE, dev.create_stream)


def test_on_done_callback_may_call_back_into_the_device(dev):
    s = dev.create_stream()
    seen = []
    dev.submit(s, HostFunc(lambda: None), lambda code: seen.append((code, dev.mem_info()[1])))
    dev.submit(s, HostFunc(lambda: 1 / 0))  # a raising host function is an internal error
    assert dev.synchronize_stream(s) == C.ACL_ERROR_RT_INTERNAL_ERROR
    assert seen == [(0, 64 * MiB)]


class FixedPacer:
    def __init__(self, seconds):
        self.seconds = seconds

    def duration_s(self, cmd):
        return self.seconds if isinstance(cmd, HostFunc) else 0.0


def test_pacer_holds_each_command_for_its_modelled_duration_without_a_thread():
    with EmulatedDevice(memory_bytes=MiB, workers=1, pacer=FixedPacer(0.05)) as dev:
        a, b = dev.create_stream(), dev.create_stream()
        ev = dev.create_event()
        t0 = time.perf_counter()
        for s in (a, b):
            for _ in range(3):
                dev.submit(s, HostFunc(lambda: None))
        dev.submit(a, RecordEvent(ev))
        assert dev.synchronize_device(timeout=5) == 0
        elapsed = time.perf_counter() - t0
        # each stream takes 3 x 50 ms; the two overlap although there is one executor thread
        assert 0.15 <= elapsed < 0.27, elapsed
        assert dev.synchronize_stream(a) == 0 and dev.event_query(ev)


def test_make_device():
    dev = make_device("emulated", 3, 8 * MiB)
    try:
        assert isinstance(dev, EmulatedDevice) and dev.device_id == 3 and dev.mem_info()[1] == 8 * MiB
    finally:
        dev.close()
    with pytest.raises(ValueError, match="emulated"):
        make_device("cuda", 0, MiB)


@pytest.mark.parametrize("workers", [1, 3])
def test_random_event_graphs_respect_every_dependency(workers):
    """Random commands over streams and events: each stream runs in order, and what follows a
    wait runs after everything queued before the record it waits for."""
    rng = np.random.default_rng(workers)
    with EmulatedDevice(memory_bytes=MiB, workers=workers) as dev:
        streams = [dev.create_stream() for _ in range(4)]
        events = [dev.create_event() for _ in range(3)]
        clock = iter(range(10**9))
        ran = {}  # host function tag -> global order in which it ran
        recorded_after = {}  # event -> tag of the host function before its latest record
        waited_for = {si: [] for si in range(len(streams))}  # tags the next host function must follow
        last_host = {}  # stream -> tag of its latest host function
        must_follow = []  # (earlier tag, later tag)

        def mark(tag):
            return lambda: ran.__setitem__(tag, next(clock))

        for tag in range(600):
            si = int(rng.integers(len(streams)))
            ei = int(rng.integers(len(events)))
            kind = rng.random()
            if kind < 0.2:
                dev.submit(streams[si], RecordEvent(events[ei]))
                recorded_after[ei] = last_host.get(si)
            elif kind < 0.35:
                dev.submit(streams[si], WaitEvent(events[ei]))
                if recorded_after.get(ei) is not None:
                    waited_for[si].append(recorded_after[ei])
            else:
                dev.submit(streams[si], HostFunc(mark(tag)))
                must_follow += [(earlier, tag) for earlier in waited_for[si]]
                waited_for[si] = []
                if si in last_host:
                    must_follow.append((last_host[si], tag))
                last_host[si] = tag
        assert dev.synchronize_device(timeout=10) == 0
        assert len(must_follow) > 350
        for earlier, later in must_follow:
            assert ran[earlier] < ran[later], (earlier, later)
