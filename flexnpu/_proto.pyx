# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False, cdivision=True
"""The completion block (fx_proto.h) and the protocol's constants for Python.

The daemon creates and owns a client's completion block; the client attaches it.  The daemon is
the single writer of completions, sticky errors and replies; client threads read them and park on
its doorbell.
"""

from cpython.exc cimport PyErr_CheckSignals
from libc.stdint cimport uint32_t, uint64_t
from posix.unistd cimport getpid

from flexnpu._ring cimport FX_CLOSED, FX_FOREVER, FX_INTR, FX_OK, FX_PEER_DEAD, FX_TIMEOUT, fx_deadline_after

from flexnpu._ring import Segment as _Segment
from flexnpu.errors import RingCorrupt

# Python-visible protocol constants (the C enum is the one definition).
MAX_STREAMS = FX_MAX_STREAMS
REPLY_SLOTS = FX_REPLY_SLOTS
MAX_EVENTS = FX_MAX_EVENTS
NCONT_MASK = FX_NCONT_MASK
FLAG_REPLY = FX_FLAG_REPLY
TENSORS_IN_HEAD = FX_TENSORS_IN_HEAD
OP_MAX = FX_OP_MAX
OPCODES = {
    "NOP": FX_OP_NOP, "DEFINE_STRING": FX_OP_DEFINE_STRING, "CREATE_DESC": FX_OP_CREATE_DESC,
    "DESTROY_DESC": FX_OP_DESTROY_DESC, "CREATE_BUFFER": FX_OP_CREATE_BUFFER,
    "DESTROY_BUFFER": FX_OP_DESTROY_BUFFER, "CREATE_ATTR": FX_OP_CREATE_ATTR,
    "DESTROY_ATTR": FX_OP_DESTROY_ATTR, "SET_ATTR": FX_OP_SET_ATTR, "CREATE_STREAM": FX_OP_CREATE_STREAM,
    "DESTROY_STREAM": FX_OP_DESTROY_STREAM, "CREATE_EVENT": FX_OP_CREATE_EVENT,
    "DESTROY_EVENT": FX_OP_DESTROY_EVENT, "RECORD_EVENT": FX_OP_RECORD_EVENT, "WAIT_EVENT": FX_OP_WAIT_EVENT,
    "RESET_EVENT": FX_OP_RESET_EVENT, "CLEAR_ERROR": FX_OP_CLEAR_ERROR, "LAUNCH": FX_OP_LAUNCH,
    "MEMCPY_ASYNC": FX_OP_MEMCPY_ASYNC, "MEMSET_ASYNC": FX_OP_MEMSET_ASYNC, "STAGED_H2D": FX_OP_STAGED_H2D,
    "MALLOC": FX_OP_MALLOC, "FREE": FX_OP_FREE, "MEM_INFO": FX_OP_MEM_INFO, "MEMCPY_H2D": FX_OP_MEMCPY_H2D,
    "MEMCPY_D2H": FX_OP_MEMCPY_D2H, "MEMCPY_D2D": FX_OP_MEMCPY_D2D, "MEMSET": FX_OP_MEMSET,
    "MALLOC_HOST": FX_OP_MALLOC_HOST, "FREE_HOST": FX_OP_FREE_HOST, "ELAPSED": FX_OP_ELAPSED,
    "IPC_EXPORT": FX_OP_IPC_EXPORT, "IPC_SET_PID": FX_OP_IPC_SET_PID, "IPC_IMPORT": FX_OP_IPC_IMPORT,
    "IPC_CLOSE": FX_OP_IPC_CLOSE, "PING": FX_OP_PING,
}
OPCODE_NAMES = {v: k for k, v in OPCODES.items()}
ATTR_KINDS = {
    "bool": FX_ATTR_BOOL, "int": FX_ATTR_INT, "float": FX_ATTR_FLOAT, "string": FX_ATTR_STRING,
    "list_int": FX_ATTR_LIST_INT, "list_float": FX_ATTR_LIST_FLOAT, "list_bool": FX_ATTR_LIST_BOOL,
    "data_type": FX_ATTR_DATA_TYPE,
}
PHASES = {"unknown": FX_PHASE_UNKNOWN, "prefill": FX_PHASE_PREFILL, "decode": FX_PHASE_DECODE,
          "mixed": FX_PHASE_MIXED}
