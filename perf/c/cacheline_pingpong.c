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
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "fx_atomic.h"

#define MAX_REPS 1000

typedef struct shared {
    _Alignas(FX_CACHELINE) fx_au64 counter;
    char _pad[FX_CACHELINE - sizeof(fx_au64)];
} shared;

static int pin(int cpu)
{
    if (cpu < 0)
        return 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static long parse_long(const char *s, const char *what)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end != 0) {
        fprintf(stderr, "cacheline_pingpong: bad %s: %s\n", what, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 5) {
        fprintf(stderr, "usage: %s ITERS REPS [CPU_PARENT CPU_CHILD]\n", argv[0]);
        return 2;
    }
    long iters = parse_long(argv[1], "ITERS");
    long reps = parse_long(argv[2], "REPS");
    int cpu_parent = argc == 5 ? (int)parse_long(argv[3], "CPU_PARENT") : -1;
    int cpu_child = argc == 5 ? (int)parse_long(argv[4], "CPU_CHILD") : -1;
    if (iters < 1 || reps < 1 || reps > MAX_REPS) {
        fprintf(stderr, "cacheline_pingpong: need ITERS >= 1 and 1 <= REPS <= %d\n", MAX_REPS);
        return 2;
    }

    shared *sh = mmap(NULL, sizeof(shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    fx_store_relaxed_u64(&sh->counter, 0);
    uint64_t total = (uint64_t)iters * (uint64_t)(reps + 1); /* + one warm-up repetition */

    /* Die with whoever runs us (the benchmark), and the child with us: nobody spins on orphaned. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent || pin(cpu_child) != 0)
            _exit(3);
        for (uint64_t i = 0; i < total; i++) {
            uint64_t want = 2 * i + 1;
            while (fx_load_acquire_u64(&sh->counter) != want)
                fx_cpu_relax();
            fx_store_release_u64(&sh->counter, want + 1);
        }
        _exit(0);
    }
    int pinned = pin(cpu_parent) == 0 && cpu_parent >= 0;

    double rtt[MAX_REPS];
    uint64_t i = 0;
    for (long rep = -1; rep < reps; rep++) {
        uint64_t t0 = fx_now_ns();
        for (long k = 0; k < iters; k++, i++) {
            uint64_t want = 2 * i + 2;
            fx_store_release_u64(&sh->counter, want - 1);
            while (fx_load_acquire_u64(&sh->counter) != want)
                fx_cpu_relax();
        }
        uint64_t t1 = fx_now_ns();
        if (rep >= 0)
            rtt[rep] = (double)(t1 - t0) / (double)iters;
    }
    int status = 0;
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "cacheline_pingpong: child failed (status %d)\n", status);
        return 1;
    }

    double sorted[MAX_REPS];
    for (long r = 0; r < reps; r++)
        sorted[r] = rtt[r];
    qsort(sorted, (size_t)reps, sizeof(double), cmp_double);
    double median = reps % 2 ? sorted[reps / 2] : (sorted[reps / 2 - 1] + sorted[reps / 2]) / 2;

    printf("{\"bench\": \"cacheline_pingpong\", \"iters\": %ld, \"reps\": %ld, \"pinned\": %s, "
           "\"cpus\": [%d, %d], \"rtt_ns\": %.1f, \"rtt_ns_min\": %.1f, \"rtt_ns_max\": %.1f, "
           "\"rtt_ns_reps\": [",
           iters, reps, pinned ? "true" : "false", cpu_parent, cpu_child, median, sorted[0],
           sorted[reps - 1]);
    for (long r = 0; r < reps; r++)
        printf("%s%.1f", r ? ", " : "", rtt[r]);
    printf("]}\n");
    return 0;
}
