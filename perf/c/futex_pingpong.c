/*
 * futex_pingpong.c -- the floor of a parked cross-process round trip.
 *
 * Two processes (fork) share two 32-bit words, each on its own cache line.  The parent stores
 * the next value into the child's word and wakes it (FUTEX_WAKE), then sleeps in FUTEX_WAIT on
 * its own word until the child has done the same.  Nobody spins: every hand-off is a wake of a
 * process parked in the kernel, which is what a ring's consumer pays once it has parked.
 * Shared (not FUTEX_PRIVATE) futexes through the project's helpers in flexnpu/_c/fx_atomic.h,
 * i.e. the very calls the ring's doorbell makes.
 *
 * usage: futex_pingpong ITERS REPS [CPU_PARENT CPU_CHILD]
 *   ITERS round trips per repetition, REPS timed repetitions (after one untimed warm-up
 *   repetition); optional CPUs pin the two processes with sched_setaffinity.
 * Prints one JSON line: round-trip ns per repetition, their median, min and max, and how many
 * FUTEX_WAIT calls actually slept (a wait that finds the word already changed returns at once).
 */
#define _GNU_SOURCE
#include "pingpong.h"

typedef struct shared {
    _Alignas(FX_CACHELINE) fx_au32 to_child;  /* the child waits on this word */
    _Alignas(FX_CACHELINE) fx_au32 to_parent; /* the parent waits on this word */
    _Alignas(FX_CACHELINE) fx_au64 child_waits;
    char _pad[FX_CACHELINE - sizeof(fx_au64)];
} shared;

/* Sleep until *word == want; returns how many FUTEX_WAIT calls were made. */
static uint64_t wait_for(fx_au32 *word, uint32_t want)
{
    uint64_t calls = 0;
    for (;;) {
        uint32_t cur = fx_load_acquire_u32(word);
        if (cur == want)
            return calls;
        calls++;
        fx_futex_wait(word, cur, FX_FOREVER);
    }
}

static void post(fx_au32 *word, uint32_t value)
{
    fx_store_release_u32(word, value);
    fx_futex_wake_all(word);
}

int main(int argc, char **argv)
{
    pp_args a = pp_parse("futex_pingpong", argc, argv);
    shared *sh = pp_shared(sizeof(shared));
    uint64_t total = (uint64_t)a.iters * (uint64_t)(a.reps + 1); /* + one warm-up repetition */
    pid_t pid = pp_fork(&a);
    if (pid == 0) {
        uint64_t waits = 0;
        for (uint64_t i = 1; i <= total; i++) {
            waits += wait_for(&sh->to_child, (uint32_t)i);
            post(&sh->to_parent, (uint32_t)i);
        }
        fx_store_release_u64(&sh->child_waits, waits);
        _exit(0);
    }
    double rtt[PP_MAX_REPS];
    uint64_t i = 1, parent_waits = 0;
    for (long rep = -1; rep < a.reps; rep++) {
        uint64_t t0 = fx_now_ns();
        for (long k = 0; k < a.iters; k++, i++) {
            post(&sh->to_child, (uint32_t)i);
            uint64_t w = wait_for(&sh->to_parent, (uint32_t)i);
            if (rep >= 0)
                parent_waits += w;
        }
        uint64_t t1 = fx_now_ns();
        if (rep >= 0)
            rtt[rep] = (double)(t1 - t0) / (double)a.iters;
    }
    pp_reap(&a, pid);
    char extra[160];
    snprintf(extra, sizeof(extra), ", \"parent_wait_calls_per_rtt\": %.3f, \"child_wait_calls_per_rtt\": %.3f",
             (double)parent_waits / (double)(a.iters * a.reps),
             (double)fx_load_acquire_u64(&sh->child_waits) / (double)total);
    pp_print(&a, rtt, extra);
    return 0;
}
