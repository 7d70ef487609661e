"""The real NPU: AscendCL (``libascendcl.so``) driven through ctypes, loaded at run time.

Library.  No build-time CANN dependency: the library is found at run time, first of
``$FLEXNPU_ASCENDCL`` (when set, the only place tried: an explicit choice that fails is an error,
not a reason to load some other copy), ``libascendcl.so`` through the dynamic loader
(``LD_LIBRARY_PATH``, as CANN's ``set_env.sh`` sets it), ``$ASCEND_HOME_PATH/lib64`` and
``/usr/local/Ascend/ascend-toolkit/latest/lib64``.  ``_SIGNATURES`` is our own declaration of the
public signatures of every function called (hicann/runtime ``acl_rt.h``, ``acl_base_rt.h``;
hicann/ge ``acl_op.h``, ``acl_base_mdl.h``).  ``aclInit`` runs once per process and library;
``aclFinalize`` is never called (other devices of the process may still be open).

Context.  ``aclrtSetDevice`` makes the device's default context current on the constructing
thread only: ACL's current context is per thread, so every entry point first makes it current on
the calling thread (once per thread; see ``_bind``), the completion thread included.

Streams and completion.  Each Device stream owns one ACL stream and a queue of its commands in
submission order.  A command is *issued* to the runtime at once (the ACL call, then an
``aclrtRecordEvent`` of a pooled *marker* event after it), or *held* when it must wait for
something only the host knows: a HostFunc, everything queued behind one, and a wait whose event
record is itself still held.  One completion thread per device walks the heads of the busy
streams: it polls each head's marker with ``aclrtQueryEventStatus`` (backing off from 20 us to
1 ms while nothing completes; at the fastest while someone synchronizes), runs a HostFunc on
itself when it reaches the head, issues what was held behind it, and calls ``on_done(code)``
strictly in each stream's order, before the stream counts as idle.

Why markers and not ``aclrtLaunchCallback``: one non-blocking query serves any number of streams
from one thread, with no ``aclrtSubscribeReport`` binding to undo when a stream is destroyed with
callbacks outstanding, and neither mechanism reports a task's error code anyway.

Errors.  A call that the runtime refuses when issued (a non-zero return) is that command's code.
A task that fails on the chip is reported by ACL only at the next synchronization (streams
continue on failure by default), so when a stream drains -- its last issued command's marker
completes and nothing else is issued -- the completion thread takes the stream's pending error
with ``aclrtSynchronizeStreamWithTimeout`` (immediate: the stream is idle) and gives it to that
last command.  Commands that completed before it in the same burst have already reported 0: the
sticky error is exact per stream, its attribution within a burst is not.  As in the emulated
device the code then becomes sticky: later commands are not issued (their ``on_done`` gets the
code) until ``synchronize_stream`` reports and clears it.  Commands already handed to the runtime
when a failure surfaces still run.  A non-zero return of a marker query is taken as the failure
of that command.

Memory.  ``aclrtMalloc`` / ``aclrtMallocAlign32`` / ``aclrtFree``; ``mem_info`` is what
``aclrtGetMemInfo`` reports for HBM (DDR on cards without HBM), so ``memory_bytes`` is ignored.
Live allocations are tracked so that every address and length given to the runtime is checked
against one allocation first (a bad pointer never reaches the driver or a neighbour); their sizes
follow aclrtMalloc's documented rounding (``allocation_size``, for per-client quotas).  Host
buffers of async copies are kept alive until the command's ``on_done``.

Operators.  ``LaunchOp`` becomes ``aclopExecuteV2`` on the stream: tensor descriptors are cached
per (dtype, format, shape) up to ``_DESC_CACHE_MAX`` and destroyed at ``close`` (past the cap, a
launch's own descriptors are destroyed when it completes); data buffers and the operator's
attributes (``aclopCreateAttr`` + ``aclopSetAttr*``, typed from the Python values; ``AttrDataType``
marks an aclDataType attribute) are made per launch and destroyed when it completes.  An input
whose dtype is ACL_DT_UNDEFINED is passed absent, as ACL expects optional inputs: an undefined
descriptor without dims and a (NULL, 0) data buffer.

Invalid streams or events are ACL_ERROR_RT_INVALID_HANDLE; any call on a closed device is
ACL_ERROR_RT_FAILURE.  ``on_done`` callbacks run on the completion thread: a callback may call the
device but must not synchronize (it would wait for itself).
"""

from __future__ import annotations

import bisect
import ctypes
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from typing import Any, Callable, Optional

import numpy as np

from flexnpu.acl import constants as C

from .base import (
    AttrDataType,
    Command,
    CopyOnDevice,
    CopyToDevice,
    CopyToHost,
    DeviceError,
    DoneCallback,
    HostFunc,
    LaunchOp,
    Memset,
    RecordEvent,
    ResetEvent,
    TensorArg,
    WaitEvent,
    acl_malloc_size,
    host_bytes,
)
from .queued import CLOSED, QueuedDevice, call_on_done, hex_address

log = logging.getLogger(__name__)

LIBRARY = "libascendcl.so"
LIBRARY_ENV = "FLEXNPU_ASCENDCL"
TOOLKIT_LIB64 = "/usr/local/Ascend/ascend-toolkit/latest/lib64"

_POLL_MIN_S = 20e-6  # completion polling backs off from here ...
_POLL_MAX_S = 1e-3  # ... to here while nothing completes
_HARVEST_TIMEOUT_MS = 1000  # the stream is idle when its error is taken; this only guards a wedged device
_CLOSE_TIMEOUT_MS = 10_000  # close waits this long for what the chip still runs
_DESC_CACHE_MAX = 4096

# ---- our declarations of the public ACL signatures ----------------------------------------------------

