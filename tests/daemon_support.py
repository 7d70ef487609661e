"""Running real device daemons in tests: each in its own runtime directory, always stopped."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from flexnpu import control, daemon_process


@contextlib.contextmanager
def runtime_dir_env(path: str) -> Iterator[None]:
    """FLEXNPU_RUNTIME_DIR=path for this process (and the children it starts) meanwhile."""
    old = os.environ.get("FLEXNPU_RUNTIME_DIR")
    os.environ["FLEXNPU_RUNTIME_DIR"] = str(path)
    try:
        yield
    finally:
        if old is None:
            del os.environ["FLEXNPU_RUNTIME_DIR"]
        else:
            os.environ["FLEXNPU_RUNTIME_DIR"] = old


class DaemonProcess:
    """A device daemon child, started and stopped as ``flexnpu run`` does it; `stop()` is idempotent."""

    def __init__(self, device: int = 0, memory: int = 256 << 20):
        self.device = device
        self.proc = daemon_process.spawn(device, memory=memory)  # a crashed test run leaves no daemon behind
        self.pid = self.proc.pid

    def status(self) -> dict[str, Any]:
        return control.request(self.device, {"op": "status"})

    def wait_for_clients(self, count: int, timeout: float = 5.0) -> dict[str, Any]:
        """Poll status until exactly `count` clients are attached; returns that status."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if len(st["clients"]) == count or time.monotonic() > deadline:
                return st
            time.sleep(0.02)

    def stop(self) -> int:
        if self.proc.poll() is None:
            daemon_process.stop(self.device, self.proc, timeout=20.0)
        self.proc.stdout.close()
        return self.proc.returncode


def daemon_segments(pid: int) -> set[str]:
    """Shared-memory segments owned by process `pid`."""
    return {e for e in os.listdir("/dev/shm") if e.startswith("flexnpu-") and e.split("-")[2] == str(pid)}


def make_client(**env: str) -> Any:
    """An in-process client of the daemon runtime (its own connection: a separate tenant)."""
    from flexnpu._acl_hooks import DaemonRuntime

    from flexnpu.acl._api import bind

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return bind(DaemonRuntime())
    finally:
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
