/*
 * fx_proto.h -- the submission protocol between an application process and its device daemon.
 *
 * Every intercepted ACL call that the daemon must see becomes one message in the client's ring:
 * a head record (struct fx_record: opcode, flags, phase, stream, seq, args[6]) followed by
 * `flags & FX_NCONT_MASK` continuation records that carry variable-length data (strings, dims,
 * attribute values, tensor lists).  A message's records are claimed together, so messages from
 * different threads never interleave.  The ring owns every record's seq field (it publishes the
 * record), so a continuation record carries 56 payload bytes: its bytes 0..8 and 16..64
 * (fx_pack_payload / fx_unpack_payload).
 *
 * Results come back through the client's completion block (daemon writes, client reads):
 *  - completed[s]: the seq of the last command finished on virtual stream s (in order per stream);
 *  - err_seq[s] / err_code[s]: the first failure on stream s, sticky until the client reports it
 *    at a synchronize and sends FX_OP_CLEAR_ERROR;
 *  - replies[k]: the answer to a synchronous call that named reply slot k in args[5];
 *  - a doorbell the client parks on while it waits.
 *
 * Each shared field has one writer (the daemon) except the doorbell's waiter count.
 */
#ifndef FX_PROTO_H
#define FX_PROTO_H

#include "fx_ring.h"

#define FX_COMPLETION_MAGIC 0x3150434e55504e46ull /* "FNPUNCP1" */
#define FX_PROTO_VERSION 1u
#define FX_MAX_STREAMS 1024u /* virtual streams per client; index 0 is the default stream */
#define FX_REPLY_SLOTS 64u
#define FX_MAX_EVENTS 8192u  /* virtual events per client (ids 1..FX_MAX_EVENTS-1) */
#define FX_NCONT_MASK 0x7Fu  /* flags: continuation record count (at most 127 * 64 bytes) */
#define FX_FLAG_REPLY 0x80u  /* flags: args[5] names a reply slot */
#define FX_TENSORS_IN_HEAD 4u
#define FX_CONT_PAYLOAD 56u  /* payload bytes in one continuation record */
#define FX_MAX_PAYLOAD (FX_NCONT_MASK * FX_CONT_PAYLOAD)

/* Opcodes.  "stream" = the record's stream field is a virtual stream; "reply" = synchronous. */
enum {
    FX_OP_NOP = 0,
    /* host-side objects (mirrored so that launches can name them by id) */
    FX_OP_DEFINE_STRING = 1,  /* args: id, length; cont: bytes */
    FX_OP_CREATE_DESC = 2,    /* args: id, dtype, format, ndims; cont: int64 dims */
    FX_OP_DESTROY_DESC = 3,   /* args: id */
    FX_OP_CREATE_BUFFER = 4,  /* args: id, addr, size */
    FX_OP_DESTROY_BUFFER = 5, /* args: id */
    FX_OP_CREATE_ATTR = 6,    /* args: id */
    FX_OP_DESTROY_ATTR = 7,   /* args: id */
    FX_OP_SET_ATTR = 8,       /* args: id, name string id, kind, count; cont: values */
    /* streams and events */
    FX_OP_CREATE_STREAM = 10,  /* stream; args: priority, flags */
    FX_OP_DESTROY_STREAM = 11, /* stream */
    FX_OP_CREATE_EVENT = 12,   /* args: id, flags */
    FX_OP_DESTROY_EVENT = 13,  /* args: id */
    FX_OP_RECORD_EVENT = 14,   /* stream; args: event id */
    FX_OP_WAIT_EVENT = 15,     /* stream; args: event id */
    FX_OP_RESET_EVENT = 16,    /* stream; args: event id */
    FX_OP_CLEAR_ERROR = 17,    /* stream: the client has reported the stream's sticky error */
    /* stream work */
    FX_OP_LAUNCH = 20,       /* stream; args[0]: op string id | attr id << 32,
                                args[1]: n_in | n_out << 16 | submit time (ns, low 32 bits) << 32,
                                args[2..5] and cont: (desc id | buffer id << 32) per tensor */
    FX_OP_MEMCPY_ASYNC = 21, /* stream; args: dst, src, nbytes, kind (both ends device or shared host) */
    FX_OP_MEMSET_ASYNC = 22, /* stream; args: dst, value, nbytes */
    FX_OP_STAGED_H2D = 23,   /* stream, reply; args: dst, staging offset, nbytes */
    /* synchronous calls (reply) */
    FX_OP_MALLOC = 30,       /* args: size, policy, align32 -> values: addr, usable size */
    FX_OP_FREE = 31,         /* args: addr */
    FX_OP_MEM_INFO = 32,     /* args: attr -> values: free, total */
    FX_OP_MEMCPY_H2D = 33,   /* args: dst, staging offset, nbytes */
    FX_OP_MEMCPY_D2H = 34,   /* args: src, staging offset, nbytes */
    FX_OP_MEMCPY_D2D = 35,   /* args: dst, src, nbytes */
    FX_OP_MEMSET = 36,       /* args: dst, value, nbytes */
    FX_OP_MALLOC_HOST = 37,  /* args: size, staging offset -> values: segment id; its name in staging */
    FX_OP_FREE_HOST = 38,    /* args: client address */
    FX_OP_ELAPSED = 39,      /* args: start event, end event -> values[0]: float32 ms bits */
    FX_OP_IPC_EXPORT = 40,   /* args: addr, size, flags -> values: key (48 bytes) */
    FX_OP_IPC_SET_PID = 41,  /* args: addr, pid */
    FX_OP_IPC_IMPORT = 42,   /* args: flags; cont: key -> values: addr */
    FX_OP_IPC_CLOSE = 43,    /* cont: key */
    FX_OP_PING = 44,         /* -> nothing: a round trip */
    FX_OP_MAX = 64,
};