_ptr = ctypes.c_void_p
_ptr_out = ctypes.POINTER(ctypes.c_void_p)
_ptr_array = ctypes.POINTER(ctypes.c_void_p)
_size = ctypes.c_size_t
_err = ctypes.c_int  # aclError
_enum = ctypes.c_int  # C enums: aclDataType, aclFormat, aclrtMemcpyKind, aclrtMemAttr, aclrtMemMallocPolicy
_str = ctypes.c_char_p

_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    # name: (restype, argtypes)
    "aclInit": (_err, [_str]),  # (const char *configPath)
    "aclGetRecentErrMsg": (_str, []),
    "aclrtSetDevice": (_err, [ctypes.c_int32]),
    "aclrtResetDevice": (_err, [ctypes.c_int32]),
    "aclrtGetCurrentContext": (_err, [_ptr_out]),
    "aclrtSetCurrentContext": (_err, [_ptr]),
    "aclrtGetSocName": (_str, []),
    # memory
    "aclrtGetMemInfo": (_err, [_enum, ctypes.POINTER(_size), ctypes.POINTER(_size)]),  # (attr, *free, *total)
    "aclrtMalloc": (_err, [_ptr_out, _size, _enum]),  # (**devPtr, size, policy)
    "aclrtMallocAlign32": (_err, [_ptr_out, _size, _enum]),
    "aclrtFree": (_err, [_ptr]),
    "aclrtMemcpy": (_err, [_ptr, _size, _ptr, _size, _enum]),  # (dst, destMax, src, count, kind)
    "aclrtMemset": (_err, [_ptr, _size, ctypes.c_int32, _size]),  # (devPtr, maxCount, value, count)
    "aclrtMemcpyAsync": (_err, [_ptr, _size, _ptr, _size, _enum, _ptr]),  # ..., stream
    "aclrtMemsetAsync": (_err, [_ptr, _size, ctypes.c_int32, _size, _ptr]),  # ..., stream
    # streams and events
    "aclrtCreateStream": (_err, [_ptr_out]),
    "aclrtDestroyStream": (_err, [_ptr]),
    "aclrtSynchronizeStreamWithTimeout": (_err, [_ptr, ctypes.c_int32]),  # (stream, timeout ms; -1 forever)
    "aclrtCreateEvent": (_err, [_ptr_out]),
    "aclrtCreateEventWithFlag": (_err, [_ptr_out, ctypes.c_uint32]),
    "aclrtDestroyEvent": (_err, [_ptr]),
    "aclrtRecordEvent": (_err, [_ptr, _ptr]),  # (event, stream)
    "aclrtStreamWaitEvent": (_err, [_ptr, _ptr]),  # (stream, event): the other order
    "aclrtResetEvent": (_err, [_ptr, _ptr]),  # (event, stream)
    "aclrtQueryEventStatus": (_err, [_ptr, ctypes.POINTER(_enum)]),  # (event, *aclrtEventRecordedStatus)
    "aclrtEventElapsedTime": (_err, [ctypes.POINTER(ctypes.c_float), _ptr, _ptr]),  # (*ms, start, end)
    # operators
    "aclCreateTensorDesc": (_ptr, [_enum, ctypes.c_int, ctypes.POINTER(ctypes.c_int64), _enum]),
    "aclDestroyTensorDesc": (None, [_ptr]),
    "aclCreateDataBuffer": (_ptr, [_ptr, _size]),
    "aclDestroyDataBuffer": (_err, [_ptr]),
    "aclopCreateAttr": (_ptr, []),
    "aclopDestroyAttr": (None, [_ptr]),
    "aclopSetAttrBool": (_err, [_ptr, _str, ctypes.c_uint8]),
    "aclopSetAttrInt": (_err, [_ptr, _str, ctypes.c_int64]),
    "aclopSetAttrFloat": (_err, [_ptr, _str, ctypes.c_float]),
    "aclopSetAttrString": (_err, [_ptr, _str, _str]),
    "aclopSetAttrDataType": (_err, [_ptr, _str, _enum]),
    "aclopSetAttrListBool": (_err, [_ptr, _str, ctypes.c_int, ctypes.POINTER(ctypes.c_uint8)]),
    "aclopSetAttrListInt": (_err, [_ptr, _str, ctypes.c_int, ctypes.POINTER(ctypes.c_int64)]),
    "aclopSetAttrListFloat": (_err, [_ptr, _str, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]),
    # (opType, numInputs, inputDesc[], inputs[], numOutputs, outputDesc[], outputs[], attr, stream)
    "aclopExecuteV2": (_err, [_str, ctypes.c_int, _ptr_array, _ptr_array, ctypes.c_int, _ptr_array, _ptr_array,
                              _ptr, _ptr]),
}


class _Runtime:
    """libascendcl with our declarations bound as attributes (``rt.aclrtMalloc(...)``)."""

    def __init__(self, lib: ctypes.CDLL, path: str):
        self.path = path
        for name, (restype, argtypes) in _SIGNATURES.items():
            try:
                fn = getattr(lib, name)
            except AttributeError:
                raise DeviceError(
                    C.ACL_ERROR_RT_FAILURE,
                    f"{path} has no {name}: the ascend backend needs a CANN whose AscendCL provides it",
                ) from None
            fn.restype, fn.argtypes = restype, argtypes
            setattr(self, name, fn)
        rc = self.aclInit(None)
        if rc not in (C.ACL_SUCCESS, C.ACL_ERROR_REPEAT_INITIALIZE):  # repeat: another user in the process did
            raise DeviceError(rc, f"aclInit failed: {self.recent_error()}")

    def recent_error(self) -> str:
        msg = self.aclGetRecentErrMsg()
        return msg.decode(errors="replace") if msg else "(no message)"


