"""The shared behaviour suite of the ``acl`` surface, run against every runtime in ACL_FACTORIES.

Each test gets a fresh ``acl`` namespace from a factory (``tests/acl_support.py``): ``acl`` is
initialized with device 0 set, ``fresh_acl`` is not initialized.  Tests use only the pyACL
surface, so that a runtime passing them behaves like ACL to a program.  Tests of one runtime's
own choices (direct mode's process-local IPC, the module a process gets) are at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from acl_support import (
    ACL_FACTORIES,
    Busy,
    MiB,
    Tensor,
    download,
    launch,
    make_attr,
    malloc,
    ok,
    upload,
)
from acl_support import value as val

from flexnpu.acl import constants as C

MEMORY = 256 * MiB
H2H, H2D, D2H, D2D, DEFAULT = (
    C.ACL_MEMCPY_HOST_TO_HOST,
    C.ACL_MEMCPY_HOST_TO_DEVICE,
    C.ACL_MEMCPY_DEVICE_TO_HOST,
    C.ACL_MEMCPY_DEVICE_TO_DEVICE,
    C.ACL_MEMCPY_DEFAULT,
)
INVALID_PARAM = C.ACL_ERROR_INVALID_PARAM
INVALID_HANDLE = C.ACL_ERROR_RT_INVALID_HANDLE  # streams, events, contexts
INVALID_RESOURCE = C.ACL_ERROR_INVALID_RESOURCE_HANDLE  # descs, data buffers, attrs


@pytest.fixture(params=sorted(ACL_FACTORIES))
def fresh_acl(request):
    acl, cleanup = ACL_FACTORIES[request.param](MEMORY)
    try:
        yield acl
    finally:
        cleanup()


@pytest.fixture
def acl(fresh_acl):
    ok(fresh_acl.init(), "acl.init")
    ok(fresh_acl.rt.set_device(0), "acl.rt.set_device")
    return fresh_acl


def in_thread(fn):
    """Run fn() on a new thread; its result (or its exception, re-raised here)."""
    result = {}

    def body():
        try:
            result["value"] = fn()
        except BaseException as exc:  # re-raised in the test's thread
            result["error"] = exc

    t = threading.Thread(target=body)
    t.start()
    t.join(10)
    assert not t.is_alive(), "thread did not finish"
    if "error" in result:
        raise result["error"]
    return result["value"]


# ---- init, devices, contexts ---------------------------------------------------------------------


def test_init_and_finalize_codes(fresh_acl):
    acl = fresh_acl
    assert acl.finalize() == C.ACL_ERROR_REPEAT_FINALIZE
    assert acl.init() == C.ACL_SUCCESS
    assert acl.init() == C.ACL_ERROR_REPEAT_INITIALIZE
    assert acl.finalize() == C.ACL_SUCCESS
    assert acl.finalize() == C.ACL_ERROR_REPEAT_FINALIZE
    assert acl.init() == C.ACL_SUCCESS  # initializing again after finalize is allowed
    assert acl.rt.set_device(0) == C.ACL_SUCCESS
    assert acl.finalize() == C.ACL_SUCCESS


def test_device_calls_before_init_are_uninitialized(fresh_acl):
    acl = fresh_acl
    assert acl.rt.set_device(0) == C.ACL_ERROR_UNINITIALIZE
    assert "init" in acl.get_recent_err_msg()
    ctx, ret = acl.rt.create_context(0)
    assert (ctx, ret) == (0, C.ACL_ERROR_UNINITIALIZE)
    # calls that need a current context have none yet: either code is ACL-like
    no_context = (C.ACL_ERROR_UNINITIALIZE, C.ACL_ERROR_RT_CONTEXT_NULL)
    ptr, ret = acl.rt.malloc(64, C.ACL_MEM_MALLOC_HUGE_FIRST)
    assert ptr == 0 and ret in no_context
    stream, ret = acl.rt.create_stream()
    assert stream == 0 and ret in no_context


def test_finalize_releases_devices_and_their_handles(fresh_acl):
    acl = fresh_acl
    ok(acl.init())
    ok(acl.rt.set_device(0))
    stream = val(acl.rt.create_stream())
    ok(acl.finalize())
    assert acl.rt.synchronize_stream(stream) != C.ACL_SUCCESS
    ok(acl.init())
    ok(acl.rt.set_device(0))
    free, total = val(acl.rt.get_mem_info(C.ACL_HBM_MEM))
    assert free == total  # nothing survived the finalize


def test_device_count_soc_and_invalid_device(acl):
    count = val(acl.rt.get_device_count())
    assert count >= 1
    assert acl.rt.get_soc_name().startswith("Ascend")
    assert acl.rt.set_device(count) == C.ACL_ERROR_RT_INVALID_DEVICEID
    assert acl.rt.set_device(-1) == C.ACL_ERROR_RT_INVALID_DEVICEID
    assert acl.rt.create_context(count)[1] == C.ACL_ERROR_RT_INVALID_DEVICEID
    assert val(acl.rt.get_device()) == 0


def test_set_device_makes_a_current_context(acl):
    ctx = val(acl.rt.get_context())
    assert ctx != 0
    # the default context works: its default stream runs work
    ok(acl.rt.synchronize_stream(0))
    ok(acl.rt.synchronize_device())


def test_contexts_create_switch_destroy(acl):
    default = val(acl.rt.get_context())
    ctx = val(acl.rt.create_context(0))
    assert ctx not in (0, default)
    assert val(acl.rt.get_context()) == ctx  # a new context becomes current
    stream = val(acl.rt.create_stream())  # ... and the streams created now belong to it
    ok(acl.rt.synchronize_stream(stream))
    ok(acl.rt.destroy_stream(stream))  # (ACL's order: streams, then their context)
    ok(acl.rt.set_context(default))
    assert val(acl.rt.get_context()) == default
    ok(acl.rt.destroy_context(ctx))
    assert acl.rt.set_context(ctx) == INVALID_HANDLE
    assert acl.rt.destroy_context(ctx) == INVALID_HANDLE
    assert val(acl.rt.get_context()) == default


def test_current_context_is_per_thread(acl):
    main_ctx = val(acl.rt.get_context())

    def other_thread():
        ctx, ret = acl.rt.get_context()
        assert (ctx, ret) == (0, C.ACL_ERROR_RT_CONTEXT_NULL)
        assert acl.rt.malloc(64, C.ACL_MEM_MALLOC_HUGE_FIRST)[1] == C.ACL_ERROR_RT_CONTEXT_NULL
        own = val(acl.rt.create_context(0))
        assert val(acl.rt.get_context()) == own
        ptr = malloc(acl, 64)  # works in this thread now
        ok(acl.rt.free(ptr))
        ok(acl.rt.set_context(main_ctx))  # another thread's context may be made current here
        assert val(acl.rt.get_context()) == main_ctx
        return own

    own = in_thread(other_thread)
    assert val(acl.rt.get_context()) == main_ctx  # the thread's choices did not change ours
    ok(acl.rt.destroy_context(own))


def test_set_device_is_counted_and_reset_releases_memory(acl):
    ok(acl.rt.set_device(0))  # a second reference
    ptr = malloc(acl, 4096)
    ok(acl.rt.reset_device(0))
    ok(acl.rt.memset(ptr, 4096, 1, 4096))  # still open: one set_device left
    ok(acl.rt.reset_device(0))
    assert acl.rt.get_context()[1] != C.ACL_SUCCESS  # no current context any more
    ok(acl.rt.set_device(0))
    free, total = val(acl.rt.get_mem_info(C.ACL_HBM_MEM))
    assert free == total  # the reset gave back the allocation


def test_reset_device_lets_queued_work_finish(acl):
    data = np.arange(256, dtype=np.int32)
    dev, host = upload(acl, data), np.zeros_like(data)
    Busy(acl).run(0)
    ok(acl.rt.memcpy_async(host.ctypes.data, host.nbytes, dev, data.nbytes, D2H, 0))
    ok(acl.rt.reset_device(0))  # ACL: the default stream's tasks complete before it is released
    np.testing.assert_array_equal(host, data)


# ---- streams and events ----------------------------------------------------------------------------


def test_stream_create_query_sync_destroy(acl):
    stream = val(acl.rt.create_stream())
    assert stream != 0
    assert val(acl.rt.stream_query(stream)) == C.ACL_STREAM_STATUS_COMPLETE
    ok(acl.rt.synchronize_stream(stream))
    ok(acl.rt.synchronize_stream_with_timeout(stream, 1000))
    ok(acl.rt.destroy_stream(stream))
    assert acl.rt.destroy_stream(stream) == INVALID_HANDLE
    assert acl.rt.synchronize_stream(stream) == INVALID_HANDLE
    assert acl.rt.stream_query(stream)[1] == INVALID_HANDLE


def test_stream_with_config(acl):
    stream = val(acl.rt.create_stream_with_config(0, C.ACL_STREAM_FAST_LAUNCH | C.ACL_STREAM_FAST_SYNC))
    assert stream != 0
    ok(acl.rt.synchronize_stream(stream))
    ok(acl.rt.destroy_stream(stream))
    handle, ret = acl.rt.create_stream_with_config(0, 0x4000_0000)
    assert (handle, ret) == (0, INVALID_PARAM)


def test_busy_stream_is_not_ready_and_times_out(acl):
    stream = val(acl.rt.create_stream())
    Busy(acl).run(stream)
    assert val(acl.rt.stream_query(stream)) == C.ACL_STREAM_STATUS_NOT_READY
    assert acl.rt.synchronize_stream_with_timeout(stream, 1) == C.ACL_ERROR_RT_STREAM_SYNC_TIMEOUT
    ok(acl.rt.synchronize_stream_with_timeout(stream, -1))
    assert val(acl.rt.stream_query(stream)) == C.ACL_STREAM_STATUS_COMPLETE


def test_streams_run_independently(acl):
    busy_stream, free_stream = val(acl.rt.create_stream()), val(acl.rt.create_stream())
    Busy(acl).run(busy_stream)
    ok(acl.rt.synchronize_stream(free_stream))  # does not wait for the other stream
    assert val(acl.rt.stream_query(busy_stream)) == C.ACL_STREAM_STATUS_NOT_READY
    ok(acl.rt.synchronize_device())  # waits for every stream
    assert val(acl.rt.stream_query(busy_stream)) == C.ACL_STREAM_STATUS_COMPLETE


def test_event_record_query_synchronize_reset(acl):
    stream = val(acl.rt.create_stream())
    event = val(acl.rt.create_event())
    assert val(acl.rt.query_event_status(event)) == C.ACL_EVENT_RECORDED_STATUS_NOT_READY  # never recorded
    Busy(acl).run(stream)
    ok(acl.rt.record_event(event, stream))
    assert val(acl.rt.query_event_status(event)) == C.ACL_EVENT_RECORDED_STATUS_NOT_READY  # not reached
    ok(acl.rt.synchronize_event(event))
    assert val(acl.rt.query_event_status(event)) == C.ACL_EVENT_RECORDED_STATUS_COMPLETE
    ok(acl.rt.reset_event(event, stream))
    ok(acl.rt.synchronize_stream(stream))
    assert val(acl.rt.query_event_status(event)) == C.ACL_EVENT_RECORDED_STATUS_NOT_READY
    ok(acl.rt.destroy_event(event))
    assert acl.rt.destroy_event(event) == INVALID_HANDLE
    assert acl.rt.query_event_status(event)[1] == INVALID_HANDLE


def test_event_with_flag_and_elapsed_time(acl):
    stream = val(acl.rt.create_stream())
    start = val(acl.rt.create_event_with_flag(C.ACL_EVENT_TIME_LINE))
    end = val(acl.rt.create_event_with_flag(C.ACL_EVENT_TIME_LINE | C.ACL_EVENT_SYNC))
    ms, ret = acl.rt.event_elapsed_time(start, end)
    assert ret != C.ACL_SUCCESS  # nothing recorded yet
    ok(acl.rt.record_event(start, stream))
    Busy(acl).run(stream)
    ok(acl.rt.record_event(end, stream))
    ok(acl.rt.synchronize_event(end))
    ms = val(acl.rt.event_elapsed_time(start, end))
    assert isinstance(ms, float) and 0.0 < ms < 60_000.0
    assert acl.rt.create_event_with_flag(0x8000_0000)[1] == INVALID_PARAM


def test_stream_wait_event_orders_streams(acl):
    producer, consumer = val(acl.rt.create_stream()), val(acl.rt.create_stream())
    data = np.arange(1024, dtype=np.int32)
    src, mid, dst = upload(acl, data), malloc(acl, data.nbytes), malloc(acl, data.nbytes)
    ok(acl.rt.memset(mid, data.nbytes, 0, data.nbytes))
    ready = val(acl.rt.create_event())
    Busy(acl).run(producer)
    ok(acl.rt.memcpy_async(mid, data.nbytes, src, data.nbytes, D2D, producer))
    ok(acl.rt.record_event(ready, producer))
    ok(acl.rt.stream_wait_event(consumer, ready))
    ok(acl.rt.memcpy_async(dst, data.nbytes, mid, data.nbytes, D2D, consumer))
    ok(acl.rt.synchronize_stream(consumer))  # only the consumer: the wait made it follow the producer
    np.testing.assert_array_equal(download(acl, dst, data.shape, data.dtype), data)


# ---- memory ----------------------------------------------------------------------------------------


def test_malloc_alignment_and_usable_size(acl):
    for size in (1, 31, 32, 100, 4096, 1_000_003):
        ptr = malloc(acl, size)
        assert ptr % 64 == 0
        # aclrtMalloc rounds the size up to a multiple of 32, plus 32 bytes
        usable = -(-size // 32) * 32 + 32
        blob = np.full(usable + 64, 7, np.uint8)  # the host side must hold every byte copied
        ok(acl.rt.memcpy(ptr, usable, blob.ctypes.data, usable, H2D))
        assert acl.rt.memcpy(ptr, usable + 64, blob.ctypes.data, usable + 64, H2D) == INVALID_PARAM
        ok(acl.rt.free(ptr))
    ptr = val(acl.rt.malloc_align32(100, C.ACL_MEM_MALLOC_HUGE_FIRST))
    assert ptr % 64 == 0
    blob = np.zeros(160, np.uint8)
    ok(acl.rt.memcpy(ptr, 128, blob.ctypes.data, 128, H2D))  # align32: no extra 32 bytes
    assert acl.rt.memcpy(ptr, 160, blob.ctypes.data, 160, H2D) == INVALID_PARAM
    ok(acl.rt.free(ptr))


def test_malloc_bad_arguments(acl):
    for size, policy in ((0, 0), (-1, 0), ("64", 0), (None, 0), (64, 99), (64, -1), (64, "x")):
        ptr, ret = acl.rt.malloc(size, policy)
        assert (ptr, ret) == (0, INVALID_PARAM), (size, policy)
    for policy in (
        C.ACL_MEM_MALLOC_HUGE_ONLY,
        C.ACL_MEM_MALLOC_NORMAL_ONLY,
        C.ACL_MEM_MALLOC_HUGE_FIRST | C.ACL_MEM_TYPE_HIGH_BAND_WIDTH,
    ):
        ok(acl.rt.free(val(acl.rt.malloc(64, policy))))


def test_free_errors(acl):
    ptr = malloc(acl, 256)
    assert acl.rt.free(ptr + 64) != C.ACL_SUCCESS  # not the start of an allocation
    ok(acl.rt.free(ptr))
    assert acl.rt.free(ptr) != C.ACL_SUCCESS  # already freed
    assert acl.rt.free(12345) != C.ACL_SUCCESS


def test_mem_info_accounting(acl):
    free0, total = val(acl.rt.get_mem_info(C.ACL_HBM_MEM))
    assert total == MEMORY and free0 <= total
    ptrs = []
    for size in (1000, 64 * 1024, 3 * MiB):
        before = val(acl.rt.get_mem_info(C.ACL_HBM_MEM))[0]
        ptrs.append(malloc(acl, size))
        used = before - val(acl.rt.get_mem_info(C.ACL_HBM_MEM))[0]
        assert size <= used < size + 256, (size, used)
    for ptr in ptrs:
        ok(acl.rt.free(ptr))
    assert val(acl.rt.get_mem_info(C.ACL_HBM_MEM)) == (free0, total)
    assert acl.rt.get_mem_info(1234)[-1] == INVALID_PARAM


def test_exceeding_memory_is_allocation_error(acl):
    total = val(acl.rt.get_mem_info(C.ACL_HBM_MEM))[1]
    assert acl.rt.malloc(total + 1, C.ACL_MEM_MALLOC_HUGE_FIRST) == (0, C.ACL_ERROR_RT_MEMORY_ALLOCATION)
    assert acl.get_recent_err_msg()
    half = malloc(acl, total // 2)
    assert acl.rt.malloc(total // 2, 0) == (0, C.ACL_ERROR_RT_MEMORY_ALLOCATION)  # the rest cannot fit
    ok(acl.rt.free(malloc(acl, MiB)))  # smaller requests still succeed
    ok(acl.rt.free(half))
    ok(acl.rt.free(malloc(acl, total // 2)))  # and the memory came back


def test_memcpy_every_kind_round_trip(acl):
    data = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    n = data.nbytes
    a, b = malloc(acl, n), malloc(acl, n)
    ok(acl.rt.memcpy(a, n, data.ctypes.data, n, H2D))
    ok(acl.rt.memcpy(b, n, a, n, D2D))
    out = np.zeros_like(data)
    ok(acl.rt.memcpy(out.ctypes.data, n, b, n, D2H))
    np.testing.assert_array_equal(out, data)
    copy = np.zeros_like(data)
    ok(acl.rt.memcpy(copy.ctypes.data, n, data.ctypes.data, n, H2H))
    np.testing.assert_array_equal(copy, data)


def test_memcpy_default_kind_infers_direction(acl):
    data = np.arange(256, dtype=np.int64)
    n = data.nbytes
    a, b = malloc(acl, n), malloc(acl, n)
    ok(acl.rt.memcpy(a, n, data.ctypes.data, n, DEFAULT))  # host -> device
    ok(acl.rt.memcpy(b, n, a, n, DEFAULT))  # device -> device
    out, host_copy = np.zeros_like(data), np.zeros_like(data)
    ok(acl.rt.memcpy(out.ctypes.data, n, b, n, DEFAULT))  # device -> host
    ok(acl.rt.memcpy(host_copy.ctypes.data, n, out.ctypes.data, n, DEFAULT))  # host -> host
    np.testing.assert_array_equal(host_copy, data)


def test_memcpy_pointer_arithmetic_inside_an_allocation(acl):
    base = malloc(acl, 1024)
    ok(acl.rt.memset(base, 1024, 0, 1024))
    chunk = np.arange(16, dtype=np.float32)
    ok(acl.rt.memcpy(base + 256, 1024 - 256, chunk.ctypes.data, chunk.nbytes, H2D))
    whole = download(acl, base, (256,), np.float32)
    np.testing.assert_array_equal(whole[64:80], chunk)
    assert not whole[:64].any() and not whole[80:].any()


def test_memcpy_faults(acl):
    host = np.zeros(1024, np.uint8)
    h = host.ctypes.data
    dev, other = malloc(acl, 512), malloc(acl, 512)
    cases = {
        "count beyond the allocation": acl.rt.memcpy(dev, 1024, h, 1024, H2D),
        "range starting inside, ending outside": acl.rt.memcpy(dev + 500, 100, h, 100, H2D),
        "count > dest_max": acl.rt.memcpy(dev, 16, h, 32, H2D),
        "H2D from device memory": acl.rt.memcpy(dev, 64, other, 64, H2D),
        "H2D into host memory": acl.rt.memcpy(h, 64, h + 512, 64, H2D),
        "D2H from host memory": acl.rt.memcpy(h, 64, h + 512, 64, D2H),
        "D2H into device memory": acl.rt.memcpy(dev, 64, other, 64, D2H),
        "D2D with a host source": acl.rt.memcpy(dev, 64, h, 64, D2D),
        "H2H with a device destination": acl.rt.memcpy(dev, 64, h, 64, H2H),
        "unknown kind": acl.rt.memcpy(dev, 64, h, 64, 17),
        "non-int pointer": acl.rt.memcpy("dev", 64, h, 64, H2D),
        "negative count": acl.rt.memcpy(dev, 64, h, -1, H2D),
        "async beyond the allocation": acl.rt.memcpy_async(dev, 1024, h, 1024, H2D, 0),
        "async wrong kind": acl.rt.memcpy_async(h, 64, dev, 64, H2D, 0),
    }
    assert {k: v for k, v in cases.items() if v != INVALID_PARAM} == {}
    ok(acl.rt.free(other))
    assert acl.rt.memcpy(h, 64, other, 64, D2H) == INVALID_PARAM  # freed
    assert acl.rt.memcpy(h, 64, other, 64, DEFAULT) == INVALID_PARAM  # freed, direction inferred
    assert "allocation" in acl.get_recent_err_msg()
    ok(acl.rt.synchronize_stream(0))  # the refused async calls queued nothing


def test_memset_and_memset_async(acl):
    ptr = malloc(acl, 4096)
    ok(acl.rt.memset(ptr, 4096, 0x5A, 4096))
    assert (download(acl, ptr, (4096,), np.uint8) == 0x5A).all()
    ok(acl.rt.memset(ptr + 100, 4096 - 100, 0x01, 10))
    got = download(acl, ptr, (4096,), np.uint8)
    assert (got[100:110] == 1).all() and got[99] == 0x5A and got[110] == 0x5A
    assert acl.rt.memset(ptr, 8, 0, 16) == INVALID_PARAM  # count > max
    assert acl.rt.memset(ptr, 1 << 20, 0, 1 << 20) == INVALID_PARAM  # past the allocation
    host = np.zeros(16, np.uint8)
    assert acl.rt.memset(host.ctypes.data, 16, 0, 16) == INVALID_PARAM  # not device memory
    stream = val(acl.rt.create_stream())
    data = np.arange(1024, dtype=np.uint8)
    ok(acl.rt.memcpy_async(ptr, 1024, data.ctypes.data, 1024, H2D, stream))
    ok(acl.rt.memset_async(ptr + 512, 512, 0xFF, 512, stream))  # after the copy, on the same stream
    ok(acl.rt.synchronize_stream(stream))
    got = download(acl, ptr, (1024,), np.uint8)
    np.testing.assert_array_equal(got[:512], data[:512])
    assert (got[512:] == 0xFF).all()
    assert acl.rt.memset_async(ptr, 16, 0, 32, stream) == INVALID_PARAM


def test_async_copies_are_ordered_with_launches(acl):
    stream = val(acl.rt.create_stream())
    x1 = np.arange(64, dtype=np.float32)
    x2 = np.full(64, 100.0, np.float32)
    y = np.ones(64, np.float32)
    tx, ty = Tensor(acl, (64,), np.float32), Tensor.of(acl, y)
    out1, out2 = Tensor(acl, (64,), np.float32), Tensor(acl, (64,), np.float32)
    host1, host2 = np.zeros(64, np.float32), np.zeros(64, np.float32)
    Busy(acl).run(stream)  # everything below is queued behind real work
    ok(acl.rt.memcpy_async(tx.ptr, tx.nbytes, x1.ctypes.data, x1.nbytes, H2D, stream))
    ok(launch(acl, "Add", [tx, ty], [out1], stream=stream))
    ok(acl.rt.memcpy_async(tx.ptr, tx.nbytes, x2.ctypes.data, x2.nbytes, H2D, stream))  # overwrite x
    ok(launch(acl, "Add", [tx, ty], [out2], stream=stream))
    ok(acl.rt.memcpy_async(host1.ctypes.data, host1.nbytes, out1.ptr, out1.nbytes, D2H, stream))
    ok(acl.rt.memcpy_async(host2.ctypes.data, host2.nbytes, out2.ptr, out2.nbytes, DEFAULT, stream))
    ok(acl.rt.synchronize_stream(stream))
    np.testing.assert_array_equal(host1, x1 + y)
    np.testing.assert_array_equal(host2, x2 + y)


def test_async_host_to_host_and_device_to_device(acl):
    stream = val(acl.rt.create_stream())
    src = np.arange(100, dtype=np.int32)
    dst = np.zeros_like(src)
    a, b = upload(acl, src), malloc(acl, src.nbytes)
    ok(acl.rt.memcpy_async(b, src.nbytes, a, src.nbytes, D2D, stream))
    ok(acl.rt.memcpy_async(dst.ctypes.data, dst.nbytes, src.ctypes.data, src.nbytes, H2H, stream))
    ok(acl.rt.synchronize_stream(stream))
    np.testing.assert_array_equal(dst, src)
    np.testing.assert_array_equal(download(acl, b, src.shape, src.dtype), src)


def test_malloc_host_memory_serves_copies(acl):
    n = 4096
    h1, h2 = val(acl.rt.malloc_host(n)), val(acl.rt.malloc_host(n))
    assert h1 % 64 == 0 and h2 % 64 == 0 and h1 != h2
    src = acl.util.ptr_to_numpy(h1, (n // 4,), np.float32)
    src[:] = np.linspace(0, 1, n // 4, dtype=np.float32)
    dev = malloc(acl, n)
    ok(acl.rt.memcpy(dev, n, h1, n, H2D))
    ok(acl.rt.memcpy_async(h2, n, dev, n, DEFAULT, 0))  # malloc_host memory is host memory
    ok(acl.rt.synchronize_stream(0))
    np.testing.assert_array_equal(acl.util.ptr_to_numpy(h2, (n // 4,), np.float32), src)
    del src
    ok(acl.rt.free_host(h1))
    ok(acl.rt.free_host(h2))
    assert acl.rt.free_host(h1) == INVALID_PARAM
    assert acl.rt.malloc_host(0) == (0, INVALID_PARAM)


def test_util_round_trips(acl):
    data = b"flexnpu \x00\x01\x02 bytes"
    ptr = acl.util.bytes_to_ptr(data)
    assert acl.util.ptr_to_bytes(ptr, len(data)) == data
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    view = acl.util.ptr_to_numpy(acl.util.numpy_to_ptr(array), (3, 4), np.float32)
    np.testing.assert_array_equal(view, array)
    dev = malloc(acl, len(data))
    ok(acl.rt.memcpy(dev, len(data), ptr, len(data), H2D))
    back = bytearray(len(data))
    ok(acl.rt.memcpy(acl.util.bytes_to_ptr(back), len(back), dev, len(data), D2H))
    assert bytes(back) == data


# ---- tensor descs, data buffers, attrs ----------------------------------------------------------


def test_tensor_desc_getters(acl):
    desc = acl.create_tensor_desc(C.ACL_FLOAT16, [2, 3, 5], C.ACL_FORMAT_ND)
    assert desc != 0
    assert acl.get_tensor_desc_type(desc) == C.ACL_FLOAT16
    assert acl.get_tensor_desc_format(desc) == C.ACL_FORMAT_ND
    assert acl.get_tensor_desc_num_dims(desc) == 3
    assert [val(acl.get_tensor_desc_dim_v2(desc, i)) for i in range(3)] == [2, 3, 5]
    assert acl.get_tensor_desc_dim_v2(desc, 3)[1] == INVALID_PARAM
    assert acl.get_tensor_desc_size(desc) == 2 * 3 * 5 * 2
    acl.destroy_tensor_desc(desc)
    assert acl.get_tensor_desc_dim_v2(desc, 0)[1] == INVALID_RESOURCE
    assert acl.get_tensor_desc_num_dims(desc) == 0
    for bad in (
        (999, [2], C.ACL_FORMAT_ND),
        (C.ACL_FLOAT, [2], 999),
        (C.ACL_FLOAT, "ab", C.ACL_FORMAT_ND),
        (C.ACL_FLOAT, [2.5], C.ACL_FORMAT_ND),
        ([0], [2], C.ACL_FORMAT_ND),
    ):
        assert acl.create_tensor_desc(*bad) == 0, bad
        assert acl.get_recent_err_msg()


def test_data_buffers(acl):
    ptr = malloc(acl, 256)
    buf = acl.create_data_buffer(ptr, 256)
    assert buf != 0
    assert acl.get_data_buffer_addr(buf) == ptr
    assert acl.get_data_buffer_size_v2(buf) == 256
    ok(acl.update_data_buffer(buf, ptr + 64, 128))
    assert (acl.get_data_buffer_addr(buf), acl.get_data_buffer_size_v2(buf)) == (ptr + 64, 128)
    empty = acl.create_data_buffer(0, 0)
    assert empty != 0 and acl.get_data_buffer_size_v2(empty) == 0
    ok(acl.destroy_data_buffer(buf))
    assert acl.destroy_data_buffer(buf) == INVALID_RESOURCE
    assert acl.get_data_buffer_addr(buf) == 0
    assert acl.update_data_buffer(buf, ptr, 1) == INVALID_RESOURCE
    assert acl.create_data_buffer(ptr, -1) == 0
    assert acl.create_data_buffer("ptr", 8) == 0


def test_attr_setters_validate(acl):
    attr = acl.op.create_attr()
    assert attr != 0
    ok(acl.op.set_attr_bool(attr, "b", True))
    ok(acl.op.set_attr_int(attr, "i", -(2**40)))
    ok(acl.op.set_attr_float(attr, "f", 0.5))
    ok(acl.op.set_attr_string(attr, "s", "BSH"))
    ok(acl.op.set_attr_list_int(attr, "li", [1, 2, 3]))
    ok(acl.op.set_attr_list_float(attr, "lf", [0.5, 1.5]))
    ok(acl.op.set_attr_list_bool(attr, "lb", [True, False]))
    ok(acl.op.set_attr_data_type(attr, "dt", C.ACL_INT32))
    bad = {
        "empty name": acl.op.set_attr_int(attr, "", 1),
        "non-str name": acl.op.set_attr_int(attr, 7, 1),
        "str for int": acl.op.set_attr_int(attr, "i", "1"),
        "int beyond int64": acl.op.set_attr_int(attr, "i", 2**64),
        "str for float": acl.op.set_attr_float(attr, "f", "0.5"),
        "int for string": acl.op.set_attr_string(attr, "s", 5),
        "str for bool": acl.op.set_attr_bool(attr, "b", "yes"),
        "mixed list": acl.op.set_attr_list_int(attr, "li", [1, "2"]),
        "not a list": acl.op.set_attr_list_int(attr, "li", 5),
        "str in float list": acl.op.set_attr_list_float(attr, "lf", ["x"]),
        "unknown data type": acl.op.set_attr_data_type(attr, "dt", 12345),
    }
    assert {k: v for k, v in bad.items() if v != INVALID_PARAM} == {}
    acl.op.destroy_attr(attr)
    assert acl.op.set_attr_int(attr, "i", 1) == INVALID_RESOURCE
    assert acl.op.set_attr_int(12345, "i", 1) == INVALID_RESOURCE


# ---- operators -------------------------------------------------------------------------------------


def test_execute_add(acl):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((4, 33)).astype(np.float32), rng.standard_normal((4, 33)).astype(np.float32)
    ta, tb, out = Tensor.of(acl, a), Tensor.of(acl, b), Tensor(acl, (4, 33), np.float32)
    ok(launch(acl, "Add", [ta, tb], [out]))
    ok(acl.rt.synchronize_stream(0))
    np.testing.assert_array_equal(out.read(), a + b)
    ia, ib = np.arange(10, dtype=np.int32), np.full(10, -3, np.int32)
    ti, tj, iout = Tensor.of(acl, ia), Tensor.of(acl, ib), Tensor(acl, (10,), np.int32)
    stream = val(acl.rt.create_stream())
    ok(launch(acl, "Add", [ti, tj], [iout], stream=stream))
    ok(acl.rt.synchronize_stream(stream))
    np.testing.assert_array_equal(iout.read(), ia + ib)


def test_execute_matmul_with_transpose_attr(acl):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    w = rng.standard_normal((3, 7)).astype(np.float32)  # (N, K): used transposed
    bias = rng.standard_normal(3).astype(np.float32)
    tx, tw, tb = Tensor.of(acl, x), Tensor.of(acl, w), Tensor.of(acl, bias)
    out = Tensor(acl, (5, 3), np.float32)
    attr = make_attr(acl, transpose_x1=False, transpose_x2=True)
    ok(launch(acl, "MatMulV2", [tx, tw, tb], [out], attr))
    ok(acl.rt.synchronize_stream(0))
    np.testing.assert_allclose(out.read(), x @ w.T + bias, rtol=1e-5, atol=1e-5)


def test_execute_prompt_flash_attention(acl):
    rng = np.random.default_rng(4)
    seq, heads, kv_heads, dim = 6, 4, 2, 8
    q = rng.standard_normal((1, seq, heads * dim)).astype(np.float32)
    k = rng.standard_normal((1, seq, kv_heads * dim)).astype(np.float32)
    v = rng.standard_normal((1, seq, kv_heads * dim)).astype(np.float32)
    mask = np.triu(np.ones((seq, seq), np.bool_), k=1)  # True: do not attend (the future)
    out = Tensor(acl, q.shape, np.float32)
    scale = 1.0 / np.sqrt(dim)
    attr = make_attr(
        acl,
        num_heads=heads,
        num_key_value_heads=kv_heads,
        scale_value=float(scale),
        input_layout="BSH",
        pre_tokens=2147483647,
        next_tokens=0,
    )
    inputs = [Tensor.of(acl, a) for a in (q, k, v, mask)]
    ok(launch(acl, "PromptFlashAttention", inputs, [out], attr))
    ok(acl.rt.synchronize_stream(0))
    # reference: per query head h, kv head h // (heads // kv_heads), causal softmax attention
    qh = q.reshape(seq, heads, dim).transpose(1, 0, 2)
    kh = np.repeat(k.reshape(seq, kv_heads, dim).transpose(1, 0, 2), heads // kv_heads, axis=0)
    vh = np.repeat(v.reshape(seq, kv_heads, dim).transpose(1, 0, 2), heads // kv_heads, axis=0)
    scores = np.where(mask, -np.inf, qh @ kh.transpose(0, 2, 1) * scale)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    expected = (probs @ vh).transpose(1, 0, 2).reshape(1, seq, heads * dim)
    np.testing.assert_allclose(out.read(), expected, rtol=1e-4, atol=1e-5)


def test_attrs_are_snapshotted_at_launch(acl):
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((6, 6)).astype(np.float32), rng.standard_normal((6, 6)).astype(np.float32)
    tx, tw = Tensor.of(acl, x), Tensor.of(acl, w)
    out_t, out_n = Tensor(acl, (6, 6), np.float32), Tensor(acl, (6, 6), np.float32)
    stream = val(acl.rt.create_stream())
    Busy(acl).run(stream)  # the launches below run after the attr has changed
    attr = make_attr(acl, transpose_x2=True)
    ok(launch(acl, "MatMulV2", [tx, tw], [out_t], attr, stream))
    ok(acl.op.set_attr_bool(attr, "transpose_x2", False))
    ok(launch(acl, "MatMulV2", [tx, tw], [out_n], attr, stream))
    acl.op.destroy_attr(attr)  # destroying it after the launch does not affect the launch either
    ok(acl.rt.synchronize_stream(stream))
    np.testing.assert_allclose(out_t.read(), x @ w.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out_n.read(), x @ w, rtol=1e-5, atol=1e-5)


def test_unknown_operator_is_a_sticky_error_reported_once(acl):
    stream, other = val(acl.rt.create_stream()), val(acl.rt.create_stream())
    a = np.arange(8, dtype=np.float32)
    ta, out = Tensor.of(acl, a), Tensor(acl, (8,), np.float32)
    assert launch(acl, "NoSuchOperator", [ta], [out], stream=stream) == C.ACL_SUCCESS  # fails later
    ok(launch(acl, "Add", [ta, ta], [out], stream=other))
    assert acl.rt.synchronize_stream(stream) == C.ACL_ERROR_OP_NOT_FOUND
    assert acl.get_recent_err_msg()
    ok(acl.rt.synchronize_stream(other))  # other streams are unaffected
    ok(acl.rt.synchronize_stream(stream))  # reported once, then cleared
    ok(launch(acl, "Add", [ta, ta], [out], stream=stream))  # the stream works again
    ok(acl.rt.synchronize_stream(stream))
    np.testing.assert_array_equal(out.read(), a + a)


def test_failing_operator_is_reported_by_synchronize_device(acl):
    a = Tensor.of(acl, np.zeros(4, np.float32))
    ok(launch(acl, "NoSuchOperator", [a], [a]))
    assert acl.rt.synchronize_device() == C.ACL_ERROR_OP_NOT_FOUND
    ok(acl.rt.synchronize_device())


def test_optional_input_with_undefined_dtype(acl):
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 4)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    tx, tw, out = Tensor.of(acl, x), Tensor.of(acl, w), Tensor(acl, (2, 3), np.float32)
    absent = acl.create_tensor_desc(C.ACL_DT_UNDEFINED, [0], C.ACL_FORMAT_UNDEFINED)
    assert absent != 0
    empty = acl.create_data_buffer(0, 0)  # as ACL programs pass an omitted input: (nullptr, 0)
    ins = [tx.desc, tw.desc, absent], [tx.buf, tw.buf, empty]
    ok(acl.op.execute_v2("MatMulV2", *ins, [out.desc], [out.buf], 0, 0))
    ok(acl.rt.synchronize_stream(0))
    np.testing.assert_allclose(out.read(), x @ w, rtol=1e-5, atol=1e-5)


# ---- fault cases -----------------------------------------------------------------------------------


def test_invalid_stream_event_and_context_handles(acl):
    stream = val(acl.rt.create_stream())
    event = val(acl.rt.create_event())
    ctx = val(acl.rt.get_context())
    t = Tensor.of(acl, np.zeros(4, np.float32))
    garbage = (12345, -1, 2**70, "stream", 1.5, [1])
    for bad in (*garbage, event, ctx):
        assert acl.rt.synchronize_stream(bad) == INVALID_HANDLE, bad
        assert acl.rt.record_event(event, bad) == INVALID_HANDLE, bad
        assert acl.rt.memcpy_async(t.ptr, 16, t.ptr, 16, D2D, bad) == INVALID_HANDLE, bad
        assert launch(acl, "Add", [t, t], [t], stream=bad) == INVALID_HANDLE, bad
        assert acl.rt.destroy_stream(bad) == INVALID_HANDLE, bad
    for bad in (*garbage, stream, ctx):
        assert acl.rt.record_event(bad, stream) == INVALID_HANDLE, bad
        assert acl.rt.synchronize_event(bad) == INVALID_HANDLE, bad
        assert acl.rt.stream_wait_event(stream, bad) == INVALID_HANDLE, bad
        assert acl.rt.destroy_event(bad) == INVALID_HANDLE, bad
        assert acl.rt.event_elapsed_time(event, bad)[1] == INVALID_HANDLE, bad
    for bad in (*garbage, stream, event):
        assert acl.rt.set_context(bad) == INVALID_HANDLE, bad
        assert acl.rt.destroy_context(bad) == INVALID_HANDLE, bad
    assert acl.get_recent_err_msg()
    ok(acl.rt.synchronize_stream(stream))  # the valid objects still work
    assert val(acl.rt.get_context()) == ctx


def test_invalid_desc_buffer_and_attr_handles(acl):
    t = Tensor.of(acl, np.ones(4, np.float32))
    attr = make_attr(acl, transpose_x2=False)
    dead_desc = acl.create_tensor_desc(C.ACL_FLOAT, [4], C.ACL_FORMAT_ND)
    acl.destroy_tensor_desc(dead_desc)
    dead_buf = acl.create_data_buffer(t.ptr, 16)
    ok(acl.destroy_data_buffer(dead_buf))
    dead_attr = acl.op.create_attr()
    acl.op.destroy_attr(dead_attr)

    def add(in_descs, in_bufs, a=attr):
        return acl.op.execute_v2("Add", in_descs, in_bufs, [t.desc], [t.buf], a, 0)

    cases = {
        "destroyed desc": add([t.desc, dead_desc], [t.buf, t.buf]),
        "buffer as desc": add([t.desc, t.buf], [t.buf, t.buf]),
        "garbage desc": add([t.desc, 777], [t.buf, t.buf]),
        "destroyed buffer": add([t.desc, t.desc], [t.buf, dead_buf]),
        "desc as buffer": add([t.desc, t.desc], [t.buf, t.desc]),
        "unhashable buffer": add([t.desc, t.desc], [t.buf, [1]]),
        "destroyed attr": add([t.desc, t.desc], [t.buf, t.buf], dead_attr),
        "desc as attr": add([t.desc, t.desc], [t.buf, t.buf], t.desc),
        "garbage attr": add([t.desc, t.desc], [t.buf, t.buf], "attr"),
        "destroy a destroyed buffer": acl.destroy_data_buffer(dead_buf),
        "set on a destroyed attr": acl.op.set_attr_int(dead_attr, "x", 1),
        "dim of a destroyed desc": acl.get_tensor_desc_dim_v2(dead_desc, 0)[1],
    }
    assert {k: v for k, v in cases.items() if v != INVALID_RESOURCE} == {}
    assert acl.destroy_tensor_desc(dead_desc) is None  # void, but it leaves a message
    assert acl.get_recent_err_msg()
    ok(add([t.desc, t.desc], [t.buf, t.buf]))
    ok(acl.rt.synchronize_stream(0))
    np.testing.assert_array_equal(t.read(), np.full(4, 2, np.float32))


def test_execute_v2_bad_arguments(acl):
    t = Tensor.of(acl, np.ones(4, np.float32))
    d, b = t.desc, t.buf
    cases = {
        "op type not a str": acl.op.execute_v2(5, [d, d], [b, b], [d], [b], 0, 0),
        "empty op type": acl.op.execute_v2("", [d, d], [b, b], [d], [b], 0, 0),
        "descs not a list": acl.op.execute_v2("Add", d, [b, b], [d], [b], 0, 0),
        "None for a list": acl.op.execute_v2("Add", [d, d], None, [d], [b], 0, 0),
        "fewer input buffers": acl.op.execute_v2("Add", [d, d], [b], [d], [b], 0, 0),
        "more output descs": acl.op.execute_v2("Add", [d, d], [b, b], [d, d], [b], 0, 0),
    }
    assert {k: v for k, v in cases.items() if v != INVALID_PARAM} == {}
    ok(acl.rt.synchronize_stream(0))  # nothing was queued
    np.testing.assert_array_equal(t.read(), np.ones(4, np.float32))


def test_recent_error_message_is_per_thread_and_read_once(acl):
    assert acl.get_recent_err_msg() == ""  # nothing failed yet
    assert acl.rt.synchronize_stream(424242) == INVALID_HANDLE
    in_thread(lambda: acl.rt.malloc(0, 0))  # another thread's failure
    message = acl.get_recent_err_msg()
    assert "107017" in message and "stream" in message
    assert acl.get_recent_err_msg() == ""  # read once
    ok(acl.rt.free(malloc(acl, 64)))
    assert acl.get_recent_err_msg() == ""  # successes leave none


def test_ipc_memory_within_one_process(acl):
    data = np.arange(64, dtype=np.int32)
    ptr = upload(acl, data)
    key = val(acl.rt.ipc_mem_get_export_key(ptr, data.nbytes, 0))
    assert isinstance(key, str) and key
    ok(acl.rt.ipc_mem_set_import_pid(key, [os.getpid()]))
    imported = val(acl.rt.ipc_mem_import_by_key(key, 0))
    np.testing.assert_array_equal(download(acl, imported, data.shape, data.dtype), data)
    ok(acl.rt.ipc_mem_close(key))
    assert acl.rt.ipc_mem_import_by_key("no-such-key", 0)[1] != C.ACL_SUCCESS
    host = np.zeros(16, np.int32)
    assert acl.rt.ipc_mem_get_export_key(host.ctypes.data, 64, 0)[1] == INVALID_PARAM


# ---- one runtime's own behaviour -------------------------------------------------------------------


def test_direct_ipc_is_process_local():
    from flexnpu.acl._api import bind
    from flexnpu.acl._direct import DirectRuntime

    runtime = DirectRuntime(memory_bytes=16 * MiB, device_count=1)
    acl = bind(runtime)
    try:
        ok(acl.init())
        ok(acl.rt.set_device(0))
        ptr = malloc(acl, 256)
        key = val(acl.rt.ipc_mem_get_export_key(ptr, 256, 0))
        assert acl.rt.ipc_mem_set_import_pid(key, [os.getpid() + 1]) == C.ACL_ERROR_RT_FEATURE_NOT_SUPPORT
        assert "flexnpu run" in acl.get_recent_err_msg()
        foreign = key.replace(f"-{os.getpid()}-", f"-{os.getpid() + 1}-")
        assert acl.rt.ipc_mem_import_by_key(foreign, 0) == (0, C.ACL_ERROR_RT_FEATURE_NOT_SUPPORT)
        ok(acl.finalize())
    finally:
        runtime.close()


def test_direct_runtime_reads_the_environment(monkeypatch):
    from flexnpu.acl._direct import DirectRuntime

    monkeypatch.setenv("FLEXNPU_MEMORY", "64MiB")
    monkeypatch.setenv("FLEXNPU_VISIBLE_DEVICES", "3,5")
    monkeypatch.setenv("FLEXNPU_SOC", "Ascend910B3")
    runtime = DirectRuntime()
    try:
        assert runtime.memory_bytes == 64 * MiB and runtime.physical_ids == [3, 5]
        assert runtime.get_device_count() == (2, 0) and runtime.get_soc_name() == "Ascend910B3"
        ok(runtime.init())
        ok(runtime.set_device(1))
        assert runtime.get_mem_info(C.ACL_HBM_MEM)[1] == 64 * MiB
        assert runtime.set_device(2) == C.ACL_ERROR_RT_INVALID_DEVICEID
    finally:
        runtime.close()


def test_flexnpu_acl_in_direct_mode_exposes_every_name():
    code = (
        "import json, flexnpu.acl as acl\n"
        "from flexnpu.acl._api import RT_NAMES, OP_NAMES, TOP_NAMES\n"
        "missing = [f'rt.{n}' for n in RT_NAMES if not callable(getattr(acl.rt, n, None))]\n"
        "missing += [f'op.{n}' for n in OP_NAMES if not callable(getattr(acl.op, n, None))]\n"
        "missing += [n for n in TOP_NAMES if not callable(getattr(acl, n, None))]\n"
        "missing += [f'util.{n}' for n in ('bytes_to_ptr', 'ptr_to_bytes', 'numpy_to_ptr', 'ptr_to_numpy')\n"
        "            if not callable(getattr(acl.util, n, None))]\n"
        "ok = acl.init() == 0 and acl.rt.set_device(0) == 0 and acl.rt.malloc(64, 0)[1] == 0\n"
        "print(json.dumps({'runtime': type(acl.runtime).__name__, 'missing': missing, 'ok': ok,\n"
        "                  'finalize': acl.finalize()}))\n"
    )
    env = {**os.environ, "FLEXNPU_MODE": "direct", "FLEXNPU_MEMORY": "16MiB"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {"runtime": "DirectRuntime", "missing": [], "ok": True, "finalize": 0}


def test_nothing_raises_for_bad_input(acl):
    """Every acl function called with wrong-typed arguments returns an error, never raises."""
    from flexnpu.acl._api import OP_NAMES, RT_NAMES, TOP_NAMES

    weird = (None, "x", [1], {"a": 1}, -5, 2**80, 1.5, np.zeros(3))
    started = time.monotonic()
    for namespace, names in ((acl.rt, RT_NAMES), (acl.op, OP_NAMES), (acl, TOP_NAMES)):
        for name in names:
            fn = getattr(namespace, name)
            for arg in weird:  # (none of them is a valid device id, so nothing gets reset)
                for arity in range(1, 8):
                    try:
                        fn(*([arg] * arity))
                    except TypeError as exc:  # a wrong number of arguments is the caller's bug
                        assert "argument" in str(exc), (name, arg, exc)
    assert time.monotonic() - started < 10
    ok(acl.rt.synchronize_device())
