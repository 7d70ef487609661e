# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False, cdivision=True
"""The lock-free shared-memory ring (mechanism in C: fx_ring.h; this file maps it onto Python).

Who unlinks: only the process that created a segment (same pid), via ``unlink()`` or the owner's
context manager.  Thread/process safety: any number of threads of one process may push; one
thread of one process pops.  ``close()`` is idempotent and waits for this object's calls that run
without the GIL to return.
"""

cimport numpy as cnp
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EACCES, EEXIST, ENOENT, errno
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset, strerror
from posix.fcntl cimport O_CREAT, O_EXCL, O_RDWR
from posix.mman cimport MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, mmap, munmap, shm_open, shm_unlink
from posix.stat cimport fchmod, fstat, struct_stat
from posix.unistd cimport close as c_close, ftruncate, getpid, usleep

import warnings

import numpy as np

from flexnpu import shm
from flexnpu.errors import FlexNPUError, RingClosed, RingCorrupt, RingFull

cnp.import_array()

cdef extern from "sys/mman.h" nogil:
    enum: MAP_POPULATE

RECORD_SIZE = FX_RECORD_SIZE
# Mirrors struct fx_record in fx_ring.h (checked against the C layout at import below).
RECORD_DTYPE = np.dtype([
    ("opcode", "<u2"),
    ("flags", "u1"),
    ("phase", "u1"),
    ("stream", "<u4"),
    ("seq", "<u8"),
    ("args", "<u8", (6,)),
])
MAX_CAPACITY = FX_RING_MAX_CAPACITY
# Default bounded spin before a waiting call parks on its futex (DESIGN.md principle 2).
DEFAULT_SPIN_NS = 50_000
# The first part of a consumer's spin keeps the GIL: a reply that comes within a couple of
# microseconds is picked up without paying for a GIL release and re-acquire (a round trip's
# critical path).  Longer waits release it so other threads run.
cdef enum:
    GIL_SPIN_NS = 2000

cdef fx_record _layout_probe
assert RECORD_DTYPE.itemsize == sizeof(fx_record) == FX_RECORD_SIZE
assert RECORD_DTYPE.fields["stream"][1] == <size_t>&_layout_probe.stream - <size_t>&_layout_probe
assert RECORD_DTYPE.fields["seq"][1] == <size_t>&_layout_probe.seq - <size_t>&_layout_probe
assert RECORD_DTYPE.fields["args"][1] == <size_t>&_layout_probe.args - <size_t>&_layout_probe

_np_empty = np.empty
# pop_many of an empty ring returns this (read-only) array: np.empty of a structured dtype costs
# about 250 ns, most of an empty poll.
_EMPTY = np.empty(0, RECORD_DTYPE)
_EMPTY.flags.writeable = False

_OPEN_ERRORS = {
    FX_ETRUNCATED: "is truncated or its layout does not match its capacity",
    FX_EBADMAGIC: "is not a FlexNPU ring (bad magic: wrong segment, or its creator died while formatting it)",
    FX_EBADVERSION: "was made by an incompatible FlexNPU version (ring format %d expected)" % FX_RING_VERSION,
    FX_EBADSIZE: "has records of the wrong size (64 bytes expected)",
    FX_EBADCAPACITY: "has an invalid capacity (a power of two from 2 to 2**24 expected)",
}


cdef uint64_t _deadline(object timeout) except? 0:
    """Absolute CLOCK_MONOTONIC deadline in ns; None waits forever."""
    if timeout is None:
        return FX_FOREVER
    cdef double t = timeout
    if t < 0 or t != t:
        raise ValueError(f"timeout must be None or >= 0 seconds, not {timeout!r}")
    if t > 1e9:
        return FX_FOREVER
    return fx_deadline_after(<uint64_t>(t * 1e9))


cdef inline bint _is_zero(object timeout):
    return timeout is not None and timeout == 0


