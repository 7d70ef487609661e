# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False, cdivision=True
"""The drainer: one thread that takes whole messages from every client's ring and hands each
to its client's handler for that opcode.

Waiting is nogil: a bounded spin, then a park on the daemon's doorbell, which every client ring
rings on publish.  The control thread adds and removes clients by posting a request and ringing
the same doorbell, so only this thread ever touches a ClientState's tables (device callbacks only
write completions).
"""

import collections
import logging
import time

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc

from flexnpu._proto cimport (
    FX_CONT_PAYLOAD,
    FX_FLAG_REPLY,
    FX_NCONT_MASK,
    FX_OP_MAX,
    fx_ring_available_messages,
    fx_unpack_payload,
)
from flexnpu._ring cimport (
    FX_RECORD_SIZE,
    Doorbell,
    Ring,
    fx_deadline_after,
    fx_doorbell_wait_rings,
    fx_record,
    fx_ring,
    fx_ring_take,
)

from flexnpu_daemon.client import STREAM_WORK

log = logging.getLogger("flexnpu_daemon.drainer")

cdef enum:
    BATCH = 256


cdef class Drainer:
    cdef Doorbell doorbell
    cdef list clients
    cdef fx_ring **rings
    cdef int nrings
    cdef object requests
    cdef unsigned char *batch
    cdef public bint stopping
    cdef public uint64_t spin_ns
    cdef public double idle_timeout
    cdef public object on_idle   # called when the rings are empty (reaping, bookkeeping)
    cdef public object run_work  # device work run in this thread: () -> 0.0 more ready, None, or due time
    cdef public uint64_t messages

    def __cinit__(self):
        self.rings = NULL
        self.batch = <unsigned char *>malloc(BATCH * FX_RECORD_SIZE)
        if self.batch == NULL:
            raise MemoryError()

    def __init__(self, Doorbell doorbell not None, uint64_t spin_ns=50_000, double idle_timeout=0.05,
                 on_idle=None, run_work=None):
        self.doorbell = doorbell
        self.clients = []
        self.nrings = 0
        self.requests = collections.deque()
        self.stopping = False
        self.spin_ns = spin_ns
        self.idle_timeout = idle_timeout
        self.on_idle = on_idle
        self.run_work = run_work
        self.messages = 0

    def __dealloc__(self):
        free(self.rings)
        free(self.batch)

    # ---- called from other threads --------------------------------------------------------------
    def post(self, action, arg=None):
        """Ask the drainer thread to run `action(arg)` between batches (thread-safe)."""
        self.requests.append((action, arg))
        self.doorbell.ring()

    def stop(self):
        self.post(self._stop)

    # ---- drainer thread ---------------------------------------------------------------------------
    def add_client(self, client):
        self.clients.append(client)
        self._rebuild()

    def remove_client(self, client):
        if client in self.clients:
            self.clients.remove(client)
            self._rebuild()

    def _stop(self, _=None):
        self.stopping = True

    cdef _rebuild(self):
        cdef fx_ring **rings = <fx_ring **>realloc(self.rings, max(1, len(self.clients)) * sizeof(fx_ring *))
        if rings == NULL:
            raise MemoryError()
        self.rings = rings
        for i, client in enumerate(self.clients):
            self.rings[i] = &(<Ring>client.ring).r
        self.nrings = len(self.clients)

    def run(self):
        """The thread body: drain until stop()."""
        cdef int i
        cdef bint worked
        cdef uint64_t deadline
        cdef double wait_s
        while True:
            while self.requests:
                action, arg = self.requests.popleft()
                try:
                    action(arg)
                except Exception:
                    log.exception("drainer request %r failed", action)
            if self.stopping:
                return
            worked = False
            for i in range(self.nrings):
                if self._drain(i):
                    worked = True
            wait_s = self.idle_timeout
            if self.run_work is not None:
                due = self.run_work()  # a slice of device work between looks at the rings
                if due == 0.0:
                    continue
                if due is not None:
                    wait_s = min(wait_s, max(0.0, due - time.perf_counter()))
            if worked:
                continue
            if self.on_idle is not None:
                try:
                    self.on_idle()
                except Exception:
                    log.exception("idle work failed")
            deadline = fx_deadline_after(<uint64_t>(wait_s * 1e9))
            with nogil:  # woken by a publish, a post(), or the deadline: the loop re-checks everything
                fx_doorbell_wait_rings(self.doorbell.bell, self.rings, self.nrings, deadline, self.spin_ns)

    cdef bint _drain(self, int i) except -1:
        cdef fx_ring *r = self.rings[i]
        cdef uint32_t n = fx_ring_available_messages(r, BATCH)
        cdef uint32_t k = 0, ncont
        cdef long slot
        cdef fx_record *rec
        if n == 0:
            return False
        fx_ring_take(r, self.batch, n)
        client = self.clients[i]
        handlers = client.handlers
        while k < n:
            rec = <fx_record *>(self.batch + <size_t>k * FX_RECORD_SIZE)
            ncont = rec.flags & FX_NCONT_MASK
            slot = <long>rec.args[5] if rec.flags & FX_FLAG_REPLY else -1
            if ncont:
                payload = PyBytes_FromStringAndSize(NULL, ncont * FX_CONT_PAYLOAD)
                fx_unpack_payload(rec + 1, ncont, PyBytes_AS_STRING(payload))
            else:
                payload = None
            try:
                handler = handlers[rec.opcode] if rec.opcode < FX_OP_MAX else client._malformed_opcode
                handler(rec.stream, rec.seq, rec.phase, slot, rec.args[0], rec.args[1], rec.args[2],
                        rec.args[3], rec.args[4], rec.args[5], payload)
            except Exception as exc:  # a handler bug costs this request, never the daemon
                log.exception("client %s: opcode %d failed", client.client_id, rec.opcode)
                try:
                    client.malformed(rec.stream, rec.seq, slot, f"internal error: {exc}", rec.opcode in STREAM_WORK)
                except Exception:
                    log.exception("could not report the failure")
            k += 1 + ncont
            self.messages += 1
        client.records += n
        return True
