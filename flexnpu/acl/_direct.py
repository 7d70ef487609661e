"""``DirectRuntime``: pyACL bound straight onto in-process emulated devices (``flexnpu run --direct``).

No daemon, no rings, no virtual addresses: each ``acl`` call does what a thin pyACL binding over a
driver would do, on an :class:`~flexnpu_daemon.backends.emulated.EmulatedDevice` created in this
process at ``acl.rt.set_device``.  Device pointers are the device's own addresses.  This is the
"direct passthrough" baseline every FlexNPU overhead figure is measured against, so the hot calls
(``execute_v2``, ``memcpy_async``, ``record_event``) validate their handles, build the device
command and submit it: no logging, no copies beyond the attribute snapshot.

Configuration (constructor arguments, else the environment, read once):

* ``FLEXNPU_MEMORY``: device memory per device, bytes or a size such as ``16GiB`` / ``512MiB``
  (default 16 GiB; ``flexnpu.sizes.parse_size``);
* ``FLEXNPU_VISIBLE_DEVICES``: comma-separated physical ids; ``acl`` device ``i`` is the ``i``-th
  (default one device, ``0``);
* ``FLEXNPU_SOC``: the SoC name the devices report (default ``Ascend910B2``).

Semantics, where ACL leaves room (see ``../shared/reference/acl_api.md``):

* ``init`` twice is ACL_ERROR_REPEAT_INITIALIZE, ``finalize`` without ``init`` is
  ACL_ERROR_REPEAT_FINALIZE; ``init`` after ``finalize`` is allowed (as in current CANN).
  ``finalize`` releases everything (``close``).  ``set_device`` and ``create_context`` before
  ``init`` are ACL_ERROR_UNINITIALIZE; calls that need a current context and have none are
  ACL_ERROR_RT_CONTEXT_NULL.  Device count, SoC name and the host-side objects (tensor descs, data
  buffers, op attrs) need no ``init``, as in ACL.
* The current context is per thread.  ``set_device`` is counted: each one makes the device's
  default context current and needs one ``reset_device``.  ``create_context`` opens the device
  too (as rtCtxCreate does) and ``destroy_context`` closes it; a device is released (its memory,
  streams and events) once no ``set_device`` count and no created context hold it.  The default
  context is released by ``reset_device``, not ``destroy_context``.  Destroying a context destroys
  its remaining streams and events (ACL asks programs to destroy them first).  ``reset_device`` and
  ``finalize`` let queued work finish first, as ACL does; ``close`` (not pyACL) drops it.
* Streams and events may be used from any thread; a stream's commands run on the stream's device.
  A stream argument of 0/None is the current context's default stream.
* Memory calls act on the current context's device.  Any address inside that device's address
  window is treated as device memory (a freed device pointer is an error, never a host read);
  everything else is host memory.  A host pointer below 4096 is rejected; any other host pointer
  is trusted, as ACL trusts it.  Copies and memsets are checked when called (kind, count <=
  dest_max, the range inside one live allocation); asynchronous ones read and write host memory
  when the device runs them, so the caller keeps it alive until then.  ``free`` does not wait for
  pending commands (a command that then touches the freed range fails on its stream).
* ``query_event_status`` is ACL_EVENT_RECORDED_STATUS_COMPLETE only once the event's latest
  record ran successfully (never recorded, pending, skipped by a stream error, or reset: NOT_READY).
* IPC memory works only within this process: each direct process has its own emulated device, so
  ``ipc_mem_set_import_pid`` with another process, or a key exported by another process, is
  ACL_ERROR_RT_FEATURE_NOT_SUPPORT with a message pointing to ``flexnpu run`` (the daemon).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import mmap
import numbers
import operator
import os
import threading
import types
from typing import Any, Optional

import numpy as np
from flexnpu_daemon.backends.base import (
    CopyOnDevice,
    CopyToDevice,
    CopyToHost,
    DeviceError,
    HostFunc,
    LaunchOp,
    Memset,
    RecordEvent,
    ResetEvent,
    TensorArg,
    WaitEvent,
)
from flexnpu_daemon.backends.emulated import EmulatedDevice

from flexnpu.acl import constants as C
from flexnpu.acl._api import (
    DTYPE_SIZES,
    EVENT_FLAGS,
    KIND_ATTR,
    KIND_BUFFER,
    KIND_CONTEXT,
    KIND_DESC,
    KIND_EVENT,
    KIND_NAMES,
    KIND_STREAM,
    STREAM_FLAGS,
    STREAM_PRIORITIES,
    AclRuntime,
    ErrorMessages,
    check_desc_args,
    make_handle,
    valid_malloc_policy,
)
from flexnpu.sizes import parse_size

DEFAULT_MEMORY = 16 * 2**30
DEFAULT_SOC = "Ascend910B2"
_NULL_PAGE = 4096  # host pointers below this are null, not memory
_ADDRESS_END = 2**64
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_NO_ATTRS: Any = types.MappingProxyType({})


def _int(value: Any) -> Optional[int]:
    """value as an int (numpy ints too), or None if it is not an integer."""
    if type(value) is int:
        return value
    try:
        return operator.index(value)
    except TypeError:
        return None


class _Invalid(Exception):
    """An argument check failed: the ACL code and the message for aclGetRecentErrMsg."""

    def __init__(self, code: int, message: str):
        self.code, self.message = code, message


# ---- the objects behind handles ------------------------------------------------------------------


class _Device:
    """One opened emulated device and what holds it open."""

    __slots__ = ("default_context", "device", "device_id", "hi", "lo", "set_count")

    def __init__(self, device_id: int, device: EmulatedDevice):
        self.device_id = device_id
        self.device = device
        self.lo = device.base_address  # the device's address window: [lo, hi)
        self.hi = device.base_address + device.total_memory
        self.set_count = 0
        self.default_context: Optional[_Context] = None


class _Context:
    __slots__ = ("alive", "default_stream", "dev", "events", "handle", "streams")

    def __init__(self, dev: _Device, handle: int):
        self.dev = dev
        self.handle = handle
        self.alive = True
        self.default_stream = _Stream(self, 0, dev.device.create_stream())
        self.streams: dict[int, _Stream] = {}
        self.events: dict[int, _Event] = {}


class _Stream:
    __slots__ = ("context", "device", "handle", "raw")

    def __init__(self, context: _Context, handle: int, raw: Any):
        self.context = context
        self.device = context.dev.device
        self.handle = handle
        self.raw = raw  # the device's stream


class _Event:
    __slots__ = ("context", "device", "handle", "last", "ok", "raw", "records")

    def __init__(self, context: _Context, handle: int, raw: Any):
        self.context = context
        self.device = context.dev.device
        self.handle = handle
        self.raw = raw
        self.records = 0  # records submitted
        self.last = 0  # number of the latest record (0: none since creation or reset)
        self.ok = 0  # number of the latest record that ran successfully

    def done(self, ticket: int, code: int) -> None:
        if code == 0 and ticket > self.ok:
            self.ok = ticket


class _Desc:
    __slots__ = ("dtype", "format", "shape", "size")

    def __init__(self, dtype: int, fmt: int, shape: tuple[int, ...]):
        self.dtype, self.format, self.shape = dtype, fmt, shape
        n = DTYPE_SIZES.get(dtype, 0)
        for d in shape:
            n *= max(d, 0)  # an unknown dim (-1, -2) has no size yet
        self.size = n


class _Buffer:
    __slots__ = ("addr", "args", "size")

    def __init__(self, addr: int, size: int):
        self.addr, self.size = addr, size
        self.args: dict[_Desc, TensorArg] = {}  # this buffer under each desc it was launched with


class _Attr:
    __slots__ = ("values",)

    def __init__(self) -> None:
        # Replaced, never mutated, on each set: a launch takes the current dict as its snapshot.
        self.values: Any = _NO_ATTRS


# ---- the runtime ---------------------------------------------------------------------------------


class DirectRuntime(AclRuntime):
    """Every acl call straight onto in-process emulated devices; see the module docstring."""

    def __init__(
        self,
        memory_bytes: Optional[int] = None,
        device_count: Optional[int] = None,
        soc_name: Optional[str] = None,
    ):
        env = os.environ
        if memory_bytes is None:
            memory_bytes = parse_size(env.get("FLEXNPU_MEMORY") or DEFAULT_MEMORY)
        visible = env.get("FLEXNPU_VISIBLE_DEVICES", "").strip()
        if device_count is not None:
            physical = list(range(device_count))
        elif visible:
            try:
                physical = [int(v) for v in visible.split(",")]
            except ValueError:
                raise ValueError(
                    f"FLEXNPU_VISIBLE_DEVICES must be comma-separated device ids, not {visible!r}"
                ) from None
        else:
            physical = [0]
        if memory_bytes <= 0 or not physical or len(physical) > 256:
            raise ValueError(f"need memory_bytes > 0 and 1..256 devices, got {memory_bytes}, {physical}")
        self.memory_bytes = memory_bytes
        self.physical_ids = physical
        self.soc_name = soc_name or env.get("FLEXNPU_SOC") or DEFAULT_SOC

        self._errors = ErrorMessages()
        self._tls = threading.local()  # .context: this thread's current _Context
        self._lock = threading.RLock()  # creation and destruction; lookups need no lock
        self._ids = itertools.count(1)
        self._initialized = False
        self._devices: dict[int, _Device] = {}
        self._contexts: dict[int, _Context] = {}
        self._streams: dict[int, _Stream] = {}
        self._events: dict[int, _Event] = {}
        self._descs: dict[int, _Desc] = {}
        self._buffers: dict[int, _Buffer] = {}
        self._attrs: dict[int, _Attr] = {}
        self._host: dict[int, mmap.mmap] = {}  # malloc_host address -> its mapping
        self._ipc: dict[str, list] = {}  # key -> [device id, address, size, open references]

    def __repr__(self) -> str:
        return f"<DirectRuntime {len(self.physical_ids)} x {self.soc_name}, {self.memory_bytes} bytes each>"

    # ---- helpers -------------------------------------------------------------------------------

    def _fail(self, code: int, message: str) -> int:
        return self._errors.set(code, message)

    def _context(self) -> Optional[_Context]:
        ctx = getattr(self._tls, "context", None)
        return ctx if ctx is not None and ctx.alive else None

    def _no_context(self) -> int:
        if not self._initialized:
            return self._fail(C.ACL_ERROR_UNINITIALIZE, "acl is not initialized: call acl.init() first")
        return self._fail(
            C.ACL_ERROR_RT_CONTEXT_NULL,
            "this thread has no current context: call acl.rt.set_device or acl.rt.set_context first",
        )

    def _bad_handle(self, kind: int, handle: Any, code: int = C.ACL_ERROR_RT_INVALID_HANDLE) -> int:
        name = KIND_NAMES[kind]
        return self._fail(code, f"{handle!r} is not a live {name} handle (destroyed, or never created)")

    def _stream(self, stream: Any) -> Any:
        """The _Stream for a stream argument (0/None: the default stream), or the error code."""
        if stream is None or (type(stream) is int and stream == 0):
            ctx = getattr(self._tls, "context", None)
            if ctx is None or not ctx.alive:
                return self._no_context()
            return ctx.default_stream
        try:
            s = self._streams.get(stream)
        except TypeError:  # unhashable
            s = None
        if s is None:
            return self._bad_handle(KIND_STREAM, stream)
        return s

    def _event(self, event: Any) -> Optional[_Event]:
        try:
            e = self._events.get(event)
        except TypeError:
            e = None
        if e is None:
            self._bad_handle(KIND_EVENT, event)
        return e

    def _new_handle(self, kind: int, device: int = 0) -> int:
        return make_handle(kind, device, next(self._ids))

    def _require_ints(self, **values: Any) -> tuple[int, ...]:
        out = []
        for name, value in values.items():
            v = _int(value)
            if v is None or v < 0:
                raise _Invalid(C.ACL_ERROR_INVALID_PARAM, f"{name} must be a non-negative int, not {value!r}")
            out.append(v)
        return tuple(out)

    # ---- init / finalize -----------------------------------------------------------------------

    def init(self, config_path: Optional[str] = None) -> int:
        if config_path is not None and not isinstance(config_path, str):
            return self._fail(C.ACL_ERROR_INVALID_PARAM, f"config_path must be a str, not {config_path!r}")
        if config_path and not os.path.isfile(config_path):
            return self._fail(C.ACL_ERROR_INVALID_PARAM, f"acl.init: no config file at {config_path!r}")
        with self._lock:
            if self._initialized:
                return self._fail(C.ACL_ERROR_REPEAT_INITIALIZE, "acl.init was already called")
            self._initialized = True
        return C.ACL_SUCCESS

    def finalize(self) -> int:
        with self._lock:
            if not self._initialized:
                return self._fail(C.ACL_ERROR_REPEAT_FINALIZE, "acl.finalize without a matching acl.init")
            for dev in self._devices.values():  # as aclFinalize: queued work finishes first
                with contextlib.suppress(DeviceError):
                    dev.device.synchronize_device()
            self.close()
            self._initialized = False
        return C.ACL_SUCCESS

    def close(self) -> None:
        """Release every device, host allocation and handle (pending device work is dropped)."""
        with self._lock:
            for dev in list(self._devices.values()):
                self._release_device(dev)
            for mapping in self._host.values():
                mapping.close()
            self._host.clear()
            for table in (self._descs, self._buffers, self._attrs, self._ipc):
                table.clear()

    def get_recent_err_msg(self) -> str:
        return self._errors.take()

    # ---- tensor descs and data buffers ---------------------------------------------------------

    def create_tensor_desc(self, data_type: int, dims: list, fmt: int) -> int:
        if _int(data_type) is None or _int(fmt) is None:  # (check_desc_args needs hashable values)
            why = f"data type and format must be ints, not {data_type!r}, {fmt!r}"
        else:
            why = check_desc_args(data_type, dims, fmt)
        if why is not None:
            self._fail(C.ACL_ERROR_INVALID_PARAM, f"acl.create_tensor_desc: {why}")
            return 0
        handle = self._new_handle(KIND_DESC)
        self._descs[handle] = _Desc(data_type, fmt, tuple(int(d) for d in dims))
        return handle

    def _desc(self, desc: Any) -> Optional[_Desc]:
        try:
            d = self._descs.get(desc)
        except TypeError:
            d = None
        if d is None:
            self._bad_handle(KIND_DESC, desc, C.ACL_ERROR_INVALID_RESOURCE_HANDLE)
        return d

    def destroy_tensor_desc(self, desc: int) -> None:
        if self._desc(desc) is not None:
            del self._descs[desc]

    def get_tensor_desc_type(self, desc: int) -> int:
        d = self._desc(desc)
        return C.ACL_DT_UNDEFINED if d is None else d.dtype

    def get_tensor_desc_format(self, desc: int) -> int:
        d = self._desc(desc)
        return C.ACL_FORMAT_UNDEFINED if d is None else d.format

    def get_tensor_desc_num_dims(self, desc: int) -> int:
        d = self._desc(desc)
        return 0 if d is None else len(d.shape)

    def get_tensor_desc_dim_v2(self, desc: int, index: int) -> tuple[int, int]:
        d = self._desc(desc)
        if d is None:
            return -1, C.ACL_ERROR_INVALID_RESOURCE_HANDLE
        i = _int(index)
        if i is None or not 0 <= i < len(d.shape):
            return -1, self._fail(
                C.ACL_ERROR_INVALID_PARAM, f"dim index {index!r} out of range for {len(d.shape)} dims"
            )
        return d.shape[i], C.ACL_SUCCESS

    def get_tensor_desc_size(self, desc: int) -> int:
        d = self._desc(desc)
        return 0 if d is None else d.size

    def create_data_buffer(self, data: int, size: int) -> int:
        try:
            addr, nbytes = self._require_ints(data=data, size=size)
        except _Invalid as exc:
            self._fail(exc.code, f"acl.create_data_buffer: {exc.message}")
            return 0
        handle = self._new_handle(KIND_BUFFER)
        self._buffers[handle] = _Buffer(addr, nbytes)
        return handle

    def _buffer(self, buffer: Any) -> Optional[_Buffer]:
        try:
            b = self._buffers.get(buffer)
        except TypeError:
            b = None
        if b is None:
            self._bad_handle(KIND_BUFFER, buffer, C.ACL_ERROR_INVALID_RESOURCE_HANDLE)
        return b

    def destroy_data_buffer(self, buffer: int) -> int:
        if self._buffer(buffer) is None:
            return C.ACL_ERROR_INVALID_RESOURCE_HANDLE
        del self._buffers[buffer]
        return C.ACL_SUCCESS

    def update_data_buffer(self, buffer: int, data: int, size: int) -> int:
        b = self._buffer(buffer)
        if b is None:
            return C.ACL_ERROR_INVALID_RESOURCE_HANDLE
        try:
            addr, nbytes = self._require_ints(data=data, size=size)
        except _Invalid as exc:
            return self._fail(exc.code, f"acl.update_data_buffer: {exc.message}")
        b.addr, b.size, b.args = addr, nbytes, {}
        return C.ACL_SUCCESS

    def get_data_buffer_addr(self, buffer: int) -> int:
        b = self._buffer(buffer)
        return 0 if b is None else b.addr

    def get_data_buffer_size_v2(self, buffer: int) -> int:
        b = self._buffer(buffer)
        return 0 if b is None else b.size

    # ---- devices and contexts ------------------------------------------------------------------

    def _device_id(self, device_id: Any) -> Optional[int]:
        d = _int(device_id)
        if d is None or not 0 <= d < len(self.physical_ids):
            self._fail(
                C.ACL_ERROR_RT_INVALID_DEVICEID,
                f"invalid device id {device_id!r}: this process sees {len(self.physical_ids)} device(s) "
                "(FLEXNPU_VISIBLE_DEVICES)",
            )
            return None
        return d

    def _open_device(self, device_id: int) -> _Device:
        """The opened device (lock held), opening it if needed; raises DeviceError."""
        dev = self._devices.get(device_id)
        if dev is None:
            try:
                device = EmulatedDevice(
                    device_id=self.physical_ids[device_id],
                    memory_bytes=self.memory_bytes,
                    soc_name=self.soc_name,
                )
            except (OSError, ValueError) as exc:  # the arena could not be mapped
                raise DeviceError(
                    C.ACL_ERROR_RT_MEMORY_ALLOCATION,
                    f"cannot map {self.memory_bytes} bytes of device memory ({exc}): lower FLEXNPU_MEMORY",
                ) from None
            dev = self._devices[device_id] = _Device(device_id, device)
        return dev

    def _new_context(self, dev: _Device) -> _Context:
        handle = self._new_handle(KIND_CONTEXT, dev.device_id)
        ctx = self._contexts[handle] = _Context(dev, handle)
        return ctx

    def _release_context(self, ctx: _Context) -> None:
        """Destroy a context's streams and events and forget it (lock held)."""
        ctx.alive = False
        self._contexts.pop(ctx.handle, None)
        for h in ctx.streams:
            self._streams.pop(h, None)
        for h in ctx.events:
            self._events.pop(h, None)
        if self._devices.get(ctx.dev.device_id) is ctx.dev:  # still open: give its objects back
            device = ctx.dev.device
            for s in [*ctx.streams.values(), ctx.default_stream]:
                with contextlib.suppress(DeviceError):
                    device.destroy_stream(s.raw)
            for e in ctx.events.values():
                with contextlib.suppress(DeviceError):
                    device.destroy_event(e.raw)
        ctx.streams.clear()
        ctx.events.clear()
        if getattr(self._tls, "context", None) is ctx:
            self._tls.context = None

    def _release_device(self, dev: _Device) -> None:
        """Close a device and everything on it (lock held)."""
        del self._devices[dev.device_id]
        for ctx in [c for c in self._contexts.values() if c.dev is dev]:
            self._release_context(ctx)
        for key in [k for k, v in self._ipc.items() if v[0] == dev.device_id]:
            del self._ipc[key]
        dev.device.close()

    def _release_if_unused(self, dev: _Device) -> None:
        if dev.set_count == 0 and not any(c.dev is dev for c in self._contexts.values()):
            self._release_device(dev)

    def set_device(self, device_id: int) -> int:
        if not self._initialized:
            return self._no_context()
        d = self._device_id(device_id)
        if d is None:
            return C.ACL_ERROR_RT_INVALID_DEVICEID
        with self._lock:
            try:
                dev = self._open_device(d)
                if dev.default_context is None:
                    dev.default_context = self._new_context(dev)
            except DeviceError as exc:
                return self._fail(exc.code, exc.message)
            dev.set_count += 1
            self._tls.context = dev.default_context
        return C.ACL_SUCCESS

    def reset_device(self, device_id: int) -> int:
        d = self._device_id(device_id)
        if d is None:
            return C.ACL_ERROR_RT_INVALID_DEVICEID
        with self._lock:
            dev = self._devices.get(d)
            if dev is None or dev.set_count == 0:
                return self._fail(C.ACL_ERROR_RT_INVALID_DEVICEID, f"device {d} was not set by acl.rt.set_device")
            dev.set_count -= 1
            if dev.set_count == 0:
                if dev.default_context is not None:
                    self._release_context(dev.default_context)
                    dev.default_context = None
                self._release_if_unused(dev)
        return C.ACL_SUCCESS

    def get_device(self) -> tuple[int, int]:
        ctx = self._context()
        if ctx is None:
            return -1, self._no_context()
        return ctx.dev.device_id, C.ACL_SUCCESS

    def get_device_count(self) -> tuple[int, int]:
        return len(self.physical_ids), C.ACL_SUCCESS

    def synchronize_device(self) -> int:
        ctx = self._context()
        if ctx is None:
            return self._no_context()
        try:
            code = ctx.dev.device.synchronize_device()
        except DeviceError as exc:
            return self._fail(exc.code, exc.message)
        if code:
            return self._fail(code, f"a command on device {ctx.dev.device_id} failed with error {code}")
        return C.ACL_SUCCESS

    def get_soc_name(self) -> Optional[str]:
        return self.soc_name

    def create_context(self, device_id: int) -> tuple[int, int]:
        if not self._initialized:
            return 0, self._no_context()
        d = self._device_id(device_id)
        if d is None:
            return 0, C.ACL_ERROR_RT_INVALID_DEVICEID
        with self._lock:
            try:
                ctx = self._new_context(self._open_device(d))
            except DeviceError as exc:
                return 0, self._fail(exc.code, exc.message)
            self._tls.context = ctx
        return ctx.handle, C.ACL_SUCCESS

    def _context_of(self, context: Any) -> Optional[_Context]:
        try:
            ctx = self._contexts.get(context)
        except TypeError:
            ctx = None
        if ctx is None:
            self._bad_handle(KIND_CONTEXT, context)
        return ctx

    def destroy_context(self, context: int) -> int:
        with self._lock:
            ctx = self._context_of(context)
            if ctx is None:
                return C.ACL_ERROR_RT_INVALID_HANDLE
            if ctx is ctx.dev.default_context:
                return self._fail(
                    C.ACL_ERROR_INVALID_PARAM,
                    "a device's default context is released by acl.rt.reset_device, not destroy_context",
                )
            self._release_context(ctx)
            self._release_if_unused(ctx.dev)
        return C.ACL_SUCCESS

    def set_context(self, context: int) -> int:
        ctx = self._context_of(context)
        if ctx is None:
            return C.ACL_ERROR_RT_INVALID_HANDLE
        self._tls.context = ctx
        return C.ACL_SUCCESS

    def get_context(self) -> tuple[int, int]:
        ctx = self._context()
        if ctx is None:
            return 0, self._no_context()
        return ctx.handle, C.ACL_SUCCESS

    # ---- streams -------------------------------------------------------------------------------

    def create_stream(self) -> tuple[int, int]:
        return self._create_stream(0)

    def create_stream_with_config(self, priority: int, flag: int) -> tuple[int, int]:
        p, f = _int(priority), _int(flag)
        if p not in STREAM_PRIORITIES:
            return 0, self._fail(C.ACL_ERROR_INVALID_PARAM, f"stream priority must be 0..7, not {priority!r}")
        if f is None or f < 0 or f & ~STREAM_FLAGS:
            return 0, self._fail(
                C.ACL_ERROR_INVALID_PARAM,
                f"stream flag {flag!r} is not a combination of ACL_STREAM_FAST_LAUNCH / FAST_SYNC / PERSISTENT / HUGE",
            )
        return self._create_stream(p)

    def _create_stream(self, priority: int) -> tuple[int, int]:
        with self._lock:
            ctx = self._context()
            if ctx is None:
                return 0, self._no_context()
            try:
                raw = ctx.dev.device.create_stream(priority)
            except DeviceError as exc:
                return 0, self._fail(exc.code, exc.message)
            handle = self._new_handle(KIND_STREAM, ctx.dev.device_id)
            s = ctx.streams[handle] = self._streams[handle] = _Stream(ctx, handle, raw)
        return s.handle, C.ACL_SUCCESS

    def destroy_stream(self, stream: int) -> int:
        if stream is None or (type(stream) is int and stream == 0):
            return self._fail(C.ACL_ERROR_INVALID_PARAM, "the default stream cannot be destroyed")
        with self._lock:
            s = self._stream(stream)
            if type(s) is int:
                return s
            del self._streams[stream]
            s.context.streams.pop(stream, None)
        try:
            s.device.destroy_stream(s.raw)
        except DeviceError as exc:
            return self._fail(exc.code, exc.message)
        return C.ACL_SUCCESS

    def synchronize_stream(self, stream: int) -> int:
        return self._synchronize(stream, None)

    def synchronize_stream_with_timeout(self, stream: int, timeout_ms: int) -> int:
        t = _int(timeout_ms)
        if t is None or t == 0 or t < -1:
            return self._fail(
                C.ACL_ERROR_INVALID_PARAM, f"timeout must be -1 (wait forever) or > 0 ms, not {timeout_ms!r}"
            )
        return self._synchronize(stream, None if t == -1 else t / 1000.0)

    def _synchronize(self, stream: Any, timeout: Optional[float]) -> int:
        s = self._stream(stream)
        if type(s) is int:
            return s
        try:
            code = s.device.synchronize_stream(s.raw, timeout)
        except DeviceError as exc:
            return self._fail(exc.code, exc.message)
        if code:
            if code == C.ACL_ERROR_RT_STREAM_SYNC_TIMEOUT:
                return self._fail(code, f"the stream did not finish within {timeout} s")
            return self._fail(code, f"a command on the stream failed with error {code} (reported once)")
        return C.ACL_SUCCESS

    def stream_query(self, stream: int) -> tuple[int, int]:
        s = self._stream(stream)
        if type(s) is int:
            return C.ACL_STREAM_STATUS_NOT_READY, s
        try:
            idle = s.device.stream_query(s.raw)
        except DeviceError as exc:
            return C.ACL_STREAM_STATUS_NOT_READY, self._fail(exc.code, exc.message)
        return (C.ACL_STREAM_STATUS_COMPLETE if idle else C.ACL_STREAM_STATUS_NOT_READY), C.ACL_SUCCESS

    def stream_wait_event(self, stream: int, event: int) -> int:
        s = self._stream(stream)
        if type(s) is int:
            return s
        e = self._event(event)
        if e is None:
            return C.ACL_ERROR_RT_INVALID_HANDLE
        return self._submit(s, WaitEvent(e.raw))

    def _submit(self, s: _Stream, cmd: Any, on_done: Any = None) -> int:
        try:
            s.device.submit(s.raw, cmd, on_done)
        except DeviceError as exc:
            return self._fail(exc.code, exc.message)
        return C.ACL_SUCCESS

    # ---- events --------------------------------------------------------------------------------

    def create_event(self) -> tuple[int, int]:
        return self._create_event(0)

    def create_event_with_flag(self, flag: int) -> tuple[int, int]:
        f = _int(flag)
        if f is None or f < 0 or f & ~EVENT_FLAGS:
            return 0, self._fail(
                C.ACL_ERROR_INVALID_PARAM,
                f"event flag {flag!r} is not a combination of ACL_EVENT_SYNC/TIME_LINE/EXTERNAL/IPC",
            )
        return self._create_event(f)

    def _create_event(self, flags: int) -> tuple[int, int]:
        with self._lock:
            ctx = self._context()
            if ctx is None:
                return 0, self._no_context()
            try:
                raw = ctx.dev.device.create_event(flags)
            except DeviceError as exc:
                return 0, self._fail(exc.code, exc.message)
            handle = self._new_handle(KIND_EVENT, ctx.dev.device_id)
            ctx.events[handle] = self._events[handle] = _Event(ctx, handle, raw)
        return handle, C.ACL_SUCCESS

    def destroy_event(self, event: int) -> int:
        with self._lock:
            e = self._event(event)
            if e is None:
                return C.ACL_ERROR_RT_INVALID_HANDLE
            del self._events[event]
            e.context.events.pop(event, None)
        try:
            e.device.destroy_event(e.raw)
        except DeviceError as exc:
            return self._fail(exc.code, exc.message)
        return C.ACL_SUCCESS

    def record_event(self, event: int, stream: int) -> int:
        e = self._event(event)
        if e is None:
            return C.ACL_ERROR_RT_INVALID_HANDLE
        s = self._stream(stream)
        if type(s) is int:
            return s
        with self._lock:  # the record's number and its submission, in one order
            e.records += 1
            ticket = e.records
            code = self._submit(s, RecordEvent(e.raw), lambda c: e.done(ticket, c))
            if code == 0:
                e.last = ticket
        return code

    def reset_event(self, event: int, stream: int) -> int:
        e = self._event(event)
        if e is None:
            return C.ACL_ERROR_RT_INVALID_HANDLE
        s = self._stream(stream)
        if type(s) is int:
            return s
        with self._lock:
            code = self._submit(s, ResetEvent(e.raw))
            if code == 0:
                e.last = 0
        return code

    def query_event_status(self, event: int) -> tuple[int, int]:
        e = self._event(event)
        if e is None:
            return C.ACL_EVENT_RECORDED_STATUS_NOT_READY, C.ACL_ERROR_RT_INVALID_HANDLE
        try:
            reached = e.device.event_query(e.raw)
        except DeviceError as exc:
            return C.ACL_EVENT_RECORDED_STATUS_NOT_READY, self._fail(exc.code, exc.message)
        last = e.last
        if reached and last and e.ok >= last:
            return C.ACL_EVENT_RECORDED_STATUS_COMPLETE, C.ACL_SUCCESS
        return C.ACL_EVENT_RECORDED_STATUS_NOT_READY, C.ACL_SUCCESS

    def synchronize_event(self, event: int) -> int:
        e = self._event(event)
        if e is None:
            return C.ACL_ERROR_RT_INVALID_HANDLE
        try:
            code = e.device.synchronize_event(e.raw)
        except DeviceError as exc:
            return self._fail(exc.code, exc.message)
        return self._fail(code, "synchronize_event failed") if code else C.ACL_SUCCESS

    def event_elapsed_time(self, start: int, end: int) -> tuple[float, int]:
        s, e = self._event(start), self._event(end)
        if s is None or e is None:
            return 0.0, C.ACL_ERROR_RT_INVALID_HANDLE
        try:
            return s.device.event_elapsed_ms(s.raw, e.raw), C.ACL_SUCCESS
        except DeviceError as exc:
            return 0.0, self._fail(exc.code, f"{exc.message}: record both events and wait for them first")

    # ---- memory --------------------------------------------------------------------------------

    def malloc(self, size: int, policy: int) -> tuple[int, int]:
        return self._malloc(size, policy, False)

    def malloc_align32(self, size: int, policy: int) -> tuple[int, int]:
        return self._malloc(size, policy, True)

    def _malloc(self, size: Any, policy: Any, align32: bool) -> tuple[int, int]:
        n, p = _int(size), _int(policy)
        if n is None or n <= 0:
            return 0, self._fail(C.ACL_ERROR_INVALID_PARAM, f"malloc size must be a positive int, not {size!r}")
        if not valid_malloc_policy(p):
            return 0, self._fail(
                C.ACL_ERROR_INVALID_PARAM,
                f"unknown malloc policy {policy!r} (ACL_MEM_MALLOC_HUGE_FIRST is 0)",
            )
        ctx = self._context()
        if ctx is None:
            return 0, self._no_context()
        try:
            return ctx.dev.device.malloc(n, p, align32), C.ACL_SUCCESS
        except DeviceError as exc:
            return 0, self._fail(exc.code, exc.message)

    def free(self, dev_ptr: int) -> int:
        ctx = self._context()
        if ctx is None:
            return self._no_context()
        ptr = _int(dev_ptr)
        if ptr is None:
            return self._fail(C.ACL_ERROR_INVALID_PARAM, f"acl.rt.free: {dev_ptr!r} is not a pointer")
        try:
            ctx.dev.device.free(ptr)
        except DeviceError as exc:
            return self._fail(exc.code, f"acl.rt.free: {exc.message} (pass the pointer acl.rt.malloc returned)")
        return C.ACL_SUCCESS

    def malloc_host(self, size: int) -> tuple[int, int]:
        n = _int(size)
        if n is None or n <= 0:
            return 0, self._fail(C.ACL_ERROR_INVALID_PARAM, f"malloc_host size must be a positive int, not {size!r}")
        try:
            mapping = mmap.mmap(-1, n)
        except (OSError, OverflowError, ValueError) as exc:
            return 0, self._fail(C.ACL_ERROR_RT_MEMORY_ALLOCATION, f"malloc_host({n}): {exc}")
        view = ctypes.c_char.from_buffer(mapping)
        addr = ctypes.addressof(view)
        del view  # holds an export of the mapping; the address stays valid while the mapping lives
        self._host[addr] = mapping
        return addr, C.ACL_SUCCESS

    def free_host(self, host_ptr: int) -> int:
        try:
            mapping = self._host.pop(host_ptr, None)
        except TypeError:
            mapping = None
        if mapping is None:
            return self._fail(C.ACL_ERROR_INVALID_PARAM, f"{host_ptr!r} was not returned by acl.rt.malloc_host")
        mapping.close()  # nothing else exports it: the only export was dropped at malloc_host
        return C.ACL_SUCCESS

    def _is_device(self, dev: _Device, addr: int) -> bool:
        return dev.lo <= addr < dev.hi

    def _check_device_range(self, device: EmulatedDevice, addr: int, nbytes: int, what: str) -> None:
        try:
            start, usable = device.allocation_of(addr)
        except DeviceError:
            raise _Invalid(
                C.ACL_ERROR_INVALID_PARAM,
                f"{what} {addr:#x} is in no live allocation (freed, or not from malloc)",
            ) from None
        if addr + nbytes > start + usable:
            raise _Invalid(
                C.ACL_ERROR_INVALID_PARAM,
                f"{nbytes} bytes at {what} {addr:#x} run past the end of its allocation "
                f"[{start:#x}, {start + usable:#x})",
            )

    def _check_host(self, addr: int, nbytes: int, what: str) -> None:
        if nbytes and (addr < _NULL_PAGE or addr + nbytes > _ADDRESS_END):
            raise _Invalid(C.ACL_ERROR_INVALID_PARAM, f"{what} {addr:#x} is not a host address")

    def _copy_plan(self, dev: _Device, dst: Any, dest_max: Any, src: Any, count: Any, kind: Any) -> tuple:
        """(dst, src, count, direction) for a memcpy, after every check; raises _Invalid."""
        plain = type(dst) is int and type(dest_max) is int and type(src) is int and type(count) is int
        if not plain or dst < 0 or dest_max < 0 or src < 0 or count < 0:  # (the fast path skips this)
            dst, dest_max, src, count = self._require_ints(dst=dst, dest_max=dest_max, src=src, count=count)
        if count > dest_max:
            raise _Invalid(C.ACL_ERROR_INVALID_PARAM, f"count {count} exceeds dest_max {dest_max}")
        dst_dev, src_dev = dev.lo <= dst < dev.hi, dev.lo <= src < dev.hi
        if type(kind) is not int:
            kind = _int(kind)
        if kind == C.ACL_MEMCPY_DEFAULT:
            direction = (src_dev, dst_dev)
        else:
            direction = _KIND_DIRECTIONS.get(kind)
            if direction is None:
                raise _Invalid(C.ACL_ERROR_INVALID_PARAM, f"unknown memcpy kind {kind!r} (0..4)")
            if direction != (src_dev, dst_dev):
                raise _Invalid(
                    C.ACL_ERROR_INVALID_PARAM,
                    f"{_KIND_NAMES[kind]} copy from {'device' if src_dev else 'host'} memory to "
                    f"{'device' if dst_dev else 'host'} memory: use the matching kind or ACL_MEMCPY_DEFAULT",
                )
        device = dev.device
        if src_dev:
            self._check_device_range(device, src, count, "source")
        else:
            self._check_host(src, count, "source")
        if dst_dev:
            self._check_device_range(device, dst, count, "destination")
        else:
            self._check_host(dst, count, "destination")
        return dst, src, count, direction

    def memcpy(self, dst: int, dest_max: int, src: int, count: int, kind: int) -> int:
        ctx = self._context()
        if ctx is None:
            return self._no_context()
        try:
            dst, src, count, direction = self._copy_plan(ctx.dev, dst, dest_max, src, count, kind)
            if count:
                device = ctx.dev.device
                if direction == _H2D:
                    device.write(dst, (ctypes.c_char * count).from_address(src))
                elif direction == _D2H:
                    device.read_into((ctypes.c_char * count).from_address(dst), src)
                elif direction == _D2D:
                    device.copy(dst, src, count)
                else:
                    ctypes.memmove(dst, src, count)
        except (_Invalid, DeviceError) as exc:
            return self._fail(exc.code, f"acl.rt.memcpy: {exc.message}")
        return C.ACL_SUCCESS

    def memcpy_async(self, dst: int, dest_max: int, src: int, count: int, kind: int, stream: int) -> int:
        s = self._stream(stream)
        if type(s) is int:
            return s
        try:
            dst, src, count, direction = self._copy_plan(s.context.dev, dst, dest_max, src, count, kind)
        except _Invalid as exc:
            return self._fail(exc.code, f"acl.rt.memcpy_async: {exc.message}")
        if direction == _H2D:
            cmd: Any = CopyToDevice(dst, (ctypes.c_char * count).from_address(src))
        elif direction == _D2H:
            cmd = CopyToHost((ctypes.c_char * count).from_address(dst), src)
        elif direction == _D2D:
            cmd = CopyOnDevice(dst, src, count)
        else:
            cmd = HostFunc(lambda: ctypes.memmove(dst, src, count))
        return self._submit(s, cmd)

    def _memset_plan(self, dev: _Device, dev_ptr: Any, max_size: Any, value: Any, count: Any) -> tuple:
        ptr, max_size, count = self._require_ints(dev_ptr=dev_ptr, max_size=max_size, count=count)
        v = _int(value)
        if v is None:
            raise _Invalid(C.ACL_ERROR_INVALID_PARAM, f"value must be an int, not {value!r}")
        if count > max_size:
            raise _Invalid(C.ACL_ERROR_INVALID_PARAM, f"count {count} exceeds max_size {max_size}")
        if not self._is_device(dev, ptr):
            raise _Invalid(C.ACL_ERROR_INVALID_PARAM, f"{ptr:#x} is not device memory")
        self._check_device_range(dev.device, ptr, count, "destination")
        return ptr, v, count

    def memset(self, dev_ptr: int, max_size: int, value: int, count: int) -> int:
        ctx = self._context()
        if ctx is None:
            return self._no_context()
        try:
            ptr, v, count = self._memset_plan(ctx.dev, dev_ptr, max_size, value, count)
            ctx.dev.device.memset(ptr, v, count)
        except (_Invalid, DeviceError) as exc:
            return self._fail(exc.code, f"acl.rt.memset: {exc.message}")
        return C.ACL_SUCCESS

    def memset_async(self, dev_ptr: int, max_size: int, value: int, count: int, stream: int) -> int:
        s = self._stream(stream)
        if type(s) is int:
            return s
        try:
            ptr, v, count = self._memset_plan(s.context.dev, dev_ptr, max_size, value, count)
        except _Invalid as exc:
            return self._fail(exc.code, f"acl.rt.memset_async: {exc.message}")
        return self._submit(s, Memset(ptr, v, count))

    def get_mem_info(self, attr: int) -> tuple[int, int, int]:
        a = _int(attr)
        if a is None or not C.ACL_DDR_MEM <= a <= C.ACL_HBM_MEM_P2P_NORMAL:
            return 0, 0, self._fail(C.ACL_ERROR_INVALID_PARAM, f"unknown aclrtMemAttr {attr!r}")
        ctx = self._context()
        if ctx is None:
            return 0, 0, self._no_context()
        try:
            free, total = ctx.dev.device.mem_info()
        except DeviceError as exc:
            return 0, 0, self._fail(exc.code, exc.message)
        return free, total, C.ACL_SUCCESS

    # ---- IPC memory (this process only) --------------------------------------------------------

    _IPC_ONLY_HERE = (
        "IPC memory in direct mode is shared within one process only (each direct process has its own "
        "emulated device); run the processes under `flexnpu run` (the daemon) to share memory"
    )

    def ipc_mem_get_export_key(self, dev_ptr: int, size: int, flag: int) -> tuple[str, int]:
        ctx = self._context()
        if ctx is None:
            return "", self._no_context()
        try:
            ptr, n, _ = self._require_ints(dev_ptr=dev_ptr, size=size, flag=flag)
            if not self._is_device(ctx.dev, ptr):
                raise _Invalid(C.ACL_ERROR_INVALID_PARAM, f"{ptr:#x} is not device memory")
            self._check_device_range(ctx.dev.device, ptr, n, "pointer")
        except _Invalid as exc:
            return "", self._fail(exc.code, f"acl.rt.ipc_mem_get_export_key: {exc.message}")
        with self._lock:
            key = f"flexnpu-direct-{os.getpid()}-{next(self._ids)}"
            self._ipc[key] = [ctx.dev.device_id, ptr, n, 1]
        return key, C.ACL_SUCCESS

    def _ipc_entry(self, key: Any) -> Any:
        """The open entry of an IPC key, or the error code."""
        entry = self._ipc.get(key) if isinstance(key, str) else None
        if entry is not None:
            return entry
        mine = f"flexnpu-direct-{os.getpid()}-"
        if isinstance(key, str) and key.startswith("flexnpu-direct-") and not key.startswith(mine):
            return self._fail(C.ACL_ERROR_RT_FEATURE_NOT_SUPPORT, self._IPC_ONLY_HERE)
        return self._fail(C.ACL_ERROR_INVALID_PARAM, f"{key!r} is not an open IPC memory key")

    def ipc_mem_set_import_pid(self, key: str, pids: list) -> int:
        entry = self._ipc_entry(key)
        if type(entry) is int:
            return entry
        if not isinstance(pids, (list, tuple)) or not all(_int(p) is not None for p in pids) or not pids:
            return self._fail(C.ACL_ERROR_INVALID_PARAM, f"pids must be a non-empty list of ints, not {pids!r}")
        if any(_int(p) != os.getpid() for p in pids):
            return self._fail(C.ACL_ERROR_RT_FEATURE_NOT_SUPPORT, self._IPC_ONLY_HERE)
        return C.ACL_SUCCESS

    def ipc_mem_import_by_key(self, key: str, flag: int) -> tuple[int, int]:
        with self._lock:
            entry = self._ipc_entry(key)
            if type(entry) is int:
                return 0, entry
            ctx = self._context()
            if ctx is None:
                return 0, self._no_context()
            if ctx.dev.device_id != entry[0]:
                return 0, self._fail(
                    C.ACL_ERROR_INVALID_PARAM,
                    f"{key!r} is memory of device {entry[0]}: set that device first",
                )
            entry[3] += 1
        return entry[1], C.ACL_SUCCESS

    def ipc_mem_close(self, key: str) -> int:
        with self._lock:
            entry = self._ipc_entry(key)
            if type(entry) is int:
                return entry
            entry[3] -= 1
            if entry[3] == 0:
                del self._ipc[key]
        return C.ACL_SUCCESS

    # ---- operator attributes -------------------------------------------------------------------

    def create_attr(self) -> int:
        handle = self._new_handle(KIND_ATTR)
        self._attrs[handle] = _Attr()
        return handle

    def destroy_attr(self, attr: int) -> None:
        if self._attr(attr) is not None:
            del self._attrs[attr]

    def _attr(self, attr: Any) -> Optional[_Attr]:
        try:
            a = self._attrs.get(attr)
        except TypeError:
            a = None
        if a is None:
            self._bad_handle(KIND_ATTR, attr, C.ACL_ERROR_INVALID_RESOURCE_HANDLE)
        return a

    def _set_attr(self, attr: Any, name: Any, value: Any, convert: Any, what: str) -> int:
        a = self._attr(attr)
        if a is None:
            return C.ACL_ERROR_INVALID_RESOURCE_HANDLE
        if not isinstance(name, str) or not name:
            return self._fail(C.ACL_ERROR_INVALID_PARAM, f"attribute name must be a non-empty str, not {name!r}")
        converted = convert(value)
        if converted is None:
            return self._fail(C.ACL_ERROR_INVALID_PARAM, f"attribute {name!r} needs {what}, not {value!r}")
        with self._lock:
            a.values = {**a.values, name: converted}  # a new dict: launches keep their snapshot
        return C.ACL_SUCCESS

    def set_attr_bool(self, attr: int, name: str, value: Any) -> int:
        return self._set_attr(attr, name, value, _to_bool, "a bool")

    def set_attr_int(self, attr: int, name: str, value: int) -> int:
        return self._set_attr(attr, name, value, _to_int64, "an int64")

    def set_attr_float(self, attr: int, name: str, value: float) -> int:
        return self._set_attr(attr, name, value, _to_float, "a float")

    def set_attr_string(self, attr: int, name: str, value: str) -> int:
        return self._set_attr(attr, name, value, lambda v: v if isinstance(v, str) else None, "a str")

    def set_attr_list_int(self, attr: int, name: str, values: list) -> int:
        return self._set_attr(attr, name, values, lambda v: _to_tuple(v, _to_int64), "a list of int64")

    def set_attr_list_float(self, attr: int, name: str, values: list) -> int:
        return self._set_attr(attr, name, values, lambda v: _to_tuple(v, _to_float), "a list of floats")

    def set_attr_list_bool(self, attr: int, name: str, values: list) -> int:
        return self._set_attr(attr, name, values, lambda v: _to_tuple(v, _to_bool), "a list of bools")

    def set_attr_data_type(self, attr: int, name: str, value: int) -> int:
        return self._set_attr(attr, name, value, _to_data_type, "an aclDataType")

    # ---- operator execution --------------------------------------------------------------------

    def execute_v2(
        self,
        op_type: str,
        input_desc: list,
        inputs: list,
        output_desc: list,
        outputs: list,
        attr: int,
        stream: int,
    ) -> int:
        s = self._stream(stream)
        if type(s) is int:
            return s
        if type(op_type) is not str or not op_type:
            return self._fail(C.ACL_ERROR_INVALID_PARAM, f"op_type must be a non-empty str, not {op_type!r}")
        if attr is None or (type(attr) is int and attr == 0):
            attrs = _NO_ATTRS
        else:
            try:
                a = self._attrs.get(attr)
            except TypeError:
                a = None
            if a is None:
                return self._bad_handle(KIND_ATTR, attr, C.ACL_ERROR_INVALID_RESOURCE_HANDLE)
            attrs = a.values
        try:
            ins = self._tensor_args(input_desc, inputs, "input")
            outs = self._tensor_args(output_desc, outputs, "output")
        except _Invalid as exc:
            return self._fail(exc.code, f"acl.op.execute_v2({op_type}): {exc.message}")
        try:  # _submit inlined: this is the passthrough baseline's launch path
            s.device.submit(s.raw, LaunchOp(op_type, ins, outs, attrs))
        except DeviceError as exc:
            return self._fail(exc.code, exc.message)
        return C.ACL_SUCCESS

    def _tensor_args(self, descs: Any, buffers: Any, what: str) -> list[TensorArg]:
        """The TensorArgs of parallel desc and buffer lists; raises _Invalid."""
        if not isinstance(descs, (list, tuple)) or not isinstance(buffers, (list, tuple)):
            raise _Invalid(C.ACL_ERROR_INVALID_PARAM, f"{what} descs and buffers must be lists")
        if len(descs) != len(buffers):
            raise _Invalid(C.ACL_ERROR_INVALID_PARAM, f"{len(descs)} {what} descs but {len(buffers)} {what} buffers")
        desc_table, buffer_table = self._descs, self._buffers
        args = []
        for i, (d, b) in enumerate(zip(descs, buffers)):
            try:
                desc = desc_table.get(d)
            except TypeError:
                desc = None
            if desc is None:
                raise _Invalid(C.ACL_ERROR_INVALID_RESOURCE_HANDLE, f"{what} {i}: {d!r} is not a live tensor desc")
            try:
                buf = buffer_table.get(b)
            except TypeError:
                buf = None
            if buf is None:
                if desc.dtype == C.ACL_DT_UNDEFINED and (b is None or (type(b) is int and b == 0)):
                    args.append(TensorArg(desc.dtype, desc.format, desc.shape, 0, 0))  # omitted input
                    continue
                raise _Invalid(C.ACL_ERROR_INVALID_RESOURCE_HANDLE, f"{what} {i}: {b!r} is not a live data buffer")
            arg = buf.args.get(desc)
            if arg is None:
                arg = buf.args[desc] = TensorArg(desc.dtype, desc.format, desc.shape, buf.addr, buf.size)
            args.append(arg)
        return args