cdef class Segment:
    """A mapped POSIX shared-memory segment: mode 0600, created with O_EXCL, prefaulted."""

    def __cinit__(self):
        self.fd = -1
        self.base = NULL
        self.size = 0
        self.owner = False
        self.creator_pid = 0
        self.name = ""

    @staticmethod
    def create(str kind, size_t size, name=None):
        cdef Segment seg = Segment.__new__(Segment)
        seg.name = shm.normalize(name) if name is not None else shm.new_segment_name(kind)
        cdef bytes bname = seg.name.encode()
        seg.fd = shm_open(bname, O_CREAT | O_EXCL | O_RDWR, 0o600)
        if seg.fd < 0:
            err = errno
            if err == EEXIST:
                raise FileExistsError(err, f"shared-memory segment {seg.name} already exists")
            raise OSError(err, f"shm_open({seg.name}): {strerror(err).decode()}")
        seg.owner = True
        seg.creator_pid = getpid()
        try:
            fchmod(seg.fd, 0o600)  # independent of the umask
            if ftruncate(seg.fd, size) != 0:
                err = errno
                raise OSError(err, f"ftruncate({seg.name}, {size}): {strerror(err).decode()}")
            seg._map(size, MAP_POPULATE)
        except BaseException:
            # undo only what this constructor created
            seg.close()
            shm_unlink(bname)
            seg.owner = False
            raise
        return seg

    @staticmethod
    def attach(str name):
        cdef Segment seg = Segment.__new__(Segment)
        cdef struct_stat st
        seg.name = shm.normalize(name)
        seg.fd = shm_open(seg.name.encode(), O_RDWR, 0)
        if seg.fd < 0:
            err = errno
            if err == ENOENT:
                raise FileNotFoundError(err, f"no shared-memory segment named {seg.name}")
            if err == EACCES:
                raise PermissionError(err, f"shared-memory segment {seg.name} belongs to another user")
            raise OSError(err, f"shm_open({seg.name}): {strerror(err).decode()}")
        try:
            if fstat(seg.fd, &st) != 0:
                err = errno
                raise OSError(err, f"fstat({seg.name}): {strerror(err).decode()}")
            if st.st_size <= 0:
                raise RingCorrupt(f"shared-memory segment {seg.name} is empty (truncated)")
            seg._map(<size_t>st.st_size, 0)
        except BaseException:
            seg.close()
            raise
        return seg

    def _map(self, size_t size, int extra_flags):
        cdef void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | extra_flags, self.fd, 0)
        if p == MAP_FAILED:
            err = errno
            raise OSError(err, f"mmap({self.name}, {size}): {strerror(err).decode()}")
        self.base = p
        self.size = size

    cdef bint mapped(self):
        return self.base != NULL

    @property
    def address(self):
        """Address of the mapping in this process (0 once closed)."""
        return <size_t>self.base

    cpdef close(self):
        """Unmap and close the descriptor; idempotent.  Never unlinks."""
        if self.base != NULL:
            munmap(self.base, self.size)
            self.base = NULL
        if self.fd >= 0:
            c_close(self.fd)
            self.fd = -1

    cpdef unlink(self):
        """Remove the name (the creating process only); idempotent."""
        if not self.owner:
            raise FlexNPUError(f"only the process that created {self.name} may unlink it")
        if getpid() != self.creator_pid:
            raise FlexNPUError(
                f"{self.name} was created by pid {self.creator_pid}; a forked child may not unlink it")
        if shm_unlink(self.name.encode()) != 0 and errno != ENOENT:
            err = errno
            raise OSError(err, f"shm_unlink({self.name}): {strerror(err).decode()}")

    def __dealloc__(self):
        # Only unmaps; never unlinks, never raises (house style 7.6).
        if self.base != NULL:
            munmap(self.base, self.size)
        if self.fd >= 0:
            c_close(self.fd)


