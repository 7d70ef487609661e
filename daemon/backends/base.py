"""The device interface: one physical NPU as the daemon (or ``flexnpu run --direct``) drives it.

A ``Device`` owns device memory, streams (in-order command queues that run concurrently with each
other) and events.  Everything a client does asynchronously becomes a ``Command`` submitted to a
stream; the device runs it later and calls ``on_done(code)`` with an ACL error code (0 on success).
Two implementations: ``emulated`` (numpy, no NPU needed; the default) and ``ascend`` (the real
chip through libascendcl, loaded at run time).

Error semantics follow ACL: a failing command makes its stream's error *sticky*; later commands on
that stream are skipped (their ``on_done`` gets the same code) until ``synchronize_stream``
reports the error and clears it.  Other streams carry on.

Addresses are plain ints in the device's own address space.  The daemon never hands these to
clients: it maps per-client virtual addresses onto them (see the daemon's memory map).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from flexnpu.acl import constants as C


class DeviceError(Exception):
    """A device-level failure carrying the ACL error code an application should see."""

    def __init__(self, code: int, message: str):
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class TensorArg:
    """One operator input or output: its descriptor and where its data lives on the device."""

    dtype: int  # aclDataType
    format: int  # aclFormat
    shape: tuple[int, ...]
    addr: int  # device address of the data
    nbytes: int  # size of the data buffer (>= the tensor's bytes)


def acl_malloc_size(nbytes: int, align32: bool = False) -> int:
    """The usable size aclrtMalloc gives a request of nbytes: rounded up to a multiple of 32,
    plus 32 (aclrtMallocAlign32: without the extra 32)."""
    return -(-nbytes // 32) * 32 + (0 if align32 else 32)


def host_bytes(buf: Any, writable: bool) -> np.ndarray:
    """A host buffer (ndarray, bytes, memoryview...) as a flat uint8 array, without a copy."""
    if isinstance(buf, np.ndarray):
        if not buf.flags.c_contiguous:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, "host array must be C-contiguous")
        if writable and not buf.flags.writeable:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, "host array is read-only")
        return buf.reshape(-1).view(np.uint8)
    try:
        view = memoryview(buf)
    except TypeError:
        raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"{type(buf).__name__} is not a buffer") from None
    if writable and view.readonly:
        raise DeviceError(C.ACL_ERROR_INVALID_PARAM, "host buffer is read-only")
    if not view.c_contiguous:
        raise DeviceError(C.ACL_ERROR_INVALID_PARAM, "host buffer must be contiguous")
    return np.frombuffer(view.cast("B") if view.format != "B" or view.ndim != 1 else view, dtype=np.uint8)


class AttrDataType(int):
    """An operator attribute whose type is aclDataType (a plain int attribute is an int64)."""


# ---- stream commands ----------------------------------------------------------------------------


class Command:
    """Base of everything a stream runs in order."""

    __slots__ = ()


@dataclass(eq=False)
class LaunchOp(Command):
    op_type: str
    inputs: Sequence[TensorArg]
    outputs: Sequence[TensorArg]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    phase: int = 0  # 0 unknown, 1 prefill, 2 decode, 3 mixed: for schedulers and timing models


@dataclass(eq=False)
class CopyToDevice(Command):
    dst: int
    src: Any  # a readable buffer (bytes, memoryview, ndarray) that stays valid until on_done


@dataclass(eq=False)
class CopyToHost(Command):
    dst: Any  # a writable buffer whose length is the number of bytes to copy
    src: int


@dataclass(eq=False)
class CopyOnDevice(Command):
    dst: int
    src: int
    nbytes: int


@dataclass(eq=False)
class Memset(Command):
    dst: int
    value: int
    nbytes: int


@dataclass(eq=False)
class RecordEvent(Command):
    event: Any


@dataclass(eq=False)
class WaitEvent(Command):
    """The stream waits for the event's most recent record submitted before this command."""

    event: Any


