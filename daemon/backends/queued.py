"""What both backends share: streams and events kept as host-side queues under one lock.

Each backend queues a stream's commands on the host: the emulated device runs them itself, the
Ascend one hands them to the runtime and watches for their completion.  Over those queues the
handle checks, ACL's sticky-error rule, the queries and the stream and event synchronize calls are
the same, and live here once; how a backend runs its queues and waits on them (``_wait``) is its own.
"""

from __future__ import annotations

import abc
import logging
import threading
from typing import Any, Callable, Optional

import numpy as np

from flexnpu.acl import constants as C

from .base import Device, DeviceError

log = logging.getLogger(__name__)

CLOSED = C.ACL_ERROR_RT_FAILURE  # what a call waiting on a device that closes meanwhile gets


class QueuedDevice(Device):
    """A device whose streams and events are host objects guarded by ``_lock``.

    A subclass names its stream and event classes (``stream_type``, ``event_type``); a stream has
    ``destroyed``, ``error`` (the sticky code) and ``idle()``; an event has ``destroyed``, ``last``
    (its latest record's number, 0 for none), ``pending`` (the numbers of records not yet run) and
    ``complete()``.  The subclass keeps ``_closed`` and ``_streams`` (live streams in creation order).
    """

    stream_type: type
    event_type: type
    _lock: threading.Lock
    _closed: bool
    _streams: dict[Any, None]

    def synchronize_stream(self, stream: Any, timeout: Optional[float] = None) -> int:
        with self._lock:
            s = self._stream(stream, allow_destroyed=True)
            code = self._wait(s.idle, timeout, C.ACL_ERROR_RT_STREAM_SYNC_TIMEOUT, waiter=s)
            if code:
                return code
            code, s.error = s.error, 0
            return code

    def stream_query(self, stream: Any) -> bool:
        with self._lock:
            return self._stream(stream, allow_destroyed=True).idle()

    def event_query(self, event: Any) -> bool:
        with self._lock:
            return self._event(event, allow_destroyed=True).complete()

    def synchronize_event(self, event: Any, timeout: Optional[float] = None) -> int:
        with self._lock:
            e = self._event(event, allow_destroyed=True)
            target = e.last  # a record submitted after this call began is not waited for
            return self._wait(lambda: target not in e.pending, timeout, C.ACL_ERROR_RT_EVENT_SYNC_TIMEOUT, waiter=e)

    @abc.abstractmethod
    def _wait(self, done: Callable[[], bool], timeout: Optional[float], timeout_code: int, waiter: Any = None) -> int:
        """Wait (lock held) until done(): 0, timeout_code, or CLOSED.  waiter: the stream or event
        waited on, if any (a backend may count its waiters to wake only those)."""

    def _take_sticky_errors(self) -> int:
        """(Lock held.)  The first sticky error of any stream, in creation order; all are cleared."""
        code = 0
        for s in self._streams:
            if s.error and not code:
                code = s.error
            s.error = 0
        return code

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceError(CLOSED, "the device is closed")

    def _stream(self, stream: Any, allow_destroyed: bool = False) -> Any:
        self._check_open()
        if not isinstance(stream, self.stream_type) or stream.device is not self or (
            stream.destroyed and not allow_destroyed
        ):
            raise DeviceError(C.ACL_ERROR_RT_INVALID_HANDLE, f"invalid stream {stream!r}")
        return stream

    def _event(self, event: Any, allow_destroyed: bool = False) -> Any:
        self._check_open()
        if not isinstance(event, self.event_type) or event.device is not self or (
            event.destroyed and not allow_destroyed
        ):
            raise DeviceError(C.ACL_ERROR_RT_INVALID_HANDLE, f"invalid event {event!r}")
        return event


def call_on_done(on_done: Optional[Callable[[int], Any]], code: int) -> None:
    """Tell a command's submitter how it ended; a callback that raises is logged, never fatal."""
    if on_done is not None:
        try:
            on_done(code)
        except Exception:
            log.exception("on_done callback raised")


def hex_address(addr: Any) -> str:
    return hex(addr) if isinstance(addr, (int, np.integer)) else repr(addr)
