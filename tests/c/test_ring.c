/* Compiles fx_ring.h on its own with -Wall -Wextra -Werror -pedantic and runs a few checks that
 * need no Python: single-thread semantics and a two-thread stress. */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "fx_ring.h"

#define CAP 64u
#define PER_THREAD 200000u
#define THREADS 3u

static fx_ring ring;

#define MSG_RECORDS 3u
#define MSGS_PER_THREAD 50000u

/* Whole messages from several threads: never interleaved, head seqs follow ring order. */
static void *message_producer(void *arg)
{
    uint32_t id = (uint32_t)(uintptr_t)arg;
    fx_record msg[MSG_RECORDS];
    for (uint64_t i = 0; i < MSGS_PER_THREAD; i++) {
        memset(msg, 0, sizeof(msg));
        msg[0].flags = MSG_RECORDS - 1;
        for (uint32_t k = 0; k < MSG_RECORDS; k++) {
            msg[k].stream = id;
            msg[k].args[0] = i;
        }
        uint64_t seq = 0;
        int rc = fx_ring_push_message(&ring, msg, MSG_RECORDS, FX_FOREVER, 10000, &seq);
        assert(rc == FX_OK && seq > 0);
        (void)rc;
    }
    return NULL;
}

static int check_messages(void)
{
    pthread_t t[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, message_producer, (void *)i);
    uint64_t next[THREADS] = {0}, last_seq = 0, taken = 0;
    uint64_t position = fx_load_relaxed_u64(&ring.hdr->head); /* ring position of the next record */
    uint32_t in_msg = 0, owner = 0;
    fx_record out[CAP];
    while (taken < (uint64_t)THREADS * MSGS_PER_THREAD * MSG_RECORDS) {
        int status;
        uint32_t n = fx_ring_pop_wait(&ring, out, CAP, fx_deadline_after(5000000000ull), 10000, &status);
        if (status != FX_OK)
            return 20;
        for (uint32_t k = 0; k < n; k++, position++) {
            if (in_msg == 0) { /* a head: seq is its position + 1, rising */
                if (out[k].seq != position + 1 || out[k].seq <= last_seq)
                    return 21;
                last_seq = out[k].seq;
                owner = out[k].stream;
                if (owner >= THREADS || out[k].args[0] != next[owner]++)
                    return 22;
            } else if (out[k].stream != owner) { /* another thread's record inside a message */
                return 23;
            }
            in_msg = (in_msg + 1) % MSG_RECORDS;
        }
        taken += n;
    }
    for (unsigned i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    return 0;
}

static void *producer(void *arg)
{
    uint32_t id = (uint32_t)(uintptr_t)arg;
    for (uint64_t i = 0; i < PER_THREAD; i++) {
        fx_record rec = {0};
        rec.stream = id;
        rec.args[0] = i;
        int status;
        uint32_t n = fx_ring_push_wait(&ring, &rec, 1, FX_FOREVER, 10000, &status);
        assert(n == 1 && status == FX_OK);
        (void)n;
    }
    return NULL;
}

int main(void)
{
    uint64_t size = fx_ring_segment_size(CAP);
    void *base = aligned_alloc(4096, size);
    memset(base, 0, size);
    fx_ring_format(base, CAP, size, (int32_t)getpid());
    if (fx_ring_open(&ring, base, size) != FX_OK)
        return 1;

    /* empty, fill to full, drain in order */
    fx_record out[CAP];
    if (fx_ring_try_pop(&ring, out, CAP) != 0)
        return 2;
    for (uint32_t i = 0; i < CAP; i++) {
        fx_record rec = {0};
        rec.args[0] = i;
        rec.seq = 999; /* the ring replaces it with the record's position + 1 */
        if (fx_ring_try_push(&ring, &rec, 1) != 1)
            return 3;
    }
    fx_record extra = {0};
    if (fx_ring_try_push(&ring, &extra, 1) != 0)
        return 4;
    if (fx_ring_try_pop(&ring, out, CAP) != CAP)
        return 5;
    for (uint32_t i = 0; i < CAP; i++)
        if (out[i].args[0] != i || out[i].seq != i + 1)
            return 6;

    /* threads: per-producer order, nothing lost */
    pthread_t t[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, producer, (void *)i);
    uint64_t next[THREADS] = {0};
    uint64_t total = 0;
    while (total < (uint64_t)THREADS * PER_THREAD) {
        int status;
        uint32_t n = fx_ring_pop_wait(&ring, out, CAP, fx_deadline_after(5000000000ull), 10000,
                                      &status);
        if (status != FX_OK)
            return 7;
        for (uint32_t k = 0; k < n; k++) {
            if (out[k].stream >= THREADS || out[k].args[0] != next[out[k].stream])
                return 8;
            next[out[k].stream]++;
        }
        total += n;
    }
    for (unsigned i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    int rc = check_messages();
    if (rc)
        return rc;
    free(base);
    printf("fx_ring C test: ok (%llu records)\n", (unsigned long long)total);
    return 0;
}
