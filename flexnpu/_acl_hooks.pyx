# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False, cdivision=True
"""The interposer's client side: pyACL calls -> records in the ring to the device daemon.

``DaemonRuntime`` implements ``flexnpu.acl._api.AclRuntime``.  Asynchronous calls (launches,
async copies and memsets, event record/wait/reset, stream and object creation) encode one
message and return without waiting for the daemon; streams, events and contexts are client-side
virtual handles.  The client blocks only where the application blocks: synchronize calls, and
calls that need an answer (malloc, memory info, synchronous copies), which use a reply slot in
the completion block.  Every wait spins briefly, then parks on the completion block's futex, and
notices the daemon's death within one park slice (20 ms).

Host-side objects (tensor descs, data buffers, op attrs) live here and are mirrored to a daemon
the first time a launch on that device names them (again after they change).  Op type and
attribute names are interned: a repeated descriptor costs an id, not bytes.

Threads: every method runs with the GIL held except while it waits; the encode-and-push path
(`_Session._send`) is C and releases the GIL only when the ring is full.
"""

import bisect
import os
import struct
import sys
import threading
import time

from cpython.exc cimport PyErr_CheckSignals
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove, memset, strlen

from flexnpu._proto cimport (
    FX_MAX_PAYLOAD,
    fx_pack_payload,
    fx_payload_records,
    FX_ATTR_BOOL,
    FX_ATTR_DATA_TYPE,
    FX_ATTR_FLOAT,
    FX_ATTR_INT,
    FX_ATTR_LIST_BOOL,
    FX_ATTR_LIST_FLOAT,
    FX_ATTR_LIST_INT,
    FX_ATTR_STRING,
    FX_FLAG_REPLY,
    FX_MAX_STREAMS,
    FX_OP_CLEAR_ERROR,
    FX_OP_CREATE_ATTR,
    FX_OP_CREATE_BUFFER,
    FX_OP_CREATE_DESC,
    FX_OP_CREATE_EVENT,
    FX_OP_CREATE_STREAM,
    FX_OP_DEFINE_STRING,
    FX_OP_DESTROY_ATTR,
    FX_OP_DESTROY_BUFFER,
    FX_OP_DESTROY_DESC,
    FX_OP_DESTROY_EVENT,
    FX_OP_DESTROY_STREAM,
    FX_OP_ELAPSED,
    FX_OP_FREE,
    FX_OP_FREE_HOST,
    FX_OP_IPC_CLOSE,
    FX_OP_IPC_EXPORT,
    FX_OP_IPC_IMPORT,
    FX_OP_IPC_SET_PID,
    FX_OP_MALLOC,
    FX_OP_MALLOC_HOST,
    FX_OP_MEM_INFO,
    FX_OP_MEMCPY_ASYNC,
    FX_OP_MEMCPY_D2D,
    FX_OP_MEMCPY_D2H,
    FX_OP_MEMCPY_H2D,
    FX_OP_MEMSET,
    FX_OP_MEMSET_ASYNC,
    FX_OP_PING,
    FX_OP_RECORD_EVENT,
    FX_OP_RESET_EVENT,
    FX_OP_SET_ATTR,
    FX_OP_STAGED_H2D,
    FX_OP_WAIT_EVENT,
    FX_PHASE_DECODE,
    FX_PHASE_MIXED,
    FX_PHASE_PREFILL,
    FX_PHASE_UNKNOWN,
    FX_REPLY_SLOTS,
    Completion,
    FX_MAX_EVENTS,
    fx_completion,
    fx_event_ok_seq,
    fx_stream_completed,
    fx_stream_err_code,
    fx_stream_err_seq,
    fx_wait_reply,
    fx_wait_stream,
)
from flexnpu._ring cimport (
    FX_FOREVER,
    FX_INTR,
    FX_OK,
    FX_PEER_DEAD,
    FX_RECORD_SIZE,
    FX_TIMEOUT,
    Ring,
    Segment,
    fx_deadline_after,
    fx_now_ns,
    fx_record,
    fx_ring,
    fx_ring_push_message,
)

from flexnpu import control
from flexnpu._ring import Segment as _Segment
from flexnpu.acl import constants as C
from flexnpu.acl._api import (
    DTYPE_SIZES,
    EVENT_FLAGS,
    STREAM_FLAGS,
    STREAM_PRIORITIES,
    valid_malloc_policy,
    KIND_ATTR,
    KIND_BUFFER,
    KIND_CONTEXT,
    KIND_DESC,
    KIND_EVENT,
    KIND_STREAM,
    AclRuntime,
    ErrorMessages,
    check_desc_args,
    make_handle,
)
from flexnpu.errors import DaemonError, FlexNPUError

cdef extern from "fx_client.h" nogil:
    ctypedef uint64_t fx_au64   # _Atomic in C: plain reads and writes of it are seq_cst there
    enum:
        FX_MAX_MESSAGE
        FX_MAX_TENSORS
    void fx_note_submitted(fx_au64 *last, uint64_t seq)
    int fx_client_launch(fx_ring *r, fx_au64 *last, uint32_t vs, uint32_t op_id, uint32_t attr_id,
                         uint8_t phase, uint32_t n_in, uint32_t n_out, const uint64_t *pairs,
                         uint64_t submit_ns, uint64_t deadline, uint64_t spin_ns, uint64_t *seq_out)

cdef enum:
    MAX_MSG = FX_MAX_MESSAGE    # records in one message (head + continuations)
    MAX_TENSORS = FX_MAX_TENSORS
    DAEMON_LOST = 507899        # ACL_ERROR_RT_DRV_INTERNAL_ERROR: the daemon died or detached us

cdef uint64_t HOSTREF_BIT = 1ULL << 63
_MODE_PHASES = {"prefill": FX_PHASE_PREFILL, "decode": FX_PHASE_DECODE, "mixed": FX_PHASE_MIXED,
                "auto": FX_PHASE_UNKNOWN, "": FX_PHASE_UNKNOWN}
# Operators whose type alone reveals the phase (DESIGN.md "Phase-aware dispatch").
_OP_PHASES = {"PromptFlashAttention": FX_PHASE_PREFILL, "IncreFlashAttention": FX_PHASE_DECODE}


