/*
 * cacheline_pingpong.c -- the physical floor of a cross-process round trip.
 *
 * Two processes (fork) share one counter on its own cache line (MAP_SHARED | MAP_ANONYMOUS).
 * The parent writes an odd value and busy-polls (with the pause hint) until the child answers
 * with the next even value; the child does the mirror image.  One round trip is therefore two
 * transfers of one line between cores and nothing else: no syscall, no fence beyond
 * acquire/release.  Uses the project's own primitives (flexnpu/_c/fx_atomic.h).
 *
 * usage: cacheline_pingpong ITERS REPS [CPU_PARENT CPU_CHILD]
 *   ITERS round trips per repetition, REPS timed repetitions (after one untimed warm-up
 *   repetition); optional CPUs pin the two processes with sched_setaffinity.
 * Prints one JSON line: round-trip ns per repetition, their median, min and max.
 */
#define _GNU_SOURCE
#include "pingpong.h"

typedef struct shared {
    _Alignas(FX_CACHELINE) fx_au64 counter;
    char _pad[FX_CACHELINE - sizeof(fx_au64)];
} shared;

int main(int argc, char **argv)
{
    pp_args a = pp_parse("cacheline_pingpong", argc, argv);
    shared *sh = pp_shared(sizeof(shared));
    uint64_t total = (uint64_t)a.iters * (uint64_t)(a.reps + 1); /* + one warm-up repetition */
    pid_t pid = pp_fork(&a);
    if (pid == 0) {
        for (uint64_t i = 0; i < total; i++) {
            uint64_t want = 2 * i + 1;
            while (fx_load_acquire_u64(&sh->counter) != want)
                fx_cpu_relax();
            fx_store_release_u64(&sh->counter, want + 1);
        }
        _exit(0);
    }
    double rtt[PP_MAX_REPS];
    uint64_t i = 0;
    for (long rep = -1; rep < a.reps; rep++) {
        uint64_t t0 = fx_now_ns();
        for (long k = 0; k < a.iters; k++, i++) {
            uint64_t want = 2 * i + 2;
            fx_store_release_u64(&sh->counter, want - 1);
            while (fx_load_acquire_u64(&sh->counter) != want)
                fx_cpu_relax();
        }
        uint64_t t1 = fx_now_ns();
        if (rep >= 0)
            rtt[rep] = (double)(t1 - t0) / (double)a.iters;
    }
    pp_reap(&a, pid);
    pp_print(&a, rtt, "");
    return 0;
}