@dataclass(eq=False)
class ResetEvent(Command):
    event: Any


@dataclass(eq=False)
class HostFunc(Command):
    fn: Callable[[], None]


DoneCallback = Optional[Callable[[int], None]]


class Device(abc.ABC):
    """One NPU.  Thread-safe: any thread may call any method."""

    device_id: int
    soc_name: str
    total_memory: int

    # ---- memory -------------------------------------------------------------------------------
    @abc.abstractmethod
    def malloc(self, nbytes: int, policy: int = C.ACL_MEM_MALLOC_HUGE_FIRST, align32: bool = False) -> int:
        """Allocate device memory; DeviceError(ACL_ERROR_RT_MEMORY_ALLOCATION) when it does not fit."""

    @abc.abstractmethod
    def free(self, addr: int) -> None:
        """Free an allocation by its start address; DeviceError(ACL_ERROR_INVALID_PARAM) if none."""

    @abc.abstractmethod
    def mem_info(self) -> tuple[int, int]:
        """(free, total) bytes of device memory."""

    @abc.abstractmethod
    def write(self, addr: int, data: Any) -> None:
        """Synchronous host-to-device copy of a readable buffer (not ordered with any stream)."""

    @abc.abstractmethod
    def read_into(self, dst: Any, addr: int) -> None:
        """Synchronous device-to-host copy filling the writable buffer dst."""

    @abc.abstractmethod
    def copy(self, dst: int, src: int, nbytes: int) -> None:
        """Synchronous device-to-device copy."""

    @abc.abstractmethod
    def memset(self, addr: int, value: int, nbytes: int) -> None:
        """Synchronous memset of device memory."""

    # ---- streams ------------------------------------------------------------------------------
    @abc.abstractmethod
    def create_stream(self, priority: int = 0) -> Any:
        """A new stream (an opaque object owned by the caller)."""

    @abc.abstractmethod
    def destroy_stream(self, stream: Any, discard_pending: bool = False) -> None:
        """Destroy a stream after its queued commands ran, or drop them (a dead client's)."""

    @abc.abstractmethod
    def submit(self, stream: Any, cmd: Command, on_done: DoneCallback = None) -> None:
        """Queue cmd on stream; never waits for it to run.  on_done runs on a device thread."""

    @abc.abstractmethod
    def synchronize_stream(self, stream: Any, timeout: Optional[float] = None) -> int:
        """Wait for the stream's queued commands: 0, its sticky error (then cleared), or
        ACL_ERROR_RT_STREAM_SYNC_TIMEOUT."""

    @abc.abstractmethod
    def stream_query(self, stream: Any) -> bool:
        """True when every command queued on the stream has run."""

    @abc.abstractmethod
    def synchronize_device(self, timeout: Optional[float] = None) -> int:
        """Wait for every stream; the first sticky error of any stream, or 0."""

    # ---- events -------------------------------------------------------------------------------
    @abc.abstractmethod
    def create_event(self, flags: int = 0) -> Any:
        """A new event (opaque)."""

    @abc.abstractmethod
    def destroy_event(self, event: Any) -> None: ...

    @abc.abstractmethod
    def event_query(self, event: Any) -> bool:
        """True when the event's latest record has run (or it was never recorded)."""

    @abc.abstractmethod
    def synchronize_event(self, event: Any, timeout: Optional[float] = None) -> int:
        """Wait for the event's latest record: 0 or ACL_ERROR_RT_EVENT_SYNC_TIMEOUT."""

    @abc.abstractmethod
    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        """Milliseconds between two completed records; DeviceError(ACL_ERROR_INVALID_PARAM) if not."""

    def has_work(self) -> bool:
        """A hint: are commands queued or running?  (The daemon spins for new records only when
        not.)  Read without waiting; may be stale by the time it returns."""
        return False

    # ---- lifecycle ----------------------------------------------------------------------------
    @abc.abstractmethod
    def close(self) -> None:
        """Stop the device's threads; pending commands are dropped.  Idempotent."""

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
