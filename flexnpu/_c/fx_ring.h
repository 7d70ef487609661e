/*
 * fx_ring.h -- the lock-free shared-memory ring between an application process and its daemon.
 *
 * Multi-producer (threads of ONE process), single consumer.  Fixed 64-byte records, capacity a
 * power of two.  Producers claim slots with one CAS on `tail` (a batch claims many at once),
 * copy their records in, then publish each slot by writing its sequence number, pos + 1, into
 * the record's own `seq` field (Vyukov's per-slot sequence, kept in the record's cache line so a
 * hand-off moves one line, not two).  The consumer reads slots while their seq says "published
 * for this lap", copies a batch out and releases the space with one store to `head`.  Records
 * leave in claim order, so the order each producing thread observed is kept, and every popped
 * record's seq is its position in that order + 1 (whatever the producer put there).
 *
 * Nothing here is a lock.  A process killed at any instruction leaves at worst a claimed but
 * unpublished slot: the consumer then sees that ring's records stop there (the ring belongs to
 * the dead process anyway) and never waits on it; waiting producers see the owner's `closed`
 * flag or the consumer's death and return.
 *
 * Waiting: bounded spin with a pause hint, then park on a futex "doorbell".  A waker publishes,
 * issues a seq_cst fence, and makes the wake syscall only if the doorbell counts a waiter; a
 * sleeper counts itself, fences, re-checks, and only then sleeps (an eventcount).  A doorbell can
 * be inline in the ring, or a separate segment shared by many rings so one consumer parks on all.
 *
 * Pure C: no Python.h.  Every shared field is accessed through fx_atomic.h.
 */
#ifndef FX_RING_H
#define FX_RING_H

#include <stddef.h>
#include <string.h>

#include "fx_atomic.h"

#define FX_RING_MAGIC 0x31474e5255504e46ull     /* "FNPURNG1" */
#define FX_DOORBELL_MAGIC 0x3142445055504e46ull /* "FNPUPDB1" */
#define FX_RING_VERSION 2u
#define FX_RECORD_SIZE 64u
#define FX_NAME_MAX 64 /* bytes for a segment name, NUL included */
#define FX_RING_MIN_CAPACITY 2u
#define FX_RING_MAX_CAPACITY (1u << 24)
/* Longest a parked waiter sleeps before it re-checks the closed flag and its peer's liveness. */
#define FX_PARK_SLICE_NS 20000000ull

/* Status codes: the C layer never touches Python; _ring.pyx maps these onto exceptions. */
enum {
    FX_OK = 0,
    FX_FULL = 1,
    FX_EMPTY = 2,
    FX_TIMEOUT = 3,
    FX_CLOSED = 4,
    FX_INTR = 5,      /* a signal arrived: the caller checks for Python signal handlers */
    FX_PEER_DEAD = 6, /* the process that would unblock us has died */
    FX_EBADMAGIC = 10,
    FX_EBADVERSION = 11,
    FX_EBADSIZE = 12,
    FX_EBADCAPACITY = 13,
    FX_ETRUNCATED = 14,
};

/* One record: the unit of the submission protocol (DESIGN.md, "Protocol"). */
typedef struct fx_record {
    uint16_t opcode;
    uint8_t flags;
    uint8_t phase;
    uint32_t stream;  /* virtual stream handle */
    uint64_t seq;     /* per-client sequence number */
    uint64_t args[6]; /* opcode-specific; larger data goes to the payload arena */
} fx_record;
_Static_assert(sizeof(fx_record) == FX_RECORD_SIZE, "records are 64 bytes");
_Static_assert(offsetof(fx_record, stream) == 4, "record layout");
_Static_assert(offsetof(fx_record, seq) == 8, "record layout");
_Static_assert(offsetof(fx_record, args) == 16, "record layout");

/* An eventcount on its own cache line. */
typedef struct fx_doorbell {
    fx_au32 epoch;   /* the futex word: every ring bumps it */
    fx_au32 waiters; /* processes parked on it, or about to park */
    char _pad[FX_CACHELINE - 8];
} fx_doorbell;
_Static_assert(sizeof(fx_doorbell) == FX_CACHELINE, "a doorbell fills one line");

/* A doorbell of its own (a segment many rings can ring). */
typedef struct fx_doorbell_seg {
    _Alignas(FX_CACHELINE) fx_au64 magic;
    uint32_t version;
    int32_t creator_pid;
    _Alignas(FX_CACHELINE) fx_doorbell bell;
} fx_doorbell_seg;

