"""The daemon's control plane as clients and tools see it: where sockets live, and requests.

One Unix socket per device daemon, ``<runtime dir>/device<N>.sock``, in a directory of mode 0700
(``$FLEXNPU_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/flexnpu``, else ``/tmp/flexnpu-<uid>``).
Messages are JSON objects, one per line; every request gets one reply with ``"ok"``.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from typing import Any, Optional

from flexnpu.errors import DaemonError

PROTOCOL_VERSION = 1


def runtime_dir(create: bool = True) -> str:
    path = os.environ.get("FLEXNPU_RUNTIME_DIR")
    if not path:
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        path = os.path.join(xdg, "flexnpu") if xdg else f"/tmp/flexnpu-{os.getuid()}"
    if create:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.stat(path)
        if st.st_uid != os.getuid():
            raise DaemonError(f"runtime directory {path} belongs to uid {st.st_uid}, not you; "
                              "set FLEXNPU_RUNTIME_DIR to a directory of your own")
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, 0o700)
    return path


def socket_path(device: int) -> str:
    return os.path.join(runtime_dir(), f"device{device}.sock")


def running_devices() -> list[int]:
    """Devices whose daemon socket exists in the runtime directory (they may be stale)."""
    found = []
    for entry in os.listdir(runtime_dir()):
        if entry.startswith("device") and entry.endswith(".sock") and entry[6:-5].isdigit():
            found.append(int(entry[6:-5]))
    return sorted(found)


class Connection:
    """A connection to one device daemon.  Keeping it open is what keeps a client attached."""

    def __init__(self, device: int, timeout: Optional[float] = 10.0):
        self.device = device
        self.path = socket_path(device)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            self.sock.close()
            raise DaemonError(
                f"no FlexNPU daemon serves device {device} ({self.path}): start one with "
                f"`flexnpu daemon start --device {device}`, or run the program under `flexnpu run`"
            ) from exc
        self._buffer = b""

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            self.sock.sendall(json.dumps(message).encode() + b"\n")
            while b"\n" not in self._buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise DaemonError(f"the daemon of device {self.device} closed the connection")
                self._buffer += chunk
        except OSError as exc:
            raise DaemonError(f"lost the daemon of device {self.device}: {exc}") from exc
        line, self._buffer = self._buffer.split(b"\n", 1)
        reply = json.loads(line)
        if not reply.get("ok"):
            raise DaemonError(reply.get("error", "the daemon refused the request"))
        return reply

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


def request(device: int, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    conn = Connection(device, timeout)
    try:
        return conn.request(message)
    finally:
        conn.close()


def is_running(device: int) -> bool:
    try:
        request(device, {"op": "ping"}, timeout=2.0)
    except DaemonError:
        return False
    return True
