"""Starting and stopping device daemons as processes (``flexnpu daemon``, ``flexnpu run``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Optional

from flexnpu import control
from flexnpu.errors import DaemonError
from flexnpu.shm import pid_alive

READY_TIMEOUT_S = 60.0
# A daemon runs in /: it pins no user directory, and `python -m flexnpu_daemon` cannot import a
# source checkout that happens to be the caller's working directory instead of the installed package.
DAEMON_CWD = "/"


def daemon_command(device: int, backend: str, memory: int) -> list[str]:
    return [sys.executable, "-m", "flexnpu_daemon", "--device", str(device), "--backend", backend,
            "--memory", str(memory)]


def spawn(device: int, backend: str = "emulated", memory: int = 16 << 30, detach: bool = False,
          log_path: Optional[str] = None) -> subprocess.Popen:
    """Start a daemon for `device` and wait until it accepts clients.

    Attached (the default, for ``flexnpu run``): a child of this process whose output we read.
    Detached: its own session, output to `log_path`, outliving this process.
    """
    cmd = daemon_command(device, backend, memory)
    if detach:
        log = open(log_path or os.devnull, "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                    cwd=DAEMON_CWD)
        finally:
            log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not control.is_running(device):
            if proc.poll() is not None:
                raise DaemonError(f"the daemon for device {device} exited with status {proc.returncode}"
                                  + (f"; see {log_path}" if log_path else ""))
            if time.monotonic() > deadline:
                proc.kill()
                raise DaemonError(f"the daemon for device {device} did not start within {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        return proc
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                            preexec_fn=die_with_parent, cwd=DAEMON_CWD)
    line = proc.stdout.readline()  # "READY <socket> pid <pid>", or an error, or EOF
    if not line.startswith("READY"):
        proc.wait(10)
        raise DaemonError(line.strip() or f"the daemon for device {device} exited with status {proc.returncode}")
    return proc


def stop(device: int, proc: Optional[subprocess.Popen] = None, timeout: float = 15.0) -> bool:
    """Ask the daemon of `device` to stop and wait for it; False if none was running."""
    try:
        pid = control.request(device, {"op": "ping"}, timeout=2.0)["pid"]
        control.request(device, {"op": "stop"}, timeout=5.0)
    except DaemonError:
        if proc is None:
            return False
        pid = proc.pid
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return True
        if proc is None and not pid_alive(pid):
            return True
        time.sleep(0.02)
    _signal(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait(5)
    return True


def die_with_parent() -> None:
    """In a child before exec: SIGTERM it when the process that started it dies (Linux), so an
    embedded daemon never outlives a `flexnpu run` that was killed.  The daemon's SIGTERM handler
    detaches its clients and removes its segments and socket."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the daemon then outlives a killed parent; `flexnpu daemon stop` ends it


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
