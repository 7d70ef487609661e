"""The per-device daemon: the control plane (a Unix socket), the drainer thread, the device.

Threads:
- the control thread (``serve``): accepts connections, checks each peer's uid, handles attach,
  detach, status and stop, and notices a client's death when its socket closes;
- the drainer thread: drains every client's ring and runs the handlers (``_drainer.pyx``);
- the device's executor threads: run stream commands and report completions.

A client is added to and removed from the drainer by requests the drainer runs between batches,
so only the drainer thread touches a client's tables.  A dead client's resources are reclaimed as
soon as its socket closes (well within a second).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import struct
import threading
import time
from typing import Any, Optional

from flexnpu_daemon._drainer import Drainer
from flexnpu_daemon.backends import make_device
from flexnpu_daemon.client import ClientState
from flexnpu_daemon.memory import IpcRegistry

from flexnpu import control
from flexnpu.errors import DaemonError
from flexnpu.ring import Doorbell

log = logging.getLogger("flexnpu_daemon")

MAX_CLIENTS = 4096
_MAX_MESSAGE = 1 << 20


class _Peer:
    """One control connection (a client's lifeline, or a tool asking for status)."""

    def __init__(self, sock: socket.socket, pid: int, uid: int):
        self.sock, self.pid, self.uid = sock, pid, uid
        self.buffer = b""
        self.client: Optional[ClientState] = None


class Daemon:
    def __init__(self, device_id: int = 0, backend: str = "emulated", memory_bytes: int = 16 << 30,
                 spin_ns: int = 50_000):
        self.device_id = device_id
        self.backend = backend
        # The emulated device runs inline in the drainer thread (workers=0): one thread decodes and
        # executes, so no GIL hand-offs between a drainer and an executor inside the daemon.
        options = {"workers": 0} if backend == "emulated" else {}
        self.device = make_device(backend, device_id, memory_bytes, **options)
        self.doorbell = Doorbell.create()
        self.ipc = IpcRegistry()
        self.spin_ns = spin_ns
        self.drainer = Drainer(self.doorbell, spin_ns=spin_ns, on_idle=self._idle,
                               run_work=getattr(self.device, "run_ready", None))
        self.clients: dict[int, ClientState] = {}
        self._free_ids = list(range(MAX_CLIENTS - 1, -1, -1))
        self._rates: dict[int, tuple[float, int]] = {}
        # what detached clients did (status adds the attached ones)
        self._finished = {"clients": 0, "launches": 0, "ring_wait_ns_sum": 0, "ring_wait_ns_max": 0}
        self.started_at = time.time()
        self.uid = os.getuid()
        self.path = control.socket_path(device_id)
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._listener: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def bind(self) -> None:
        """Take the device's socket (refusing if a live daemon already holds it)."""
        if os.path.exists(self.path):
            if control.is_running(self.device_id):
                raise DaemonError(f"a FlexNPU daemon already serves device {self.device_id} ({self.path})")
            os.unlink(self.path)  # stale: its daemon died
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            listener.bind(self.path)
        finally:
            os.umask(old_umask)
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener

    def start(self) -> None:
        self._thread = threading.Thread(target=self.drainer.run, name="flexnpu-drainer", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Thread- and signal-safe."""
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def serve(self) -> None:
        """The control loop; returns after stop (then call close())."""
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=1.0):
                    if key.data == "wake":
                        os.read(self._wake_r, 64)
                    elif key.data is None:
                        self._accept(sel)
                    else:
                        self._readable(sel, key.data)
        finally:
            for key in list(sel.get_map().values()):
                if isinstance(key.data, _Peer):
                    self._disconnect(sel, key.data)
            sel.close()

    def close(self) -> None:
        """Detach every client, stop the drainer and the device, remove the socket."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        if self._thread is not None:
            for client in list(self.clients.values()):
                self.drainer.post(self._remove, client)
            self.drainer.stop()
            self._thread.join(30)
            self._thread = None
        for client in list(self.clients.values()):  # the drainer never ran (or died)
            self._remove(client)
        self.device.close()
        self.doorbell.close()
        self.doorbell.unlink()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # ---- control connections --------------------------------------------------------------------
    def _accept(self, sel: selectors.BaseSelector) -> None:
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        if uid not in (self.uid, 0):
            log.warning("refused a connection from uid %d (pid %d)", uid, pid)
            _send(sock, {"ok": False, "error": f"this daemon serves uid {self.uid} only"})
            sock.close()
            return
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, _Peer(sock, pid, uid))

    def _readable(self, sel: selectors.BaseSelector, peer: _Peer) -> None:
        try:
            chunk = peer.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._disconnect(sel, peer)
            return
        peer.buffer += chunk
        if len(peer.buffer) > _MAX_MESSAGE:
            log.warning("pid %d sent an oversized control message; disconnecting", peer.pid)
            self._disconnect(sel, peer)
            return
        while b"\n" in peer.buffer:
            line, peer.buffer = peer.buffer.split(b"\n", 1)
            try:
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise ValueError("not a JSON object")
                reply = self._handle(peer, message)
            except (ValueError, TypeError, KeyError) as exc:
                reply = {"ok": False, "error": f"bad control message: {exc}"}
            except DaemonError as exc:
                reply = {"ok": False, "error": str(exc)}
            except Exception as exc:  # never let one peer's request take the daemon down
                log.exception("control request failed")
                reply = {"ok": False, "error": f"internal error: {exc}"}
            try:
                _send(peer.sock, reply)
            except OSError:
                self._disconnect(sel, peer)
                return

    def _disconnect(self, sel: selectors.BaseSelector, peer: _Peer) -> None:
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(peer.sock)
        peer.sock.close()
        if peer.client is not None:
            log.info("client %d (pid %d) detached", peer.client.client_id, peer.pid)
            self.drainer.post(self._remove, peer.client)
            peer.client = None

    def _handle(self, peer: _Peer, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "attach":
            return self._attach(peer, message)
        if op == "detach":
            if peer.client is not None:
                self.drainer.post(self._remove, peer.client)
                peer.client = None
            return {"ok": True}
        if op == "status":
            return {"ok": True, **self.status()}
        if op == "stop":
            self.request_stop()
            return {"ok": True}
        raise ValueError(f"unknown op {op!r}")

    def _attach(self, peer: _Peer, message: dict[str, Any]) -> dict[str, Any]:
        if peer.client is not None:
            raise DaemonError("this connection is already attached")
        if message.get("version") != control.PROTOCOL_VERSION:
            raise DaemonError(f"client protocol version {message.get('version')} is not "
                              f"{control.PROTOCOL_VERSION}: client and daemon come from different FlexNPU installs")
        if not self._free_ids:
            raise DaemonError(f"too many clients ({MAX_CLIENTS})")
        quota = message.get("quota")
        if quota is not None and (not isinstance(quota, int) or quota <= 0):
            raise ValueError("quota must be a positive number of bytes")
        client_id = self._free_ids.pop()
        try:
            client = ClientState(
                client_id=client_id, pid=peer.pid, uid=peer.uid, name=str(message.get("name", ""))[:200],
                phase=str(message.get("phase", "auto")), quota=quota, device=self.device, ipc=self.ipc,
            )
        except BaseException:
            self._free_ids.append(client_id)
            raise
        client.ring.bind_doorbell(self.doorbell)
        self.clients[client_id] = client
        peer.client = client
        self.drainer.post(self.drainer.add_client, client)
        log.info("client %d attached: pid %d, %s", client_id, peer.pid, client.name)
        return {"ok": True, **client.attach_info(), "daemon_pid": os.getpid(), "device": self.device_id,
                "soc_name": self.device.soc_name, "total_memory": self.device.mem_info()[1]}

    # ---- drainer-thread work ----------------------------------------------------------------------
    def _remove(self, client: ClientState) -> None:
        if self.clients.get(client.client_id) is not client:
            return
        self.drainer.remove_client(client)
        try:
            client.release()
        except Exception:
            log.exception("releasing client %d failed", client.client_id)
        del self.clients[client.client_id]
        self._rates.pop(client.client_id, None)
        f = self._finished
        f["clients"] += 1
        f["launches"] += client.launches
        f["ring_wait_ns_sum"] += client.ring_wait_ns_sum
        f["ring_wait_ns_max"] = max(f["ring_wait_ns_max"], client.ring_wait_ns_max)
        self._free_ids.append(client.client_id)

    def _idle(self) -> None:
        """The rings are empty.  Spin for the next record only while the device is idle: when it
        has work queued, a parked drainer's wake-up costs nothing and spinning would take a core
        from the clients and the executor (this machine class has two)."""
        for client in self.clients.values():
            if client.pending_destroy:
                client.reap_streams()
        self.drainer.spin_ns = 0 if self.device.has_work() else self.spin_ns

    # ---- status -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = time.time()
        clients = []
        for client in list(self.clients.values()):
            try:
                s = client.stats()
            except Exception:  # released while we looked
                continue
            t_prev, n_prev = self._rates.get(client.client_id, (client.attached_at, 0))
            s["ops_per_s"] = (s["launches"] - n_prev) / max(now - t_prev, 1e-9)
            self._rates[client.client_id] = (now, s["launches"])
            clients.append(s)
        free, total = self.device.mem_info()
        f = self._finished
        live = list(self.clients.values())
        launches = f["launches"] + sum(c.launches for c in live)
        dispatch_sum = f["ring_wait_ns_sum"] + sum(c.ring_wait_ns_sum for c in live)
        dispatch_max = max([f["ring_wait_ns_max"]] + [c.ring_wait_ns_max for c in live])
        totals = {
            "clients_served": f["clients"] + len(live),
            "launches": launches,
            "ring_wait_us_mean": dispatch_sum / launches / 1e3 if launches else None,
            "ring_wait_us_max": dispatch_max / 1e3 if launches else None,
        }
        return {
            "device": self.device_id,
            "backend": self.backend,
            "soc_name": self.device.soc_name,
            "daemon_pid": os.getpid(),
            "uptime_s": now - self.started_at,
            "memory": {"total": total, "free": free, "used": total - free},
            "messages": self.drainer.messages,
            "totals": totals,
            "clients": clients,
        }


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message).encode() + b"\n"
    sock.setblocking(True)
    try:
        sock.settimeout(5.0)
        sock.sendall(data)
    finally:
        sock.setblocking(False)


def run_daemon(device_id: int, backend: str, memory_bytes: int, spin_ns: int = 50_000) -> int:
    """Run a daemon in this process until SIGTERM/SIGINT or `flexnpu daemon stop`; exit status."""
    daemon = Daemon(device_id, backend, memory_bytes, spin_ns=spin_ns)
    try:
        daemon.bind()
    except DaemonError as exc:
        daemon.close()
        print(f"flexnpu daemon: {exc}", flush=True)
        return 1
    except OSError as exc:
        daemon.close()
        print(f"flexnpu daemon: cannot listen on {daemon.path}: {exc.strerror}", flush=True)
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: daemon.request_stop())
    daemon.start()
    print(f"READY {daemon.path} pid {os.getpid()}", flush=True)
    try:
        daemon.serve()
    finally:
        daemon.close()
    return 0