# memcpy kind -> (source is device memory, destination is device memory)
_H2H, _H2D, _D2H, _D2D = (False, False), (False, True), (True, False), (True, True)
_KIND_DIRECTIONS = {
    C.ACL_MEMCPY_HOST_TO_HOST: _H2H,
    C.ACL_MEMCPY_HOST_TO_DEVICE: _H2D,
    C.ACL_MEMCPY_DEVICE_TO_HOST: _D2H,
    C.ACL_MEMCPY_DEVICE_TO_DEVICE: _D2D,
}
_KIND_NAMES = {
    C.ACL_MEMCPY_HOST_TO_HOST: "ACL_MEMCPY_HOST_TO_HOST",
    C.ACL_MEMCPY_HOST_TO_DEVICE: "ACL_MEMCPY_HOST_TO_DEVICE",
    C.ACL_MEMCPY_DEVICE_TO_HOST: "ACL_MEMCPY_DEVICE_TO_HOST",
    C.ACL_MEMCPY_DEVICE_TO_DEVICE: "ACL_MEMCPY_DEVICE_TO_DEVICE",
}


# ---- attribute value conversions (None: wrong type) ----------------------------------------------


def _to_bool(v: Any) -> Optional[bool]:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    i = _int(v)  # pyACL passes an int on as aclopSetAttrBool's uint8: nonzero is true
    return None if i is None else i != 0


def _to_int64(v: Any) -> Optional[int]:
    if isinstance(v, bool):
        return None
    i = _int(v)
    return i if i is not None and _INT64_MIN <= i <= _INT64_MAX else None


def _to_float(v: Any) -> Optional[float]:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        return None
    try:
        return float(v)
    except OverflowError:
        return None


def _to_tuple(values: Any, convert: Any) -> Optional[tuple]:
    if not isinstance(values, (list, tuple)) or len(values) > 2**16:
        return None
    out = tuple(convert(v) for v in values)
    return None if any(v is None for v in out) else out


def _to_data_type(v: Any) -> Optional[int]:
    i = _to_int64(v)
    return i if i in DTYPE_SIZES or i == C.ACL_DT_UNDEFINED else None
