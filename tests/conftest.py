"""Test-wide guards: a test that leaves a FlexNPU segment in /dev/shm or a child process behind
fails (after the leftovers are cleaned up, so one leak does not cascade into other tests)."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest

from flexnpu.shm import pid_alive

SHM_DIR = "/dev/shm"


def _segments() -> set[str]:
    try:
        return {e for e in os.listdir(SHM_DIR) if e.startswith("flexnpu-")}
    except FileNotFoundError:
        return set()


def _ours(segment: str, children: set[int]) -> bool:
    """Made by this test run: by this process, a child of it, or a process that has died.

    Segments of unrelated live processes (another test run on the same machine) are not ours.
    """
    try:
        owner = int(segment.split("-")[2])
    except (IndexError, ValueError):
        return True
    return owner == os.getpid() or owner in children or not pid_alive(owner)


def _children() -> dict[int, str]:
    """Live (non-zombie) child processes of this process, pid -> command line.

    multiprocessing's resource tracker and forkserver are long-lived helpers by design, not leaks.
    """
    me = os.getpid()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            # the command name may contain spaces: fields after the last ')'
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if int(ppid) != me or state == "Z":
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        if "resource_tracker" in cmd or "forkserver" in cmd:
            continue
        found[int(entry)] = cmd
    return found


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail any test that leaks a shared-memory segment or a child process."""
    segments_before = _segments()
    children_before = set(_children())
    yield
    children_seen = set(_children())
    deadline = time.monotonic() + 2.0
    while True:  # give children that are exiting, and daemons reclaiming a client, a moment
        leaked_children = {p: c for p, c in _children().items() if p not in children_before}
        leaked_segments = {s for s in _segments() - segments_before if _ours(s, children_seen)}
        if (not leaked_children and not leaked_segments) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    for pid in leaked_children:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    for name in leaked_segments:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(SHM_DIR, name))
    problems = []
    if leaked_segments:
        problems.append(f"leaked shared-memory segments: {sorted(leaked_segments)}")
    if leaked_children:
        problems.append(f"leaked child processes: {leaked_children}")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