typedef struct fx_ring_hdr {
    /* line 0: identity; immutable once `magic` is published (release) by the creator */
    _Alignas(FX_CACHELINE) fx_au64 magic;
    uint32_t version;
    uint32_t record_size;
    uint64_t capacity;
    uint64_t segment_size;
    uint64_t _reserved2;
    uint64_t slots_offset;
    int32_t creator_pid;
    uint32_t _reserved0;
    /* line 1: the producers' claim counter (CAS by any producing thread) */
    _Alignas(FX_CACHELINE) fx_au64 tail;
    /* line 2: the consumer's position (written by the consumer only) */
    _Alignas(FX_CACHELINE) fx_au64 head;
    /* line 3: lifecycle, written rarely */
    _Alignas(FX_CACHELINE) fx_au32 closed; /* set once, by the owner */
    fx_ai32 consumer_pid;                 /* the process whose pops free space */
    fx_au32 doorbell_bound;               /* 1 once doorbell_name is valid */
    uint32_t _reserved1;
    char doorbell_name[FX_NAME_MAX];
    /* line 4: the consumer parks here unless a shared doorbell is bound */
    _Alignas(FX_CACHELINE) fx_doorbell data_bell;
    /* line 5: producers park here while the ring is full */
    _Alignas(FX_CACHELINE) fx_doorbell space_bell;
} fx_ring_hdr;
_Static_assert(sizeof(fx_ring_hdr) == 6 * FX_CACHELINE, "ring header is six lines");

/* Process-local view of a mapped ring (never in shared memory). */
typedef struct fx_ring {
    fx_ring_hdr *hdr;
    unsigned char *slots;
    uint64_t capacity;
    uint64_t mask;
    fx_doorbell *data_bell; /* &hdr->data_bell, or a bound shared doorbell */
    fx_au64 cached_head;    /* producers' copy of hdr->head: a CAS-free fast path */
    fx_au32 local_closing;  /* set when this process closes its view: its waiters give up */
} fx_ring;

static inline uint64_t fx_align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

static inline int fx_is_pow2(uint64_t v) { return v && !(v & (v - 1)); }

/* Bytes of shared memory a ring of this capacity needs. */
static inline uint64_t fx_ring_segment_size(uint64_t capacity)
{
    return fx_align_up(sizeof(fx_ring_hdr) + capacity * FX_RECORD_SIZE, 4096);
}

static inline fx_record *fx_ring_slot(const fx_ring *r, uint64_t pos)
{
    return (fx_record *)(r->slots + (pos & r->mask) * FX_RECORD_SIZE);
}

/* Has the record for position pos been published (this lap)? */
static inline int fx_ring_published(const fx_ring *r, uint64_t pos)
{
    return fx_load_acquire_field_u64(&fx_ring_slot(r, pos)->seq) == pos + 1;
}

/* The creator formats a fresh (zero-filled) segment, then publishes `magic` last. */
static inline void fx_ring_format(void *base, uint64_t capacity, uint64_t segment_size,
                                  int32_t creator_pid)
{
    fx_ring_hdr *h = (fx_ring_hdr *)base;
    h->version = FX_RING_VERSION;
    h->record_size = FX_RECORD_SIZE;
    h->capacity = capacity;
    h->segment_size = segment_size;
    h->slots_offset = sizeof(fx_ring_hdr);
    h->creator_pid = creator_pid;
    fx_store_relaxed_u64(&h->tail, 0);
    fx_store_relaxed_u64(&h->head, 0);
    fx_store_release_i32(&h->consumer_pid, creator_pid);
    fx_record *slots = (fx_record *)((char *)base + h->slots_offset);
    for (uint64_t i = 0; i < capacity; i++) /* touches every page now, not on the hot path */
        fx_store_relaxed_field_u64(&slots[i].seq, 0); /* slot i free for position i: seq != i + 1 */
    fx_store_release_u64(&h->magic, FX_RING_MAGIC);
}