_runtimes: dict[str, _Runtime] = {}
_runtimes_lock = threading.Lock()
_tls = threading.local()  # .device: the device (its _token) whose context this thread made current


def library_candidates() -> list[str]:
    """Where libascendcl.so is looked for, in order (see the module docstring)."""
    explicit = os.environ.get(LIBRARY_ENV)
    if explicit:
        return [explicit]
    places = [LIBRARY]
    home = os.environ.get("ASCEND_HOME_PATH")
    if home:
        places.append(os.path.join(home, "lib64", LIBRARY))
    places.append(os.path.join(TOOLKIT_LIB64, LIBRARY))
    return places


def load_runtime() -> _Runtime:
    """The AscendCL runtime of this process (loaded and initialized on first use)."""
    tried = []
    with _runtimes_lock:
        for path in library_candidates():
            if path in _runtimes:
                return _runtimes[path]
            try:
                lib = ctypes.CDLL(path)
            except OSError as exc:
                tried.append(f"  {path}: {exc}")
                continue
            runtime = _runtimes[path] = _Runtime(lib, path)
            return runtime
    raise DeviceError(
        C.ACL_ERROR_RT_FAILURE,
        "the ascend backend cannot load AscendCL (libascendcl.so); tried:\n" + "\n".join(tried) + "\n"
        "Install the CANN toolkit and `source <toolkit>/set_env.sh` (it sets ASCEND_HOME_PATH and "
        f"LD_LIBRARY_PATH), or set {LIBRARY_ENV} to the library's path; without an NPU use the emulated backend.",
    )


# ---- streams, events and their commands --------------------------------------------------------------

_HELD, _RUNNING, _ISSUED, _SETTLED = "held", "running", "issued", "settled"
_STAY_HELD = -1  # an issuer's answer: not yet (a wait whose record the runtime has not seen)


class _Entry:
    """One queued command: held (not yet given to the runtime), running (a host function, on the
    completion thread), issued (with a marker), or settled (its code is known: refused when issued,
    skipped for a sticky error, or nothing to run)."""

    __slots__ = ("cmd", "code", "keep", "marker", "on_done", "release", "state", "ticket")

    def __init__(self, cmd: Command, on_done: DoneCallback):
        self.cmd = cmd
        self.on_done = on_done
        self.state = _HELD
        self.code = 0
        self.marker: Optional[int] = None  # the event recorded after an issued command
        self.keep: Any = None  # a host buffer the runtime reads or writes until completion
        self.release: list[tuple[Callable[[int], Any], int]] = []  # ACL objects to destroy after it ran
        self.ticket = 0  # RecordEvent: this record's number; WaitEvent: the record it waits for


class _Stream:
    __slots__ = ("destroyed", "device", "discard", "error", "handle", "held", "inflight", "issue_lock",
                 "notifying", "priority", "queue")

    def __init__(self, device: AscendDevice, handle: int, priority: int):
        self.device = device
        self.handle = handle
        self.priority = priority  # recorded: aclrtCreateStreamWithConfig documents its priority as reserved
        self.queue: deque[_Entry] = deque()  # every command whose on_done has not been called, in order
        self.held = 0  # entries of queue held or running: while any are, new ones are held behind them
        self.inflight = 0  # entries of queue that are issued
        self.error = 0  # sticky error code
        self.notifying = False  # the completion thread is in an on_done of this stream
        self.issue_lock = threading.Lock()  # keeps the runtime's order equal to the queue's
        self.destroyed = False
        self.discard = False  # destroyed with discard_pending: no more on_done calls

    def idle(self) -> bool:
        return not self.queue and not self.notifying


class _Event:
    __slots__ = ("destroyed", "device", "flags", "handle", "issued", "last", "pending", "records", "timed", "users")

    def __init__(self, device: AscendDevice, handle: int, flags: int):
        self.device = device
        self.handle = handle
        self.flags = flags
        self.records = 0  # records ever submitted: each record's number
        self.last = 0  # number of the latest record submitted (0: none since creation or reset)
        self.issued = 0  # number of the record the runtime saw last: the one its waits and queries see
        self.pending: set[int] = set()  # records submitted whose on_done has not been called
        self.timed = 0  # the latest record that completed without error
        self.users = 0  # queued commands naming this event: its ACL handle outlives them
        self.destroyed = False

    def complete(self) -> bool:
        return self.last not in self.pending


