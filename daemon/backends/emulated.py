"""The emulated NPU: device memory in a bounded host arena, streams run by executor threads,
operators computed with numpy (see ``ops``).

Memory.  One anonymous private mapping of ``memory_bytes`` (only touched pages cost RAM; freed
blocks of 1 MiB and more are given back with MADV_DONTNEED), addressed from ``BASE_ADDRESS``.
Allocation follows aclrtMalloc: the size is rounded up to a multiple of 32 plus 32 bytes
(``align32`` skips the +32) and every block starts 64-byte aligned; the allocator is first-fit with
coalescing, and ``mem_info`` counts each block at its 64-byte-rounded size, so free + the sum of
``allocation_size`` over live blocks == total, exactly.  Every access (copies, memsets, operator
tensors) must lie inside one live allocation's usable size, else ACL_ERROR_INVALID_PARAM: a bad
pointer never reaches a neighbour.

Streams.  Each stream is an in-order queue.  ``workers`` executor threads take ready streams
(``workers=0``: no threads; the owner runs the work with ``run_ready`` from its own loop, and a
synchronize runs it in the caller: the daemon's single-threaded dispatch)
round-robin, one command at a time, so streams run concurrently with each other; a stream whose
head is a wait on an unfinished event is parked (it holds no thread) until that record runs.
``on_done(code)`` is called on the executor thread after each command, before the stream counts as
idle, so a synchronize that returns has seen every callback (a callback may call the device, but
must not synchronize its own stream).  Stream priorities are recorded, not yet used.  A failing
command makes its code sticky: later commands on the stream are skipped with that code (a skipped
event record still counts as reached, so no other stream waits forever) until
``synchronize_stream`` reports and clears it.  ``synchronize_device`` reports the first sticky
error (streams in creation order) and clears them all.

Events.  A record takes a timestamp (time.perf_counter_ns) when it runs; a wait waits for the
latest record submitted before it (even when records of one event on several streams finish out
of order); a reset makes later waits pass until the next record; an event never recorded is
complete.

Pacing.  With ``pacer`` (any object with ``duration_s(cmd) -> float``) a command's stream is held
until that modelled duration has passed since the command started, without holding a thread, so
real clients see modelled NPU speed.

Dropping.  ``destroy_stream(discard_pending=True)`` and ``close`` drop queued commands without
running them or calling their ``on_done`` (dropped event records count as reached), and wait only
for the command that is running; after they return, nothing touches the dropped commands' buffers.

Operators.  A LaunchOp's TensorArgs become numpy views of device memory (checked against the
allocation and the data buffer's size); an input whose dtype is ACL_DT_UNDEFINED is an absent
optional input.  Internal formats (NC1HWC0, FRACTAL_Z, FRACTAL_NZ) are ACL_ERROR_FORMAT_NOT_MATCH.

Invalid streams or events given to the device are ACL_ERROR_RT_INVALID_HANDLE; any call on a
closed device is ACL_ERROR_RT_FAILURE (and so is a synchronize that the close interrupted).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import logging
import math
import mmap
import threading
import time
from collections import deque
from typing import Any, Callable, Optional

import numpy as np

from flexnpu.acl import constants as C

from .base import (
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
from .ops import numpy_dtype, run_op
from .queued import CLOSED, QueuedDevice, call_on_done, hex_address

log = logging.getLogger(__name__)

BASE_ADDRESS = 0x12C0_0000_0000
ALIGNMENT = 64
_MADVISE_MIN = 1 << 20  # give freed blocks at least this large back to the OS
_TENSOR_VIEW_CACHE = 4096  # cached operator tensor views (see EmulatedDevice._tensor)
# Layouts whose memory order is not plain row-major: the numpy operators cannot read them.
_PRIVATE_FORMATS = {C.ACL_FORMAT_NC1HWC0, C.ACL_FORMAT_FRACTAL_Z, C.ACL_FORMAT_FRACTAL_NZ}


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


# ---- memory ------------------------------------------------------------------------------------------


class Allocator:
    """First-fit allocator with coalescing over [base, base + size); not thread-safe by itself.

    A live block is (start, block size, usable size): block sizes are multiples of ALIGNMENT and
    are what the accounting counts; accesses are checked against the usable size.
    """

    def __init__(self, base: int, size: int):
        self.base, self.total = base, size
        self.free_bytes = size
        self._free_starts = [base]  # sorted starts of free extents
        self._free_len = {base: size}
        self._live_starts: list[int] = []  # sorted starts of live blocks
        self._live: dict[int, tuple[int, int]] = {}  # start -> (block size, usable size)

    def allocate(self, usable: int) -> Optional[int]:
        block = _round_up(usable, ALIGNMENT)
        for i, start in enumerate(self._free_starts):
            length = self._free_len[start]
            if length >= block:
                del self._free_len[start]
                if length > block:
                    self._free_starts[i] = start + block
                    self._free_len[start + block] = length - block
                else:
                    del self._free_starts[i]
                bisect.insort(self._live_starts, start)
                self._live[start] = (block, usable)
                self.free_bytes -= block
                return start
        return None

    def release(self, start: int) -> Optional[int]:
        """Free the block starting at start; returns its block size, None if there is none."""
        found = self._live.pop(start, None)
        if found is None:
            return None
        block = found[0]
        del self._live_starts[bisect.bisect_left(self._live_starts, start)]
        self.free_bytes += block
        i = bisect.bisect_left(self._free_starts, start)
        end = start + block
        if i < len(self._free_starts) and self._free_starts[i] == end:  # merge with the next extent
            block += self._free_len.pop(end)
            del self._free_starts[i]
        if i > 0:
            prev = self._free_starts[i - 1]
            if prev + self._free_len[prev] == start:  # merge into the previous extent
                self._free_len[prev] += block
                return found[0]
        self._free_starts.insert(i, start)
        self._free_len[start] = block
        return found[0]

    def find(self, addr: int) -> Optional[tuple[int, int, int]]:
        """(start, block size, usable size) of the live block containing addr, or None."""
        if not isinstance(addr, (int, np.integer)):
            return None
        i = bisect.bisect_right(self._live_starts, addr) - 1
        if i < 0:
            return None
        start = self._live_starts[i]
        block, usable = self._live[start]
        return (start, block, usable) if addr < start + usable else None

    def live_blocks(self) -> dict[int, int]:
        """start -> block size of every live block."""
        return {start: block for start, (block, _) in self._live.items()}


# ---- streams and events -------------------------------------------------------------------------------


class _Entry:
    """One queued command and its bookkeeping."""

    __slots__ = ("cmd", "on_done", "stamp", "ticket")

    def __init__(self, cmd: Command, on_done: DoneCallback):
        self.cmd = cmd
        self.on_done = on_done
        self.ticket = 0  # RecordEvent: this record's number; WaitEvent: the record it waits for
        self.stamp: Optional[int] = None


class _Stream:
    __slots__ = ("busy", "destroyed", "device", "error", "parked", "priority", "queue", "queued", "waiters")

    def __init__(self, device: EmulatedDevice, priority: int):
        self.device = device
        self.priority = priority
        self.queue: deque[_Entry] = deque()
        self.busy = False  # a worker is running (or pacing) its head command
        self.queued = False  # in the device's ready queue
        self.parked = False  # head is a wait on an unfinished event
        self.error = 0  # sticky error code
        self.waiters = 0  # threads in synchronize_stream / destroy_stream
        self.destroyed = False

    def idle(self) -> bool:
        return not self.queue and not self.busy


class _Event:
    __slots__ = (
        "destroyed",
        "device",
        "flags",
        "last",
        "parked",
        "pending",
        "records",
        "stamp",
        "stamp_ticket",
        "waiters",
    )

    def __init__(self, device: EmulatedDevice, flags: int):
        self.device = device
        self.flags = flags
        self.records = 0  # records ever submitted: each record's number
        self.last = 0  # number of the latest record submitted (0: none since creation or reset)
        self.pending: set[int] = set()  # numbers of the records submitted that have not run
        self.stamp: Optional[int] = None  # perf_counter_ns of the latest record that ran
        self.stamp_ticket = 0  # ... and that record's number
        self.parked: list[_Stream] = []  # streams waiting for a record of this event
        self.waiters = 0  # threads in synchronize_event
        self.destroyed = False

    def complete(self) -> bool:
        return self.last not in self.pending


class EmulatedDevice(QueuedDevice):
    """An NPU emulated on the host; see the module docstring."""

    stream_type = _Stream
    event_type = _Event

    def __init__(
        self,
        device_id: int = 0,
        memory_bytes: int = 16 * 2**30,
        soc_name: str = "Ascend910B2",
        workers: int = 1,
        pacer: Any = None,
    ):
        if memory_bytes < ALIGNMENT:
            raise ValueError(f"memory_bytes must be at least {ALIGNMENT}, got {memory_bytes}")
        if workers < 0:
            raise ValueError(f"workers must be >= 0 (0: inline, see run_ready), got {workers}")
        self.device_id = device_id
        self.soc_name = soc_name
        self.total_memory = memory_bytes
        self.base_address = BASE_ADDRESS
        flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_NORESERVE", 0)
        self._mmap: Optional[mmap.mmap] = mmap.mmap(-1, memory_bytes, flags=flags)
        self._mem: Optional[np.ndarray] = np.frombuffer(self._mmap, dtype=np.uint8)
        self._alloc = Allocator(BASE_ADDRESS, memory_bytes)
        self._mem_lock = threading.Lock()
        # operator tensors already checked and viewed, by TensorArg identity (callers that reuse
        # their TensorArgs, as the daemon and --direct do, skip the checks and the numpy view
        # construction); emptied whenever an allocation goes away
        self._tensor_views: dict[int, tuple[TensorArg, np.ndarray]] = {}

        self._lock = threading.Lock()  # guards streams, events and the queues
        self._work_cv = threading.Condition(self._lock)  # executor threads wait here
        self._sync_cv = threading.Condition(self._lock)  # synchronize_* callers wait here
        self._ready: deque[_Stream] = deque()
        self._held: list[tuple[float, int, _Stream, _Entry, int]] = []  # paced commands, a heap
        self._held_seq = itertools.count()
        self._streams: dict[_Stream, None] = {}  # live streams in creation order
        self._active = 0  # streams with queued or running commands
        self._device_waiters = 0
        self._idle_workers = 0
        self._closed = False
        self._pacer = pacer
        self._execute_by_type: dict[type, Callable[[Any], None]] = {
            LaunchOp: self._launch,
            CopyToDevice: lambda c: self.write(c.dst, c.src),
            CopyToHost: lambda c: self.read_into(c.dst, c.src),
            CopyOnDevice: lambda c: self.copy(c.dst, c.src, c.nbytes),
            Memset: lambda c: self.memset(c.dst, c.value, c.nbytes),
            HostFunc: lambda c: c.fn(),
            RecordEvent: lambda c: None,  # the worker takes its timestamp
            WaitEvent: lambda c: None,  # reached only once the event is done
            ResetEvent: lambda c: None,  # acted at submission
        }
        self._threads = [
            threading.Thread(target=self._worker, name=f"npu{device_id}-exec{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def __repr__(self) -> str:
        free, total = self._alloc.free_bytes, self.total_memory
        return f"<EmulatedDevice {self.device_id} {self.soc_name} {total - free}/{total} bytes used>"

    # ---- memory -------------------------------------------------------------------------------------

    def malloc(self, nbytes: int, policy: int = C.ACL_MEM_MALLOC_HUGE_FIRST, align32: bool = False) -> int:
        if not isinstance(nbytes, (int, np.integer)) or nbytes <= 0:
            raise DeviceError(
                C.ACL_ERROR_INVALID_PARAM, f"malloc size must be a positive int, got {nbytes!r}"
            )
        usable = acl_malloc_size(int(nbytes), align32)
        with self._mem_lock:
            self._check_open()
            addr = self._alloc.allocate(usable)
            free = self._alloc.free_bytes
        if addr is None:
            raise DeviceError(
                C.ACL_ERROR_RT_MEMORY_ALLOCATION,
                f"cannot allocate {nbytes} bytes: {free} of {self.total_memory} free (or too fragmented)",
            )
        return addr

    def free(self, addr: int) -> None:
        with self._mem_lock:
            self._check_open()
            block = self._alloc.release(addr)
            if block is not None:
                self._tensor_views = {}
            if block is not None and block >= _MADVISE_MIN and hasattr(self._mmap, "madvise"):
                offset = addr - BASE_ADDRESS
                first = _round_up(offset, mmap.PAGESIZE)
                last = (offset + block) // mmap.PAGESIZE * mmap.PAGESIZE
                if last > first:
                    self._mmap.madvise(mmap.MADV_DONTNEED, first, last - first)
        if block is None:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"{hex_address(addr)} is not the start of an allocation")

    def mem_info(self) -> tuple[int, int]:
        with self._mem_lock:
            return self._alloc.free_bytes, self.total_memory

    def allocation_of(self, addr: int) -> tuple[int, int]:
        """(start, usable size) of the live allocation containing addr."""
        with self._mem_lock:
            found = self._alloc.find(addr)
        if found is None:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"{hex_address(addr)} is in no allocation")
        return found[0], found[2]

    def allocation_size(self, addr: int) -> int:
        """The bytes mem_info counts for the allocation starting at addr (its 64-byte block)."""
        with self._mem_lock:
            found = self._alloc.find(addr)
        if found is None or found[0] != addr:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"{hex_address(addr)} is not the start of an allocation")
        return found[1]

    def live_allocations(self) -> dict[int, int]:
        """start -> counted size of every live allocation."""
        with self._mem_lock:
            return self._alloc.live_blocks()

    def write(self, addr: int, data: Any) -> None:
        src = host_bytes(data, writable=False)
        if src.size:
            self._view(addr, src.size)[:] = src

    def read_into(self, dst: Any, addr: int) -> None:
        out = host_bytes(dst, writable=True)
        if out.size:
            out[:] = self._view(addr, out.size)

    def copy(self, dst: int, src: int, nbytes: int) -> None:
        if nbytes:
            self._view(dst, nbytes)[:] = self._view(src, nbytes)  # numpy handles overlap

    def memset(self, addr: int, value: int, nbytes: int) -> None:
        if nbytes:
            self._view(addr, nbytes).fill(int(value) & 0xFF)

    def _view(self, addr: int, nbytes: int) -> np.ndarray:
        """The device bytes [addr, addr + nbytes), which must lie in one live allocation."""
        if not isinstance(nbytes, (int, np.integer)) or nbytes < 0:
            raise DeviceError(
                C.ACL_ERROR_INVALID_PARAM, f"byte count must be a non-negative int, got {nbytes!r}"
            )
        with self._mem_lock:
            self._check_open()
            found = self._alloc.find(addr)
            mem = self._mem
        if found is None:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"device address {hex_address(addr)} is in no allocation")
        start, _, usable = found
        if addr + nbytes > start + usable:
            raise DeviceError(
                C.ACL_ERROR_INVALID_PARAM,
                f"{nbytes} bytes at {hex_address(addr)} run past the end of the allocation "
                f"[{hex_address(start)}, {hex_address(start + usable)})",
            )
        offset = addr - BASE_ADDRESS
        return mem[offset : offset + nbytes]

    def _tensor(self, arg: TensorArg, what: str) -> Optional[np.ndarray]:
        cached = self._tensor_views.get(id(arg))
        if cached is not None and cached[0] is arg:
            return cached[1]
        view = self._check_tensor(arg, what)
        if view is not None and view.size:
            views = self._tensor_views
            if len(views) >= _TENSOR_VIEW_CACHE:
                views.clear()
            views[id(arg)] = (arg, view)
        return view

    def _check_tensor(self, arg: TensorArg, what: str) -> Optional[np.ndarray]:
        if arg.dtype == C.ACL_DT_UNDEFINED and what == "input":
            return None  # an absent optional input
        if arg.format in _PRIVATE_FORMATS:
            raise DeviceError(C.ACL_ERROR_FORMAT_NOT_MATCH, f"{what} format {arg.format} is not supported")
        dtype = numpy_dtype(arg.dtype)
        shape = tuple(arg.shape)
        if not all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape):
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"{what} has an invalid shape {shape}")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > arg.nbytes:
            raise DeviceError(
                C.ACL_ERROR_INVALID_PARAM,
                f"{what} {shape} {dtype} needs {nbytes} bytes, its buffer has {arg.nbytes}",
            )
        if nbytes == 0:
            return np.empty(shape, dtype)
        return self._view(arg.addr, nbytes).view(dtype).reshape(shape)

    def _launch(self, cmd: LaunchOp) -> None:
        inputs = [self._tensor(t, "input") for t in cmd.inputs]
        outputs = [self._tensor(t, "output") for t in cmd.outputs]
        run_op(cmd.op_type, inputs, outputs, cmd.attrs)

    # ---- streams ------------------------------------------------------------------------------------

    def create_stream(self, priority: int = 0) -> Any:
        with self._lock:
            self._check_open()
            stream = _Stream(self, priority)
            self._streams[stream] = None
            return stream

    def destroy_stream(self, stream: Any, discard_pending: bool = False) -> None:
        with self._lock:
            s = self._stream(stream)
            s.destroyed = True  # no more submissions
            if discard_pending:
                was_active = not s.idle()
                dropped = list(s.queue)
                s.queue.clear()
                if s.queued:
                    self._ready.remove(s)
                    s.queued = False
                s.parked = False  # a parked stream is skipped when its event wakes it
                for entry in dropped:
                    self._reach_record(entry)
                if was_active and not s.busy:
                    self._became_idle(s)
            code = self._wait(s.idle, None, C.ACL_ERROR_RT_STREAM_SYNC_TIMEOUT, waiter=s)
            self._streams.pop(s, None)
        if code == CLOSED:
            raise DeviceError(CLOSED, "the device was closed")

    def submit(self, stream: Any, cmd: Command, on_done: DoneCallback = None) -> None:
        entry = _Entry(cmd, on_done)
        with self._lock:
            s = self._stream(stream)
            if isinstance(cmd, RecordEvent):
                event = self._event(cmd.event)
                event.records += 1
                event.last = entry.ticket = event.records
                event.pending.add(entry.ticket)
            elif isinstance(cmd, WaitEvent):
                entry.ticket = self._event(cmd.event).last
            elif isinstance(cmd, ResetEvent):
                self._event(cmd.event).last = 0
            elif self._handler(type(cmd)) is None:
                raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"unknown command {type(cmd).__name__}")
            s.queue.append(entry)
            if not (s.busy or s.queued or s.parked):
                if len(s.queue) == 1:
                    self._active += 1
                s.queued = True
                self._ready.append(s)
                if self._idle_workers:
                    self._work_cv.notify()

    def has_work(self) -> bool:
        return self._active > 0 or bool(self._held)

    def synchronize_device(self, timeout: Optional[float] = None) -> int:
        with self._lock:
            self._check_open()
            self._device_waiters += 1
            try:
                code = self._wait(lambda: self._active == 0, timeout, C.ACL_ERROR_RT_STREAM_SYNC_TIMEOUT)
            finally:
                self._device_waiters -= 1
            return code or self._take_sticky_errors()

    # ---- events -------------------------------------------------------------------------------------

    def create_event(self, flags: int = 0) -> Any:
        with self._lock:
            self._check_open()
            return _Event(self, flags)

    def destroy_event(self, event: Any) -> None:
        with self._lock:
            self._event(event).destroyed = True

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        with self._lock:
            stamps = []
            for name, event in (("start", start), ("end", end)):
                e = self._event(event, allow_destroyed=True)
                if e.stamp is None or not e.complete():
                    raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"the {name} event has no completed record")
                stamps.append(e.stamp)
        return (stamps[1] - stamps[0]) / 1e6

    # ---- lifecycle ----------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for s in self._streams:
                s.queue.clear()  # pending commands are dropped
            self._ready.clear()
            self._held.clear()
            self._work_cv.notify_all()
            self._sync_cv.notify_all()
        me = threading.current_thread()
        for t in self._threads:
            if t is not me:  # close() may come from an on_done callback
                t.join()
        with self._mem_lock:
            self._tensor_views = {}
            self._mem = None  # the mapping goes when the last view of it does
            self._mmap = None

    # ---- internals ----------------------------------------------------------------------------------

    def _handler(self, kind: type) -> Optional[Callable[[Any], None]]:
        handler = self._execute_by_type.get(kind)
        if handler is None:  # a subclass of a known command
            for base in kind.__mro__[1:]:
                handler = self._execute_by_type.get(base)
                if handler is not None:
                    self._execute_by_type[kind] = handler
                    break
        return handler

    def _wait(self, done: Callable[[], bool], timeout: Optional[float], timeout_code: int, waiter: Any = None) -> int:
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        if waiter is not None:  # a stream or event: it wakes its waiters only (see _became_idle, _reach_record)
            waiter.waiters += 1
        try:
            while True:
                if self._closed:  # before done(): closing empties the queues
                    return CLOSED
                if done():
                    return 0
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return timeout_code
                if not self._threads:  # inline mode: nobody else runs the work; run it here
                    wake_at = self._step()
                    if wake_at == 0.0:
                        continue
                    if wake_at is None:  # nothing runnable and not done: an event no one records
                        return timeout_code if deadline is not None else CLOSED
                    until_held = max(0.0, wake_at - time.perf_counter())
                    remaining = until_held if remaining is None else min(remaining, until_held)
                self._sync_cv.wait(remaining)
        finally:
            if waiter is not None:
                waiter.waiters -= 1

    def _worker(self) -> None:
        lock = self._lock
        lock.acquire()
        try:
            while not self._closed:
                wake_at = self._step()
                if wake_at == 0.0:
                    continue
                self._idle_workers += 1
                self._work_cv.wait(None if wake_at is None else max(0.0, wake_at - time.perf_counter()))
                self._idle_workers -= 1
        finally:
            lock.release()

    def run_ready(self, budget_s: float = 0.002) -> Optional[float]:
        """Inline mode (``workers=0``): run ready commands in the calling thread for up to
        budget_s.  Returns 0.0 if more work is ready, None if nothing is runnable, or the
        perf_counter time at which the earliest paced command is released."""
        end = time.perf_counter() + budget_s
        with self._lock:
            while not self._closed:
                wake_at = self._step()
                if wake_at != 0.0 or time.perf_counter() >= end:
                    return wake_at
            return None

    def _step(self) -> Optional[float]:
        """Run one unit of work (lock held; released while a command runs).  0.0 if it did
        something, else None (nothing to do) or when the earliest paced command is due."""
        lock = self._lock
        if self._held and self._held[0][0] <= time.perf_counter():
            _, _, s, entry, code = heapq.heappop(self._held)
            lock.release()
            try:
                call_on_done(entry.on_done, code)
            finally:
                lock.acquire()
            self._finished(s, entry, code)
            return 0.0
        if not self._ready:
            return self._held[0][0] if self._held else None
        s = self._ready.popleft()
        s.queued = False
        entry = s.queue[0]
        code = s.error
        if not code and entry.ticket and isinstance(entry.cmd, WaitEvent):
            event = entry.cmd.event
            if entry.ticket in event.pending:  # park until that record runs
                s.parked = True
                event.parked.append(s)
                return 0.0
        s.queue.popleft()
        s.busy = True
        lock.release()
        try:
            code, hold_until = self._run(entry, code)
        finally:
            lock.acquire()
        if hold_until is None:
            self._finished(s, entry, code)
        else:
            heapq.heappush(self._held, (hold_until, next(self._held_seq), s, entry, code))
        return 0.0

    def _run(self, entry: _Entry, code: int) -> tuple[int, Optional[float]]:
        """Run one command (lock not held); its code, and until when pacing holds it (or None)."""
        started = time.perf_counter()
        cmd = entry.cmd
        if code:
            call_on_done(entry.on_done, code)  # skipped: the stream's sticky error
            return code, None
        try:
            if isinstance(cmd, RecordEvent):
                entry.stamp = time.perf_counter_ns()
            else:
                self._handler(type(cmd))(cmd)
        except DeviceError as exc:
            code = exc.code
            log.debug("command %s failed: %s", type(cmd).__name__, exc)
        except Exception:
            code = C.ACL_ERROR_RT_INTERNAL_ERROR
            log.exception("command %s raised", type(cmd).__name__)
        if self._pacer is not None:
            try:
                hold_until = started + float(self._pacer.duration_s(cmd))
            except Exception:
                log.exception("pacer failed on %s", type(cmd).__name__)
                hold_until = 0.0
            if hold_until > time.perf_counter():
                return code, hold_until
        call_on_done(entry.on_done, code)
        return code, None

    def _finished(self, s: _Stream, entry: _Entry, code: int) -> None:
        """Bookkeeping after a command ran (lock held)."""
        if isinstance(entry.cmd, RecordEvent):
            event = entry.cmd.event
            if code == 0 and entry.ticket > event.stamp_ticket:  # an older record may finish later
                event.stamp, event.stamp_ticket = entry.stamp, entry.ticket
            self._reach_record(entry)
        if code and not s.error:
            s.error = code
        s.busy = False
        if s.queue:
            s.queued = True
            self._ready.append(s)
        else:
            self._became_idle(s)

    def _reach_record(self, entry: _Entry) -> None:
        """A record ran (or was skipped or dropped): release the streams waiting for it."""
        if not isinstance(entry.cmd, RecordEvent):
            return
        event = entry.cmd.event
        event.pending.discard(entry.ticket)
        if event.parked:
            for s in event.parked:
                if s.parked:
                    s.parked = False
                    s.queued = True
                    self._ready.append(s)
            event.parked.clear()
            if self._idle_workers:
                self._work_cv.notify_all()
        if event.waiters:
            self._sync_cv.notify_all()

    def _became_idle(self, s: _Stream) -> None:
        self._active -= 1
        if s.waiters or (self._device_waiters and self._active == 0):
            self._sync_cv.notify_all()
