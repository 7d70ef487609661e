"""One attached client process as the daemon sees it: its shared segments, its virtual objects,
and a handler per protocol opcode (``flexnpu/_c/fx_proto.h``).

Every field of every record is validated here: a bad record, a bad handle or a failing operator
becomes an ACL error code for this client alone (a reply, or a sticky error on its stream in
stream order) and never an exception that reaches the drainer or another client.
"""

from __future__ import annotations

import logging
import struct
import time
import types
from functools import partial
from typing import Any, Callable, Optional

import numpy as np
from flexnpu._proto import Completion
from flexnpu_daemon.backends.base import (
    AttrDataType,
    CopyOnDevice,
    CopyToDevice,
    CopyToHost,
    Device,
    DeviceError,
    HostFunc,
    LaunchOp,
    Memset,
    RecordEvent,
    ResetEvent,
    TensorArg,
    WaitEvent,
)
from flexnpu_daemon.memory import ClientMemory, IpcRegistry

from flexnpu import _proto as P
from flexnpu.acl import constants as C
from flexnpu.acl._api import check_desc_args
from flexnpu.acl.util import ptr_to_numpy
from flexnpu.ring import Ring, Segment

log = logging.getLogger(__name__)

RING_CAPACITY = 4096
STAGING_BYTES = 8 << 20
_LAUNCH_CACHE = 4096
# opcodes whose record is a command of a stream (its error is reported on that stream)
STREAM_WORK = {P.OPCODES[n] for n in ("LAUNCH", "MEMCPY_ASYNC", "MEMSET_ASYNC", "STAGED_H2D", "RECORD_EVENT",
                                      "WAIT_EVENT", "RESET_EVENT")}
_NO_ATTRS = types.MappingProxyType({})
HOSTREF_BIT = 1 << 63  # a MEMCPY_ASYNC end in shared host memory: bit 63 | segment id << 40 | offset
_OP = P.OPCODES


def _unpack_name(values: bytes) -> bytes:
    return values.split(b"\0", 1)[0]


def pack_text(text: str) -> list[int]:
    """Up to 47 bytes of text as six little-endian u64 reply values."""
    raw = text.encode()
    if len(raw) > 47:
        raise ValueError(f"{text!r} does not fit in a reply")
    return list(struct.unpack("<6Q", raw.ljust(48, b"\0")))


def _host_view(seg: Segment) -> np.ndarray:
    """The daemon's mapping of a segment as a flat uint8 array."""
    return ptr_to_numpy(seg.address, seg.size, np.uint8)