/* Validate a mapped segment and fill the local view.  `mapped` is the segment's real size. */
static inline int fx_ring_open(fx_ring *r, void *base, uint64_t mapped)
{
    memset(r, 0, sizeof(*r));
    if (mapped < sizeof(fx_ring_hdr))
        return FX_ETRUNCATED;
    fx_ring_hdr *h = (fx_ring_hdr *)base;
    if (fx_load_acquire_u64(&h->magic) != FX_RING_MAGIC)
        return FX_EBADMAGIC;
    if (h->version != FX_RING_VERSION)
        return FX_EBADVERSION;
    if (h->record_size != FX_RECORD_SIZE)
        return FX_EBADSIZE;
    if (!fx_is_pow2(h->capacity) || h->capacity < FX_RING_MIN_CAPACITY ||
        h->capacity > FX_RING_MAX_CAPACITY)
        return FX_EBADCAPACITY;
    if (h->segment_size != fx_ring_segment_size(h->capacity) || mapped < h->segment_size ||
        h->slots_offset != sizeof(fx_ring_hdr))
        return FX_ETRUNCATED;
    r->hdr = h;
    r->slots = (unsigned char *)base + h->slots_offset;
    r->capacity = h->capacity;
    r->mask = h->capacity - 1;
    r->data_bell = &h->data_bell;
    fx_store_release_u64(&r->cached_head, fx_load_acquire_u64(&h->head));
    return FX_OK;
}

/* ---- doorbells ----------------------------------------------------------------------------- */

static inline void fx_doorbell_ring(fx_doorbell *b)
{
    atomic_fetch_add_explicit(&b->epoch, 1, memory_order_seq_cst);
    fx_futex_wake_all(&b->epoch);
}

/* Called by a waker after it published: the fence orders the publication before the check. */
static inline void fx_doorbell_notify(fx_doorbell *b)
{
    fx_fence_seq_cst();
    if (fx_load_relaxed_u32(&b->waiters))
        fx_doorbell_ring(b);
}

/* A sleeper announces itself, then must re-check its condition before fx_doorbell_park. */
static inline uint32_t fx_doorbell_prepare(fx_doorbell *b)
{
    fx_fetch_add_u32(&b->waiters, 1);
    fx_fence_seq_cst();
    return fx_load_relaxed_u32(&b->epoch);
}

static inline void fx_doorbell_cancel(fx_doorbell *b) { fx_fetch_sub_u32(&b->waiters, 1); }

/* Sleep until rung (epoch moves) or the deadline; always un-counts itself. */
static inline int fx_doorbell_park(fx_doorbell *b, uint32_t epoch, uint64_t deadline_ns)
{
    int rc = fx_futex_wait(&b->epoch, epoch, deadline_ns);
    fx_doorbell_cancel(b);
    return rc;
}

/* ---- state --------------------------------------------------------------------------------- */

static inline int fx_ring_closed(const fx_ring *r)
{
    return fx_load_acquire_u32(&r->hdr->closed) || fx_load_relaxed_u32(&r->local_closing);
}

/* Is the next record the consumer will read published? */
static inline int fx_ring_readable(const fx_ring *r)
{
    return fx_ring_published(r, fx_load_relaxed_u64(&r->hdr->head));
}

/* Records claimed and not yet consumed (published or about to be). */
static inline uint64_t fx_ring_size(const fx_ring *r)
{
    uint64_t head = fx_load_acquire_u64(&r->hdr->head);
    uint64_t tail = fx_load_acquire_u64(&r->hdr->tail);
    return tail >= head ? tail - head : 0;
}

static inline int fx_ring_has_space(const fx_ring *r, uint32_t need)
{
    uint64_t tail = fx_load_relaxed_u64(&r->hdr->tail);
    return tail - fx_load_acquire_u64(&r->hdr->head) + need <= r->capacity;
}

/* ---- produce ------------------------------------------------------------------------------- */

/* Claim up to `want` consecutive slots (exactly `want` or none if `exact`); returns how many
 * (0 if full), first position in *pos. */
static inline uint32_t fx_ring_claim_n(fx_ring *r, uint32_t want, int exact, uint64_t *pos)
{
    uint64_t cap = r->capacity;
    uint64_t p = fx_load_relaxed_u64(&r->hdr->tail);
    for (;;) {
        uint64_t head = fx_load_acquire_u64(&r->cached_head);
        uint64_t used = p - head;
        if (used > cap || cap - used < want) {
            /* the cached head is stale (or full): read the consumer's line once */
            head = fx_load_acquire_u64(&r->hdr->head);
            fx_store_release_u64(&r->cached_head, head);
            used = p - head;
            if (used >= cap || (exact && cap - used < want)) {
                /* Our view of tail may be stale too: only report full once it is current. */
                uint64_t t = fx_load_relaxed_u64(&r->hdr->tail);
                if (t == p)
                    return 0;
                p = t;
                continue;
            }
        }
        uint64_t n = cap - used < want ? cap - used : want;
        if (fx_cas_u64(&r->hdr->tail, &p, p + n)) {
            *pos = p;
            return (uint32_t)n;
        }
        /* another producer moved tail: p now holds its value, retry */
    }
}

