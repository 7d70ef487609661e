"""The ascend backend against a fake libascendcl.so (tests/fake_ascendcl/fake_ascendcl.c).

Nothing here runs on an NPU.  The fake is a test double of the public AscendCL signatures: these
tests prove that the binding calls them correctly (argument order, out-parameters, enum values,
return codes, object lifetimes) and that the backend keeps the Device contract on top of them
(stream order, on_done codes, sticky errors, events).  They cannot prove how the real runtime
behaves: its timing, its task-fault reporting, or which operators aclopExecuteV2 can run.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
import time

import numpy as np
import pytest
from device_support import Recorder, raises
from flexnpu_daemon.backends import make_device
from flexnpu_daemon.backends.ascend import (
    _SIGNATURES,
    LIBRARY_ENV,
    AscendDevice,
    AttrDataType,
    library_candidates,
)
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

from flexnpu.acl import constants as C

SOURCE = os.path.join(os.path.dirname(__file__), "fake_ascendcl", "fake_ascendcl.c")
FAKE_TOTAL = 256 << 20  # the fake's DEVICE_BYTES
LIVE_NAMES = ("streams", "events", "descs", "buffers", "attrs", "allocations")


@pytest.fixture(scope="session")
def fake_library(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("fake_ascendcl") / "libascendcl.so")
    subprocess.run(
        ["gcc", "-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-pthread", "-o", path, SOURCE],
        check=True,
    )
    return path


def live_objects(path):
    counts = (ctypes.c_long * 6)()
    ctypes.CDLL(path).fakeAclLiveObjects(counts)
    return dict(zip(LIVE_NAMES, counts))


@pytest.fixture
def dev(fake_library, monkeypatch):
    """A device on the fake; afterwards, every runtime object it made must be gone."""
    monkeypatch.setenv(LIBRARY_ENV, fake_library)
    device = AscendDevice(0)
    yield device
    device.close()
    assert live_objects(fake_library) == dict.fromkeys(LIVE_NAMES, 0)


def f32(dev, values):
    """Device memory holding values as float32, and its TensorArg."""
    arr = np.asarray(values, np.float32)
    addr = dev.malloc(arr.nbytes)
    dev.write(addr, arr)
    return addr, TensorArg(C.ACL_FLOAT, C.ACL_FORMAT_ND, arr.shape, addr, arr.nbytes)


def sleep_op(us):
    return LaunchOp("FakeSleep", [], [], {"us": us})


# ---- library and signatures ------------------------------------------------------------------------------


def test_missing_library_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(LIBRARY_ENV, str(tmp_path / "nowhere" / "libascendcl.so"))
    err = raises(C.ACL_ERROR_RT_FAILURE, AscendDevice, 0)
    assert "nowhere/libascendcl.so" in err.message and LIBRARY_ENV in err.message and "set_env.sh" in err.message

    monkeypatch.delenv(LIBRARY_ENV)
    monkeypatch.setenv("ASCEND_HOME_PATH", str(tmp_path / "cann"))
    assert library_candidates() == [
        "libascendcl.so",
        str(tmp_path / "cann" / "lib64" / "libascendcl.so"),
        "/usr/local/Ascend/ascend-toolkit/latest/lib64/libascendcl.so",
    ]
    try:
        ctypes.CDLL("libascendcl.so")
    except OSError:
        err = raises(C.ACL_ERROR_RT_FAILURE, make_device, "ascend", 0, 0)
        assert all(place in err.message for place in library_candidates())
    else:
        pytest.skip("a real libascendcl.so is installed here")


def test_the_fake_defines_exactly_the_symbols_the_backend_declares(fake_library):
    out = subprocess.run(["nm", "-D", "--defined-only", fake_library], capture_output=True, text=True, check=True)
    exported = {line.split()[-1] for line in out.stdout.splitlines() if line.split()[1] == "T"}
    assert exported - {"fakeAclLiveObjects"} == set(_SIGNATURES)


def test_make_device_builds_it(fake_library, monkeypatch):
    monkeypatch.setenv(LIBRARY_ENV, fake_library)
    device = make_device("ascend", 1, 16 << 20)
    try:
        assert isinstance(device, AscendDevice) and device.device_id == 1
        assert device.soc_name == "FakeAscend910B" and device.total_memory == FAKE_TOTAL  # not memory_bytes
    finally:
        device.close()
    raises(C.ACL_ERROR_RT_INVALID_DEVICEID, AscendDevice, 7)  # the runtime's own code


# ---- memory ----------------------------------------------------------------------------------------------


def test_malloc_accounting_and_mem_info(dev):
    free0, total = dev.mem_info()
    assert total == FAKE_TOTAL == dev.total_memory
    a = dev.malloc(100)
    b = dev.malloc(100, align32=True)
    # free and total come back in their out-parameters' order; sizes as aclrtMalloc documents them
    assert dev.allocation_size(a) == acl_malloc_size(100) == 160
    assert dev.allocation_size(b) == acl_malloc_size(100, align32=True) == 128
    assert dev.mem_info() == (free0 - 288, total)
    dev.free(a)
    dev.free(b)
    assert dev.mem_info() == (free0, total)
    raises(C.ACL_ERROR_RT_MEMORY_ALLOCATION, dev.malloc, FAKE_TOTAL + 1)  # refused by the runtime
    raises(C.ACL_ERROR_INVALID_PARAM, dev.malloc, 0)
    raises(C.ACL_ERROR_INVALID_PARAM, dev.free, a)  # no longer allocated: never reaches aclrtFree


def test_sync_copies_round_trip_and_are_bounds_checked(dev):
    data = np.arange(64, dtype=np.uint8)
    a, b = dev.malloc(64), dev.malloc(64)
    dev.write(a, data.tobytes())  # a bytes object
    dev.copy(b, a, 64)
    out = bytearray(64)
    dev.read_into(out, b)
    assert bytes(out) == data.tobytes()
    dev.memset(b + 8, 0x1FF, 8)  # the value's low byte
    arr = np.zeros(64, np.uint8)
    dev.read_into(arr, b)
    assert list(arr[6:18]) == [6, 7] + [0xFF] * 8 + [16, 17]
    # a usable size of 64 + 32 bytes (aclrtMalloc's rounding); beyond that nothing reaches the runtime
    dev.write(a + 90, b"123456")
    raises(C.ACL_ERROR_INVALID_PARAM, dev.write, a + 90, b"1234567")
    raises(C.ACL_ERROR_INVALID_PARAM, dev.read_into, bytearray(8), 0x1234)
    raises(C.ACL_ERROR_INVALID_PARAM, dev.read_into, bytes(8), a)  # read-only destination
    raises(C.ACL_ERROR_INVALID_PARAM, dev.copy, b, a, 4096)


def test_any_thread_may_call_it(dev):
    """The runtime's context is per thread: a new thread must make it current before calling."""
    found = []

    def work():
        addr = dev.malloc(32)
        dev.write(addr, b"x" * 32)
        found.append(dev.mem_info()[1])
        dev.free(addr)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert found == [FAKE_TOTAL]