def _command_line():
    """This process's command line, for `flexnpu status`."""
    try:
        with open("/proc/self/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:200]
    except OSError:
        return " ".join(sys.argv)[:200]


class _Failed(Exception):
    """Internal: an ACL error code with its message, turned into a return value at the API edge."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


cdef inline bint _is_int(object v):
    return isinstance(v, int) and not isinstance(v, bool)


cdef inline bint _is_u63(object v):
    """An int that fits every address, size and count field (0 <= v < 2**63)."""
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < (1 << 63)


cdef class _Ranges:
    """Non-overlapping [start, start + size) ranges: which pointers a client may name."""
    cdef list starts
    cdef dict sizes

    def __cinit__(self):
        self.starts = []
        self.sizes = {}

    cdef add(self, uint64_t start, uint64_t size):
        bisect.insort(self.starts, start)
        self.sizes[start] = size

    cdef bint remove(self, uint64_t start):
        if start not in self.sizes:
            return False
        del self.sizes[start]
        del self.starts[bisect.bisect_left(self.starts, start)]
        return True

    cdef bint contains(self, uint64_t addr, uint64_t nbytes):
        cdef Py_ssize_t i = bisect.bisect_right(self.starts, addr) - 1
        if i < 0:
            return False
        start = self.starts[i]
        return addr + nbytes <= start + self.sizes[start]

    cdef object find(self, uint64_t addr):
        """The start of the range holding addr, or None."""
        cdef Py_ssize_t i = bisect.bisect_right(self.starts, addr) - 1
        if i < 0:
            return None
        start = self.starts[i]
        return start if addr < start + self.sizes[start] else None


cdef class _Desc:
    cdef int dtype, fmt
    cdef tuple dims
    cdef object defined   # bitmask of session bits that have it


cdef class _Buffer:
    cdef uint64_t addr, size
    cdef object defined


cdef class _Attr:
    cdef dict values      # name -> (kind, value)
    cdef uint64_t version
    cdef dict sent        # session bit -> version mirrored there


cdef class _Context:
    cdef int device
    cdef uint32_t vs      # its default stream
    cdef bint is_default
    cdef uint32_t index
    cdef set streams      # virtual streams created while it was current
    cdef set events       # event ids created while it was current


cdef class _Device:
    """One device this process opened: a set_device count and the contexts that hold it."""
    cdef _Session session
    cdef int set_count
    cdef _Context default_context
    cdef set contexts     # created contexts (each holds the device open)


cdef class _Session:
    """This process attached to one device daemon."""
    cdef object conn
    cdef Ring ring
    cdef Completion comp
    cdef fx_ring *r
    cdef fx_completion *c
    cdef Segment staging
    cdef unsigned char *staging_base
    cdef uint64_t staging_size
    cdef object staging_lock
    cdef readonly int device          # virtual device id
    cdef readonly int physical
    cdef readonly object bit
    cdef uint64_t va_base, va_end
    cdef fx_au64 last_seq[FX_MAX_STREAMS]   # seq of the last command pushed on each stream
    cdef uint64_t reported_err[FX_MAX_STREAMS]
    cdef uint8_t stream_used[FX_MAX_STREAMS]
    cdef list free_slots
    cdef dict strings
    cdef dict op_phase                  # op string id -> phase
    cdef _Ranges device_ranges
    cdef list host_segments             # sorted [(addr, size, seg_id, Segment)]
    cdef dict events                    # event id -> (vs, seq) of its latest record, or None
    cdef list free_events
    cdef readonly str soc_name
    cdef readonly object info
    cdef uint64_t spin_ns
    cdef int phase
    cdef bint lost
    cdef str lost_message

    # (the object's memory starts zeroed: last_seq, reported_err and stream_used are all 0)

    def __init__(self, int device, int physical, bit, int phase, dict attach_extra):
        self.device, self.physical, self.bit, self.phase = device, physical, bit, phase
        self.conn = control.Connection(physical)
        try:
            self.info = self.conn.request({"op": "attach", "version": control.PROTOCOL_VERSION,
                                           "pid": os.getpid(), **attach_extra})
            self.ring = Ring.attach(self.info["ring"])
            self.comp = Completion.attach(self.info["completion"])
            self.staging = _Segment.attach(self.info["staging"])
        except BaseException:
            self.close()
            raise
        self.r = &self.ring.r
        self.c = self.comp.c
        self.staging_base = <unsigned char *>self.staging.base
        self.staging_size = self.info["staging_size"]
        self.staging_lock = threading.Lock()
        self.va_base = self.info["va_base"]
        self.va_end = self.va_base + self.info["va_size"]
        self.soc_name = self.info["soc_name"]
        self.free_slots = list(range(FX_REPLY_SLOTS))
        self.strings = {}
        self.op_phase = {}
        self.device_ranges = _Ranges()
        self.host_segments = []
        self.events = {}
        self.free_events = list(range(FX_MAX_EVENTS - 1, 0, -1))
        self.spin_ns = 50_000
        self.stream_used[0] = 1  # the daemon made the default stream at attach
        self.lost = False

    def close(self):
        for entry in getattr(self, "host_segments", None) or []:
            entry[3].close()
        for obj in (self.ring, self.comp, self.staging):
            if obj is not None:
                obj.close()
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.lost = True
        self.lost_message = "the session was closed (acl.finalize)"

    # ---- sending ------------------------------------------------------------------------------
    cdef int _lose(self, int status) except -1:
        self.lost = True
        if status == FX_PEER_DEAD:
            self.lost_message = (f"the FlexNPU daemon of device {self.device} "
                                 f"(pid {self.info['daemon_pid']}) has died")
        else:
            self.lost_message = f"the FlexNPU daemon of device {self.device} detached this process"
        raise _Failed(DAEMON_LOST, self.lost_message)

    cdef int _check(self) except -1:
        if self.lost:
            raise _Failed(DAEMON_LOST, self.lost_message)
        return 0

    cdef uint64_t _send(self, fx_record *msg, uint32_t n) except 0:
        """Push one message (head + n - 1 continuations): its seq.  Waits (without the GIL) while
        the ring is full."""
        cdef int rc
        cdef uint64_t seq = 0
        self._check()
        rc = fx_ring_push_message(self.r, msg, n, 0, 0, &seq)
        while rc == FX_TIMEOUT:
            with nogil:
                rc = fx_ring_push_message(self.r, msg, n, FX_FOREVER, self.spin_ns, &seq)
            if rc == FX_INTR:
                PyErr_CheckSignals()
                rc = FX_TIMEOUT
        if rc != FX_OK:
            self._lose(rc)
        return seq

    cdef inline void note(self, uint32_t vs, uint64_t seq) noexcept:
        """Stream vs now has command seq queued (synchronize waits for it)."""
        fx_note_submitted(&self.last_seq[vs], seq)

    cdef uint64_t _simple(self, uint16_t opcode, uint32_t vs, uint64_t a0, uint64_t a1=0,
                          uint64_t a2=0, uint64_t a3=0, uint64_t a4=0) except 0:
        cdef fx_record rec
        memset(&rec, 0, sizeof(rec))
        rec.opcode, rec.stream, rec.phase = opcode, vs, self.phase
        rec.args[0], rec.args[1], rec.args[2], rec.args[3], rec.args[4] = a0, a1, a2, a3, a4
        return self._send(&rec, 1)

    cdef uint64_t _with_payload(self, uint16_t opcode, uint64_t a0, uint64_t a1, uint64_t a2,
                                uint64_t a3, bytes payload, uint32_t vs=0) except 0:
        cdef fx_record msg[MAX_MSG]
        cdef Py_ssize_t nbytes = len(payload)
        cdef uint32_t ncont = fx_payload_records(nbytes)
        if nbytes > FX_MAX_PAYLOAD:
            raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"{nbytes} bytes of operands is too many for one request")
        memset(msg, 0, (1 + ncont) * FX_RECORD_SIZE)
        msg[0].opcode, msg[0].flags, msg[0].stream, msg[0].phase = opcode, ncont, vs, self.phase
        msg[0].args[0], msg[0].args[1], msg[0].args[2], msg[0].args[3] = a0, a1, a2, a3
        if nbytes:
            fx_pack_payload(&msg[1], <const char *>payload, nbytes)
        return self._send(msg, 1 + ncont)

    cdef uint32_t intern(self, str text) except? 0:
        """The id of `text` in this session (defined on first use)."""
        cdef object found = self.strings.get(text)
        if found is not None:
            return found
        cdef uint32_t sid = len(self.strings) + 1
        raw = text.encode()
        self._with_payload(FX_OP_DEFINE_STRING, sid, len(raw), 0, 0, raw)
        self.strings[text] = sid
        if text in _OP_PHASES:
            self.op_phase[sid] = _OP_PHASES[text]
        return sid

    # ---- synchronous calls ----------------------------------------------------------------------
    cdef int64_t call(self, uint16_t opcode, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3,
                      bytes payload, uint64_t *values, uint32_t vs, uint64_t *seq_out) except? -1:
        """Send a request with a reply slot and wait for the answer: its ACL code.
        `values` (6) receives the reply values; `seq_out` the request's seq (either may be NULL)."""
        cdef fx_record msg[MAX_MSG]
        cdef uint32_t ncont = 0, slot
        cdef uint64_t seq
        cdef int rc, i
        cdef Py_ssize_t nbytes = 0
        self._check()
        while not self.free_slots:  # 64 threads in synchronous calls at once: wait for a slot
            time.sleep(0.0002)
        slot = self.free_slots.pop()
        try:
            if payload:
                nbytes = len(payload)
                ncont = fx_payload_records(nbytes)
                if nbytes > FX_MAX_PAYLOAD:
                    raise _Failed(C.ACL_ERROR_INVALID_PARAM, "request too large")
            memset(msg, 0, (1 + ncont) * FX_RECORD_SIZE)
            msg[0].opcode, msg[0].flags, msg[0].stream = opcode, FX_FLAG_REPLY | ncont, vs
            msg[0].phase = self.phase
            msg[0].args[0], msg[0].args[1], msg[0].args[2], msg[0].args[3] = a0, a1, a2, a3
            msg[0].args[5] = slot
            if nbytes:
                fx_pack_payload(&msg[1], <const char *>payload, nbytes)
            seq = self._send(msg, 1 + ncont)
            if seq_out != NULL:
                seq_out[0] = seq
            while True:
                with nogil:
                    rc = fx_wait_reply(self.c, slot, seq, FX_FOREVER, self.spin_ns)
                if rc == FX_INTR:
                    PyErr_CheckSignals()
                    continue
                break
            if rc != FX_OK:
                self._lose(rc)
            if values != NULL:
                for i in range(6):
                    values[i] = self.c.replies[slot].values[i]
            return self.c.replies[slot].code
        finally:
            self.free_slots.append(slot)

    # ---- streams --------------------------------------------------------------------------------
    cdef uint32_t new_stream(self, int priority, uint32_t flags) except? 0:
        cdef uint32_t vs
        for vs in range(1, <uint32_t>FX_MAX_STREAMS):
            # reuse an index only once everything submitted on it has finished
            if not self.stream_used[vs] and fx_stream_completed(self.c, vs) >= self.last_seq[vs]:
                self._simple(FX_OP_CREATE_STREAM, vs, <uint64_t><int64_t>priority, flags)
                self.stream_used[vs] = 1
                self.reported_err[vs] = fx_stream_err_seq(self.c, vs)  # a fresh stream has no error
                return vs
        raise _Failed(C.ACL_ERROR_RT_NO_STREAM_RESOURCE, f"all {FX_MAX_STREAMS - 1} streams are in use")

    cdef int wait_stream(self, uint32_t vs, uint64_t deadline) except -1:
        """0, or ACL_ERROR_RT_STREAM_SYNC_TIMEOUT; raises _Failed if the daemon is gone."""
        cdef int rc
        cdef uint64_t target = self.last_seq[vs]
        if fx_stream_completed(self.c, vs) >= target:
            return 0
        self._check()
        while True:
            with nogil:
                rc = fx_wait_stream(self.c, vs, target, deadline, self.spin_ns)
            if rc == FX_INTR:
                PyErr_CheckSignals()
                continue
            break
        if rc == FX_TIMEOUT:
            return C.ACL_ERROR_RT_STREAM_SYNC_TIMEOUT
        if rc != FX_OK:
            self._lose(rc)
        return 0

    cdef int take_error(self, uint32_t vs) except -1:
        """The stream's sticky error if the application has not seen it yet (then cleared)."""
        cdef uint64_t err_seq = fx_stream_err_seq(self.c, vs)
        if err_seq <= self.reported_err[vs]:
            return 0
        self.reported_err[vs] = err_seq
        code = fx_stream_err_code(self.c, vs)
        self._simple(FX_OP_CLEAR_ERROR, vs, 0)
        return code

    cdef uint32_t new_event(self, uint32_t flags) except? 0:
        if not self.free_events:
            raise _Failed(C.ACL_ERROR_RT_NO_STREAM_RESOURCE, f"all {FX_MAX_EVENTS - 1} events are in use")
        cdef uint32_t ev = self.free_events.pop()
        self._simple(FX_OP_CREATE_EVENT, 0, ev, flags)
        self.events[ev] = None
        return ev

    cdef forget_event(self, uint32_t ev):
        if self.events.pop(ev, 0) != 0:
            self.free_events.append(ev)

    cdef bint event_complete(self, uint32_t ev):
        """Its latest record ran successfully (never recorded, reset or skipped: not complete)."""
        last = self.events.get(ev)
        return last is not None and fx_event_ok_seq(self.c, ev) >= last[1]

    cdef bint stream_done(self, uint32_t vs):
        return fx_stream_completed(self.c, vs) >= self.last_seq[vs]

    # ---- memory helpers -------------------------------------------------------------------------
    cdef bint is_device(self, uint64_t addr):
        return self.va_base <= addr < self.va_end

    cdef object host_ref(self, uint64_t addr, uint64_t nbytes):
        """HOSTREF for [addr, addr + nbytes) inside a malloc_host block, or None."""
        cdef Py_ssize_t i = bisect.bisect_right(self.host_segments, (addr, 1 << 64)) - 1
        if i < 0:
            return None
        base, size, seg_id, _ = self.host_segments[i]
        if addr + nbytes > base + size:
            return None
        return HOSTREF_BIT | (<uint64_t>seg_id << 40) | (addr - base)


cdef class DaemonRuntime:
    """pyACL through the FlexNPU daemon (the default under ``flexnpu run``).

    Each public method turns a ``_Failed`` into its ACL return value itself: the methods are bound
    straight into ``acl.rt`` and ``acl.op``, and a shared wrapper would add a Python call to every
    ACL call (a C-level try costs nothing until something fails)."""
    cdef object errors
    cdef bint initialized
    cdef dict sessions           # virtual device -> _Session
    cdef list visible            # virtual device -> physical device
    cdef int phase
    cdef str phase_name
    cdef dict attach_extra
    cdef object tls
    cdef dict contexts           # index -> _Context
    cdef dict devices            # virtual device -> _Device (open devices)
    cdef uint32_t next_context
    cdef list descs              # id -> _Desc or None
    cdef list buffers
    cdef list attrs
    cdef list free_descs, free_buffers, free_attrs
    cdef object lock

    def __init__(self):
        self.errors = ErrorMessages()
        self.initialized = False
        self.sessions = {}
        visible = os.environ.get("FLEXNPU_VISIBLE_DEVICES", "").strip()
        try:
            self.visible = [int(v) for v in visible.split(",")] if visible else [0]
        except ValueError:
            raise FlexNPUError(f"FLEXNPU_VISIBLE_DEVICES must be a comma list of device ids, not {visible!r}")
        self.phase_name = os.environ.get("FLEXNPU_PHASE", "auto").lower()
        if self.phase_name not in _MODE_PHASES:
            raise FlexNPUError(f"FLEXNPU_PHASE must be prefill, decode, mixed or auto, not {self.phase_name!r}")
        self.phase = _MODE_PHASES[self.phase_name]
        quota = os.environ.get("FLEXNPU_MEMORY_QUOTA")
        from flexnpu.sizes import parse_size
        self.attach_extra = {"name": _command_line(), "phase": self.phase_name,
                             "quota": parse_size(quota) if quota else None}
        self.tls = threading.local()
        self.contexts = {}
        self.devices = {}
        self.next_context = 1
        self.descs, self.buffers, self.attrs = [None], [None], [None]
        self.free_descs, self.free_buffers, self.free_attrs = [], [], []
        self.lock = threading.RLock()

    # ---- plumbing ---------------------------------------------------------------------------------
    cdef int _fail(self, int code, str message):
        self.errors.set(code, message)
        return code

    cdef _Context _current(self):
        ctx = getattr(self.tls, "context", None)
        if ctx is None:
            raise _Failed(C.ACL_ERROR_RT_CONTEXT_NULL, "no current context: call acl.rt.set_device first")
        return ctx

    cdef _Session _session(self, int device):
        cdef _Session s = self.sessions.get(device)
        if s is None:
            raise _Failed(C.ACL_ERROR_RT_CONTEXT_NULL, f"device {device} is not set: call acl.rt.set_device({device})")
        return s

    cdef tuple _stream(self, stream):
        """(session, virtual stream) of a stream argument; 0/None is the current default stream."""
        cdef _Context ctx
        cdef _Session s
        if stream is None or (_is_int(stream) and stream == 0):
            ctx = self._current()
            return self._session(ctx.device), ctx.vs
        if not _is_int(stream) or stream >> 48 != 0xF1 or (stream >> 40) & 0xFF != KIND_STREAM:
            raise _Failed(C.ACL_ERROR_RT_INVALID_HANDLE, f"{stream!r} is not a stream handle")
        s = self.sessions.get((stream >> 32) & 0xFF)
        vs = stream & 0xFFFFFFFF
        if s is None or not 0 < vs < FX_MAX_STREAMS or not s.stream_used[vs]:
            raise _Failed(C.ACL_ERROR_RT_INVALID_HANDLE, f"stream {stream:#x} does not exist (destroyed?)")
        return s, vs

    cdef tuple _event(self, event):
        cdef _Session s
        if not _is_int(event) or event >> 48 != 0xF1 or (event >> 40) & 0xFF != KIND_EVENT:
            raise _Failed(C.ACL_ERROR_RT_INVALID_HANDLE, f"{event!r} is not an event handle")
        s = self.sessions.get((event >> 32) & 0xFF)
        ev = event & 0xFFFFFFFF
        if s is None or ev not in s.events:
            raise _Failed(C.ACL_ERROR_RT_INVALID_HANDLE, f"event {event:#x} does not exist (destroyed?)")
        return s, ev

    cdef object _object(self, list table, handle, int kind, str what):
        if not _is_int(handle) or handle >> 48 != 0xF1 or (handle >> 40) & 0xFF != kind:
            raise _Failed(C.ACL_ERROR_INVALID_RESOURCE_HANDLE, f"{handle!r} is not a {what} handle")
        index = handle & 0xFFFFFFFF
        if index >= len(table) or table[index] is None:
            raise _Failed(C.ACL_ERROR_INVALID_RESOURCE_HANDLE, f"{what} {handle:#x} does not exist (destroyed?)")
        return table[index]

    cdef uint32_t _new_id(self, list table, list free, obj):
        if free:
            index = free.pop()
            table[index] = obj
            return index
        table.append(obj)
        return len(table) - 1

    # ---- acl ----------------------------------------------------------------------------------------
    def init(self, config_path=None):
        if self.initialized:
            return self._fail(C.ACL_ERROR_REPEAT_INITIALIZE, "acl.init was already called")
        if config_path is not None and config_path != "" and not os.path.isfile(str(config_path)):
            return self._fail(C.ACL_ERROR_INVALID_FILE, f"config file {config_path!r} does not exist")
        self.initialized = True
        return 0

    def finalize(self):
        if not self.initialized:
            return self._fail(C.ACL_ERROR_REPEAT_FINALIZE, "acl.finalize without acl.init")
        with self.lock:
            for device in list(self.devices):
                self._release_device(device)
            self.contexts.clear()
            self.tls = threading.local()
            self.initialized = False
        return 0

    def get_recent_err_msg(self):
        return self.errors.take()

    def create_tensor_desc(self, data_type, dims, format):
        why = check_desc_args(data_type, dims, format)
        if why is not None:
            self._fail(C.ACL_ERROR_INVALID_PARAM, f"create_tensor_desc: {why}")
            return 0
        cdef _Desc d = _Desc()
        d.dtype, d.fmt, d.dims, d.defined = data_type, format, tuple(int(x) for x in dims), 0
        with self.lock:
            return make_handle(KIND_DESC, 0, self._new_id(self.descs, self.free_descs, d))

    def destroy_tensor_desc(self, desc):
        try:
            self._destroy(self.descs, self.free_descs, desc, KIND_DESC, "tensor desc", FX_OP_DESTROY_DESC)
        except _Failed as exc:
            self._fail(exc.code, str(exc))
        return None

    cdef _destroy(self, list table, list free, handle, int kind, str what, uint16_t opcode):
        """Forget a host-side object here and in every session it was mirrored to."""
        cdef _Session s
        obj = self._object(table, handle, kind, what)
        index = handle & 0xFFFFFFFF
        for s in self.sessions.values():
            if kind == KIND_ATTR:
                mirrored = s.bit in (<_Attr>obj).sent
            elif kind == KIND_DESC:
                mirrored = (<_Desc>obj).defined & s.bit
            else:
                mirrored = (<_Buffer>obj).defined & s.bit
            if mirrored and not s.lost:
                s._simple(opcode, 0, index)
        with self.lock:
            table[index] = None
            free.append(index)

    cdef _Desc _desc(self, handle):
        return self._object(self.descs, handle, KIND_DESC, "tensor desc")

    def get_tensor_desc_type(self, desc):
        try:
            return self._desc(desc).dtype
        except _Failed as exc:
            self._fail(exc.code, str(exc))
            return C.ACL_DT_UNDEFINED

    def get_tensor_desc_format(self, desc):
        try:
            return self._desc(desc).fmt
        except _Failed as exc:
            self._fail(exc.code, str(exc))
            return C.ACL_FORMAT_UNDEFINED

    def get_tensor_desc_num_dims(self, desc):
        try:
            return len(self._desc(desc).dims)
        except _Failed as exc:
            self._fail(exc.code, str(exc))
            return 0

    def get_tensor_desc_dim_v2(self, desc, index):
        try:
            dims = self._desc(desc).dims
            if not _is_int(index) or not 0 <= index < len(dims):
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"dim index {index!r} out of range")
            return dims[index], 0
        except _Failed as exc:
            return -1, self._fail(exc.code, str(exc))

    def get_tensor_desc_size(self, desc):
        try:
            d = self._desc(desc)
            count = 1
            for x in d.dims:
                count *= max(x, 0)
            return count * DTYPE_SIZES.get(d.dtype, 0)
        except _Failed as exc:
            self._fail(exc.code, str(exc))
            return 0

    def create_data_buffer(self, data, size):
        if not _is_u63(data) or not _is_u63(size):
            self._fail(C.ACL_ERROR_INVALID_PARAM, f"create_data_buffer({data!r}, {size!r}): ints >= 0 expected")
            return 0
        cdef _Buffer b = _Buffer()
        b.addr, b.size, b.defined = data, size, 0
        with self.lock:
            return make_handle(KIND_BUFFER, 0, self._new_id(self.buffers, self.free_buffers, b))

    def destroy_data_buffer(self, buffer):
        try:
            self._destroy(self.buffers, self.free_buffers, buffer, KIND_BUFFER, "data buffer", FX_OP_DESTROY_BUFFER)
            return 0
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def update_data_buffer(self, buffer, data, size):
        try:
            b = <_Buffer>self._object(self.buffers, buffer, KIND_BUFFER, "data buffer")
            if not _is_u63(data) or not _is_u63(size):
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, "update_data_buffer: ints >= 0 expected")
            b.addr, b.size, b.defined = data, size, 0  # re-mirrored at the next launch
            return 0
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def get_data_buffer_addr(self, buffer):
        try:
            return (<_Buffer>self._object(self.buffers, buffer, KIND_BUFFER, "data buffer")).addr
        except _Failed as exc:
            self._fail(exc.code, str(exc))
            return 0

    def get_data_buffer_size_v2(self, buffer):
        try:
            return (<_Buffer>self._object(self.buffers, buffer, KIND_BUFFER, "data buffer")).size
        except _Failed as exc:
            self._fail(exc.code, str(exc))
            return 0

    # ---- acl.rt: devices and contexts ---------------------------------------------------------------
    cdef _Session _attach(self, int device):
        cdef _Session s = self.sessions.get(device)
        if s is not None and not s.lost:
            return s
        try:
            s = _Session(device, self.visible[device], 1 << device, self.phase, self.attach_extra)
        except DaemonError as exc:
            print(f"flexnpu: {exc}", file=sys.stderr, flush=True)
            raise _Failed(C.ACL_ERROR_RT_NO_DEVICE, str(exc))
        self.sessions[device] = s
        return s

    cdef _Device _open(self, device_id):
        """The open device `device_id` (attaching to its daemon if needed)."""
        if not self.initialized:
            raise _Failed(C.ACL_ERROR_UNINITIALIZE, "call acl.init() before opening a device")
        if not _is_int(device_id) or not 0 <= device_id < len(self.visible):
            raise _Failed(C.ACL_ERROR_RT_INVALID_DEVICEID,
                          f"device {device_id!r} is not visible (FLEXNPU_VISIBLE_DEVICES has {len(self.visible)})")
        cdef _Device dev = self.devices.get(device_id)
        if dev is None:
            dev = _Device()
            dev.session, dev.set_count, dev.default_context, dev.contexts = self._attach(device_id), 0, None, set()
            self.devices[device_id] = dev
        return dev

    cdef _Context _new_context(self, _Device dev, bint is_default):
        cdef _Context ctx = _Context()
        ctx.device, ctx.is_default = dev.session.device, is_default
        ctx.vs = 0 if is_default else dev.session.new_stream(0, 0)
        ctx.streams, ctx.events = set(), set()
        ctx.index = self.next_context
        self.next_context += 1
        self.contexts[ctx.index] = ctx
        return ctx

    cdef _release_context(self, _Context ctx):
        """Destroy a context's streams and events (ACL asks programs to do it first) and forget it."""
        cdef _Session s = self.sessions.get(ctx.device)
        if s is not None and not s.lost:
            for vs in ctx.streams:
                s._simple(FX_OP_DESTROY_STREAM, vs, 0)
                s.stream_used[vs] = 0
            for ev in ctx.events:
                s._simple(FX_OP_DESTROY_EVENT, 0, ev)
                s.forget_event(ev)
            if not ctx.is_default:
                s._simple(FX_OP_DESTROY_STREAM, ctx.vs, 0)
                s.stream_used[ctx.vs] = 0
        ctx.streams.clear()
        ctx.events.clear()
        self.contexts.pop(ctx.index, None)
        if getattr(self.tls, "context", None) is ctx:
            self.tls.context = None

    cdef _release_device(self, device_id):
        """Close a device: let its queued work finish, then detach (the daemon frees the rest)."""
        cdef _Device dev = self.devices.pop(device_id)
        for ctx in [c for c in self.contexts.values() if (<_Context>c).device == device_id]:
            self._release_context(ctx)
        s = dev.session
        if not s.lost:
            try:
                self._synchronize_session(s, FX_FOREVER)
            except _Failed:
                pass
        s.close()
        self.sessions.pop(device_id, None)

    cdef _release_if_unused(self, device_id):
        cdef _Device dev = self.devices.get(device_id)
        if dev is not None and dev.set_count == 0 and not dev.contexts:
            self._release_device(device_id)

    def set_device(self, device_id):
        cdef _Device dev
        try:
            with self.lock:
                dev = self._open(device_id)
                if dev.default_context is None:
                    dev.default_context = self._new_context(dev, True)
                dev.set_count += 1
                self.tls.context = dev.default_context
            return 0
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def reset_device(self, device_id):
        cdef _Device dev
        try:
            with self.lock:
                dev = self.devices.get(device_id) if _is_int(device_id) else None
                if dev is None or dev.set_count == 0:
                    raise _Failed(C.ACL_ERROR_RT_INVALID_DEVICEID, f"device {device_id!r} was not set by set_device")
                dev.set_count -= 1
                if dev.set_count == 0:
                    if dev.default_context is not None:
                        self._release_context(dev.default_context)
                        dev.default_context = None
                    self._release_if_unused(device_id)
            return 0
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def get_device(self):
        try:
            return self._current().device, 0
        except _Failed as exc:
            return -1, self._fail(exc.code, str(exc))

    def get_device_count(self):
        return len(self.visible), 0

    cdef int _synchronize_session(self, _Session s, uint64_t deadline) except -1:
        cdef uint32_t vs
        cdef int code = 0, rc
        for vs in range(<uint32_t>FX_MAX_STREAMS):
            if s.stream_used[vs] or not s.stream_done(vs):
                rc = s.wait_stream(vs, deadline)
                if rc:
                    return rc
                rc = s.take_error(vs)
                if rc and not code:
                    code = rc
        return code

    def synchronize_device(self):
        try:
            return self._synchronize_session(self._session(self._current().device), FX_FOREVER)
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def get_soc_name(self):
        ctx = getattr(self.tls, "context", None)
        s = self.sessions.get((<_Context>ctx).device) if ctx is not None else next(iter(self.sessions.values()), None)
        return (<_Session>s).soc_name if s is not None else None

    def create_context(self, device_id):
        cdef _Device dev
        cdef _Context ctx
        try:
            with self.lock:
                dev = self._open(device_id)
                ctx = self._new_context(dev, False)
                dev.contexts.add(ctx)
            self.tls.context = ctx
            return make_handle(KIND_CONTEXT, device_id, ctx.index), 0
        except _Failed as exc:
            return 0, self._fail(exc.code, str(exc))

    cdef _Context _context(self, handle):
        if not _is_int(handle) or handle >> 48 != 0xF1 or (handle >> 40) & 0xFF != KIND_CONTEXT:
            raise _Failed(C.ACL_ERROR_RT_INVALID_HANDLE, f"{handle!r} is not a context handle")
        ctx = self.contexts.get(handle & 0xFFFFFFFF)
        if ctx is None:
            raise _Failed(C.ACL_ERROR_RT_INVALID_HANDLE, f"context {handle:#x} does not exist (destroyed?)")
        return ctx

    def destroy_context(self, context):
        cdef _Context ctx
        cdef _Device dev
        try:
            with self.lock:
                ctx = self._context(context)
                if ctx.is_default:
                    raise _Failed(C.ACL_ERROR_INVALID_PARAM,
                                  "the default context goes with acl.rt.reset_device, not destroy_context")
                self._release_context(ctx)
                dev = self.devices.get(ctx.device)
                if dev is not None:
                    dev.contexts.discard(ctx)
                    self._release_if_unused(ctx.device)
            return 0
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def set_context(self, context):
        try:
            self.tls.context = self._context(context)
            return 0
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def get_context(self):
        try:
            ctx = self._current()
            return make_handle(KIND_CONTEXT, ctx.device, ctx.index), 0
        except _Failed as exc:
            return 0, self._fail(exc.code, str(exc))

    # ---- acl.rt: streams --------------------------------------------------------------------------
    def create_stream(self):
        return self.create_stream_with_config(0, 0)

    def create_stream_with_config(self, priority, flag):
        cdef _Session s
        cdef _Context ctx
        cdef uint32_t vs = 0
        try:
            if not _is_int(priority) or priority not in STREAM_PRIORITIES:
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"stream priority must be 0..7, not {priority!r}")
            if not _is_int(flag) or flag < 0 or flag & ~STREAM_FLAGS:
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"unknown stream flags {flag!r}")
            ctx = self._current()
            with self.lock:
                s = self._session(ctx.device)
                vs = s.new_stream(priority, flag)
                ctx.streams.add(vs)
            return make_handle(KIND_STREAM, s.device, vs), 0
        except _Failed as exc:
            return 0, self._fail(exc.code, str(exc))

    def destroy_stream(self, stream):
        cdef _Session s
        try:
            if stream is None or (_is_int(stream) and stream == 0):
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, "the default stream cannot be destroyed")
            s, vs = self._stream(stream)
            for ctx in self.contexts.values():
                if (<_Context>ctx).device == s.device and (<_Context>ctx).vs == vs:
                    raise _Failed(C.ACL_ERROR_INVALID_PARAM, "a context's default stream is destroyed with it")
            with self.lock:
                s._simple(FX_OP_DESTROY_STREAM, vs, 0)
                s.stream_used[vs] = 0
                for ctx in self.contexts.values():
                    (<_Context>ctx).streams.discard(vs) if (<_Context>ctx).device == s.device else None
            return 0
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def synchronize_stream(self, stream):
        cdef _Session s
        try:
            s, vs = self._stream(stream)
            s.wait_stream(vs, FX_FOREVER)
            code = s.take_error(vs)
            return self._fail(code, f"a command on stream {vs} failed") if code else 0
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def synchronize_stream_with_timeout(self, stream, timeout_ms):
        cdef _Session s
        try:
            if not _is_int(timeout_ms) or not -1 <= timeout_ms < (1 << 31):
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, "timeout must be -1 (forever) or >= 0 ms")
            s, vs = self._stream(stream)
            deadline = FX_FOREVER if timeout_ms == -1 else fx_deadline_after(<uint64_t>timeout_ms * 1000000)
            code = s.wait_stream(vs, deadline)
            if code:
                return self._fail(code, f"stream {vs} did not finish within {timeout_ms} ms")
            code = s.take_error(vs)
            return self._fail(code, f"a command on stream {vs} failed") if code else 0
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def stream_query(self, stream):
        cdef _Session s
        try:
            s, vs = self._stream(stream)
            s._check()
            return (C.ACL_STREAM_STATUS_COMPLETE if s.stream_done(vs) else C.ACL_STREAM_STATUS_NOT_READY), 0
        except _Failed as exc:
            return C.ACL_STREAM_STATUS_NOT_READY, self._fail(exc.code, str(exc))

    # ---- acl.rt: events ---------------------------------------------------------------------------
    def create_event(self):
        return self.create_event_with_flag(0)

    def create_event_with_flag(self, flag):
        cdef _Session s
        cdef _Context ctx
        cdef uint32_t ev = 0
        try:
            if not _is_int(flag) or flag < 0 or flag & ~EVENT_FLAGS:
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"unknown event flags {flag!r}")
            ctx = self._current()
            with self.lock:
                s = self._session(ctx.device)
                ev = s.new_event(flag)
                ctx.events.add(ev)
            return make_handle(KIND_EVENT, s.device, ev), 0
        except _Failed as exc:
            return 0, self._fail(exc.code, str(exc))

    def destroy_event(self, event):
        cdef _Session s
        try:
            s, ev = self._event(event)
            with self.lock:
                s._simple(FX_OP_DESTROY_EVENT, 0, ev)
                s.forget_event(ev)
                for ctx in self.contexts.values():
                    (<_Context>ctx).events.discard(ev) if (<_Context>ctx).device == s.device else None
            return 0
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    cdef int _event_op(self, uint16_t opcode, event, stream) except -1:
        cdef _Session s, es
        s, vs = self._stream(stream)
        es, ev = self._event(event)
        if es is not s:
            raise _Failed(C.ACL_ERROR_RT_STREAM_CONTEXT, "the event and the stream belong to different devices")
        seq = s._simple(opcode, vs, ev)
        s.note(vs, seq)
        if opcode == FX_OP_RECORD_EVENT:
            s.events[ev] = (vs, seq)
        elif opcode == FX_OP_RESET_EVENT:
            s.events[ev] = None
        return 0

    def record_event(self, event, stream):
        try:
            return self._event_op(FX_OP_RECORD_EVENT, event, stream)
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def reset_event(self, event, stream):
        try:
            return self._event_op(FX_OP_RESET_EVENT, event, stream)
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def stream_wait_event(self, stream, event):
        try:
            return self._event_op(FX_OP_WAIT_EVENT, event, stream)
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def query_event_status(self, event):
        cdef _Session s
        try:
            s, ev = self._event(event)
            s._check()
            done = s.event_complete(ev)
            return (C.ACL_EVENT_RECORDED_STATUS_COMPLETE if done else C.ACL_EVENT_RECORDED_STATUS_NOT_READY), 0
        except _Failed as exc:
            return C.ACL_EVENT_RECORDED_STATUS_NOT_READY, self._fail(exc.code, str(exc))

    def synchronize_event(self, event):
        cdef _Session s
        cdef int rc
        cdef uint32_t vs
        cdef uint64_t seq
        try:
            s, ev = self._event(event)
            last = s.events[ev]
            if last is None:
                return 0
            s._check()
            vs, seq = last
            while True:
                with nogil:
                    rc = fx_wait_stream(s.c, vs, seq, FX_FOREVER, s.spin_ns)
                if rc == FX_INTR:
                    PyErr_CheckSignals()
                    continue
                break
            if rc != FX_OK:
                s._lose(rc)
            return 0
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def event_elapsed_time(self, start, end):
        cdef _Session s, s2
        cdef uint64_t values[6]
        try:
            s, ev1 = self._event(start)
            s2, ev2 = self._event(end)
            if s is not s2:
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, "events of different devices")
            code = s.call(FX_OP_ELAPSED, ev1, ev2, 0, 0, None, values, 0, NULL)
            if code:
                return 0.0, self._fail(code, "elapsed time needs two completed records")
            return struct.unpack("<d", struct.pack("<Q", values[0]))[0], 0
        except _Failed as exc:
            return 0.0, self._fail(exc.code, str(exc))

    # ---- acl.rt: memory ---------------------------------------------------------------------------
    cdef object _malloc(self, size, policy, bint align32):
        cdef uint64_t values[6]
        cdef _Session s
        if not _is_u63(size) or size == 0:
            raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"malloc size must be a positive int, not {size!r}")
        if not valid_malloc_policy(policy):
            raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"unknown malloc policy {policy!r}")
        s = self._session(self._current().device)
        code = s.call(FX_OP_MALLOC, size, policy, align32, 0, None, values, 0, NULL)
        if code == C.ACL_ERROR_RT_MEMORY_ALLOCATION:
            raise _Failed(code, f"cannot allocate {size} bytes of device memory: the device or this process's "
                                f"quota ({s.info['quota']} bytes) is full; free memory, or run with a larger "
                                "--memory (daemon) or --memory-quota (flexnpu run)")
        if code:
            raise _Failed(code, f"cannot allocate {size} bytes of device memory")
        s.device_ranges.add(values[0], values[1])  # usable size: ACL's rounding included
        return values[0]

    def malloc(self, size, policy):
        try:
            return self._malloc(size, policy, False), 0
        except _Failed as exc:
            return 0, self._fail(exc.code, str(exc))

    def malloc_align32(self, size, policy):
        try:
            return self._malloc(size, policy, True), 0
        except _Failed as exc:
            return 0, self._fail(exc.code, str(exc))

    cdef _Session _owner(self, addr):
        """The session whose device memory `addr` is in, or None (host memory)."""
        if not _is_int(addr) or addr < 0 or addr >> 63:
            raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"{addr!r} is not a pointer")
        for s in self.sessions.values():
            if (<_Session>s).is_device(addr):
                return s
        return None

    def free(self, dev_ptr):
        cdef _Session s
        try:
            s = self._owner(dev_ptr)
            if s is None or dev_ptr not in s.device_ranges.sizes:
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"{dev_ptr!r} is not the start of a device allocation")
            code = s.call(FX_OP_FREE, dev_ptr, 0, 0, 0, None, NULL, 0, NULL)
            if code:
                raise _Failed(code, "free failed")
            s.device_ranges.remove(dev_ptr)
            return 0
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def malloc_host(self, size):
        cdef uint64_t values[6]
        cdef _Session s
        try:
            if not _is_u63(size) or size == 0:
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"malloc_host size must be a positive int, not {size!r}")
            s = self._session(self._current().device)
            with s.staging_lock:
                code = s.call(FX_OP_MALLOC_HOST, size, 0, 0, 0, None, values, 0, NULL)
                if code:
                    raise _Failed(code, f"cannot allocate {size} bytes of host memory")
                name = (<char *>s.staging_base)[:strlen(<char *>s.staging_base)].decode()
            seg = _Segment.attach(name)
            bisect.insort(s.host_segments, (seg.address, size, values[0], seg))
            return seg.address, 0
        except _Failed as exc:
            return 0, self._fail(exc.code, str(exc))

    def free_host(self, host_ptr):
        cdef _Session s
        try:
            for s in self.sessions.values():
                for i, entry in enumerate(s.host_segments):
                    if entry[0] == host_ptr:
                        del s.host_segments[i]
                        entry[3].close()
                        code = s.call(FX_OP_FREE_HOST, entry[2], 0, 0, 0, None, NULL, 0, NULL)
                        return self._fail(code, "free_host failed") if code else 0
            raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"{host_ptr!r} was not returned by malloc_host")
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    cdef tuple _copy_plan(self, dst, dest_max, src, count, kind):
        """Validate a copy: (session or None, dst is device, src is device)."""
        cdef _Session ds, ss
        for name, v in (("dst", dst), ("src", src), ("dest_max", dest_max), ("count", count)):
            if not _is_u63(v):
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"memcpy {name} must be an int >= 0, not {v!r}")
        if count > dest_max:
            raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"count {count} exceeds dest_max {dest_max}")
        if kind not in (0, 1, 2, 3, 4):
            raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"unknown memcpy kind {kind!r}")
        ds, ss = self._owner(dst), self._owner(src)
        dst_dev, src_dev = ds is not None, ss is not None
        expected = {0: (False, False), 1: (True, False), 2: (False, True), 3: (True, True)}.get(kind)
        if expected is not None and expected != (dst_dev, src_dev):
            names = {0: "HOST_TO_HOST", 1: "HOST_TO_DEVICE", 2: "DEVICE_TO_HOST", 3: "DEVICE_TO_DEVICE"}
            where = f"dst is {'device' if dst_dev else 'host'} memory, src is {'device' if src_dev else 'host'} memory"
            raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"memcpy kind {names[kind]} does not match the pointers: {where}")
        if dst_dev and src_dev and ds is not ss:
            raise _Failed(C.ACL_ERROR_FEATURE_UNSUPPORTED, "copies between two devices are not supported")
        for s, addr, is_dev in ((ds, dst, dst_dev), (ss, src, src_dev)):
            if is_dev and not (<_Session>s).device_ranges.contains(addr, count):
                raise _Failed(C.ACL_ERROR_INVALID_PARAM,
                              f"[{addr:#x}, +{count}) is not inside one device allocation of this process")
        return (ds if dst_dev else ss), dst_dev, src_dev

    def memcpy(self, dst, dest_max, src, count, kind):
        cdef _Session s
        cdef uint64_t off, n, chunk
        try:
            s, dst_dev, src_dev = self._copy_plan(dst, dest_max, src, count, kind)
            if count == 0:
                return 0
            if s is None:
                memmove(<void *><size_t>dst, <const void *><size_t>src, <size_t>count)
                return 0
            if dst_dev and src_dev:
                code = s.call(FX_OP_MEMCPY_D2D, dst, src, count, 0, None, NULL, 0, NULL)
                return self._fail(code, "device-to-device copy failed") if code else 0
            chunk = s.staging_size
            with s.staging_lock:
                off = 0
                while off < <uint64_t>count:
                    n = min(chunk, <uint64_t>count - off)
                    if dst_dev:
                        memcpy(s.staging_base, <const void *><size_t>(src + off), n)
                        code = s.call(FX_OP_MEMCPY_H2D, dst + off, 0, n, 0, None, NULL, 0, NULL)
                    else:
                        code = s.call(FX_OP_MEMCPY_D2H, src + off, 0, n, 0, None, NULL, 0, NULL)
                        if not code:
                            memcpy(<void *><size_t>(dst + off), s.staging_base, n)
                    if code:
                        return self._fail(code, "copy failed")
                    off += n
            return 0
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def memcpy_async(self, dst, dest_max, src, count, kind, stream):
        """Device and malloc_host memory: queued, returns at once.  Ordinary host memory: an H2D
        copy is staged (the source may be reused when this returns); a D2H copy into it waits
        for the stream first (like pageable-memory copies on other accelerators)."""
        cdef _Session s, ss
        cdef uint64_t off, n, seq
        try:
            ss, vs = self._stream(stream)
            s, dst_dev, src_dev = self._copy_plan(dst, dest_max, src, count, kind)
            if count == 0:
                return 0
            if s is None:
                code = ss.wait_stream(vs, FX_FOREVER) or ss.take_error(vs)
                if code:
                    return self._fail(code, "a command on the stream failed")
                memmove(<void *><size_t>dst, <const void *><size_t>src, <size_t>count)
                return 0
            if s is not ss:
                raise _Failed(C.ACL_ERROR_RT_STREAM_CONTEXT, "the memory and the stream belong to different devices")
            dst_ref = dst if dst_dev else s.host_ref(dst, count)
            src_ref = src if src_dev else s.host_ref(src, count)
            if dst_ref is not None and src_ref is not None:
                s.note(vs, s._simple(FX_OP_MEMCPY_ASYNC, vs, dst_ref, src_ref, count, kind))
                return 0
            if dst_dev:  # from ordinary host memory: staged in pieces
                with s.staging_lock:
                    off = 0
                    while off < <uint64_t>count:
                        n = min(s.staging_size, <uint64_t>count - off)
                        memcpy(s.staging_base, <const void *><size_t>(src + off), n)
                        code = s.call(FX_OP_STAGED_H2D, dst + off, 0, n, 0, None, NULL, vs, &seq)
                        if code:
                            return self._fail(code, "staging failed")
                        s.note(vs, seq)  # the daemon completes this seq on vs, in stream order
                        off += n
                return 0
            code = s.wait_stream(vs, FX_FOREVER) or s.take_error(vs)
            if code:
                return self._fail(code, "a command on the stream failed")
            return self.memcpy(dst, dest_max, src, count, kind)
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def memset(self, dev_ptr, max_size, value, count):
        cdef _Session s
        try:
            s = self._memset_target(dev_ptr, max_size, value, count)
            code = s.call(FX_OP_MEMSET, dev_ptr, value, count, 0, None, NULL, 0, NULL)
            return self._fail(code, "memset failed") if code else 0
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    cdef _Session _memset_target(self, dev_ptr, max_size, value, count):
        cdef _Session s
        for name, v in (("max_size", max_size), ("value", value), ("count", count)):
            if not _is_u63(v):
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"memset {name} must be an int >= 0, not {v!r}")
        if count > max_size:
            raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"count {count} exceeds max_size {max_size}")
        s = self._owner(dev_ptr)
        if s is None or not s.device_ranges.contains(dev_ptr, count):
            raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"[{dev_ptr!r}, +{count}) is not inside one device allocation")
        return s

    def memset_async(self, dev_ptr, max_size, value, count, stream):
        cdef _Session s, ss
        try:
            ss, vs = self._stream(stream)
            s = self._memset_target(dev_ptr, max_size, value, count)
            if s is not ss:
                raise _Failed(C.ACL_ERROR_RT_STREAM_CONTEXT, "the memory and the stream belong to different devices")
            s.note(vs, s._simple(FX_OP_MEMSET_ASYNC, vs, dev_ptr, value, count))
            return 0
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def get_mem_info(self, attr):
        cdef uint64_t values[6]
        cdef _Session s
        try:
            if not _is_int(attr) or not 0 <= attr <= 9:
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"unknown memory attribute {attr!r}")
            s = self._session(self._current().device)
            code = s.call(FX_OP_MEM_INFO, attr, 0, 0, 0, None, values, 0, NULL)
            if code:
                raise _Failed(code, "memory info failed")
            return values[0], values[1], 0
        except _Failed as exc:
            return 0, 0, self._fail(exc.code, str(exc))

    # ---- acl.rt: IPC memory -----------------------------------------------------------------------
    def ipc_mem_get_export_key(self, dev_ptr, size, flag):
        cdef uint64_t values[6]
        cdef _Session s
        try:
            if not _is_u63(size) or not _is_u63(flag) or size == 0:
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, "ipc_mem_get_export_key: int size > 0 and flag")
            s = self._owner(dev_ptr)
            if s is None:
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"{dev_ptr!r} is not device memory")
            code = s.call(FX_OP_IPC_EXPORT, dev_ptr, size, flag, 0, None, values, 0, NULL)
            if code:
                raise _Failed(code, "export failed: the range must lie inside one allocation of this process")
            key = struct.pack("<6Q", *[values[i] for i in range(6)]).split(b"\0", 1)[0].decode()
            return key, 0
        except _Failed as exc:
            return "", self._fail(exc.code, str(exc))

    cdef _Session _key_session(self, key):
        if not isinstance(key, str) or not key or len(key) > 64:
            raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"{key!r} is not an IPC key")
        return self._session(self._current().device)

    def ipc_mem_set_import_pid(self, key, pids):
        cdef _Session s
        try:
            s = self._key_session(key)
            pid_list = list(pids)
            if not pid_list or not all(_is_int(p) and 0 < p < (1 << 31) for p in pid_list):
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, "pids must be a non-empty list of process ids")
            for pid in pid_list:
                code = s.call(FX_OP_IPC_SET_PID, pid, 0, 0, 0, key.encode(), NULL, 0, NULL)
                if code:
                    return self._fail(code, f"no IPC key {key!r} exported by this process")
            return 0
        except (_Failed, TypeError) as exc:
            return self._fail(getattr(exc, "code", C.ACL_ERROR_INVALID_PARAM), str(exc))

    def ipc_mem_import_by_key(self, key, flag):
        cdef uint64_t values[6]
        cdef _Session s
        try:
            s = self._key_session(key)
            code = s.call(FX_OP_IPC_IMPORT, flag if _is_u63(flag) else 0, 0, 0, 0, key.encode(), values, 0, NULL)
            if code:
                return 0, self._fail(code, f"cannot import IPC key {key!r} (unknown, closed, or this process "
                                           "is not on its import list)")
            s.device_ranges.add(values[0], values[1])  # the importer may name the exported range
            return values[0], 0
        except _Failed as exc:
            return 0, self._fail(exc.code, str(exc))

    def ipc_mem_close(self, key):
        cdef _Session s
        try:
            s = self._key_session(key)
            code = s.call(FX_OP_IPC_CLOSE, 0, 0, 0, 0, key.encode(), NULL, 0, NULL)
            return self._fail(code, f"no IPC memory under key {key!r}") if code else 0
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    # ---- acl.op -----------------------------------------------------------------------------------
    def create_attr(self):
        cdef _Attr a = _Attr()
        a.values, a.version, a.sent = {}, 0, {}
        with self.lock:
            return make_handle(KIND_ATTR, 0, self._new_id(self.attrs, self.free_attrs, a))

    def destroy_attr(self, attr):
        try:
            self._destroy(self.attrs, self.free_attrs, attr, KIND_ATTR, "op attr", FX_OP_DESTROY_ATTR)
        except _Failed as exc:
            self._fail(exc.code, str(exc))
        return None

    cdef int _set_attr(self, attr, name, int kind, value) except -1:
        cdef _Attr a = self._object(self.attrs, attr, KIND_ATTR, "op attr")
        if not isinstance(name, str) or not name:
            raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"attr name must be a non-empty str, not {name!r}")
        a.values[name] = (kind, value)
        a.version += 1
        return 0

    def set_attr_bool(self, attr, name, value):
        try:
            if not isinstance(value, (bool, int)):
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"bool attr {name!r}: {value!r} is not a bool")
            return self._set_attr(attr, name, FX_ATTR_BOOL, bool(value))
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def set_attr_int(self, attr, name, value):
        try:
            if not _is_int(value) or not -(1 << 63) <= value < (1 << 63):
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"int attr {name!r}: {value!r} is not a 64-bit int")
            return self._set_attr(attr, name, FX_ATTR_INT, value)
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def set_attr_data_type(self, attr, name, value):
        try:
            if not _is_int(value) or (value not in DTYPE_SIZES and value != C.ACL_DT_UNDEFINED):
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"data type attr {name!r}: unknown type {value!r}")
            return self._set_attr(attr, name, FX_ATTR_DATA_TYPE, value)
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def set_attr_float(self, attr, name, value):
        try:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"float attr {name!r}: {value!r} is not a number")
            return self._set_attr(attr, name, FX_ATTR_FLOAT, float(value))
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def set_attr_string(self, attr, name, value):
        try:
            if not isinstance(value, str):
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"string attr {name!r}: {value!r} is not a str")
            return self._set_attr(attr, name, FX_ATTR_STRING, value)
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    cdef list _list_of(self, name, values, types, str what):
        try:
            items = list(values)
        except TypeError:
            raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"{what} attr {name!r}: {values!r} is not a list")
        for v in items:
            if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"{what} attr {name!r}: {v!r} is not a {what}")
        return items

    def set_attr_list_int(self, attr, name, values):
        try:
            items = self._list_of(name, values, (int,), "int")
            if any(not -(1 << 63) <= v < (1 << 63) for v in items):
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"int attr {name!r}: values must fit in 64 bits")
            return self._set_attr(attr, name, FX_ATTR_LIST_INT, items)
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def set_attr_list_float(self, attr, name, values):
        try:
            items = [float(v) for v in self._list_of(name, values, (int, float), "float")]
            return self._set_attr(attr, name, FX_ATTR_LIST_FLOAT, items)
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    def set_attr_list_bool(self, attr, name, values):
        try:
            items = [bool(v) for v in self._list_of(name, values, (bool, int), "bool")]
            return self._set_attr(attr, name, FX_ATTR_LIST_BOOL, items)
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    cdef int _mirror_attr(self, _Session s, uint32_t attr_id, _Attr a) except -1:
        """Send the attr's current values to s (a fresh copy: launches there keep old snapshots)."""
        s._simple(FX_OP_CREATE_ATTR, 0, attr_id)
        for name, (kind, value) in a.values.items():
            name_id = s.intern(name)
            if kind in (FX_ATTR_INT, FX_ATTR_DATA_TYPE, FX_ATTR_BOOL):
                s._simple(FX_OP_SET_ATTR, 0, attr_id, name_id, kind, 0, <uint64_t><int64_t>int(value))
            elif kind == FX_ATTR_FLOAT:
                s._simple(FX_OP_SET_ATTR, 0, attr_id, name_id, kind, 0,
                          struct.unpack("<Q", struct.pack("<d", value))[0])
            elif kind == FX_ATTR_STRING:
                raw = value.encode()
                s._with_payload(FX_OP_SET_ATTR, attr_id, name_id, kind, len(raw), raw)
            else:
                fmt = {FX_ATTR_LIST_INT: "q", FX_ATTR_LIST_FLOAT: "d", FX_ATTR_LIST_BOOL: "B"}[kind]
                raw = struct.pack(f"<{len(value)}{fmt}", *value)
                s._with_payload(FX_OP_SET_ATTR, attr_id, name_id, kind, len(value), raw)
        a.sent[s.bit] = a.version
        return 0

    def execute_v2(self, op_type, input_desc, inputs, output_desc, outputs, attr, stream):
        cdef _Session s
        cdef uint64_t pairs[MAX_TENSORS]
        cdef uint64_t seq = 0, submit_ns
        cdef uint32_t n_in, n_out, n, i, vs, attr_id = 0, op_id
        cdef uint8_t phase
        cdef int rc
        cdef _Desc d
        cdef _Buffer b
        cdef _Attr a
        try:
            s, vs = self._stream(stream)
            if not isinstance(op_type, str) or not op_type:
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"op type must be a non-empty str, not {op_type!r}")
            try:
                n_in, n_out = len(input_desc), len(output_desc)
                if len(inputs) != n_in or len(outputs) != n_out:
                    raise _Failed(C.ACL_ERROR_INVALID_PARAM, "execute_v2: each desc list must match its buffer list")
            except TypeError:
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, "execute_v2: descs and buffers must be lists")
            n = n_in + n_out
            if n > MAX_TENSORS or n_in > 0xFFFF or n_out > 0xFFFF:
                raise _Failed(C.ACL_ERROR_INVALID_PARAM, f"execute_v2: {n} tensors is too many")
            op_id = s.intern(op_type)
            if attr is not None and not (_is_int(attr) and attr == 0):
                a = self._object(self.attrs, attr, KIND_ATTR, "op attr")
                attr_id = attr & 0xFFFFFFFF
                if a.sent.get(s.bit) != a.version:
                    self._mirror_attr(s, attr_id, a)
            for i in range(n):
                dh = input_desc[i] if i < n_in else output_desc[i - n_in]
                bh = inputs[i] if i < n_in else outputs[i - n_in]
                d = self._object(self.descs, dh, KIND_DESC, "tensor desc")
                b = self._object(self.buffers, bh, KIND_BUFFER, "data buffer")
                if not d.defined & s.bit:
                    self._define_desc(s, dh & 0xFFFFFFFF, d)
                if not b.defined & s.bit:
                    s._simple(FX_OP_CREATE_BUFFER, 0, bh & 0xFFFFFFFF, b.addr, b.size)
                    b.defined |= s.bit
                pairs[i] = (dh & 0xFFFFFFFF) | ((bh & 0xFFFFFFFF) << 32)
            phase = s.phase if s.phase != FX_PHASE_UNKNOWN else s.op_phase.get(op_id, FX_PHASE_UNKNOWN)
            s._check()
            submit_ns = fx_now_ns()
            rc = fx_client_launch(s.r, s.last_seq, vs, op_id, attr_id, phase, n_in, n_out, pairs, submit_ns,
                                  0, 0, &seq)
            while rc == FX_TIMEOUT:  # the ring is full: wait for room without the GIL
                with nogil:
                    rc = fx_client_launch(s.r, s.last_seq, vs, op_id, attr_id, phase, n_in, n_out, pairs,
                                          submit_ns, FX_FOREVER, s.spin_ns, &seq)
                if rc == FX_INTR:
                    PyErr_CheckSignals()
                    rc = FX_TIMEOUT
            if rc != FX_OK:
                s._lose(rc)
            return 0
        except _Failed as exc:
            return self._fail(exc.code, str(exc))

    cdef int _define_desc(self, _Session s, uint32_t desc_id, _Desc d) except -1:
        raw = struct.pack(f"<{len(d.dims)}q", *d.dims)
        s._with_payload(FX_OP_CREATE_DESC, desc_id, <uint64_t><uint32_t>d.dtype, <uint64_t><uint32_t>d.fmt,
                        len(d.dims), raw)
        d.defined |= s.bit
        return 0

    # ---- FlexNPU extras (not pyACL) ---------------------------------------------------------------
    def ping(self):
        """One round trip to the current device's daemon (for benchmarks): its ACL code."""
        try:
            return self._session(self._current().device).call(FX_OP_PING, 0, 0, 0, 0, None, NULL, 0, NULL)
        except _Failed as exc:
            return self._fail(exc.code, str(exc))


AclRuntime.register(DaemonRuntime)