class ClientState:
    """Owned by the drainer thread; device callbacks only touch `completion` and `poisoned`."""

    def __init__(self, *, client_id: int, pid: int, uid: int, name: str, phase: str, quota: Optional[int],
                 device: Device, ipc: IpcRegistry):
        self.client_id, self.pid, self.uid, self.name = client_id, pid, uid, name
        self.declared_phase = phase
        self.device = device
        total = device.mem_info()[1]
        self.memory = ClientMemory(device, client_id, min(quota or total, total), ipc, pid)
        self.ring = Ring.create(capacity=RING_CAPACITY)
        self.completion = Completion.create()
        self.staging = Segment.create("stage", STAGING_BYTES)
        self.staging_view = _host_view(self.staging)
        self.host_segments: dict[int, tuple[Segment, np.ndarray]] = {}
        self._next_host_segment = 1
        self.strings: dict[int, str] = {}
        self.descs: dict[int, tuple[int, int, tuple[int, ...]]] = {}
        self.buffers: dict[int, tuple[int, int]] = {}
        self.attrs: dict[int, dict[str, Any]] = {}  # replaced, never mutated: launches keep snapshots
        self.streams: list[Any] = [None] * P.MAX_STREAMS
        self.poisoned = bytearray(P.MAX_STREAMS)
        self.events: dict[int, Any] = {}
        self._tensors: dict[int, TensorArg] = {}  # (desc id | buffer id << 32) -> translated tensor
        # a decode loop launches the same operators on the same tensors every step: reuse the
        # LaunchOp (the device never changes it); dropped with the tensor cache, checked for attrs
        self._launches: dict[tuple, LaunchOp] = {}
        self.pending_destroy: list[Any] = []
        # statistics (read by `flexnpu status` from the control thread)
        self.attached_at = time.time()
        self.records = 0
        self.launches = 0
        self.malformed_count = 0
        self.failures = 0
        self.ring_wait_ns_sum = 0
        self.ring_wait_ns_max = 0
        self.phase_launches = [0, 0, 0, 0]
        self.handlers: list[Callable[..., None]] = [self._malformed_opcode] * P.OP_MAX
        for name_, method in (
            ("DEFINE_STRING", self._define_string), ("CREATE_DESC", self._create_desc),
            ("DESTROY_DESC", self._destroy_desc), ("CREATE_BUFFER", self._create_buffer),
            ("DESTROY_BUFFER", self._destroy_buffer), ("CREATE_ATTR", self._create_attr),
            ("DESTROY_ATTR", self._destroy_attr), ("SET_ATTR", self._set_attr),
            ("CREATE_STREAM", self._create_stream), ("DESTROY_STREAM", self._destroy_stream),
            ("CREATE_EVENT", self._create_event), ("DESTROY_EVENT", self._destroy_event),
            ("RECORD_EVENT", self._record_event), ("WAIT_EVENT", self._wait_event),
            ("RESET_EVENT", self._reset_event), ("CLEAR_ERROR", self._clear_error),
            ("LAUNCH", self._launch), ("MEMCPY_ASYNC", self._memcpy_async),
            ("MEMSET_ASYNC", self._memset_async), ("STAGED_H2D", self._staged_h2d),
            ("MALLOC", self._malloc), ("FREE", self._free), ("MEM_INFO", self._mem_info),
            ("MEMCPY_H2D", self._memcpy_h2d), ("MEMCPY_D2H", self._memcpy_d2h),
            ("MEMCPY_D2D", self._memcpy_d2d), ("MEMSET", self._memset), ("MALLOC_HOST", self._malloc_host),
            ("FREE_HOST", self._free_host), ("ELAPSED", self._elapsed), ("IPC_EXPORT", self._ipc_export),
            ("IPC_SET_PID", self._ipc_set_pid), ("IPC_IMPORT", self._ipc_import),
            ("IPC_CLOSE", self._ipc_close), ("PING", self._ping),
        ):
            self.handlers[P.OPCODES[name_]] = method
        self.streams[0] = device.create_stream()  # the default stream

    # ---- completion helpers -------------------------------------------------------------------
    def _done(self, vs: int, seq: int, code: int) -> None:
        """Device callback (executor thread): command `seq` on virtual stream `vs` finished."""
        if code and not self.poisoned[vs]:
            self.poisoned[vs] = 1
            self.failures += 1
            self.completion.fail(vs, seq, code)
        else:
            self.completion.complete(vs, seq)

    def _fail_in_order(self, vs: int, seq: int, exc: DeviceError) -> None:
        """Report an error for a stream command in stream order (after the commands before it)."""
        def raise_it() -> None:
            raise exc

        stream = self.streams[vs] if 0 <= vs < P.MAX_STREAMS else None
        if stream is None:  # no such stream: nothing runs on it, complete now
            vs = vs if 0 <= vs < P.MAX_STREAMS else 0
            self._done(vs, seq, exc.code)
            return
        self._submit(vs, HostFunc(raise_it), seq)

    def _submit(self, vs: int, cmd: Any, seq: int) -> None:
        """Queue cmd on virtual stream vs; its completion reports seq."""
        self.device.submit(self._stream(vs), cmd, partial(self._done, vs, seq))

    def _reply(self, slot: int, seq: int, code: int, values: list[int] = ()) -> None:
        if 0 <= slot < P.REPLY_SLOTS:
            self.completion.reply(slot, seq, code, values)

    def _stream(self, vs: int) -> Any:
        if not 0 <= vs < P.MAX_STREAMS or self.streams[vs] is None:
            raise DeviceError(C.ACL_ERROR_RT_INVALID_HANDLE, f"stream {vs} does not exist")
        return self.streams[vs]

    # ---- malformed input --------------------------------------------------------------------
    def malformed(self, vs: int, seq: int, slot: int, message: str, stream_work: bool = False) -> None:
        """A record that breaks the protocol: an error for this client only, then carry on.

        A request with a reply slot gets the code as its reply; stream work fails on its stream,
        in order; an object definition that nothing waits for is dropped (a launch naming the
        object then fails with ACL_ERROR_INVALID_RESOURCE_HANDLE)."""
        self.malformed_count += 1
        log.warning("client %d (pid %d): malformed record: %s", self.client_id, self.pid, message)
        exc = DeviceError(C.ACL_ERROR_INVALID_PARAM, f"malformed request: {message}")
        if slot >= 0:
            self._reply(slot, seq, exc.code)
        elif stream_work:
            self._fail_in_order(vs, seq, exc)

    def _malformed_opcode(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        self.malformed(vs, seq, slot, "unknown opcode")

    # ---- host-side objects ------------------------------------------------------------------
    def _define_string(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        if payload is None or a1 > len(payload):
            return self.malformed(0, seq, slot, "string longer than its payload")
        self.strings[a0] = payload[:a1].decode("utf-8", "replace")

    def _create_desc(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        ndims = a3
        if ndims > 32 or (ndims and (payload is None or len(payload) < 8 * ndims)):
            return self.malformed(0, seq, slot, "tensor desc dims do not match their count")
        dims = struct.unpack_from(f"<{ndims}q", payload) if ndims else ()
        dtype, fmt = _signed32(a1), _signed32(a2)
        why = check_desc_args(dtype, list(dims), fmt)
        if why is not None:
            return self.malformed(0, seq, slot, f"tensor desc: {why}")
        self.descs[a0] = (dtype, fmt, tuple(dims))
        self._forget_tensors()

    def _destroy_desc(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        self.descs.pop(a0, None)
        self._forget_tensors()

    def _create_buffer(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        self.buffers[a0] = (a1, a2)
        self._forget_tensors()

    def _destroy_buffer(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        self.buffers.pop(a0, None)
        self._forget_tensors()

    def _create_attr(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        self.attrs[a0] = {}

    def _destroy_attr(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        self.attrs.pop(a0, None)

    def _set_attr(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        attr, name, kind, count = self.attrs.get(a0), self.strings.get(a1), a2, a3
        if attr is None or name is None:
            return self.malformed(0, seq, slot, "set_attr on an unknown attr or name")
        data = payload or b""
        try:
            if kind == P.ATTR_KINDS["bool"]:
                value = bool(a4)
            elif kind == P.ATTR_KINDS["int"]:
                value = _signed64(a4)
            elif kind == P.ATTR_KINDS["data_type"]:
                value = AttrDataType(_signed64(a4))
            elif kind == P.ATTR_KINDS["float"]:
                value = struct.unpack("<d", struct.pack("<Q", a4))[0]
            elif kind == P.ATTR_KINDS["string"]:
                value = data[:count].decode("utf-8", "replace")
            elif kind == P.ATTR_KINDS["list_int"]:
                value = list(struct.unpack_from(f"<{count}q", data))
            elif kind == P.ATTR_KINDS["list_float"]:
                value = list(struct.unpack_from(f"<{count}d", data))
            elif kind == P.ATTR_KINDS["list_bool"]:
                value = [bool(b) for b in data[:count]]
            else:
                return self.malformed(0, seq, slot, f"unknown attr kind {kind}")
        except struct.error:
            return self.malformed(0, seq, slot, "attr values shorter than their count")
        updated = dict(attr)
        updated[name] = value
        self.attrs[a0] = updated

    # ---- streams and events -------------------------------------------------------------------
    def _create_stream(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        if not 0 < vs < P.MAX_STREAMS or self.streams[vs] is not None:
            return self.malformed(0, seq, slot, f"create stream {vs}: invalid or in use")
        self.streams[vs] = self.device.create_stream(_signed32(a0))
        self.poisoned[vs] = 0

    def _destroy_stream(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        if not 0 < vs < P.MAX_STREAMS or self.streams[vs] is None:
            return self.malformed(0, seq, slot, f"destroy stream {vs}: no such stream")
        stream, self.streams[vs] = self.streams[vs], None
        self.pending_destroy.append(stream)  # destroyed once its queued work has run
        self.reap_streams()

    def reap_streams(self) -> None:
        still = []
        for stream in self.pending_destroy:
            if self.device.stream_query(stream):
                self.device.destroy_stream(stream)
            else:
                still.append(stream)
        self.pending_destroy = still

    def _create_event(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        if a0 in self.events:
            return self.malformed(0, seq, slot, f"create event {a0}: in use")
        self.events[a0] = self.device.create_event(a1)

    def _destroy_event(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        event = self.events.pop(a0, None)
        if event is not None:
            self.device.destroy_event(event)

    def _event_command(self, cls, vs, seq, slot, event_id) -> None:
        event = self.events.get(event_id)
        if event is None:
            return self._fail_in_order(vs, seq, DeviceError(C.ACL_ERROR_RT_INVALID_HANDLE,
                                                            f"event {event_id} does not exist"))
        try:
            if cls is RecordEvent:
                self.device.submit(self._stream(vs), cls(event), partial(self._record_done, vs, seq, event_id))
            else:
                self._submit(vs, cls(event), seq)
        except DeviceError as exc:
            self._fail_in_order(vs, seq, exc)

    def _record_done(self, vs: int, seq: int, event_id: int, code: int) -> None:
        if not code:
            self.completion.event_reached(event_id, seq)  # before the stream counts it done
        self._done(vs, seq, code)

    def _record_event(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        self._event_command(RecordEvent, vs, seq, slot, a0)

    def _wait_event(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        self._event_command(WaitEvent, vs, seq, slot, a0)

    def _reset_event(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        self._event_command(ResetEvent, vs, seq, slot, a0)

    def _clear_error(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        if not 0 <= vs < P.MAX_STREAMS:
            return self.malformed(0, seq, slot, f"clear error on stream {vs}")
        if self.streams[vs] is not None:
            self.device.synchronize_stream(self.streams[vs], timeout=1.0)  # clears the device's copy
        self.poisoned[vs] = 0

    # ---- stream work --------------------------------------------------------------------------
    def _forget_tensors(self) -> None:
        """A desc, buffer or allocation changed: translated tensors and launches may be stale."""
        self._tensors.clear()
        self._launches.clear()

    def _tensor(self, pair: int) -> TensorArg:
        cached = self._tensors.get(pair)
        if cached is not None:
            return cached
        desc, buf = self.descs.get(pair & 0xFFFFFFFF), self.buffers.get(pair >> 32)
        if desc is None or buf is None:
            raise DeviceError(C.ACL_ERROR_INVALID_RESOURCE_HANDLE,
                              "operator names a tensor desc or data buffer that does not exist")
        dtype, fmt, shape = desc
        va, size = buf
        arg = TensorArg(dtype, fmt, shape, self.memory.translate(va, size) if size else 0, size)
        self._tensors[pair] = arg
        return arg

    def _launch(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        n_in, n_out = a1 & 0xFFFF, (a1 >> 16) & 0xFFFF
        # ring wait: from the client's submit to now (the clock is shared, CLOCK_MONOTONIC; the
        # low 32 bits of ns suffice for waits under 4 s): per-tenant queueing, made visible
        waited = (time.monotonic_ns() - (a1 >> 32)) & 0xFFFFFFFF
        self.ring_wait_ns_sum += waited
        if waited > self.ring_wait_ns_max:
            self.ring_wait_ns_max = waited
        self.launches += 1
        self.phase_launches[phase & 3] += 1
        pairs = [a2, a3, a4, a5]
        if payload is not None:
            pairs += struct.unpack_from(f"<{len(payload) // 8}Q", payload)
        n = n_in + n_out
        if len(pairs) < n:
            return self.malformed(vs, seq, slot, f"launch of {n} tensors carries only {len(pairs)}", True)
        pairs = pairs[:n]
        attr_id = a0 >> 32
        attrs = self.attrs.get(attr_id) if attr_id else _NO_ATTRS
        key = (a0, n_in, phase, *pairs)
        cmd = self._launches.get(key)
        try:
            if cmd is None or cmd.attrs is not attrs:
                op_type = self.strings.get(a0 & 0xFFFFFFFF)
                if op_type is None or attrs is None:
                    raise DeviceError(C.ACL_ERROR_INVALID_RESOURCE_HANDLE, "launch names an unknown op type or attr")
                tensors = [self._tensor(p) for p in pairs]
                cmd = LaunchOp(op_type, tensors[:n_in], tensors[n_in:], attrs, phase)
                if len(self._launches) >= _LAUNCH_CACHE:
                    self._launches.clear()
                self._launches[key] = cmd
            self._submit(vs, cmd, seq)
        except DeviceError as exc:
            self._fail_in_order(vs, seq, exc)

    def _host_ref(self, ref: int, nbytes: int) -> np.ndarray:
        seg = self.host_segments.get((ref >> 40) & 0x7FFFFF)
        offset = ref & ((1 << 40) - 1)
        if seg is None or offset + nbytes > seg[0].size:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, "host memory reference outside its malloc_host block")
        return seg[1][offset:offset + nbytes]

    def _memcpy_async(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        dst, src, nbytes = a0, a1, a2
        try:
            if dst & HOSTREF_BIT and src & HOSTREF_BIT:
                raise DeviceError(C.ACL_ERROR_INVALID_PARAM, "host-to-host copies do not reach the daemon")
            if dst & HOSTREF_BIT:
                cmd = CopyToHost(self._host_ref(dst, nbytes), self.memory.translate(src, nbytes))
            elif src & HOSTREF_BIT:
                cmd = CopyToDevice(self.memory.translate(dst, nbytes), self._host_ref(src, nbytes))
            else:
                cmd = CopyOnDevice(self.memory.translate(dst, nbytes), self.memory.translate(src, nbytes), nbytes)
            self._submit(vs, cmd, seq)
        except DeviceError as exc:
            self._fail_in_order(vs, seq, exc)

    def _memset_async(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        try:
            self._submit(vs, Memset(self.memory.translate(a0, a2), a1 & 0xFF, a2), seq)
        except DeviceError as exc:
            self._fail_in_order(vs, seq, exc)

    def _staging(self, offset: int, nbytes: int) -> np.ndarray:
        if offset + nbytes > STAGING_BYTES:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, "staging range outside the staging area")
        return self.staging_view[offset:offset + nbytes]

    def _staged_h2d(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        """An async copy from the client's ordinary memory: take the bytes now (the client may
        reuse the staging area after the reply), copy them to the device in stream order."""
        try:
            data = self._staging(a1, a2).copy()
        except DeviceError as exc:
            self._reply(slot, seq, exc.code)
            return
        self._reply(slot, seq, 0)
        try:
            self._submit(vs, CopyToDevice(self.memory.translate(a0, a2), data), seq)
        except DeviceError as exc:
            self._fail_in_order(vs, seq, exc)

    # ---- synchronous calls ------------------------------------------------------------------
    def _sync(self, slot: int, seq: int, work: Callable[[], list[int]]) -> None:
        try:
            values = work() or []
        except DeviceError as exc:
            self._reply(slot, seq, exc.code)
        except Exception:  # a bug must not take the daemon (or other clients) down
            log.exception("client %d: request failed", self.client_id)
            self._reply(slot, seq, C.ACL_ERROR_RT_INTERNAL_ERROR)
        else:
            self._reply(slot, seq, 0, values)

    def _malloc(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        self._sync(slot, seq, lambda: list(self.memory.malloc(a0, a1, bool(a2))))

    def _free(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        def work():
            self.memory.free(a0)
            self._forget_tensors()

        self._sync(slot, seq, work)

    def _mem_info(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        def work():
            device_free, _ = self.device.mem_info()
            m = self.memory
            return [min(m.quota - m.used, device_free), m.quota]

        self._sync(slot, seq, work)

    def _memcpy_h2d(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        self._sync(slot, seq, lambda: self.device.write(self.memory.translate(a0, a2), self._staging(a1, a2)))

    def _memcpy_d2h(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        self._sync(slot, seq, lambda: self.device.read_into(self._staging(a1, a2), self.memory.translate(a0, a2)))

    def _memcpy_d2d(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        self._sync(slot, seq, lambda: self.device.copy(self.memory.translate(a0, a2),
                                                       self.memory.translate(a1, a2), a2))

    def _memset(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        self._sync(slot, seq, lambda: self.device.memset(self.memory.translate(a0, a2), a1 & 0xFF, a2))

    def _malloc_host(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        """A shared host segment; its name goes to the client's staging area at offset a1."""
        def work():
            if a0 <= 0 or a0 > (1 << 40):
                raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"malloc_host size {a0} out of range")
            seg = Segment.create("host", a0)
            name = seg.name.encode() + b"\0"
            self._staging(a1, len(name))[:] = np.frombuffer(name, np.uint8)
            seg_id = self._next_host_segment
            self._next_host_segment += 1
            self.host_segments[seg_id] = (seg, _host_view(seg))
            return [seg_id]

        self._sync(slot, seq, work)

    def _free_host(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        def work():
            entry = self.host_segments.pop(a0, None)
            if entry is None:
                raise DeviceError(C.ACL_ERROR_INVALID_PARAM, "free_host of memory not from malloc_host")
            entry[0].close()
            entry[0].unlink()

        self._sync(slot, seq, work)

    def _elapsed(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        def work():
            start, end = self.events.get(a0), self.events.get(a1)
            if start is None or end is None:
                raise DeviceError(C.ACL_ERROR_RT_INVALID_HANDLE, "elapsed time of an unknown event")
            ms = self.device.event_elapsed_ms(start, end)
            return [struct.unpack("<Q", struct.pack("<d", ms))[0]]

        self._sync(slot, seq, work)

    def _key(self, payload: Optional[bytes]) -> str:
        if not payload:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, "missing IPC key")
        return _unpack_name(payload).decode("utf-8", "replace")

    def _ipc_export(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        self._sync(slot, seq, lambda: pack_text(self.memory.export(a0, a1, a2)))

    def _ipc_set_pid(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        self._sync(slot, seq, lambda: self.memory.set_import_pid(self._key(payload), _signed32(a0)))

    def _ipc_import(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        self._sync(slot, seq, lambda: list(self.memory.import_key(self._key(payload))))

    def _ipc_close(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        def work():
            self.memory.close_key(self._key(payload))
            self._forget_tensors()

        self._sync(slot, seq, work)

    def _ping(self, vs, seq, phase, slot, a0, a1, a2, a3, a4, a5, payload) -> None:
        self._reply(slot, seq, 0)

    # ---- lifecycle ------------------------------------------------------------------------------
    def attach_info(self) -> dict:
        return {
            "client_id": self.client_id,
            "ring": self.ring.name,
            "completion": self.completion.name,
            "staging": self.staging.name,
            "staging_size": STAGING_BYTES,
            "va_base": self.memory.va_base,
            "va_size": self.memory.va_end - self.memory.va_base,
            "quota": self.memory.quota,
        }

    def release(self) -> None:
        """The client detached or died: stop its work and return everything it held."""
        self.completion.mark_closed()
        for i, stream in enumerate(self.streams):
            if stream is not None:
                self.device.destroy_stream(stream, discard_pending=True)
                self.streams[i] = None
        for stream in self.pending_destroy:
            self.device.destroy_stream(stream, discard_pending=True)
        self.pending_destroy = []
        for event in self.events.values():
            self.device.destroy_event(event)
        self.events.clear()
        self.memory.release_all()
        for seg, _ in self.host_segments.values():
            seg.close()
            seg.unlink()
        self.host_segments.clear()
        self.staging_view = None
        for owner in (self.ring, self.completion, self.staging):
            owner.close()
            owner.unlink()

    def stats(self) -> dict:
        launches = self.launches
        return {
            "client_id": self.client_id,
            "pid": self.pid,
            "uid": self.uid,
            "name": self.name,
            "phase": self.declared_phase if self.declared_phase != "auto" else _dominant_phase(self.phase_launches),
            "memory": self.memory.stats(),
            "records": self.records,
            "launches": launches,
            "queue_depth": len(self.ring) if not self.ring.closed else 0,
            "ring_wait_us_mean": self.ring_wait_ns_sum / launches / 1e3 if launches else None,
            "ring_wait_us_max": self.ring_wait_ns_max / 1e3 if launches else None,
            "stream_failures": self.failures,
            "malformed_records": self.malformed_count,
            "streams": sum(s is not None for s in self.streams),
            "events": len(self.events),
        }


def _dominant_phase(counts: list[int]) -> str:
    best = max(range(4), key=lambda i: counts[i])
    return P.PHASE_NAMES[best] if counts[best] else "unknown"


def _signed32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v