# ---- streams ---------------------------------------------------------------------------------------------


def test_async_copies_and_memset_in_stream_order(dev):
    s = dev.create_stream()
    rec = Recorder()
    a, b = dev.malloc(4096), dev.malloc(4096)
    src = np.random.default_rng(1).integers(0, 255, 4096, dtype=np.uint8)
    out = np.zeros(4096, np.uint8)
    dev.submit(s, sleep_op(20_000), rec("sleep"))  # everything below is queued behind it
    dev.submit(s, CopyToDevice(a, src), rec("h2d"))
    dev.submit(s, CopyOnDevice(b, a, 4096), rec("d2d"))
    dev.submit(s, Memset(b, 7, 16), rec("memset"))
    dev.submit(s, CopyToHost(out, b), rec("d2h"))
    dev.submit(s, CopyToHost(bytearray(0), b), rec("empty"))
    assert out.sum() == 0 and not dev.stream_query(s)  # asynchronous: nothing ran yet
    assert dev.synchronize_stream(s) == 0
    assert rec.calls == [("sleep", 0), ("h2d", 0), ("d2d", 0), ("memset", 0), ("d2h", 0), ("empty", 0)]
    assert list(out[:16]) == [7] * 16 and np.array_equal(out[16:], src[16:])
    assert dev.stream_query(s)
    dev.destroy_stream(s)
    raises(C.ACL_ERROR_RT_INVALID_HANDLE, dev.submit, s, Memset(a, 0, 1))