class AscendDevice(QueuedDevice):
    """One physical Ascend NPU through AscendCL; see the module docstring."""

    stream_type = _Stream
    event_type = _Event

    def __init__(self, device_id: int = 0, memory_bytes: Optional[int] = None):
        del memory_bytes  # the device's memory is what the runtime reports
        self._acl = acl = load_runtime()
        self.device_id = device_id
        self._lock = threading.Lock()  # guards streams, events, queues
        self._work_cv = threading.Condition(self._lock)  # the completion thread waits here
        self._sync_cv = threading.Condition(self._lock)  # synchronize_* callers wait here
        self._closed = False
        self._check(acl.aclrtSetDevice(device_id), f"aclrtSetDevice({device_id})")
        try:
            context = ctypes.c_void_p()
            self._check(acl.aclrtGetCurrentContext(ctypes.byref(context)), "aclrtGetCurrentContext")
            self._context = context.value
            self._token = object()  # a device reset and opened again may get the same context pointer
            _tls.device = self._token
            name = acl.aclrtGetSocName()
            self.soc_name = name.decode(errors="replace") if name else "Ascend"
            self._mem_attr = C.ACL_HBM_MEM
            if self.mem_info()[1] == 0:  # cards without HBM report their memory as DDR
                self._mem_attr = C.ACL_DDR_MEM
            self.total_memory = self.mem_info()[1]
        except BaseException:
            acl.aclrtResetDevice(device_id)
            raise
        self._mem_lock = threading.Lock()
        self._starts: list[int] = []  # sorted start addresses of live allocations
        self._allocs: dict[int, int] = {}  # start -> usable size
        self._streams: dict[_Stream, None] = {}  # live streams in creation order
        self._events: dict[_Event, None] = {}  # live events: their handles go at close
        self._busy: dict[_Stream, None] = {}  # streams with queued commands: what the completion thread walks
        self._waiters = 0  # threads in a synchronize_* call: the completion thread polls fast
        self._idle = False  # the completion thread waits for work without a timeout
        self._markers: list[int] = []  # free marker events
        self._all_markers: list[int] = []
        self._descs: OrderedDict[tuple[int, int, tuple[int, ...]], int] = OrderedDict()
        self._descs_lock = threading.Lock()
        self._issuers: dict[type, Callable[[_Stream, _Entry], Optional[int]]] = {
            LaunchOp: self._issue_launch,
            CopyToDevice: self._issue_to_device,
            CopyToHost: self._issue_to_host,
            CopyOnDevice: self._issue_on_device,
            Memset: self._issue_memset,
            RecordEvent: self._issue_record,
            WaitEvent: self._issue_wait,
            ResetEvent: self._issue_reset,
        }
        self._thread = threading.Thread(target=self._complete_loop, name=f"npu{device_id}-acl-done", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<AscendDevice {self.device_id} {self.soc_name} via {self._acl.path}>"

    # ---- memory -------------------------------------------------------------------------------------

    def malloc(self, nbytes: int, policy: int = C.ACL_MEM_MALLOC_HUGE_FIRST, align32: bool = False) -> int:
        if not isinstance(nbytes, (int, np.integer)) or nbytes <= 0:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"malloc size must be a positive int, got {nbytes!r}")
        self._enter()
        ptr = ctypes.c_void_p()
        fn = self._acl.aclrtMallocAlign32 if align32 else self._acl.aclrtMalloc
        self._check(fn(ctypes.byref(ptr), int(nbytes), int(policy)), f"aclrtMalloc of {nbytes} bytes")
        with self._mem_lock:
            bisect.insort(self._starts, ptr.value)
            self._allocs[ptr.value] = acl_malloc_size(int(nbytes), align32)
        return ptr.value

    def free(self, addr: int) -> None:
        self._enter()
        with self._mem_lock:
            if self._allocs.pop(addr, None) is None:
                raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"{hex_address(addr)} is not the start of an allocation")
            del self._starts[bisect.bisect_left(self._starts, addr)]
        self._check(self._acl.aclrtFree(addr), f"aclrtFree({addr:#x})")

    def mem_info(self) -> tuple[int, int]:
        self._enter()
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        self._check(self._acl.aclrtGetMemInfo(self._mem_attr, ctypes.byref(free), ctypes.byref(total)),
                    "aclrtGetMemInfo")
        return free.value, total.value

    def allocation_size(self, addr: int) -> int:
        """The usable size of the allocation starting at addr (aclrtMalloc's documented rounding)."""
        with self._mem_lock:
            size = self._allocs.get(addr)
        if size is None:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"{hex_address(addr)} is not the start of an allocation")
        return size

    def write(self, addr: int, data: Any) -> None:
        src = host_bytes(data, writable=False)
        if src.size:
            room = self._room(addr, src.size)
            self._enter()
            self._check(self._acl.aclrtMemcpy(addr, room, src.ctypes.data, src.size, C.ACL_MEMCPY_HOST_TO_DEVICE),
                        "aclrtMemcpy (host to device)")

    def read_into(self, dst: Any, addr: int) -> None:
        out = host_bytes(dst, writable=True)
        if out.size:
            self._room(addr, out.size)
            self._enter()
            self._check(self._acl.aclrtMemcpy(out.ctypes.data, out.size, addr, out.size, C.ACL_MEMCPY_DEVICE_TO_HOST),
                        "aclrtMemcpy (device to host)")

    def copy(self, dst: int, src: int, nbytes: int) -> None:
        if nbytes:
            room = self._room(dst, nbytes)
            self._room(src, nbytes)
            self._enter()
            self._check(self._acl.aclrtMemcpy(dst, room, src, nbytes, C.ACL_MEMCPY_DEVICE_TO_DEVICE),
                        "aclrtMemcpy (device to device)")

    def memset(self, addr: int, value: int, nbytes: int) -> None:
        if nbytes:
            room = self._room(addr, nbytes)
            self._enter()
            self._check(self._acl.aclrtMemset(addr, room, int(value) & 0xFF, nbytes), "aclrtMemset")

    def _room(self, addr: int, nbytes: int) -> int:
        """Bytes from addr to the end of its allocation, which must hold nbytes (the destMax to pass)."""
        if not isinstance(nbytes, (int, np.integer)) or nbytes < 0:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"byte count must be a non-negative int, got {nbytes!r}")
        if not isinstance(addr, (int, np.integer)):
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"device address {addr!r} is not an int")
        with self._mem_lock:
            i = bisect.bisect_right(self._starts, addr) - 1
            start = self._starts[i] if i >= 0 else None
            end = start + self._allocs[start] if start is not None else None
        if end is None or addr >= end:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"device address {hex_address(addr)} is in no allocation")
        if addr + nbytes > end:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM,
                              f"{nbytes} bytes at {hex_address(addr)} run past the end of the allocation "
                              f"[{hex_address(start)}, {hex_address(end)})")
        return end - addr

    # ---- streams ------------------------------------------------------------------------------------

    def create_stream(self, priority: int = 0) -> Any:
        self._enter()
        handle = ctypes.c_void_p()
        self._check(self._acl.aclrtCreateStream(ctypes.byref(handle)), "aclrtCreateStream")
        stream = _Stream(self, handle.value, priority)
        with self._lock:
            self._streams[stream] = None
        return stream

    def destroy_stream(self, stream: Any, discard_pending: bool = False) -> None:
        with self._lock:
            s = self._stream(stream)
        dropped, dead_events = [], []
        with s.issue_lock, self._lock:  # (issue_lock: no command of s is half-issued)
            s = self._stream(stream)
            s.destroyed = True  # no more submissions
            if discard_pending:
                s.discard = True
                kept: deque[_Entry] = deque()
                for entry in s.queue:  # what has started must finish: the chip may use host buffers
                    if entry.state in (_ISSUED, _RUNNING):
                        kept.append(entry)
                    else:
                        dropped.append(entry)
                        dead_events.append(self._forget(entry))
                s.queue = kept
                s.held = sum(entry.state == _RUNNING for entry in kept)
                if not s.queue:
                    self._busy.pop(s, None)
        self._enter()
        for entry in dropped:
            self._release(entry)
        for handle in filter(None, dead_events):
            self._acl.aclrtDestroyEvent(handle)
        with self._lock:
            code = self._wait(s.idle, None, C.ACL_ERROR_RT_STREAM_SYNC_TIMEOUT)
            self._streams.pop(s, None)
        if code == CLOSED:
            raise DeviceError(CLOSED, "the device was closed")
        self._check(self._acl.aclrtDestroyStream(s.handle), "aclrtDestroyStream")

    def submit(self, stream: Any, cmd: Command, on_done: DoneCallback = None) -> None:
        issue = self._issuer(type(cmd))
        if issue is None and not isinstance(cmd, HostFunc):
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"unknown command {type(cmd).__name__}")
        entry = _Entry(cmd, on_done)
        with self._lock:
            s = self._stream(stream)
        self._enter()
        with s.issue_lock:
            with self._lock:
                s = self._stream(stream)  # not destroyed meanwhile
                self._register(entry)
                if s.error:
                    entry.state, entry.code = _SETTLED, s.error  # skipped: the stream's sticky error
                go = entry.state == _HELD and not s.held and not isinstance(cmd, HostFunc)
            if go:
                self._issue(s, entry)
            with self._lock:
                if entry.state == _HELD:
                    s.held += 1
                s.queue.append(entry)
                self._busy[s] = None
                if self._idle:
                    self._work_cv.notify()

    def has_work(self) -> bool:
        return not all(s.idle() for s in list(self._streams))

    def synchronize_device(self, timeout: Optional[float] = None) -> int:
        with self._lock:
            self._check_open()
            code = self._wait(lambda: all(s.idle() for s in self._streams), timeout,
                              C.ACL_ERROR_RT_STREAM_SYNC_TIMEOUT)
            return code or self._take_sticky_errors()

    # ---- events -------------------------------------------------------------------------------------

    def create_event(self, flags: int = 0) -> Any:
        self._enter()
        handle = ctypes.c_void_p()
        if flags:
            self._check(self._acl.aclrtCreateEventWithFlag(ctypes.byref(handle), flags), "aclrtCreateEventWithFlag")
        else:  # no flag: the default event (aclrtCreateEventWithFlag rejects 0)
            self._check(self._acl.aclrtCreateEvent(ctypes.byref(handle)), "aclrtCreateEvent")
        event = _Event(self, handle.value, flags)
        with self._lock:
            self._events[event] = None
        return event

    def destroy_event(self, event: Any) -> None:
        with self._lock:
            e = self._event(event)
            e.destroyed = True
            now = e.users == 0  # else the last command naming it destroys it
            if now:
                self._events.pop(e, None)
        if now:
            self._enter()
            self._check(self._acl.aclrtDestroyEvent(e.handle), "aclrtDestroyEvent")

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        with self._lock:
            for name, event in (("start", start), ("end", end)):
                e = self._event(event, allow_destroyed=True)
                # the runtime times the record it saw last: it must be the completed one we mean
                if not e.timed or not e.complete() or e.issued != e.timed:
                    raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"the {name} event has no completed record")
        self._enter()
        ms = ctypes.c_float()
        self._check(self._acl.aclrtEventElapsedTime(ctypes.byref(ms), start.handle, end.handle),
                    "aclrtEventElapsedTime")
        return float(ms.value)

    # ---- lifecycle ----------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._work_cv.notify_all()
            self._sync_cv.notify_all()
        if threading.current_thread() is not self._thread:  # close() may come from an on_done callback
            self._thread.join()
        acl = self._acl
        self._bind()
        streams, self._streams = list(self._streams), {}
        for s in streams:  # the chip may still be reading or writing buffers of issued commands
            rc = acl.aclrtSynchronizeStreamWithTimeout(s.handle, _CLOSE_TIMEOUT_MS)
            if rc:
                log.warning("closing device %d: stream sync returned %d (%s)", self.device_id, rc, acl.recent_error())
        for s in streams:
            for entry in s.queue:
                self._release(entry)
            s.queue.clear()
            acl.aclrtDestroyStream(s.handle)
        for handle in self._all_markers:
            acl.aclrtDestroyEvent(handle)
        for e in self._events:
            acl.aclrtDestroyEvent(e.handle)
        for desc in self._descs.values():
            acl.aclDestroyTensorDesc(desc)
        with self._mem_lock:
            for addr in self._allocs:
                acl.aclrtFree(addr)
            self._allocs.clear()
            self._starts.clear()
        self._markers, self._all_markers, self._events, self._busy = [], [], {}, {}
        self._descs.clear()
        acl.aclrtResetDevice(self.device_id)

    # ---- issuing commands ---------------------------------------------------------------------------

    def _issuer(self, kind: type) -> Optional[Callable[[_Stream, _Entry], Optional[int]]]:
        issue = self._issuers.get(kind)
        if issue is None:  # a subclass of a known command
            for base in kind.__mro__[1:]:
                issue = self._issuers.get(base)
                if issue is not None:
                    self._issuers[kind] = issue
                    break
        return issue

    def _register(self, entry: _Entry) -> None:
        """Event bookkeeping at submission (lock held): a wait waits for the latest record before it."""
        cmd = entry.cmd
        if isinstance(cmd, (RecordEvent, WaitEvent, ResetEvent)):
            e = self._event(cmd.event)
            e.users += 1
            if isinstance(cmd, RecordEvent):
                e.records += 1
                e.last = entry.ticket = e.records
                e.pending.add(entry.ticket)
            elif isinstance(cmd, WaitEvent):
                entry.ticket = e.last
            else:
                e.last = 0  # later waits pass until the next record

    def _issue(self, s: _Stream, entry: _Entry) -> None:
        """Give a held entry to the runtime (s.issue_lock held): issued with its marker, settled, or
        left held if it cannot go yet."""
        acl = self._acl
        try:
            rc = self._issuer(type(entry.cmd))(s, entry)
            if rc == _STAY_HELD:
                return
        except DeviceError as exc:
            rc = exc.code
            log.debug("command %s refused: %s", type(entry.cmd).__name__, exc)
        except Exception:
            rc = C.ACL_ERROR_RT_INTERNAL_ERROR
            log.exception("issuing %s raised", type(entry.cmd).__name__)
        if rc is None:  # nothing for the chip to do (an empty copy, a wait already satisfied)
            rc = 0
        elif rc == 0:
            marker = self._marker()
            rc = acl.aclrtRecordEvent(marker, s.handle)
            if rc == 0:
                entry.marker = marker
                with self._lock:
                    entry.state = _ISSUED
                    s.inflight += 1
                return
            self._return_marker(marker)
        if rc:
            log.debug("%s on stream %#x: error %d (%s)", type(entry.cmd).__name__, s.handle, rc, acl.recent_error())
        with self._lock:
            entry.state, entry.code = _SETTLED, rc
            if rc and not s.error:
                s.error = rc  # later commands are skipped from now on

    def _issue_to_device(self, s: _Stream, entry: _Entry) -> Optional[int]:
        cmd: CopyToDevice = entry.cmd
        src = host_bytes(cmd.src, writable=False)
        if not src.size:
            return None
        room = self._room(cmd.dst, src.size)
        entry.keep = src
        return self._acl.aclrtMemcpyAsync(cmd.dst, room, src.ctypes.data, src.size, C.ACL_MEMCPY_HOST_TO_DEVICE,
                                          s.handle)

    def _issue_to_host(self, s: _Stream, entry: _Entry) -> Optional[int]:
        cmd: CopyToHost = entry.cmd
        out = host_bytes(cmd.dst, writable=True)
        if not out.size:
            return None
        self._room(cmd.src, out.size)
        entry.keep = out
        return self._acl.aclrtMemcpyAsync(out.ctypes.data, out.size, cmd.src, out.size, C.ACL_MEMCPY_DEVICE_TO_HOST,
                                          s.handle)

    def _issue_on_device(self, s: _Stream, entry: _Entry) -> Optional[int]:
        cmd: CopyOnDevice = entry.cmd
        if not cmd.nbytes:
            return None
        room = self._room(cmd.dst, cmd.nbytes)
        self._room(cmd.src, cmd.nbytes)
        return self._acl.aclrtMemcpyAsync(cmd.dst, room, cmd.src, cmd.nbytes, C.ACL_MEMCPY_DEVICE_TO_DEVICE, s.handle)

    def _issue_memset(self, s: _Stream, entry: _Entry) -> Optional[int]:
        cmd: Memset = entry.cmd
        if not cmd.nbytes:
            return None
        room = self._room(cmd.dst, cmd.nbytes)
        return self._acl.aclrtMemsetAsync(cmd.dst, room, int(cmd.value) & 0xFF, cmd.nbytes, s.handle)

    def _issue_record(self, s: _Stream, entry: _Entry) -> Optional[int]:
        e: _Event = entry.cmd.event
        with self._lock:  # the runtime's latest record and ours change together (see _issue_wait)
            rc = self._acl.aclrtRecordEvent(e.handle, s.handle)
            if rc == 0:
                e.issued = entry.ticket
        return rc

    def _issue_wait(self, s: _Stream, entry: _Entry) -> Optional[int]:
        e: _Event = entry.cmd.event
        with self._lock:  # decided and issued together: no record of e is issued in between
            if entry.ticket not in e.pending:  # no record to wait for, or it has run
                return None
            if e.issued != entry.ticket:  # the record is still held, or the runtime saw a newer one
                return _STAY_HELD  # (waiting for the newer one could deadlock): wait for ours to finish
            return self._acl.aclrtStreamWaitEvent(s.handle, e.handle)

    def _issue_reset(self, s: _Stream, entry: _Entry) -> Optional[int]:
        return self._acl.aclrtResetEvent(entry.cmd.event.handle, s.handle)

    def _issue_launch(self, s: _Stream, entry: _Entry) -> Optional[int]:
        cmd: LaunchOp = entry.cmd
        descs_in, bufs_in = self._tensors(cmd.inputs, entry, "input")
        descs_out, bufs_out = self._tensors(cmd.outputs, entry, "output")
        attr = self._attr(cmd.attrs, entry)
        n_in, n_out = len(descs_in), len(descs_out)
        return self._acl.aclopExecuteV2(
            cmd.op_type.encode(),
            n_in, (ctypes.c_void_p * n_in)(*descs_in), (ctypes.c_void_p * n_in)(*bufs_in),
            n_out, (ctypes.c_void_p * n_out)(*descs_out), (ctypes.c_void_p * n_out)(*bufs_out),
            attr, s.handle,
        )

    def _tensors(self, args: Any, entry: _Entry, what: str) -> tuple[list[int], list[int]]:
        """Descriptors and (per-launch) data buffers of a launch's inputs or outputs."""
        descs, bufs = [], []
        for i, arg in enumerate(args):
            if not isinstance(arg, TensorArg):
                raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"{what} {i} is not a TensorArg")
            if what == "input" and arg.dtype == C.ACL_DT_UNDEFINED:  # an absent optional input
                descs.append(self._desc(C.ACL_DT_UNDEFINED, C.ACL_FORMAT_UNDEFINED, (), entry))
                addr, nbytes = None, 0
            else:
                shape = tuple(arg.shape)
                if not all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape):
                    raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"{what} {i} has an invalid shape {shape}")
                if arg.nbytes:
                    self._room(arg.addr, arg.nbytes)
                descs.append(self._desc(arg.dtype, arg.format, tuple(int(d) for d in shape), entry))
                addr, nbytes = arg.addr, arg.nbytes
            buf = self._acl.aclCreateDataBuffer(addr, nbytes)
            if not buf:
                raise DeviceError(C.ACL_ERROR_BAD_ALLOC, f"aclCreateDataBuffer failed: {self._acl.recent_error()}")
            entry.release.append((self._acl.aclDestroyDataBuffer, buf))
            bufs.append(buf)
        return descs, bufs

    def _desc(self, dtype: int, fmt: int, shape: tuple[int, ...], entry: _Entry) -> int:
        key = (int(dtype), int(fmt), shape)
        with self._descs_lock:
            desc = self._descs.get(key)
            if desc is not None:
                return desc
        dims = (ctypes.c_int64 * len(shape))(*shape)
        desc = self._acl.aclCreateTensorDesc(key[0], len(shape), dims, key[1])
        if not desc:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM,
                              f"aclCreateTensorDesc{key} failed: {self._acl.recent_error()}")
        with self._descs_lock:
            if key not in self._descs and len(self._descs) < _DESC_CACHE_MAX:
                self._descs[key] = desc
                return desc
        entry.release.append((self._acl.aclDestroyTensorDesc, desc))  # over the cap, or a twin was cached
        return desc

    def _attr(self, attrs: Any, entry: _Entry) -> Optional[int]:
        if not attrs:
            return None
        acl = self._acl
        attr = acl.aclopCreateAttr()
        if not attr:
            raise DeviceError(C.ACL_ERROR_BAD_ALLOC, "aclopCreateAttr failed")
        entry.release.append((acl.aclopDestroyAttr, attr))
        for name, value in attrs.items():
            rc = self._set_attr(attr, str(name).encode(), value)
            if rc:
                raise DeviceError(rc, f"attribute {name!r} = {value!r}: {acl.recent_error()}")
        return attr

    def _set_attr(self, attr: int, name: bytes, value: Any) -> int:
        """One aclopSetAttr* call, its type chosen from the Python value."""
        acl = self._acl
        if isinstance(value, AttrDataType):
            return acl.aclopSetAttrDataType(attr, name, int(value))
        if isinstance(value, (bool, np.bool_)):
            return acl.aclopSetAttrBool(attr, name, int(value))
        if isinstance(value, (int, np.integer)):
            return acl.aclopSetAttrInt(attr, name, int(value))
        if isinstance(value, (float, np.floating)):
            return acl.aclopSetAttrFloat(attr, name, float(value))
        if isinstance(value, str):
            return acl.aclopSetAttrString(attr, name, value.encode())
        if isinstance(value, (list, tuple)):
            n = len(value)
            if n and all(isinstance(v, (bool, np.bool_)) for v in value):
                return acl.aclopSetAttrListBool(attr, name, n, (ctypes.c_uint8 * n)(*map(int, value)))
            if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in value):
                return acl.aclopSetAttrListInt(attr, name, n, (ctypes.c_int64 * n)(*map(int, value)))
            if all(isinstance(v, (int, float, np.integer, np.floating)) for v in value):
                return acl.aclopSetAttrListFloat(attr, name, n, (ctypes.c_float * n)(*map(float, value)))
        raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"attribute {name.decode()!r}: unsupported value {value!r}")

    def _marker(self) -> int:
        with self._lock:
            if self._markers:
                return self._markers.pop()
        handle = ctypes.c_void_p()
        self._check(self._acl.aclrtCreateEventWithFlag(ctypes.byref(handle), C.ACL_EVENT_SYNC), "marker event")
        with self._lock:
            self._all_markers.append(handle.value)
        return handle.value

    def _return_marker(self, marker: int) -> None:
        with self._lock:
            self._markers.append(marker)

    # ---- completion ---------------------------------------------------------------------------------

    def _complete_loop(self) -> None:
        try:
            self._bind()
        except DeviceError:
            log.exception("completion thread of device %d cannot bind its context", self.device_id)
            return
        delay = 0.0
        while True:
            with self._lock:
                while not self._closed and not self._busy:
                    self._idle = True
                    self._work_cv.wait()
                    self._idle = False
                if self._closed:
                    return
                streams = list(self._busy)
            progress = False
            for s in streams:
                progress = self._advance(s) or progress
            if progress:
                delay = 0.0
                continue
            with self._lock:
                delay = _POLL_MIN_S if self._waiters else min(max(2 * delay, _POLL_MIN_S), _POLL_MAX_S)
                if not self._closed:
                    self._work_cv.wait(delay)  # a synchronize_* caller cuts it short

    def _advance(self, s: _Stream) -> bool:
        """Finish what has finished at the head of s, in order; True if anything was."""
        progress = False
        while True:
            with self._lock:
                if self._closed or not s.queue:
                    return progress
                entry = s.queue[0]
                state, error = entry.state, s.error
            if state == _ISSUED:
                code = self._poll(s, entry)
                if code is None:
                    return progress
            elif state == _SETTLED:
                code = entry.code
            elif error:  # held behind a failure: skipped
                code = error
            elif isinstance(entry.cmd, HostFunc):
                with self._lock:
                    if s.queue and s.queue[0] is entry:  # not dropped meanwhile
                        entry.state = _RUNNING
                if entry.state != _RUNNING:
                    continue
                code = _run_host(entry)
            elif self._release_held(s):
                progress = True
                continue
            else:  # a wait whose record is not with the runtime yet
                return progress
            self._finish(s, entry, code)
            progress = True

    def _poll(self, s: _Stream, entry: _Entry) -> Optional[int]:
        """The code of an issued command, or None while it runs.  (Its marker was recorded before
        the entry became visible to this thread: the cross-thread caveat of the query does not apply.)"""
        status = _enum()
        rc = self._acl.aclrtQueryEventStatus(entry.marker, ctypes.byref(status))
        if rc:
            return rc
        if status.value != C.ACL_EVENT_RECORDED_STATUS_COMPLETE:
            return None
        # The last issued command of s is done, so the runtime's stream is idle: take its pending
        # error now (a task fault shows only at a synchronization).  A submitter holding the lock is
        # about to issue more; the error waits for that command then.
        if s.inflight == 1 and s.issue_lock.acquire(blocking=False):
            try:
                if s.inflight == 1:
                    return self._acl.aclrtSynchronizeStreamWithTimeout(s.handle, _HARVEST_TIMEOUT_MS)
            finally:
                s.issue_lock.release()
        return 0

    def _release_held(self, s: _Stream) -> bool:
        """Issue the held entries of s from the head on, until one must stay held; True if any went."""
        released = False
        with s.issue_lock:
            for entry in list(s.queue):
                if entry.state != _HELD:
                    continue
                with self._lock:
                    if s.error or isinstance(entry.cmd, HostFunc):
                        break
                self._issue(s, entry)
                with self._lock:
                    if entry.state == _HELD:
                        break
                    s.held -= 1
                released = True
        return released

    def _finish(self, s: _Stream, entry: _Entry, code: int) -> None:
        """Call entry's on_done with code (it is the head of s) and retire it."""
        with self._lock:
            if not s.queue or s.queue[0] is not entry:
                return  # dropped by destroy_stream(discard_pending=True) meanwhile
            s.queue.popleft()
            if entry.state == _ISSUED:
                s.inflight -= 1
            elif entry.state in (_HELD, _RUNNING):
                s.held -= 1
            if code and not s.error:
                s.error = code
            cmd = entry.cmd
            if isinstance(cmd, RecordEvent) and code == 0 and entry.ticket > cmd.event.timed:
                cmd.event.timed = entry.ticket
            destroy_event = self._forget(entry, notify=False)
            s.notifying = True
            discard = s.discard
        self._release(entry)
        if destroy_event is not None:
            self._acl.aclrtDestroyEvent(destroy_event)
        if not discard:
            call_on_done(entry.on_done, code)
        entry.keep = None
        with self._lock:
            s.notifying = False
            if not s.queue:
                self._busy.pop(s, None)
            if self._waiters:
                self._sync_cv.notify_all()

    def _forget(self, entry: _Entry, notify: bool = True) -> Optional[int]:
        """Event bookkeeping for an entry leaving its queue (lock held).  Returns the handle of an
        event destroyed while in use whose last user this was (to destroy outside the lock)."""
        cmd = entry.cmd
        if not isinstance(cmd, (RecordEvent, WaitEvent, ResetEvent)):
            return None
        e = cmd.event
        if isinstance(cmd, RecordEvent):
            e.pending.discard(entry.ticket)
        e.users -= 1
        if notify and self._waiters:
            self._sync_cv.notify_all()
        if e.destroyed and e.users == 0:
            self._events.pop(e, None)
            return e.handle
        return None

    def _release(self, entry: _Entry) -> None:
        """Return a finished entry's marker to the pool and destroy its per-launch ACL objects."""
        if entry.marker is not None:
            self._return_marker(entry.marker)
            entry.marker = None
        for destroy, handle in entry.release:
            destroy(handle)
        entry.release.clear()

    # ---- helpers ------------------------------------------------------------------------------------

    def _enter(self) -> None:
        """Every runtime call starts here: the device is open and its context current on this thread."""
        self._check_open()
        self._bind()

    def _bind(self) -> None:
        if getattr(_tls, "device", None) is not self._token:
            self._check(self._acl.aclrtSetCurrentContext(self._context), "aclrtSetCurrentContext")
            _tls.device = self._token

    def _check(self, rc: int, what: str) -> None:
        if rc:
            raise DeviceError(rc, f"{what} failed: {self._acl.recent_error()}")

    def _wait(self, done: Callable[[], bool], timeout: Optional[float], timeout_code: int, waiter: Any = None) -> int:
        del waiter  # all waiters are woken together: the completion thread notifies _sync_cv
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        self._waiters += 1
        self._work_cv.notify()  # the completion thread polls at its fastest while anyone waits
        try:
            while True:
                if self._closed:
                    return CLOSED
                if done():
                    return 0
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return timeout_code
                self._sync_cv.wait(remaining)
        finally:
            self._waiters -= 1


def _run_host(entry: _Entry) -> int:
    try:
        entry.cmd.fn()
        return 0
    except DeviceError as exc:
        log.debug("host function failed: %s", exc)
        return exc.code
    except Exception:
        log.exception("host function raised")
        return C.ACL_ERROR_RT_INTERNAL_ERROR
