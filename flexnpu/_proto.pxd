# cython: language_level=3
"""C-level view of the submission protocol (fx_proto.h): opcodes and the completion block."""

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t

from flexnpu._ring cimport Segment, fx_doorbell, fx_record, fx_ring


cdef extern from "fx_proto.h" nogil:
    enum:
        FX_PROTO_VERSION
        FX_MAX_STREAMS
        FX_REPLY_SLOTS
        FX_MAX_EVENTS
        FX_NCONT_MASK
        FX_FLAG_REPLY
        FX_TENSORS_IN_HEAD
        FX_CONT_PAYLOAD
        FX_MAX_PAYLOAD

    enum:
        FX_OP_NOP
        FX_OP_DEFINE_STRING
        FX_OP_CREATE_DESC
        FX_OP_DESTROY_DESC
        FX_OP_CREATE_BUFFER
        FX_OP_DESTROY_BUFFER
        FX_OP_CREATE_ATTR
        FX_OP_DESTROY_ATTR
        FX_OP_SET_ATTR
        FX_OP_CREATE_STREAM
        FX_OP_DESTROY_STREAM
        FX_OP_CREATE_EVENT
        FX_OP_DESTROY_EVENT
        FX_OP_RECORD_EVENT
        FX_OP_WAIT_EVENT
        FX_OP_RESET_EVENT
        FX_OP_CLEAR_ERROR
        FX_OP_LAUNCH
        FX_OP_MEMCPY_ASYNC
        FX_OP_MEMSET_ASYNC
        FX_OP_STAGED_H2D
        FX_OP_MALLOC
        FX_OP_FREE
        FX_OP_MEM_INFO
        FX_OP_MEMCPY_H2D
        FX_OP_MEMCPY_D2H
        FX_OP_MEMCPY_D2D
        FX_OP_MEMSET
        FX_OP_MALLOC_HOST
        FX_OP_FREE_HOST
        FX_OP_ELAPSED
        FX_OP_IPC_EXPORT
        FX_OP_IPC_SET_PID
        FX_OP_IPC_IMPORT
        FX_OP_IPC_CLOSE
        FX_OP_PING
        FX_OP_MAX

    enum:
        FX_ATTR_BOOL
        FX_ATTR_INT
        FX_ATTR_FLOAT
        FX_ATTR_STRING
        FX_ATTR_LIST_INT
        FX_ATTR_LIST_FLOAT
        FX_ATTR_LIST_BOOL
        FX_ATTR_DATA_TYPE

    enum:
        FX_PHASE_UNKNOWN
        FX_PHASE_PREFILL
        FX_PHASE_DECODE
        FX_PHASE_MIXED

    ctypedef struct fx_reply:
        int64_t code
        uint64_t values[6]

    ctypedef struct fx_completion:
        int32_t daemon_pid
        fx_reply replies[1]

    uint32_t fx_ring_available_messages(const fx_ring *r, uint32_t max)
    uint32_t fx_payload_records(uint64_t n)
    void fx_pack_payload(fx_record *cont, const void *data, uint64_t n)
    void fx_unpack_payload(const fx_record *cont, uint32_t ncont, void *out)
    uint64_t fx_completion_segment_size()
    void fx_completion_format(void *base, int32_t daemon_pid)
    int fx_completion_open(void *base, uint64_t mapped, fx_completion **out)
    void fx_complete(fx_completion *c, uint32_t stream, uint64_t seq)
    void fx_fail(fx_completion *c, uint32_t stream, uint64_t seq, uint32_t code)
    void fx_event_reached(fx_completion *c, uint32_t event, uint64_t seq)
    uint64_t fx_event_ok_seq(const fx_completion *c, uint32_t event)
    void fx_reply_publish(fx_completion *c, uint32_t slot, uint64_t seq, int64_t code,
                          const uint64_t *values, int nvalues)
    void fx_completion_mark_closed(fx_completion *c)
    int fx_stream_done(const fx_completion *c, uint32_t stream, uint64_t seq)
    int fx_reply_ready(const fx_completion *c, uint32_t slot, uint64_t seq)
    int fx_wait_stream(fx_completion *c, uint32_t stream, uint64_t seq, uint64_t deadline,
                       uint64_t spin_ns)
    int fx_wait_reply(fx_completion *c, uint32_t slot, uint64_t seq, uint64_t deadline,
                      uint64_t spin_ns)
    uint64_t fx_stream_completed(const fx_completion *c, uint32_t stream)
    uint64_t fx_stream_err_seq(const fx_completion *c, uint32_t stream)
    uint32_t fx_stream_err_code(const fx_completion *c, uint32_t stream)
    int fx_completion_closed(const fx_completion *c)


cdef class Completion:
    cdef Segment seg
    cdef fx_completion *c

    cdef int _wait(self, bint reply, uint32_t index, uint64_t seq, timeout, uint64_t spin_ns) except -1
