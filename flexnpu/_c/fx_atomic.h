/*
 * fx_atomic.h -- the one place where FlexNPU states memory ordering.
 *
 * Every field that two processes share goes through these helpers: C11 atomics with explicit
 * acquire/release (LDAR/STLR on aarch64), never `volatile`.  Cython never sees `_Atomic`; it calls
 * the static inline functions below through the C headers that use them (fx_ring.h, ...).
 *
 * Also here: the spin-loop pause hint, CLOCK_MONOTONIC time, process liveness, and the shared
 * (not FUTEX_PRIVATE) futex calls that let one process park on a word in shared memory.
 */
#ifndef FX_ATOMIC_H
#define FX_ATOMIC_H

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

/* A process killed at any instruction must never leave a lock behind: every atomic in shared
 * memory must be a plain lock-free hardware atomic, never a libatomic fallback with a hidden lock. */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free for shared memory");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free for shared memory");
_Static_assert(sizeof(_Atomic uint64_t) == 8, "atomic u64 must have the size of u64");
_Static_assert(sizeof(_Atomic uint32_t) == 4, "atomic u32 must have the size of u32 (futex word)");

/* Kunpeng 920 (the ARM hosts of Ascend cards) has 128-byte cache lines; x86 has 64.  Padding to
 * 128 everywhere keeps independent writers off each other's lines on both. */
#define FX_CACHELINE 128

typedef _Atomic uint64_t fx_au64;
typedef _Atomic uint32_t fx_au32;
typedef _Atomic int32_t fx_ai32;

/* ---- loads and stores ------------------------------------------------------------------- */
static inline uint64_t fx_load_acquire_u64(const fx_au64 *p)
{ return atomic_load_explicit((fx_au64 *)p, memory_order_acquire); }
static inline uint64_t fx_load_relaxed_u64(const fx_au64 *p)
{ return atomic_load_explicit((fx_au64 *)p, memory_order_relaxed); }
static inline void fx_store_release_u64(fx_au64 *p, uint64_t v)
{ atomic_store_explicit(p, v, memory_order_release); }
static inline void fx_store_relaxed_u64(fx_au64 *p, uint64_t v)
{ atomic_store_explicit(p, v, memory_order_relaxed); }
static inline int fx_cas_u64(fx_au64 *p, uint64_t *expected, uint64_t desired)
{
    return atomic_compare_exchange_weak_explicit(p, expected, desired, memory_order_acq_rel,
                                                 memory_order_relaxed);
}
static inline uint64_t fx_fetch_add_u64(fx_au64 *p, uint64_t v)
{ return atomic_fetch_add_explicit(p, v, memory_order_acq_rel); }

static inline uint32_t fx_load_acquire_u32(const fx_au32 *p)
{ return atomic_load_explicit((fx_au32 *)p, memory_order_acquire); }
static inline uint32_t fx_load_relaxed_u32(const fx_au32 *p)
{ return atomic_load_explicit((fx_au32 *)p, memory_order_relaxed); }
static inline void fx_store_release_u32(fx_au32 *p, uint32_t v)
{ atomic_store_explicit(p, v, memory_order_release); }
static inline uint32_t fx_fetch_add_u32(fx_au32 *p, uint32_t v)
{ return atomic_fetch_add_explicit(p, v, memory_order_seq_cst); }
static inline uint32_t fx_fetch_sub_u32(fx_au32 *p, uint32_t v)
{ return atomic_fetch_sub_explicit(p, v, memory_order_seq_cst); }

static inline int32_t fx_load_acquire_i32(const fx_ai32 *p)
{ return atomic_load_explicit((fx_ai32 *)p, memory_order_acquire); }
static inline void fx_store_release_i32(fx_ai32 *p, int32_t v)
{ atomic_store_explicit(p, v, memory_order_release); }
static inline int fx_cas_i32(fx_ai32 *p, int32_t *expected, int32_t desired)
{
    return atomic_compare_exchange_strong_explicit(p, expected, desired, memory_order_acq_rel,
                                                   memory_order_acquire);
}

/* A naturally aligned plain uint64_t that is also copied as data: the seq field of a ring record
 * (one struct shared with numpy and memcpy, so not _Atomic).  GCC/Clang __atomic builtins give it
 * the same acquire/release semantics as the helpers above. */