def test_streams_run_concurrently(dev):
    slow, fast = dev.create_stream(), dev.create_stream(priority=3)
    rec = Recorder()
    addr = dev.malloc(64)
    dev.submit(slow, sleep_op(150_000), rec("slow"))
    dev.submit(fast, Memset(addr, 1, 64), rec("fast"))
    assert rec.wait(1) == [("fast", 0)]
    assert dev.synchronize_device() == 0 and rec.calls[1] == ("slow", 0)


def test_synchronize_timeout_then_success(dev):
    s = dev.create_stream()
    dev.submit(s, sleep_op(200_000))
    assert dev.synchronize_stream(s, timeout=0.02) == C.ACL_ERROR_RT_STREAM_SYNC_TIMEOUT
    assert dev.synchronize_device(timeout=0.02) == C.ACL_ERROR_RT_STREAM_SYNC_TIMEOUT
    assert dev.synchronize_stream(s) == 0


def test_host_func_runs_in_stream_order_and_holds_what_follows(dev):
    s = dev.create_stream()
    rec = Recorder()
    addr = dev.malloc(8)
    dev.memset(addr, 0, 8)
    seen = []

    def look():
        buf = bytearray(8)
        dev.read_into(buf, addr)  # the copy before has run, the memset after has not
        seen.append((bytes(buf), threading.current_thread().name))

    dev.submit(s, sleep_op(10_000), rec("sleep"))
    dev.submit(s, CopyToDevice(addr, b"abcdefgh"), rec("copy"))
    dev.submit(s, HostFunc(look), rec("host"))
    dev.submit(s, Memset(addr, 0, 8), rec("memset"))
    assert dev.synchronize_stream(s) == 0
    assert rec.calls == [("sleep", 0), ("copy", 0), ("host", 0), ("memset", 0)]
    assert seen == [(b"abcdefgh", "npu0-acl-done")]

    def boom():
        raise RuntimeError("host function failure")

    dev.submit(s, HostFunc(boom), rec("boom"))
    dev.submit(s, CopyToDevice(addr, b"zzzzzzzz"), rec("after"))
    assert dev.synchronize_stream(s) == C.ACL_ERROR_RT_INTERNAL_ERROR
    assert rec.calls[4:] == [("boom", C.ACL_ERROR_RT_INTERNAL_ERROR), ("after", C.ACL_ERROR_RT_INTERNAL_ERROR)]
    buf = bytearray(8)
    dev.read_into(buf, addr)
    assert buf == bytes(8)  # the copy after the failure was skipped


def test_destroy_with_discard_drops_what_did_not_start(dev):
    s = dev.create_stream()
    rec = Recorder()
    addr = dev.malloc(8)
    dev.memset(addr, 0, 8)  # device memory starts undefined
    dev.submit(s, sleep_op(30_000), rec("issued"))
    dev.submit(s, HostFunc(lambda: None), rec("held"))
    dev.submit(s, Memset(addr, 9, 8), rec("behind"))
    ev = dev.create_event()
    dev.submit(s, RecordEvent(ev), rec("record"))
    dev.destroy_stream(s, discard_pending=True)
    assert rec.calls == []  # a dropped stream reports nothing: its client is gone
    assert dev.event_query(ev)  # a dropped record counts as reached
    buf = bytearray(8)
    dev.read_into(buf, addr)
    assert buf == bytes(8)
    dev.destroy_event(ev)


# ---- events ----------------------------------------------------------------------------------------------


def test_events_elapsed_time_and_queries(dev):
    s = dev.create_stream()
    start, end = dev.create_event(), dev.create_event(C.ACL_EVENT_TIME_LINE | C.ACL_EVENT_SYNC)
    never = dev.create_event()
    assert dev.event_query(never) and dev.synchronize_event(never) == 0
    raises(C.ACL_ERROR_INVALID_PARAM, dev.event_elapsed_ms, never, start)
    dev.submit(s, RecordEvent(start))
    dev.submit(s, sleep_op(30_000))
    dev.submit(s, RecordEvent(end))
    assert not dev.event_query(end)
    assert dev.synchronize_event(end, timeout=0.005) == C.ACL_ERROR_RT_EVENT_SYNC_TIMEOUT
    assert dev.synchronize_event(end) == 0 and dev.event_query(end)
    assert 25 <= dev.event_elapsed_ms(start, end) < 1000
    dev.submit(s, ResetEvent(end))
    assert dev.synchronize_stream(s) == 0
    for e in (start, end, never):
        dev.destroy_event(e)
    raises(C.ACL_ERROR_RT_INVALID_HANDLE, dev.destroy_event, start)
    raises(C.ACL_ERROR_RT_INVALID_HANDLE, dev.submit, s, RecordEvent(start))