/* Copy records into claimed slots, all but their seq field (which publishes them). */
static inline void fx_ring_fill(fx_ring *r, uint64_t pos, const void *src, uint32_t n)
{
    const unsigned char *in = (const unsigned char *)src;
    for (uint32_t i = 0; i < n; i++, in += FX_RECORD_SIZE) {
        unsigned char *slot = (unsigned char *)fx_ring_slot(r, pos + i);
        memcpy(slot, in, offsetof(fx_record, seq));
        memcpy(slot + offsetof(fx_record, args), in + offsetof(fx_record, args),
               FX_RECORD_SIZE - offsetof(fx_record, args));
    }
}

/* Make claimed, filled slots visible, then ring the consumer's doorbell if it sleeps. */
static inline void fx_ring_publish(fx_ring *r, uint64_t pos, uint32_t n)
{
    fx_fence_release();
    for (uint32_t i = 0; i < n; i++)
        fx_store_relaxed_field_u64(&fx_ring_slot(r, pos + i)->seq, pos + i + 1);
    fx_doorbell_notify(r->data_bell);
}

static inline uint32_t fx_ring_claim(fx_ring *r, uint32_t want, uint64_t *pos)
{
    return fx_ring_claim_n(r, want, 0, pos);
}

/* Push up to n records without waiting; returns how many were pushed. */
static inline uint32_t fx_ring_try_push(fx_ring *r, const void *src, uint32_t n)
{
    uint64_t pos;
    uint32_t got = fx_ring_claim(r, n, &pos);
    if (got) {
        fx_ring_fill(r, pos, src, got);
        fx_ring_publish(r, pos, got);
    }
    return got;
}

/* ---- consume (one consumer) ---------------------------------------------------------------- */

/* Count published records from head, up to max. */
static inline uint32_t fx_ring_available(const fx_ring *r, uint32_t max)
{
    uint64_t head = fx_load_relaxed_u64(&r->hdr->head);
    uint32_t n = 0;
    while (n < max && fx_ring_published(r, head + n))
        n++;
    return n;
}

/* Copy out n records known to be available (from fx_ring_available) and release their slots. */
static inline void fx_ring_take(fx_ring *r, void *dst, uint32_t n)
{
    uint64_t head = fx_load_relaxed_u64(&r->hdr->head);
    uint64_t idx = head & r->mask;
    uint64_t first = r->capacity - idx < n ? r->capacity - idx : n;
    memcpy(dst, r->slots + idx * FX_RECORD_SIZE, first * FX_RECORD_SIZE);
    if (n > first)
        memcpy((unsigned char *)dst + first * FX_RECORD_SIZE, r->slots,
               (n - first) * FX_RECORD_SIZE);
    fx_store_release_u64(&r->hdr->head, head + n);
    fx_doorbell_notify(&r->hdr->space_bell);
}

/* Pop up to max records without waiting; returns how many. */
static inline uint32_t fx_ring_try_pop(fx_ring *r, void *dst, uint32_t max)
{
    uint32_t n = fx_ring_available(r, max);
    if (n)
        fx_ring_take(r, dst, n);
    return n;
}

/* ---- waiting ------------------------------------------------------------------------------- */

/* Spin until cond holds or spin_ns passes.  The first turns are plain re-reads (a hand-off
 * usually lands within them, and `pause` costs tens of cycles on recent cores); then the pause
 * hint; the clock is read only every 64 turns, first after 64, so a short wait never pays for it. */