/* SET_ATTR kinds */
enum { FX_ATTR_BOOL = 1, FX_ATTR_INT = 2, FX_ATTR_FLOAT = 3, FX_ATTR_STRING = 4,
       FX_ATTR_LIST_INT = 5, FX_ATTR_LIST_FLOAT = 6, FX_ATTR_LIST_BOOL = 7, FX_ATTR_DATA_TYPE = 8 };

/* Phases (record.phase) */
enum { FX_PHASE_UNKNOWN = 0, FX_PHASE_PREFILL = 1, FX_PHASE_DECODE = 2, FX_PHASE_MIXED = 3 };

typedef struct fx_reply {
    fx_au64 seq;    /* the request's seq; published last (release) */
    int64_t code;   /* ACL error code */
    uint64_t values[6];
} fx_reply;
_Static_assert(sizeof(fx_reply) == 64, "a reply is one 64-byte slot");

typedef struct fx_completion {
    /* line 0: identity, immutable once magic is published */
    _Alignas(FX_CACHELINE) fx_au64 magic;
    uint32_t version;
    uint32_t max_streams;
    uint32_t reply_slots;
    int32_t daemon_pid;
    uint64_t segment_size;
    /* line 1: lifecycle */
    _Alignas(FX_CACHELINE) fx_au32 closed; /* the daemon detached this client or is stopping */
    /* line 2: client threads park here; the daemon rings after completions and replies */
    _Alignas(FX_CACHELINE) fx_doorbell bell;
    _Alignas(FX_CACHELINE) fx_au64 completed[FX_MAX_STREAMS];
    /* written by the CLIENT: the seq a thread parked on stream s waits for.  The daemon rings the
     * bell only when a completion reaches it, not on every command (one wake, not one per op).
     * Two client threads waiting on one stream: the later target wins and the other re-checks at
     * its next park slice (20 ms) at worst. */
    _Alignas(FX_CACHELINE) fx_au64 wake_at[FX_MAX_STREAMS];
    _Alignas(FX_CACHELINE) fx_au64 err_seq[FX_MAX_STREAMS];
    _Alignas(FX_CACHELINE) fx_au32 err_code[FX_MAX_STREAMS];
    /* per event: the seq of its latest record that ran successfully (a record skipped behind a
     * sticky error never lands here, so the event does not read as complete) */
    _Alignas(FX_CACHELINE) fx_au64 event_ok[FX_MAX_EVENTS];
    _Alignas(FX_CACHELINE) fx_reply replies[FX_REPLY_SLOTS];
} fx_completion;

static inline uint64_t fx_completion_segment_size(void)
{
    return fx_align_up(sizeof(fx_completion), 4096);
}