def test_wait_event_orders_streams(dev):
    a, b = dev.create_stream(), dev.create_stream()
    ev = dev.create_event()
    addr = dev.malloc(8)
    out = bytearray(8)
    dev.submit(a, sleep_op(30_000))
    dev.submit(a, CopyToDevice(addr, b"written!"))
    dev.submit(a, RecordEvent(ev))
    dev.submit(b, WaitEvent(ev))
    dev.submit(b, CopyToHost(out, addr))
    assert dev.synchronize_stream(b) == 0 and out == b"written!"
    # a wait for a record that is still held (behind a host function) is held too
    dev.submit(a, HostFunc(lambda: time.sleep(0.03)))
    dev.submit(a, CopyToDevice(addr, b"second!!"))
    dev.submit(a, RecordEvent(ev))
    dev.submit(b, WaitEvent(ev))
    dev.submit(b, CopyToHost(out, addr))
    assert dev.synchronize_device() == 0 and out == b"second!!"
    dev.submit(b, ResetEvent(ev))  # later waits pass at once
    dev.submit(b, WaitEvent(ev))
    assert dev.synchronize_stream(b) == 0
    dev.destroy_event(ev)


def test_destroyed_event_lives_until_its_last_command(dev):
    s = dev.create_stream()
    ev = dev.create_event()
    dev.submit(s, sleep_op(20_000))
    dev.submit(s, RecordEvent(ev))
    dev.destroy_event(ev)  # the fake refuses aclrtDestroyEvent while a queued task names it
    assert dev.synchronize_stream(s) == 0
    assert live_objects(os.environ[LIBRARY_ENV])["events"] == len(dev._all_markers)


# ---- operators -------------------------------------------------------------------------------------------


def test_launch_add_computes_and_caches_descriptors(dev):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 250), np.float32), rng.standard_normal((4, 250), np.float32)
    _, tx = f32(dev, x)
    _, ty = f32(dev, y)
    oaddr, tout = f32(dev, np.zeros_like(x))
    absent = TensorArg(C.ACL_DT_UNDEFINED, C.ACL_FORMAT_ND, (), 0, 0)
    s = dev.create_stream()
    rec = Recorder()
    dev.submit(s, LaunchOp("Add", [tx, ty], [tout]), rec("add"))
    dev.submit(s, LaunchOp("Add", [tx, tout, absent], [tout]), rec("add+optional"))
    assert dev.synchronize_stream(s) == 0 and rec.calls == [("add", 0), ("add+optional", 0)]
    out = np.zeros_like(x)
    dev.read_into(out, oaddr)
    np.testing.assert_array_equal(out, x + (x + y))
    live = live_objects(os.environ[LIBRARY_ENV])
    assert live["descs"] == 2  # (float32, ND, (4, 250)) and the absent input's, each made once
    assert live["buffers"] == 0 and live["attrs"] == 0  # per launch: destroyed once it ran


def test_launch_attributes_reach_the_runtime_typed(dev):
    oaddr, tout = f32(dev, np.zeros(64))
    attrs = {
        "flag": True, "n": -7, "scale": 0.5, "mode": "ab", "dims": [3, 4], "weights": [0.25, 1],
        "mask": [True, False], "dtype": AttrDataType(C.ACL_FLOAT16), "none": [],
    }
    s = dev.create_stream()
    dev.submit(s, LaunchOp("FakeAttrDump", [], [tout], attrs))
    assert dev.synchronize_stream(s) == 0
    out = np.zeros(64, np.float32)
    dev.read_into(out, oaddr)
    # the fake writes, per attribute: its kind (the aclopSetAttr* called), count, values
    bool_, int_, float_, string, list_int, list_float, list_bool, data_type = range(1, 9)
    expected = [bool_, 1, 1, int_, 1, -7, float_, 1, 0.5, string, 2, ord("a"), ord("b"), list_int, 2, 3, 4,
                list_float, 2, 0.25, 1, list_bool, 2, 1, 0, data_type, 1, C.ACL_FLOAT16, list_int, 0]
    assert list(out[: len(expected)]) == expected
    raises(C.ACL_ERROR_INVALID_PARAM, dev._set_attr, None, b"x", {"not": "an attr"})