#define FX_SPIN_UNTIL(cond, spin_ns)                                                           \
    do {                                                                                       \
        if ((spin_ns) > 0) {                                                                   \
            uint64_t fx_spin_end_ = 0;                                                         \
            for (unsigned fx_i_ = 1; !(cond); fx_i_++) {                                       \
                if (fx_i_ > 16)                                                                \
                    fx_cpu_relax();                                                            \
                if ((fx_i_ & 63) == 0) {                                                       \
                    uint64_t fx_now_ = fx_now_ns();                                            \
                    if (!fx_spin_end_)                                                         \
                        fx_spin_end_ = fx_now_ + (spin_ns);                                    \
                    else if (fx_now_ >= fx_spin_end_)                                          \
                        break;                                                                 \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
    } while (0)

/* Wait until `need` slots are free.  FX_OK, FX_TIMEOUT, FX_CLOSED, FX_PEER_DEAD or FX_INTR. */
static inline int fx_ring_wait_space(fx_ring *r, uint32_t need, uint64_t deadline, uint64_t spin_ns)
{
    FX_SPIN_UNTIL(fx_ring_has_space(r, need) || fx_ring_closed(r), spin_ns);
    for (;;) {
        if (fx_ring_closed(r))
            return FX_CLOSED;
        if (fx_ring_has_space(r, need))
            return FX_OK;
        uint64_t now = fx_now_ns();
        if (now >= deadline)
            return FX_TIMEOUT;
        if (!fx_pid_alive(fx_load_acquire_i32(&r->hdr->consumer_pid)))
            return FX_PEER_DEAD;
        fx_doorbell *b = &r->hdr->space_bell;
        uint32_t epoch = fx_doorbell_prepare(b);
        if (fx_ring_has_space(r, need) || fx_ring_closed(r)) {
            fx_doorbell_cancel(b);
            continue;
        }
        uint64_t until = now + FX_PARK_SLICE_NS < deadline ? now + FX_PARK_SLICE_NS : deadline;
        if (fx_doorbell_park(b, epoch, until) == EINTR)
            return FX_INTR;
    }
}

/* Spin (without parking) until the next record is published or spin_ns passes: 1 if readable. */
static inline int fx_ring_spin_data(fx_ring *r, uint64_t spin_ns)
{
    FX_SPIN_UNTIL(fx_ring_readable(r) || fx_ring_closed(r), spin_ns);
    return fx_ring_readable(r);
}

/* Wait until the next record is published.  FX_OK, FX_TIMEOUT, FX_CLOSED or FX_INTR. */
static inline int fx_ring_wait_data(fx_ring *r, uint64_t deadline, uint64_t spin_ns)
{
    FX_SPIN_UNTIL(fx_ring_readable(r) || fx_ring_closed(r), spin_ns);
    for (;;) {
        if (fx_ring_readable(r))
            return FX_OK;
        if (fx_ring_closed(r))
            return FX_CLOSED;
        uint64_t now = fx_now_ns();
        if (now >= deadline)
            return FX_TIMEOUT;
        fx_doorbell *b = r->data_bell;
        uint32_t epoch = fx_doorbell_prepare(b);
        if (fx_ring_readable(r) || fx_ring_closed(r)) {
            fx_doorbell_cancel(b);
            continue;
        }
        uint64_t until = now + FX_PARK_SLICE_NS < deadline ? now + FX_PARK_SLICE_NS : deadline;
        if (fx_doorbell_park(b, epoch, until) == EINTR)
            return FX_INTR;
    }
}

static inline int fx_any_readable(fx_ring *const *rings, int n)
{
    for (int i = 0; i < n; i++)
        if (fx_ring_readable(rings[i]))
            return 1;
    return 0;
}

/* Wait until any of n rings (all bound to doorbell b) has a record.  FX_OK, FX_TIMEOUT, FX_INTR. */
static inline int fx_doorbell_wait_rings(fx_doorbell *b, fx_ring *const *rings, int n,
                                         uint64_t deadline, uint64_t spin_ns)
{
    FX_SPIN_UNTIL(fx_any_readable(rings, n), spin_ns);
    for (;;) {
        if (fx_any_readable(rings, n))
            return FX_OK;
        uint64_t now = fx_now_ns();
        if (now >= deadline)
            return FX_TIMEOUT;
        uint32_t epoch = fx_doorbell_prepare(b);
        if (fx_any_readable(rings, n)) {
            fx_doorbell_cancel(b);
            return FX_OK;
        }
        uint64_t until = now + FX_PARK_SLICE_NS < deadline ? now + FX_PARK_SLICE_NS : deadline;
        if (fx_doorbell_park(b, epoch, until) == EINTR)
            return FX_INTR;
    }
}

/* Push all n records, waiting for space as needed.  Returns the number pushed; *status is FX_OK
 * when all went, else why it stopped (FX_TIMEOUT, FX_CLOSED, FX_PEER_DEAD, FX_INTR). */
static inline uint32_t fx_ring_push_wait(fx_ring *r, const void *src, uint32_t n, uint64_t deadline,
                                         uint64_t spin_ns, int *status)
{
    uint32_t done = 0;
    *status = FX_OK;
    while (done < n) {
        if (fx_ring_closed(r)) {
            *status = FX_CLOSED;
            break;
        }
        done += fx_ring_try_push(r, (const unsigned char *)src + (uint64_t)done * FX_RECORD_SIZE,
                                 n - done);
        if (done == n)
            break;
        int rc = fx_ring_wait_space(r, 1, deadline, spin_ns);
        if (rc != FX_OK) {
            *status = rc;
            break;
        }
    }
    return done;
}

/* Push one message of n records (n <= capacity) all together, waiting for room: FX_OK or why
 * not (nothing was pushed then).  The head record's seq (its claim position + 1, as for every
 * record) is returned in *seq_out if not NULL: sequence numbers follow ring order, so messages
 * of concurrent producers on one stream complete in seq order. */
static inline int fx_ring_push_message(fx_ring *r, const void *src, uint32_t n, uint64_t deadline,
                                       uint64_t spin_ns, uint64_t *seq_out)
{
    if (n == 0 || n > r->capacity)
        return FX_FULL;
    for (;;) {
        if (fx_ring_closed(r))
            return FX_CLOSED;
        uint64_t pos;
        if (fx_ring_claim_n(r, n, 1, &pos)) {
            fx_ring_fill(r, pos, src, n);
            if (seq_out)
                *seq_out = pos + 1;
            fx_ring_publish(r, pos, n);
            return FX_OK;
        }
        int rc = fx_ring_wait_space(r, n, deadline, spin_ns);
        if (rc != FX_OK)
            return rc;
    }
}

/* Pop up to max records, waiting for the first one until the deadline. */
static inline uint32_t fx_ring_pop_wait(fx_ring *r, void *dst, uint32_t max, uint64_t deadline,
                                        uint64_t spin_ns, int *status)
{
    *status = FX_OK;
    uint32_t n = fx_ring_try_pop(r, dst, max);
    if (n || max == 0)
        return n;
    int rc = fx_ring_wait_data(r, deadline, spin_ns);
    if (rc != FX_OK) {
        *status = rc;
        return 0;
    }
    return fx_ring_try_pop(r, dst, max);
}

/* The owner records which shared doorbell producers must ring (before it hands the ring out). */
static inline void fx_ring_publish_doorbell_name(fx_ring *r, const char *name)
{
    strncpy(r->hdr->doorbell_name, name, FX_NAME_MAX - 1);
    r->hdr->doorbell_name[FX_NAME_MAX - 1] = 0;
    fx_store_release_u32(&r->hdr->doorbell_bound, 1);
}

/* Copies the bound doorbell's name into out (FX_NAME_MAX bytes); 0 if none is bound. */
static inline int fx_ring_doorbell_name(const fx_ring *r, char *out)
{
    if (!fx_load_acquire_u32(&r->hdr->doorbell_bound))
        return 0;
    memcpy(out, r->hdr->doorbell_name, FX_NAME_MAX);
    out[FX_NAME_MAX - 1] = 0;
    return 1;
}

/* A consumer in another process than the creator says so: producers then watch its liveness. */
static inline void fx_ring_set_consumer(fx_ring *r, int32_t pid)
{
    fx_store_release_i32(&r->hdr->consumer_pid, pid);
}

/* The owner marks the ring closed and wakes every waiter on both sides. */
static inline void fx_ring_mark_closed(fx_ring *r)
{
    fx_store_release_u32(&r->hdr->closed, 1);
    fx_doorbell_ring(&r->hdr->space_bell);
    fx_doorbell_ring(r->data_bell);
}

/* This process stops using its view: its own waiters return FX_CLOSED. */
static inline void fx_ring_mark_local_closing(fx_ring *r)
{
    fx_store_release_u32(&r->local_closing, 1);
    fx_doorbell_ring(&r->hdr->space_bell);
    fx_doorbell_ring(r->data_bell);
}

static inline void fx_doorbell_format(void *base, int32_t creator_pid)
{
    fx_doorbell_seg *s = (fx_doorbell_seg *)base;
    s->version = FX_RING_VERSION;
    s->creator_pid = creator_pid;
    fx_store_release_u64(&s->magic, FX_DOORBELL_MAGIC);
}

static inline int fx_doorbell_open(void *base, uint64_t mapped, fx_doorbell **out)
{
    if (mapped < sizeof(fx_doorbell_seg))
        return FX_ETRUNCATED;
    fx_doorbell_seg *s = (fx_doorbell_seg *)base;
    if (fx_load_acquire_u64(&s->magic) != FX_DOORBELL_MAGIC)
        return FX_EBADMAGIC;
    if (s->version != FX_RING_VERSION)
        return FX_EBADVERSION;
    *out = &s->bell;
    return FX_OK;
}

#endif /* FX_RING_H */