static inline void fx_completion_format(void *base, int32_t daemon_pid)
{
    fx_completion *c = (fx_completion *)base;
    c->version = FX_PROTO_VERSION;
    c->max_streams = FX_MAX_STREAMS;
    c->reply_slots = FX_REPLY_SLOTS;
    c->daemon_pid = daemon_pid;
    c->segment_size = fx_completion_segment_size();
    fx_store_release_u64(&c->magic, FX_COMPLETION_MAGIC);
}

static inline int fx_completion_open(void *base, uint64_t mapped, fx_completion **out)
{
    if (mapped < sizeof(fx_completion))
        return FX_ETRUNCATED;
    fx_completion *c = (fx_completion *)base;
    if (fx_load_acquire_u64(&c->magic) != FX_COMPLETION_MAGIC)
        return FX_EBADMAGIC;
    if (c->version != FX_PROTO_VERSION || c->max_streams != FX_MAX_STREAMS ||
        c->reply_slots != FX_REPLY_SLOTS)
        return FX_EBADVERSION;
    *out = c;
    return FX_OK;
}

/* Continuation records needed for n payload bytes. */
static inline uint32_t fx_payload_records(uint64_t n)
{
    return (uint32_t)((n + FX_CONT_PAYLOAD - 1) / FX_CONT_PAYLOAD);
}

/* Spread n bytes over continuation records (zeroed by the caller), around their seq fields. */
static inline void fx_pack_payload(fx_record *cont, const void *data, uint64_t n)
{
    const unsigned char *in = (const unsigned char *)data;
    for (; n; cont++) {
        unsigned char *rec = (unsigned char *)cont;
        uint64_t a = n < 8 ? n : 8;
        memcpy(rec, in, a);
        uint64_t b = n - a < 48 ? n - a : 48;
        memcpy(rec + offsetof(fx_record, args), in + a, b);
        in += a + b;
        n -= a + b;
    }
}

/* Gather the payload of ncont continuation records into out (ncont * FX_CONT_PAYLOAD bytes). */
static inline void fx_unpack_payload(const fx_record *cont, uint32_t ncont, void *out)
{
    unsigned char *o = (unsigned char *)out;
    for (uint32_t i = 0; i < ncont; i++, o += FX_CONT_PAYLOAD) {
        const unsigned char *rec = (const unsigned char *)&cont[i];
        memcpy(o, rec, 8);
        memcpy(o + 8, rec + offsetof(fx_record, args), 48);
    }
}

/* Published records from the consumer's position that form whole messages, at most max.  A
 * message's records are claimed together but published one by one, so the tail of what is
 * visible may be a message still being published: it stays in the ring for the next pop. */
static inline uint32_t fx_ring_available_messages(const fx_ring *r, uint32_t max)
{
    uint32_t visible = fx_ring_available(r, max);
    uint64_t head = fx_load_relaxed_u64(&r->hdr->head);
    uint32_t whole = 0;
    while (whole < visible) {
        const fx_record *rec = fx_ring_slot(r, head + whole);
        uint32_t len = 1u + (rec->flags & FX_NCONT_MASK);
        if (whole + len > visible)
            break;
        whole += len;
    }
    return whole;
}

/* ---- daemon side (single writer of everything but the bell's waiter count) ------------------- */

/* Command `seq` on `stream` finished (successfully, or skipped behind a sticky error). */
static inline void fx_complete(fx_completion *c, uint32_t stream, uint64_t seq)
{
    fx_store_release_u64(&c->completed[stream], seq);
    fx_fence_seq_cst(); /* pairs with the waiter's fence in fx_doorbell_prepare */
    if (fx_load_relaxed_u32(&c->bell.waiters) && seq >= fx_load_relaxed_u64(&c->wake_at[stream]))
        fx_doorbell_ring(&c->bell);
}

/* An event record ran successfully (before its fx_complete). */
static inline void fx_event_reached(fx_completion *c, uint32_t event, uint64_t seq)
{
    fx_store_release_u64(&c->event_ok[event], seq);
}

static inline uint64_t fx_event_ok_seq(const fx_completion *c, uint32_t event)
{
    return fx_load_acquire_u64(&c->event_ok[event]);
}

/* Command `seq` failed: the stream's error becomes sticky (the daemon calls this only for the
 * first failure after the client last cleared the stream), and the command counts as finished. */