def test_unknown_op_fails_at_sync_sticky_until_reported(dev):
    s, other = dev.create_stream(), dev.create_stream()
    rec = Recorder()
    addr = dev.malloc(8)
    dev.submit(s, LaunchOp("NoSuchOp", [], []), rec("bad"))
    # the runtime accepts the launch; the fault shows when the stream drains
    assert rec.wait(1) == [("bad", C.ACL_ERROR_OP_NOT_FOUND)]
    dev.submit(s, Memset(addr, 0x55, 8), rec("skipped"))
    dev.submit(other, Memset(addr, 0x11, 8), rec("other"))  # other streams carry on
    assert dev.synchronize_stream(other) == 0
    assert dev.synchronize_stream(s) == C.ACL_ERROR_OP_NOT_FOUND
    assert rec.calls[1:] == [("skipped", C.ACL_ERROR_OP_NOT_FOUND), ("other", 0)]
    buf = bytearray(8)
    dev.read_into(buf, addr)
    assert buf == b"\x11" * 8  # the skipped memset never ran
    assert dev.synchronize_stream(s) == 0  # reported once, then cleared
    dev.submit(s, Memset(addr, 0x22, 8), rec("again"))
    assert dev.synchronize_stream(s) == 0 and rec.calls[-1] == ("again", 0)


def test_fault_within_a_burst_goes_to_the_burst_s_last_command(dev):
    """ACL reports a task fault only at a synchronization: commands issued together complete in
    order, and the stream's error goes to the one that drained it (the error is exact per stream,
    its attribution within a burst is not)."""
    s = dev.create_stream()
    rec = Recorder()
    addr = dev.malloc(8)
    dev.submit(s, sleep_op(20_000), rec("sleep"))
    dev.submit(s, LaunchOp("NoSuchOp", [], []), rec("bad"))
    dev.submit(s, Memset(addr, 0x33, 8), rec("last"))
    assert dev.synchronize_stream(s) == C.ACL_ERROR_OP_NOT_FOUND
    assert rec.calls == [("sleep", 0), ("bad", 0), ("last", C.ACL_ERROR_OP_NOT_FOUND)]


def test_refused_launch_fails_at_once_and_skips_what_follows(dev):
    _, ti = f32(dev, np.zeros(4))
    bad = TensorArg(C.ACL_INT32, C.ACL_FORMAT_ND, (4,), ti.addr, ti.nbytes)
    s = dev.create_stream()
    rec = Recorder()
    dev.submit(s, LaunchOp("Add", [ti, bad], [ti]), rec("refused"))
    dev.submit(s, Memset(ti.addr, 1, 4), rec("skipped"))
    wild = TensorArg(C.ACL_FLOAT, C.ACL_FORMAT_ND, (4,), 0x10, 16)  # never reaches the runtime
    assert dev.synchronize_stream(s) == C.ACL_ERROR_UNSUPPORTED_DATA_TYPE
    dev.submit(s, LaunchOp("Add", [ti, wild], [ti]), rec("wild"))
    assert dev.synchronize_stream(s) == C.ACL_ERROR_INVALID_PARAM
    assert rec.calls == [("refused", C.ACL_ERROR_UNSUPPORTED_DATA_TYPE),
                         ("skipped", C.ACL_ERROR_UNSUPPORTED_DATA_TYPE), ("wild", C.ACL_ERROR_INVALID_PARAM)]
    assert live_objects(os.environ[LIBRARY_ENV])["buffers"] == 0


# ---- lifecycle -------------------------------------------------------------------------------------------


def test_close_drops_pending_work_and_frees_everything(fake_library, monkeypatch):
    monkeypatch.setenv(LIBRARY_ENV, fake_library)
    device = AscendDevice(0)
    s = device.create_stream()
    addr = device.malloc(1 << 20)
    rec = Recorder()
    out = np.zeros(1 << 20, np.uint8)
    device.create_event()
    device.submit(s, sleep_op(20_000), rec("issued"))
    device.submit(s, CopyToHost(out, addr), rec("issued too"))
    device.submit(s, HostFunc(lambda: None), rec("held"))
    device.close()
    device.close()  # idempotent
    assert rec.calls == [] and live_objects(fake_library) == dict.fromkeys(LIVE_NAMES, 0)
    raises(C.ACL_ERROR_RT_FAILURE, device.malloc, 8)
    raises(C.ACL_ERROR_RT_FAILURE, device.submit, s, Memset(addr, 0, 1))