cdef class Doorbell:
    """A futex word in its own segment that many rings ring: one consumer parks on all of them.

    Bind each ring with ``ring.bind_doorbell(db)`` before producers attach to it; then
    ``db.wait(rings, timeout)`` returns as soon as any of them has a record.
    """

    def __cinit__(self):
        self.seg = None
        self.bell = NULL
        self.active_nogil = 0

    @staticmethod
    def create(name=None):
        cdef Doorbell db = Doorbell.__new__(Doorbell)
        db.seg = Segment.create("db", 4096, name)
        fx_doorbell_format(db.seg.base, getpid())
        fx_doorbell_open(db.seg.base, db.seg.size, &db.bell)
        return db

    @staticmethod
    def attach(str name):
        cdef Doorbell db = Doorbell.__new__(Doorbell)
        db.seg = Segment.attach(name)
        rc = fx_doorbell_open(db.seg.base, db.seg.size, &db.bell)
        if rc != FX_OK:
            db.seg.close()
            raise RingCorrupt(f"shared-memory segment {name} is not a FlexNPU doorbell")
        return db

    @property
    def name(self):
        return self.seg.name

    @property
    def closed(self):
        return self.bell == NULL

    def ring(self):
        """Wake every process parked on this doorbell."""
        self._check_open()
        fx_doorbell_ring(self.bell)

    def _check_open(self):
        if self.bell == NULL:
            raise RingClosed("doorbell is closed")

    def wait(self, rings, timeout=None):
        """Park until any of `rings` (all bound to this doorbell) has a record.

        Spins for the largest ``spin_ns`` of the rings first.  Returns True if a ring is readable,
        False on timeout.
        """
        self._check_open()
        cdef list ring_list = list(rings)
        cdef int n = len(ring_list)
        cdef Ring ring
        cdef uint64_t spin = 0
        cdef uint64_t deadline = _deadline(timeout)
        cdef int rc
        if n == 0:
            raise ValueError("wait() needs at least one ring")
        cdef fx_ring **ptrs = <fx_ring **>malloc(n * sizeof(fx_ring *))
        if ptrs == NULL:
            raise MemoryError()
        try:
            for i, obj in enumerate(ring_list):
                ring = <Ring?>obj
                ring._check_open()
                if ring.doorbell is not self:
                    raise ValueError(f"ring {ring.name} is not bound to doorbell {self.name}")
                ptrs[i] = &ring.r
                spin = max(spin, ring.spin_ns)
            while True:
                for obj in ring_list:
                    (<Ring>obj).active_nogil += 1
                self.active_nogil += 1
                with nogil:
                    rc = fx_doorbell_wait_rings(self.bell, ptrs, n, deadline, spin)
                self.active_nogil -= 1
                for obj in ring_list:
                    (<Ring>obj).active_nogil -= 1
                if rc == FX_INTR:
                    PyErr_CheckSignals()
                    continue
                return rc == FX_OK
        finally:
            free(ptrs)

    def close(self):
        """Unmap this view; idempotent.  Waits for this object's waits in other threads to return."""
        if self.bell != NULL:
            fx_doorbell_ring(self.bell)
        while self.active_nogil > 0:
            with nogil:
                usleep(200)
        if self.seg is not None:
            self.seg.close()
        self.bell = NULL

    def unlink(self):
        self.seg.unlink()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        if self.seg.owner and self.seg.creator_pid == getpid():
            self.seg.unlink()

    def __reduce__(self):
        return (Doorbell.attach, (self.name,))

    def __repr__(self):
        return f"<Doorbell {self.seg.name if self.seg is not None else '?'}{' closed' if self.closed else ''}>"


