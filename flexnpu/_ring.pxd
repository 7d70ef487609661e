# cython: language_level=3
"""C-level API of the shared-memory ring, for other Cython modules (the hooks, the drainer).

`fx_ring_*` functions are `nogil` and may be called from native threads that never held the GIL,
as long as the owning `Ring` object outlives them.  Mirrors fx_ring.h; declared nowhere else.
"""

from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "fx_ring.h" nogil:
    enum:
        FX_OK
        FX_FULL
        FX_EMPTY
        FX_TIMEOUT
        FX_CLOSED
        FX_INTR
        FX_PEER_DEAD
        FX_EBADMAGIC
        FX_EBADVERSION
        FX_EBADSIZE
        FX_EBADCAPACITY
        FX_ETRUNCATED
        FX_RECORD_SIZE
        FX_NAME_MAX
        FX_RING_VERSION
        FX_RING_MIN_CAPACITY
        FX_RING_MAX_CAPACITY

    const uint64_t FX_FOREVER

    ctypedef struct fx_record:
        uint16_t opcode
        uint8_t flags
        uint8_t phase
        uint32_t stream
        uint64_t seq
        uint64_t args[6]

    ctypedef struct fx_doorbell:
        pass

    ctypedef struct fx_ring:
        uint64_t capacity
        fx_doorbell *data_bell

    uint64_t fx_now_ns()
    uint64_t fx_deadline_after(uint64_t timeout_ns)

    uint64_t fx_ring_segment_size(uint64_t capacity)
    void fx_ring_format(void *base, uint64_t capacity, uint64_t segment_size, int32_t creator_pid)
    int fx_ring_open(fx_ring *r, void *base, uint64_t mapped)

    uint32_t fx_ring_try_push(fx_ring *r, const void *src, uint32_t n)
    int fx_ring_push_message(fx_ring *r, const void *src, uint32_t n, uint64_t deadline, uint64_t spin_ns,
                             uint64_t *seq_out)
    uint32_t fx_ring_push_wait(fx_ring *r, const void *src, uint32_t n, uint64_t deadline,
                               uint64_t spin_ns, int *status)
    uint32_t fx_ring_available(const fx_ring *r, uint32_t max)
    void fx_ring_take(fx_ring *r, void *dst, uint32_t n)
    uint32_t fx_ring_try_pop(fx_ring *r, void *dst, uint32_t max)
    uint32_t fx_ring_pop_wait(fx_ring *r, void *dst, uint32_t max, uint64_t deadline,
                              uint64_t spin_ns, int *status)
    int fx_ring_wait_data(fx_ring *r, uint64_t deadline, uint64_t spin_ns)
    int fx_ring_spin_data(fx_ring *r, uint64_t spin_ns)
    int fx_ring_readable(const fx_ring *r)
    int fx_ring_closed(const fx_ring *r)
    uint64_t fx_ring_size(const fx_ring *r)
    void fx_ring_mark_closed(fx_ring *r)
    void fx_ring_mark_local_closing(fx_ring *r)
    void fx_ring_set_consumer(fx_ring *r, int32_t pid)
    void fx_ring_publish_doorbell_name(fx_ring *r, const char *name)
    int fx_ring_doorbell_name(const fx_ring *r, char *out)

    void fx_doorbell_format(void *base, int32_t creator_pid)
    int fx_doorbell_open(void *base, uint64_t mapped, fx_doorbell **out)
    void fx_doorbell_ring(fx_doorbell *b)
    int fx_doorbell_wait_rings(fx_doorbell *b, fx_ring *const *rings, int n, uint64_t deadline,
                               uint64_t spin_ns)


cdef class Segment:
    """A mapped POSIX shared-memory segment; only its creator (same pid) may unlink it."""
    cdef readonly str name
    cdef readonly bint owner
    cdef readonly int creator_pid
    cdef void *base
    cdef readonly size_t size
    cdef int fd

    cdef bint mapped(self)
    cpdef close(self)
    cpdef unlink(self)


cdef class Doorbell:
    cdef Segment seg
    cdef fx_doorbell *bell
    cdef int active_nogil          # waits of this object running without the GIL (GIL-protected)


cdef class Ring:
    cdef fx_ring r
    cdef Segment seg
    cdef Doorbell doorbell
    cdef bint doorbell_auto        # attached by Ring.attach: closed with the ring
    cdef int active_nogil          # calls of this object running without the GIL (GIL-protected)
    cdef bint consumer_registered  # this process told the ring it is the consumer
    cdef public uint64_t spin_ns   # how long a waiting call spins before it parks

    cdef int _check_open(self) except -1
    cdef int _become_consumer(self) except -1
    cdef int _wait_push(self, const void *src, uint32_t n, uint64_t deadline, uint32_t *pushed) except -1
    cdef int _wait_readable(self, uint64_t deadline) except -1
