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
    _Alignas(FX_CACHELINE) fx_au32 to_child;  /* the child waits on this word */
    _Alignas(FX_CACHELINE) fx_au32 to_parent; /* the parent waits on this word */
    _Alignas(FX_CACHELINE) fx_au64 child_waits;
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
        fprintf(stderr, "futex_pingpong: bad %s: %s\n", what, s);
        exit(2);
    }
    return v;
}

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
    if (argc != 3 && argc != 5) {
        fprintf(stderr, "usage: %s ITERS REPS [CPU_PARENT CPU_CHILD]\n", argv[0]);
        return 2;
    }
    long iters = parse_long(argv[1], "ITERS");
    long reps = parse_long(argv[2], "REPS");
    int cpu_parent = argc == 5 ? (int)parse_long(argv[3], "CPU_PARENT") : -1;
    int cpu_child = argc == 5 ? (int)parse_long(argv[4], "CPU_CHILD") : -1;
    if (iters < 1 || reps < 1 || reps > MAX_REPS) {
        fprintf(stderr, "futex_pingpong: need ITERS >= 1 and 1 <= REPS <= %d\n", MAX_REPS);
        return 2;
    }

    shared *sh = mmap(NULL, sizeof(shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    fx_store_release_u32(&sh->to_child, 0);
    fx_store_release_u32(&sh->to_parent, 0);
    fx_store_relaxed_u64(&sh->child_waits, 0);
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
        uint64_t waits = 0;
        for (uint64_t i = 1; i <= total; i++) {
            waits += wait_for(&sh->to_child, (uint32_t)i);
            post(&sh->to_parent, (uint32_t)i);
        }
        fx_store_release_u64(&sh->child_waits, waits);
        _exit(0);
    }
    int pinned = pin(cpu_parent) == 0 && cpu_parent >= 0;

    double rtt[MAX_REPS];
    uint64_t i = 1, parent_waits = 0;
    for (long rep = -1; rep < reps; rep++) {
        uint64_t t0 = fx_now_ns();
        for (long k = 0; k < iters; k++, i++) {
            post(&sh->to_child, (uint32_t)i);
            uint64_t w = wait_for(&sh->to_parent, (uint32_t)i);
            if (rep >= 0)
                parent_waits += w;
        }
        uint64_t t1 = fx_now_ns();
        if (rep >= 0)
            rtt[rep] = (double)(t1 - t0) / (double)iters;
    }
    int status = 0;
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "futex_pingpong: child failed (status %d)\n", status);
        return 1;
    }

    double sorted[MAX_REPS];
    for (long r = 0; r < reps; r++)
        sorted[r] = rtt[r];
    qsort(sorted, (size_t)reps, sizeof(double), cmp_double);
    double median = reps % 2 ? sorted[reps / 2] : (sorted[reps / 2 - 1] + sorted[reps / 2]) / 2;

    printf("{\"bench\": \"futex_pingpong\", \"iters\": %ld, \"reps\": %ld, \"pinned\": %s, "
           "\"cpus\": [%d, %d], \"rtt_ns\": %.1f, \"rtt_ns_min\": %.1f, \"rtt_ns_max\": %.1f, "
           "\"parent_wait_calls_per_rtt\": %.3f, \"child_wait_calls_per_rtt\": %.3f, "
           "\"rtt_ns_reps\": [",
           iters, reps, pinned ? "true" : "false", cpu_parent, cpu_child, median, sorted[0],
           sorted[reps - 1], (double)parent_waits / (double)(iters * reps),
           (double)fx_load_acquire_u64(&sh->child_waits) / (double)total);
    for (long r = 0; r < reps; r++)
        printf("%s%.1f", r ? ", " : "", rtt[r]);
    printf("]}\n");
    return 0;
}