cdef class Ring:
    """Multi-producer, single-consumer ring of 64-byte records in shared memory.

    ``Ring.create(name=None, capacity=4096)`` makes a new segment (this process owns it and is
    its default consumer); ``Ring.attach(name)`` maps an existing one and validates it.  The ring
    owns each record's ``seq`` field: it publishes the record, and a popped record's seq is its
    position in the ring's total order + 1.  The other 56 bytes arrive as pushed.
    """

    def __cinit__(self):
        self.seg = None
        self.doorbell = None
        self.doorbell_auto = False
        self.active_nogil = 0
        self.consumer_registered = False
        self.spin_ns = DEFAULT_SPIN_NS
        memset(&self.r, 0, sizeof(fx_ring))

    @staticmethod
    def create(name=None, Py_ssize_t capacity=4096):
        if capacity < FX_RING_MIN_CAPACITY or capacity > FX_RING_MAX_CAPACITY or capacity & (capacity - 1):
            raise ValueError(
                f"capacity must be a power of two from {FX_RING_MIN_CAPACITY} to {FX_RING_MAX_CAPACITY}, "
                f"not {capacity}")
        cdef Ring ring = Ring.__new__(Ring)
        cdef uint64_t size = fx_ring_segment_size(capacity)
        ring.seg = Segment.create("ring", size, name)
        fx_ring_format(ring.seg.base, capacity, size, getpid())
        rc = fx_ring_open(&ring.r, ring.seg.base, ring.seg.size)
        if rc != FX_OK:  # cannot happen for a segment we just formatted
            ring.seg.close()
            ring.seg.unlink()
            raise RingCorrupt(f"ring {ring.seg.name} failed validation right after creation ({rc})")
        ring.consumer_registered = True
        return ring

    @staticmethod
    def attach(str name):
        cdef Ring ring = Ring.__new__(Ring)
        cdef char dbname[FX_NAME_MAX]
        ring.seg = Segment.attach(name)
        rc = fx_ring_open(&ring.r, ring.seg.base, ring.seg.size)
        if rc != FX_OK:
            ring.seg.close()
            raise RingCorrupt(f"shared-memory segment {ring.seg.name} {_OPEN_ERRORS.get(rc, rc)}")
        if fx_ring_doorbell_name(&ring.r, dbname):
            try:
                ring._bind(Doorbell.attach(dbname.decode()))
                ring.doorbell_auto = True
            except BaseException:
                ring.seg.close()
                raise
        return ring

    # ---- properties -----------------------------------------------------------------------
    @property
    def name(self):
        return self.seg.name if self.seg is not None else None

    @property
    def capacity(self):
        return self.r.capacity

    @property
    def owner(self):
        """True in the process that created the segment."""
        return self.seg is not None and self.seg.owner and self.seg.creator_pid == getpid()

    @property
    def closed(self):
        """True once this view is closed, or the owner has closed the ring."""
        return self.seg is None or not self.seg.mapped() or fx_ring_closed(&self.r)

    def __len__(self):
        """Records pushed (or being pushed) and not yet popped."""
        self._check_open()
        return fx_ring_size(&self.r)

    cdef int _check_open(self) except -1:
        if self.seg is None or not self.seg.mapped():
            raise RingClosed(f"ring {self.name} is closed in this process")
        if fx_ring_closed(&self.r):
            raise RingClosed(f"ring {self.name} was closed by its owner")
        return 0

    cdef int _become_consumer(self) except -1:
        if not self.consumer_registered:
            fx_ring_set_consumer(&self.r, getpid())
            self.consumer_registered = True
        return 0

    # ---- doorbell ---------------------------------------------------------------------------
    def bind_doorbell(self, Doorbell db not None):
        """Ring `db` (instead of this ring's own futex) on every publish.

        The owner records the binding in the segment so that producers attaching later ring it
        too: bind before handing the ring's name out.
        """
        self._check_open()
        db._check_open()
        self._bind(db)
        if self.owner:
            fx_ring_publish_doorbell_name(&self.r, db.name.encode())

    def _bind(self, Doorbell db):
        self.doorbell = db
        self.r.data_bell = db.bell

    # ---- produce ------------------------------------------------------------------------------
    cdef int _wait_push(self, const void *src, uint32_t n, uint64_t deadline, uint32_t *pushed) except -1:
        cdef int status = FX_OK
        cdef uint32_t done = 0, got
        cdef uint64_t spin = self.spin_ns
        while True:
            self.active_nogil += 1
            with nogil:
                got = fx_ring_push_wait(&self.r, <const unsigned char *>src + <uint64_t>done * FX_RECORD_SIZE,
                                        n - done, deadline, spin, &status)
            self.active_nogil -= 1
            done += got
            if status == FX_INTR:
                PyErr_CheckSignals()
                continue
            break
        pushed[0] = done
        if status == FX_CLOSED:
            raise RingClosed(f"ring {self.name} was closed while pushing ({done} of {n} records pushed)")
        if status == FX_PEER_DEAD:
            raise RingClosed(f"the process draining ring {self.name} died ({done} of {n} records pushed)")
        return 0

    def push(self, record, timeout=None):
        """Push one 64-byte record (bytes-like or a RECORD_DTYPE scalar).

        timeout: None blocks until there is space, 0 never waits, else seconds.  Raises RingFull
        when no slot frees up in time, RingClosed when the ring is closed or its consumer died.
        """
        cdef Py_buffer view
        cdef fx_record tmp
        cdef const unsigned char *p
        cdef uint32_t pushed = 0
        self._check_open()
        if PyBytes_CheckExact(record):
            if PyBytes_GET_SIZE(record) != FX_RECORD_SIZE:
                raise ValueError(f"a record is {FX_RECORD_SIZE} bytes, not {PyBytes_GET_SIZE(record)}")
            p = <const unsigned char *>PyBytes_AS_STRING(record)
            if fx_ring_try_push(&self.r, p, 1):
                return
            (&tmp)[0] = (<const fx_record *>p)[0]
        else:
            PyObject_GetBuffer(record, &view, PyBUF_SIMPLE)
            try:
                if view.len != FX_RECORD_SIZE:
                    raise ValueError(f"a record is {FX_RECORD_SIZE} bytes, not {view.len}")
                if fx_ring_try_push(&self.r, view.buf, 1):
                    return
                (&tmp)[0] = (<const fx_record *>view.buf)[0]
            finally:
                PyBuffer_Release(&view)
        if _is_zero(timeout):
            raise RingFull(f"ring {self.name} is full ({self.r.capacity} records)")
        self._wait_push(&tmp, 1, _deadline(timeout), &pushed)
        if pushed == 0:
            raise RingFull(f"ring {self.name} stayed full for {timeout} s")

    def push_many(self, records, timeout=None):
        """Push records (an ndarray of RECORD_DTYPE, an (n, 64) uint8 array, or n*64 bytes).

        Returns how many were pushed, in order: all of them unless the timeout ran out first
        (timeout=0 pushes what fits now).  Raises RingClosed as push() does.
        """
        cdef Py_buffer view
        cdef uint32_t pushed = 0, extra = 0
        cdef Py_ssize_t n
        self._check_open()
        if isinstance(records, np.ndarray) and not records.flags.c_contiguous:
            records = np.ascontiguousarray(records)
        try:
            PyObject_GetBuffer(records, &view, PyBUF_SIMPLE)
        except BufferError:
            records = np.ascontiguousarray(records)
            PyObject_GetBuffer(records, &view, PyBUF_SIMPLE)
        try:
            if view.len % FX_RECORD_SIZE:
                raise ValueError(f"records must be a whole number of {FX_RECORD_SIZE}-byte records, "
                                 f"got {view.len} bytes")
            n = view.len // FX_RECORD_SIZE
            if n > 0xFFFFFFFF:
                raise ValueError("at most 2**32-1 records per call")
            if n == 0:
                return 0
            if n <= 64 or _is_zero(timeout):
                pushed = fx_ring_try_push(&self.r, view.buf, <uint32_t>n)
                if pushed == n or _is_zero(timeout):
                    return pushed
            self._wait_push(<const unsigned char *>view.buf + <uint64_t>pushed * FX_RECORD_SIZE,
                            <uint32_t>(n - pushed), _deadline(timeout), &extra)
            return pushed + extra
        finally:
            PyBuffer_Release(&view)

    # ---- consume ------------------------------------------------------------------------------
    cdef int _wait_readable(self, uint64_t deadline) except -1:
        cdef int rc
        cdef uint64_t spin = self.spin_ns
        if spin and fx_ring_spin_data(&self.r, spin if spin < <uint64_t>GIL_SPIN_NS else <uint64_t>GIL_SPIN_NS):
            return 0
        while True:
            self.active_nogil += 1
            with nogil:
                rc = fx_ring_wait_data(&self.r, deadline, spin)
            self.active_nogil -= 1
            if rc == FX_INTR:
                PyErr_CheckSignals()
                continue
            if rc == FX_CLOSED:
                self._check_open()  # raises
            return 0

    def pop_many(self, Py_ssize_t max_records, timeout=0.0):
        """Pop up to max_records as an ndarray of RECORD_DTYPE (possibly empty).

        timeout: 0 (default) never waits; None waits for the first record; else seconds.
        """
        cdef uint32_t n
        cdef cnp.ndarray out
        self._check_open()
        self._become_consumer()
        if max_records < 0:
            raise ValueError("max_records must be >= 0")
        cdef uint32_t limit = <uint32_t>min(max_records, <Py_ssize_t>self.r.capacity)
        n = fx_ring_available(&self.r, limit)
        if n == 0 and limit and not _is_zero(timeout):
            self._wait_readable(_deadline(timeout))
            n = fx_ring_available(&self.r, limit)
        if n == 0:
            return _EMPTY
        out = _np_empty(n, RECORD_DTYPE)
        fx_ring_take(&self.r, cnp.PyArray_DATA(out), n)
        return out

    def pop(self, timeout=0.0):
        """Pop one record as 64 bytes, or None if none arrived within the timeout."""
        cdef bytes out
        self._check_open()
        self._become_consumer()
        if not fx_ring_available(&self.r, 1):
            if _is_zero(timeout):
                return None
            self._wait_readable(_deadline(timeout))
            if not fx_ring_available(&self.r, 1):
                return None
        out = PyBytes_FromStringAndSize(NULL, FX_RECORD_SIZE)
        fx_ring_take(&self.r, PyBytes_AS_STRING(out), 1)
        return out

    def pop_into(self, out, timeout=0.0):
        """Pop into a writable buffer (e.g. a RECORD_DTYPE array) up to its size; returns the count."""
        cdef Py_buffer view
        cdef uint32_t n
        self._check_open()
        self._become_consumer()
        PyObject_GetBuffer(out, &view, PyBUF_SIMPLE | PyBUF_WRITABLE)
        try:
            limit = min(view.len // FX_RECORD_SIZE, <Py_ssize_t>self.r.capacity)
            n = fx_ring_available(&self.r, <uint32_t>limit)
            if n == 0 and limit and not _is_zero(timeout):
                self._wait_readable(_deadline(timeout))
                n = fx_ring_available(&self.r, <uint32_t>limit)
            if n:
                fx_ring_take(&self.r, view.buf, n)
            return n
        finally:
            PyBuffer_Release(&view)

    # ---- lifecycle ----------------------------------------------------------------------------
    def close(self):
        """Stop using the ring in this process; idempotent.

        The owner's close also marks the ring closed for every process (their waits return
        RingClosed).  Waits for this object's calls running without the GIL to leave first.
        """
        if self.seg is None or not self.seg.mapped():
            return
        if self.owner:
            fx_ring_mark_closed(&self.r)
        else:
            fx_ring_mark_local_closing(&self.r)
        while self.active_nogil > 0:
            with nogil:
                usleep(200)
        self.seg.close()
        if self.doorbell_auto:
            self.doorbell.close()

    def unlink(self):
        """Remove the segment's name; only the creating process may, and it may do so once closed."""
        if self.seg is None:
            return
        self.seg.unlink()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        if self.owner:
            self.seg.unlink()

    def __reduce__(self):
        # Sending a Ring to another process (e.g. multiprocessing spawn) attaches it there.
        return (Ring.attach, (self.name,))

    def __repr__(self):
        if self.seg is None:
            return "<Ring (unopened)>"
        state = " closed" if self.closed else ""
        return f"<Ring {self.seg.name} capacity={self.r.capacity}{state}>"

    def __del__(self):
        if self.seg is not None and self.seg.mapped():
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2)