static inline uint64_t fx_load_acquire_field_u64(const uint64_t *p)
{ return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void fx_store_relaxed_field_u64(uint64_t *p, uint64_t v)
{ __atomic_store_n(p, v, __ATOMIC_RELAXED); }

/* Full StoreLoad barrier.  Needed between "publish" and "is anybody asleep?" (and between
 * "I am going to sleep" and "is there data?"): a release store alone lets the load pass it and a
 * wake-up is lost (musl on powerpc, Miri's futex model). */
static inline void fx_fence_seq_cst(void) { atomic_thread_fence(memory_order_seq_cst); }
static inline void fx_fence_release(void) { atomic_thread_fence(memory_order_release); }
static inline void fx_fence_acquire(void) { atomic_thread_fence(memory_order_acquire); }

/* ---- spinning ---------------------------------------------------------------------------- */
/* `pause` on x86; `isb` on aarch64 (YIELD is a no-op on most ARM cores; Rust and Go use ISB). */
static inline void fx_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("isb" ::: "memory");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

/* ---- time -------------------------------------------------------------------------------- */
static inline uint64_t fx_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A deadline of FX_FOREVER never expires. */
#define FX_FOREVER UINT64_MAX

static inline uint64_t fx_deadline_after(uint64_t timeout_ns)
{
    if (timeout_ns == FX_FOREVER)
        return FX_FOREVER;
    uint64_t now = fx_now_ns();
    return (UINT64_MAX - now < timeout_ns) ? FX_FOREVER : now + timeout_ns;
}

/* ---- process liveness -------------------------------------------------------------------- */
/* 1 if a process with this pid exists and has not exited (EPERM: exists, another user's).  A
 * zombie (exited, not yet reaped by its parent) counts as dead: it will never drain a ring. */
static inline int fx_pid_alive(int32_t pid)
{
    if (pid <= 0)
        return 0;
    if (kill((pid_t)pid, 0) != 0 && errno != EPERM)
        return 0;
#ifdef __linux__
    char path[32], buf[256];
    int len = 0;
    for (int32_t v = pid, div = 1000000000; div > 0; div /= 10)  /* itoa without stdio */
        if (v / div || len || div == 1)
            path[6 + len++] = (char)('0' + (v / div) % 10);
    memcpy(path, "/proc/", 6);
    memcpy(path + 6 + len, "/stat", 6);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno != ENOENT;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 1;
    buf[n] = 0;
    /* "pid (comm) S ...": the state follows the last ')' (comm may contain ')') */
    char *state = NULL;
    for (ssize_t i = 0; i < n; i++)
        if (buf[i] == ')')
            state = &buf[i];
    if (state && state + 2 < buf + n && (state[2] == 'Z' || state[2] == 'X'))
        return 0;
#endif
    return 1;
}

/* ---- futex on shared memory -------------------------------------------------------------- */
/* Sleep while *word == expected, until woken or the absolute CLOCK_MONOTONIC deadline.
 * Returns 0 (woken, or the word changed: re-check), ETIMEDOUT, or EINTR.  Shared futexes
 * (no FUTEX_PRIVATE_FLAG) so that a wake from another process reaches us through the mapping. */
static inline int fx_futex_wait(fx_au32 *word, uint32_t expected, uint64_t deadline_ns)
{
#ifdef __linux__
    struct timespec ts, *tsp = NULL;
    if (deadline_ns != FX_FOREVER) {
        ts.tv_sec = (time_t)(deadline_ns / 1000000000ull);
        ts.tv_nsec = (long)(deadline_ns % 1000000000ull);
        tsp = &ts;
    }
    /* FUTEX_WAIT_BITSET takes an absolute deadline on CLOCK_MONOTONIC: no drift over retries. */
    long rc = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_BITSET, expected, tsp, NULL,
                      FUTEX_BITSET_MATCH_ANY);
    if (rc == 0)
        return 0;
    if (errno == EAGAIN)
        return 0;
    return errno;
#else
    (void)word; (void)expected; (void)deadline_ns;
    return ENOSYS;
#endif
}

static inline void fx_futex_wake_all(fx_au32 *word)
{
#ifdef __linux__
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
#else
    (void)word;
#endif
}

#endif /* FX_ATOMIC_H */
