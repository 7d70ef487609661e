/*
 * pingpong.h -- what the two floor programs (cacheline_pingpong.c, futex_pingpong.c) share:
 * arguments, pinning, the forked partner that dies with its parent, the median, the JSON line.
 * The round trip itself (the part each program measures) stays in each program.
 */
#ifndef PINGPONG_H
#define PINGPONG_H

#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fx_atomic.h"

#define PP_MAX_REPS 1000

typedef struct pp_args {
    const char *prog;
    long iters; /* round trips per repetition */
    long reps;  /* timed repetitions, after one untimed warm-up */
    int cpu_parent, cpu_child; /* -1: not pinned */
    int pinned;
} pp_args;

static long pp_parse_long(const char *prog, const char *s, const char *what)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end != 0) {
        fprintf(stderr, "%s: bad %s: %s\n", prog, what, s);
        exit(2);
    }
    return v;
}

/* usage: PROG ITERS REPS [CPU_PARENT CPU_CHILD]; exits 2 on bad arguments. */
static pp_args pp_parse(const char *prog, int argc, char **argv)
{
    if (argc != 3 && argc != 5) {
        fprintf(stderr, "usage: %s ITERS REPS [CPU_PARENT CPU_CHILD]\n", argv[0]);
        exit(2);
    }
    pp_args a = {prog, pp_parse_long(prog, argv[1], "ITERS"), pp_parse_long(prog, argv[2], "REPS"),
                 argc == 5 ? (int)pp_parse_long(prog, argv[3], "CPU_PARENT") : -1,
                 argc == 5 ? (int)pp_parse_long(prog, argv[4], "CPU_CHILD") : -1, 0};
    if (a.iters < 1 || a.reps < 1 || a.reps > PP_MAX_REPS) {
        fprintf(stderr, "%s: need ITERS >= 1 and 1 <= REPS <= %d\n", prog, PP_MAX_REPS);
        exit(2);
    }
    return a;
}

static int pp_pin(int cpu)
{
    if (cpu < 0)
        return 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set);
}

/* A zeroed MAP_SHARED region both processes see; exits 1 if it cannot be had. */
static void *pp_shared(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    return p;
}

/* Fork the partner: 0 in the child (pinned; it dies with us), its pid in the parent (pinned).
 * We die with whoever runs us (the benchmark): nobody spins on, orphaned. */
static pid_t pp_fork(pp_args *a)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent || pp_pin(a->cpu_child) != 0)
            _exit(3);
        return 0;
    }
    a->pinned = pp_pin(a->cpu_parent) == 0 && a->cpu_parent >= 0;
    return pid;
}

/* Reap the partner; exits 1 if it did not finish cleanly. */
static void pp_reap(const pp_args *a, pid_t pid)
{
    int status = 0;
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "%s: child failed (status %d)\n", a->prog, status);
        exit(1);
    }
}

static int pp_cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* Print the JSON line: per-repetition round trips, their median, min and max, then `extra`
 * (more "key": value pairs, each preceded by ", "; "" for none). */
static void pp_print(const pp_args *a, const double *rtt, const char *extra)
{
    double sorted[PP_MAX_REPS];
    long n = a->reps;
    for (long r = 0; r < n; r++)
        sorted[r] = rtt[r];
    qsort(sorted, (size_t)n, sizeof(double), pp_cmp_double);
    double median = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    printf("{\"bench\": \"%s\", \"iters\": %ld, \"reps\": %ld, \"pinned\": %s, \"cpus\": [%d, %d], "
           "\"rtt_ns\": %.1f, \"rtt_ns_min\": %.1f, \"rtt_ns_max\": %.1f%s, \"rtt_ns_reps\": [",
           a->prog, a->iters, n, a->pinned ? "true" : "false", a->cpu_parent, a->cpu_child, median,
           sorted[0], sorted[n - 1], extra);
    for (long r = 0; r < n; r++)
        printf("%s%.1f", r ? ", " : "", rtt[r]);
    printf("]}\n");
}

#endif /* PINGPONG_H */
