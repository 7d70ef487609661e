"""Names and garbage collection of FlexNPU's POSIX shared-memory segments.

Every segment is named ``/flexnpu-<uid>-<pid>-<kind>-<random>`` where ``pid`` is the creating
(owning) process.  The owner unlinks its segments; :func:`gc` removes those whose owner died
without doing so (``flexnpu shm gc``).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
from dataclasses import dataclass

SHM_DIR = "/dev/shm"
PREFIX = "flexnpu-"
_NAME_RE = re.compile(r"^flexnpu-(\d+)-(\d+)-([a-z0-9_]+)-([0-9a-f]+)$")
# An fx_ring header stores names in 64 bytes, NUL included.
NAME_MAX = 63


def new_segment_name(kind: str) -> str:
    """A fresh, unique segment name for a segment this process will own."""
    if not re.fullmatch(r"[a-z0-9_]+", kind):
        raise ValueError(f"segment kind must be lower-case letters, digits or '_', not {kind!r}")
    return f"/{PREFIX}{os.getuid()}-{os.getpid()}-{kind}-{secrets.token_hex(6)}"


def normalize(name: str) -> str:
    """POSIX shm names start with exactly one '/'."""
    name = "/" + name.lstrip("/")
    if len(name) > NAME_MAX or "/" in name[1:] or len(name) < 2:
        raise ValueError(f"invalid shared-memory name {name!r}: one '/', then up to {NAME_MAX - 1} chars")
    return name


@dataclass(frozen=True)
class SegmentInfo:
    name: str
    uid: int
    owner_pid: int
    kind: str
    size: int

    @property
    def owner_alive(self) -> bool:
        return pid_alive(self.owner_pid)


def pid_alive(pid: int) -> bool:
    """A process with this pid exists and has not exited (another user's counts; a zombie, exited
    but not yet reaped, does not).  The same rule as fx_pid_alive in fx_atomic.h."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        return True


def list_segments(uid: int | None = None) -> list[SegmentInfo]:
    """FlexNPU segments in /dev/shm (of `uid` if given)."""
    found = []
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    for entry in sorted(entries):
        m = _NAME_RE.match(entry)
        if not m:
            continue
        seg_uid, pid, kind = int(m.group(1)), int(m.group(2)), m.group(3)
        if uid is not None and seg_uid != uid:
            continue
        try:
            size = os.stat(os.path.join(SHM_DIR, entry)).st_size
        except FileNotFoundError:
            continue
        found.append(SegmentInfo("/" + entry, seg_uid, pid, kind, size))
    return found


def gc(dry_run: bool = False, uid: int | None = None) -> list[SegmentInfo]:
    """Unlink segments whose owning process is dead; returns what was (or would be) removed.

    Only the caller's own segments are considered unless `uid` says otherwise (root may clean up
    after any user).  A segment whose owner is alive is never touched.
    """
    if uid is None:
        uid = os.getuid()
    removed = []
    for seg in list_segments(uid):
        if seg.owner_alive:
            continue
        if not dry_run:
            try:
                os.unlink(os.path.join(SHM_DIR, seg.name.lstrip("/")))
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
        removed.append(seg)
    return removed
