"""Helpers shared by the device backend tests (emulated and ascend)."""

from __future__ import annotations

import threading
import time

import pytest
from flexnpu_daemon.backends.base import DeviceError


def raises(code, fn, *args, **kwargs):
    """Call fn, expect a DeviceError with this ACL code; returns it."""
    with pytest.raises(DeviceError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, info.value
    return info.value


class Recorder:
    """on_done callbacks that remember (tag, code) in call order."""

    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()

    def __call__(self, tag):
        def on_done(code):
            with self.lock:
                self.calls.append((tag, code))

        return on_done

    def wait(self, n, timeout=5.0):
        """The calls, once at least n have come (fails after timeout)."""
        deadline = time.monotonic() + timeout
        while len(self.calls) < n:
            assert time.monotonic() < deadline, self.calls
            time.sleep(0.001)
        return list(self.calls)