PHASE_NAMES = {v: k for k, v in PHASES.items()}

# What a wait ended with (the fx status codes), for callers in Python.
WAIT_OK, WAIT_TIMEOUT, WAIT_CLOSED, WAIT_PEER_DEAD = FX_OK, FX_TIMEOUT, FX_CLOSED, FX_PEER_DEAD


cdef class Completion:
    """A client's completion block.  ``create`` in the daemon (owner), ``attach`` in the client."""

    @staticmethod
    def create(name=None):
        cdef Completion comp = Completion.__new__(Completion)
        comp.seg = _Segment.create("cmpl", fx_completion_segment_size(), name)
        fx_completion_format(comp.seg.base, getpid())
        fx_completion_open(comp.seg.base, comp.seg.size, &comp.c)
        return comp

    @staticmethod
    def attach(str name):
        cdef Completion comp = Completion.__new__(Completion)
        comp.seg = _Segment.attach(name)
        rc = fx_completion_open(comp.seg.base, comp.seg.size, &comp.c)
        if rc != FX_OK:
            comp.seg.close()
            raise RingCorrupt(f"shared-memory segment {name} is not a FlexNPU completion block "
                              f"of protocol version {FX_PROTO_VERSION}")
        return comp

    @property
    def name(self):
        return self.seg.name

    @property
    def daemon_pid(self):
        return self.c.daemon_pid

    # ---- daemon side ----------------------------------------------------------------------------
    def complete(self, uint32_t stream, uint64_t seq):
        fx_complete(self.c, stream, seq)

    def fail(self, uint32_t stream, uint64_t seq, uint32_t code):
        fx_fail(self.c, stream, seq, code)

    def event_reached(self, uint32_t event, uint64_t seq):
        if event < FX_MAX_EVENTS:
            fx_event_reached(self.c, event, seq)

    def reply(self, uint32_t slot, uint64_t seq, long long code, values=()):
        cdef uint64_t vals[6]
        cdef int n = 0
        for v in values:
            if n == 6:
                raise ValueError("at most 6 reply values")
            vals[n] = v
            n += 1
        fx_reply_publish(self.c, slot, seq, code, vals, n)

    def mark_closed(self):
        if self.c != NULL:
            fx_completion_mark_closed(self.c)

    # ---- client side ----------------------------------------------------------------------------
    def completed(self, uint32_t stream):
        return fx_stream_completed(self.c, stream)

    def error(self, uint32_t stream):
        """(err_seq, err_code) of the stream's sticky error (err_seq 0: none yet)."""
        return fx_stream_err_seq(self.c, stream), fx_stream_err_code(self.c, stream)

    def reply_of(self, uint32_t slot):
        cdef int i
        return self.c.replies[slot].code, [self.c.replies[slot].values[i] for i in range(6)]

    @property
    def closed(self):
        return fx_completion_closed(self.c) != 0

    def wait_stream(self, uint32_t stream, uint64_t seq, timeout=None, uint64_t spin_ns=50_000):
        """Wait until stream has finished command seq: a WAIT_* code."""
        return self._wait(False, stream, seq, timeout, spin_ns)

    def wait_reply(self, uint32_t slot, uint64_t seq, timeout=None, uint64_t spin_ns=50_000):
        """Wait until reply slot holds the answer to request seq: a WAIT_* code."""
        return self._wait(True, slot, seq, timeout, spin_ns)

    cdef int _wait(self, bint reply, uint32_t index, uint64_t seq, timeout, uint64_t spin_ns) except -1:
        cdef uint64_t deadline = FX_FOREVER if timeout is None else fx_deadline_after(<uint64_t>(timeout * 1e9))
        cdef int rc
        while True:
            with nogil:
                if reply:
                    rc = fx_wait_reply(self.c, index, seq, deadline, spin_ns)
                else:
                    rc = fx_wait_stream(self.c, index, seq, deadline, spin_ns)
            if rc != FX_INTR:
                return rc
            PyErr_CheckSignals()

    def close(self):
        if self.seg is not None:
            self.seg.close()
        self.c = NULL

    def unlink(self):
        self.seg.unlink()