static inline void fx_fail(fx_completion *c, uint32_t stream, uint64_t seq, uint32_t code)
{
    atomic_store_explicit(&c->err_code[stream], code, memory_order_relaxed);
    fx_store_release_u64(&c->err_seq[stream], seq);
    fx_complete(c, stream, seq);
}

static inline void fx_reply_publish(fx_completion *c, uint32_t slot, uint64_t seq, int64_t code,
                                    const uint64_t *values, int nvalues)
{
    fx_reply *r = &c->replies[slot];
    r->code = code;
    for (int i = 0; i < nvalues && i < 6; i++)
        r->values[i] = values[i];
    fx_store_release_u64(&r->seq, seq);
    fx_doorbell_notify(&c->bell);
}

static inline void fx_completion_mark_closed(fx_completion *c)
{
    fx_store_release_u32(&c->closed, 1);
    fx_doorbell_ring(&c->bell);
}

/* ---- client side ---------------------------------------------------------------------------- */

static inline int fx_stream_done(const fx_completion *c, uint32_t stream, uint64_t seq)
{
    return fx_load_acquire_u64(&c->completed[stream]) >= seq;
}

static inline uint64_t fx_stream_completed(const fx_completion *c, uint32_t stream)
{
    return fx_load_acquire_u64(&c->completed[stream]);
}

static inline uint64_t fx_stream_err_seq(const fx_completion *c, uint32_t stream)
{
    return fx_load_acquire_u64(&c->err_seq[stream]);
}

static inline uint32_t fx_stream_err_code(const fx_completion *c, uint32_t stream)
{
    return atomic_load_explicit((fx_au32 *)&c->err_code[stream], memory_order_relaxed);
}

static inline int fx_completion_closed(const fx_completion *c)
{
    return (int)fx_load_acquire_u32(&c->closed);
}

static inline int fx_reply_ready(const fx_completion *c, uint32_t slot, uint64_t seq)
{
    return fx_load_acquire_u64(&c->replies[slot].seq) == seq;
}

/* Wait until cond(c, a, b) holds.  FX_OK, FX_TIMEOUT, FX_CLOSED (the daemon detached us),
 * FX_PEER_DEAD (the daemon died) or FX_INTR. */
#define FX_COMPLETION_WAIT(c, cond, deadline, spin_ns, before_park)                             \
    do {                                                                                        \
        FX_SPIN_UNTIL((cond) || fx_load_acquire_u32(&(c)->closed), spin_ns);                    \
        for (;;) {                                                                              \
            if (cond)                                                                           \
                return FX_OK;                                                                   \
            if (fx_load_acquire_u32(&(c)->closed))                                              \
                return FX_CLOSED;                                                               \
            uint64_t now_ = fx_now_ns();                                                        \
            if (now_ >= (deadline))                                                             \
                return FX_TIMEOUT;                                                              \
            if (!fx_pid_alive((c)->daemon_pid))                                                 \
                return FX_PEER_DEAD;                                                            \
            before_park;                                                                        \
            uint32_t epoch_ = fx_doorbell_prepare(&(c)->bell);                                  \
            if ((cond) || fx_load_acquire_u32(&(c)->closed)) {                                  \
                fx_doorbell_cancel(&(c)->bell);                                                 \
                continue;                                                                       \
            }                                                                                   \
            uint64_t until_ = now_ + FX_PARK_SLICE_NS < (deadline) ? now_ + FX_PARK_SLICE_NS    \
                                                                   : (deadline);                \
            if (fx_doorbell_park(&(c)->bell, epoch_, until_) == EINTR)                          \
                return FX_INTR;                                                                 \
        }                                                                                       \
    } while (0)

static inline int fx_wait_stream(fx_completion *c, uint32_t stream, uint64_t seq, uint64_t deadline,
                                 uint64_t spin_ns)
{
    FX_COMPLETION_WAIT(c, fx_stream_done(c, stream, seq), deadline, spin_ns,
                       fx_store_relaxed_u64(&c->wake_at[stream], seq));
}

static inline int fx_wait_reply(fx_completion *c, uint32_t slot, uint64_t seq, uint64_t deadline,
                                uint64_t spin_ns)
{
    FX_COMPLETION_WAIT(c, fx_reply_ready(c, slot, seq), deadline, spin_ns, (void)0);
}

#endif /* FX_PROTO_H */
