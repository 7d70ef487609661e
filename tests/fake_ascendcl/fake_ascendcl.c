/* fake_ascendcl.c: a stand-in libascendcl.so for the tests of daemon/backends/ascend.py.
 *
 * It defines exactly the AscendCL symbols the ascend backend binds, with the public signatures
 * (hicann/runtime acl_rt.h, acl_base_rt.h; hicann/ge acl_op.h, acl_base_mdl.h), on host memory:
 * "device" memory is malloc'd and accounted as aclrtMalloc documents it, a stream is a FIFO run by
 * its own thread, an event counts its records, and aclopExecuteV2 knows three operators:
 *
 *   Add           float32 x1 + x2 -> y; an optional third input must be passed absent
 *                 (ACL_DT_UNDEFINED desc with no dims, data buffer (NULL, 0))
 *   FakeSleep     holds its stream for attribute "us" microseconds
 *   FakeAttrDump  writes its attributes into its float32 output: per attribute, kind, count, values
 *
 * Any other op type is accepted at launch and fails when its task runs, so the error surfaces at
 * the next synchronization of the stream (ACL_ERROR_OP_NOT_FOUND), as an asynchronous task fault
 * does on the chip; a stream carries on after a failed task (ACL_CONTINUE_ON_FAILURE, the default).
 *
 * It is stricter than the runtime where that proves the caller right: every handle has a magic
 * tag (an event passed where a stream belongs is ACL_ERROR_RT_INVALID_HANDLE, not a crash), a copy
 * must match its kind and stay inside one allocation, runtime calls need a current context on the
 * calling thread, and an event cannot be destroyed while a queued task still uses it.
 * fakeAclLiveObjects() lets the tests check that everything created was destroyed.
 *
 * Build: gcc -std=c11 -Wall -Wextra -Werror -shared -fPIC -pthread -o libascendcl.so fake_ascendcl.c
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int aclError;
typedef void *aclrtStream;
typedef void *aclrtEvent;
typedef void *aclrtContext;

#define ACL_SUCCESS 0
#define ACL_ERROR_INVALID_PARAM 100000
#define ACL_ERROR_UNINITIALIZE 100001
#define ACL_ERROR_REPEAT_INITIALIZE 100002
#define ACL_ERROR_OP_NOT_FOUND 100024
#define ACL_ERROR_UNSUPPORTED_DATA_TYPE 100026
#define ACL_ERROR_RT_PARAM_INVALID 107000
#define ACL_ERROR_RT_INVALID_DEVICEID 107001
#define ACL_ERROR_RT_CONTEXT_NULL 107002
#define ACL_ERROR_RT_INVALID_HANDLE 107017
#define ACL_ERROR_RT_MEMORY_ALLOCATION 207001
#define ACL_ERROR_RT_STREAM_SYNC_TIMEOUT 507046

#define ACL_DT_UNDEFINED (-1)
#define ACL_FLOAT 0
#define ACL_FORMAT_UNDEFINED (-1)
#define ACL_HBM_MEM 1
#define ACL_MEMCPY_HOST_TO_DEVICE 1
#define ACL_MEMCPY_DEVICE_TO_HOST 2
#define ACL_MEMCPY_DEVICE_TO_DEVICE 3
#define ACL_EVENT_RECORDED_STATUS_NOT_READY 0
#define ACL_EVENT_RECORDED_STATUS_COMPLETE 1
#define ACL_EVENT_KNOWN_FLAGS 0x7Bu /* SYNC, CAPTURE_STREAM_PROGRESS, TIME_LINE, DEVICE_USE_ONLY, EXTERNAL, IPC */

#define N_DEVICES 2
#define DEVICE_BYTES ((size_t)256 << 20)
#define MAX_DIMS 16
#define MAX_ATTRS 16
#define MAX_ATTR_VALUES 16

enum magic {
    CONTEXT_MAGIC = 0x43545854,
    STREAM_MAGIC = 0x5354524d,
    EVENT_MAGIC = 0x45564e54,
    DESC_MAGIC = 0x44455343,
    BUFFER_MAGIC = 0x42554646,
    ATTR_MAGIC = 0x41545452,
};

/* ---- state: one lock and one condition for everything (a test double, not a fast one) ------- */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed; /* broadcast whenever a task finishes or is queued */
static int initialized;
static long live_streams, live_events, live_descs, live_buffers, live_attrs, live_allocs;

struct context {
    uint32_t magic;
    int device;
};
static struct context contexts[N_DEVICES];
static _Thread_local struct context *current;
static _Thread_local char recent_error[256];

__attribute__((constructor)) static void setup(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&changed, &attr);
    pthread_condattr_destroy(&attr);
}

static aclError fail(aclError code, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(recent_error, sizeof recent_error, fmt, args);
    va_end(args);
    return code;
}

static aclError need_context(void)
{
    if (!initialized)
        return fail(ACL_ERROR_UNINITIALIZE, "aclInit has not been called");
    if (!current)
        return fail(ACL_ERROR_RT_CONTEXT_NULL, "no current context on this thread");
    return ACL_SUCCESS;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- init, device, context --------------------------------------------------------------- */

aclError aclInit(const char *configPath)
{
    (void)configPath;
    if (initialized)
        return fail(ACL_ERROR_REPEAT_INITIALIZE, "aclInit called twice");
    initialized = 1;
    return ACL_SUCCESS;
}

const char *aclGetRecentErrMsg(void)
{
    return recent_error[0] ? recent_error : NULL;
}

aclError aclrtSetDevice(int32_t deviceId)
{
    if (!initialized)
        return fail(ACL_ERROR_UNINITIALIZE, "aclInit has not been called");
    if (deviceId < 0 || deviceId >= N_DEVICES)
        return fail(ACL_ERROR_RT_INVALID_DEVICEID, "no device %d", deviceId);
    contexts[deviceId].magic = CONTEXT_MAGIC;
    contexts[deviceId].device = deviceId;
    current = &contexts[deviceId];
    return ACL_SUCCESS;
}

aclError aclrtResetDevice(int32_t deviceId)
{
    if (deviceId < 0 || deviceId >= N_DEVICES)
        return fail(ACL_ERROR_RT_INVALID_DEVICEID, "no device %d", deviceId);
    if (current == &contexts[deviceId])
        current = NULL;
    return ACL_SUCCESS;
}

aclError aclrtGetCurrentContext(aclrtContext *context)
{
    aclError rc = need_context();
    if (rc)
        return rc;
    if (!context)
        return fail(ACL_ERROR_INVALID_PARAM, "context is NULL");
    *context = current;
    return ACL_SUCCESS;
}

aclError aclrtSetCurrentContext(aclrtContext context)
{
    struct context *c = context;
    if (!c || c->magic != CONTEXT_MAGIC)
        return fail(ACL_ERROR_RT_INVALID_HANDLE, "not a context");
    current = c;
    return ACL_SUCCESS;
}

const char *aclrtGetSocName(void)
{
    return "FakeAscend910B";
}

/* ---- memory ------------------------------------------------------------------------------ */

struct alloc {
    struct alloc *next;
    char *base;
    size_t size; /* what aclrtMalloc documents it gives: counted against DEVICE_BYTES */
};
static struct alloc *allocs;
static size_t used_bytes;

/* The allocation holding [p, p + n), or NULL (lock held). */
static struct alloc *find_alloc(const void *p, size_t n)
{
    const char *c = p;
    for (struct alloc *a = allocs; a; a = a->next)
        if (c >= a->base && c < a->base + a->size)
            return n <= (size_t)(a->base + a->size - c) ? a : NULL;
    return NULL;
}

static aclError malloc_device(void **devPtr, size_t size, int policy, size_t usable)
{
    aclError rc = need_context();
    if (rc)
        return rc;
    if (!devPtr || size == 0 || (policy & 0xFF) > 7)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtMalloc(%p, %zu, %d)", (void *)devPtr, size, policy);
    struct alloc *a = calloc(1, sizeof *a);
    void *base = NULL;
    pthread_mutex_lock(&lock);
    if (used_bytes + usable > DEVICE_BYTES || !a || posix_memalign(&base, 64, usable)) {
        pthread_mutex_unlock(&lock);
        free(a);
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "cannot allocate %zu bytes", size);
    }
    a->base = base;
    a->size = usable;
    a->next = allocs;
    allocs = a;
    used_bytes += usable;
    live_allocs++;
    pthread_mutex_unlock(&lock);
    *devPtr = base;
    return ACL_SUCCESS;
}

aclError aclrtMalloc(void **devPtr, size_t size, int policy)
{
    return malloc_device(devPtr, size, policy, (size + 31) / 32 * 32 + 32);
}

aclError aclrtMallocAlign32(void **devPtr, size_t size, int policy)
{
    return malloc_device(devPtr, size, policy, (size + 31) / 32 * 32);
}

aclError aclrtFree(void *devPtr)
{
    aclError rc = need_context();
    if (rc)
        return rc;
    pthread_mutex_lock(&lock);
    for (struct alloc **p = &allocs; *p; p = &(*p)->next) {
        struct alloc *a = *p;
        if (a->base == devPtr) {
            *p = a->next;
            used_bytes -= a->size;
            live_allocs--;
            pthread_mutex_unlock(&lock);
            free(a->base);
            free(a);
            return ACL_SUCCESS;
        }
    }
    pthread_mutex_unlock(&lock);
    return fail(ACL_ERROR_INVALID_PARAM, "%p was not allocated", devPtr);
}

aclError aclrtGetMemInfo(int attr, size_t *freeBytes, size_t *totalBytes)
{
    aclError rc = need_context();
    if (rc)
        return rc;
    if (!freeBytes || !totalBytes)
        return fail(ACL_ERROR_INVALID_PARAM, "NULL out-parameter");
    pthread_mutex_lock(&lock);
    *totalBytes = attr == ACL_HBM_MEM ? DEVICE_BYTES : 0; /* this card has HBM only */
    *freeBytes = attr == ACL_HBM_MEM ? DEVICE_BYTES - used_bytes : 0;
    pthread_mutex_unlock(&lock);
    return ACL_SUCCESS;
}

/* A device range of count bytes at p whose caller says maxBytes are writable there (lock held). */
static int device_range_ok(const void *p, size_t maxBytes, size_t count)
{
    struct alloc *a = find_alloc(p, count);
    return a && maxBytes <= (size_t)(a->base + a->size - (const char *)p);
}

static aclError check_copy(void *dst, size_t destMax, const void *src, size_t count, int kind)
{
    if (!dst || !src || count > destMax)
        return fail(ACL_ERROR_INVALID_PARAM, "memcpy(%p, %zu, %p, %zu)", dst, destMax, src, count);
    pthread_mutex_lock(&lock);
    int dst_device = find_alloc(dst, 1) != NULL, src_device = find_alloc(src, 1) != NULL;
    int ok = 0;
    if (kind == ACL_MEMCPY_HOST_TO_DEVICE)
        ok = dst_device && !src_device && device_range_ok(dst, destMax, count);
    else if (kind == ACL_MEMCPY_DEVICE_TO_HOST)
        ok = !dst_device && src_device && find_alloc(src, count);
    else if (kind == ACL_MEMCPY_DEVICE_TO_DEVICE)
        ok = device_range_ok(dst, destMax, count) && find_alloc(src, count);
    pthread_mutex_unlock(&lock);
    if (!ok)
        return fail(ACL_ERROR_INVALID_PARAM, "memcpy kind %d does not fit %p <- %p (%zu bytes)", kind, dst, src,
                    count);
    return ACL_SUCCESS;
}

static aclError check_memset(void *devPtr, size_t maxCount, size_t count)
{
    pthread_mutex_lock(&lock);
    int ok = count <= maxCount && device_range_ok(devPtr, maxCount, count);
    pthread_mutex_unlock(&lock);
    return ok ? ACL_SUCCESS : fail(ACL_ERROR_INVALID_PARAM, "memset(%p, %zu, %zu)", devPtr, maxCount, count);
}

aclError aclrtMemcpy(void *dst, size_t destMax, const void *src, size_t count, int kind)
{
    aclError rc = need_context();
    if (!rc)
        rc = check_copy(dst, destMax, src, count, kind);
    if (!rc)
        memmove(dst, src, count);
    return rc;
}

aclError aclrtMemset(void *devPtr, size_t maxCount, int32_t value, size_t count)
{
    aclError rc = need_context();
    if (!rc)
        rc = check_memset(devPtr, maxCount, count);
    if (!rc)
        memset(devPtr, value, count);
    return rc;
}

/* ---- streams and events ------------------------------------------------------------------ */

struct event {
    uint32_t magic;
    uint32_t flags;
    uint64_t issued; /* records queued */
    uint64_t done;   /* the highest record that ran */
    long users;      /* queued tasks that name this event */
    int stamped;
    int64_t stamp_ns;
};

enum task_kind { T_COPY, T_SET, T_RECORD, T_WAIT, T_RESET, T_SLEEP, T_ADD, T_DUMP, T_FAIL };

struct task {
    struct task *next;
    enum task_kind kind;
    void *dst;
    const void *src, *src2;
    size_t n;
    int value;
    struct event *event;
    uint64_t record; /* T_RECORD: this record's number; T_WAIT: the record waited for */
    long us;
    aclError code;
    float *dump;
};

struct stream {
    uint32_t magic;
    struct task *head, *tail; /* the head stays queued while it runs: empty == idle */
    int stop;
    aclError error; /* the first failure since the last synchronization */
    pthread_t thread;
};

static struct stream *as_stream(aclrtStream p)
{
    struct stream *s = p;
    return s && s->magic == STREAM_MAGIC ? s : NULL;
}

static struct event *as_event(aclrtEvent p)
{
    struct event *e = p;
    return e && e->magic == EVENT_MAGIC ? e : NULL;
}

static aclError run_task(struct task *t)
{
    switch (t->kind) {
    case T_COPY:
        memmove(t->dst, t->src, t->n);
        break;
    case T_SET:
        memset(t->dst, t->value, t->n);
        break;
    case T_SLEEP: {
        struct timespec ts = {t->us / 1000000, (t->us % 1000000) * 1000};
        nanosleep(&ts, NULL);
        break;
    }
    case T_ADD: {
        const float *a = t->src, *b = t->src2;
        float *y = t->dst;
        for (size_t i = 0; i < t->n; i++)
            y[i] = a[i] + b[i];
        break;
    }
    case T_DUMP:
        memcpy(t->dst, t->dump, t->n * sizeof(float));
        break;
    case T_FAIL:
        return t->code;
    case T_RECORD:
        pthread_mutex_lock(&lock);
        if (t->record > t->event->done)
            t->event->done = t->record;
        t->event->stamped = 1;
        t->event->stamp_ns = now_ns();
        pthread_mutex_unlock(&lock);
        break;
    case T_WAIT:
        pthread_mutex_lock(&lock);
        while (t->event->done < t->record)
            pthread_cond_wait(&changed, &lock);
        pthread_mutex_unlock(&lock);
        break;
    case T_RESET:
        pthread_mutex_lock(&lock);
        t->event->stamped = 0;
        pthread_mutex_unlock(&lock);
        break;
    }
    return ACL_SUCCESS;
}

static void *stream_worker(void *arg)
{
    struct stream *s = arg;
    pthread_mutex_lock(&lock);
    for (;;) {
        while (!s->head && !s->stop)
            pthread_cond_wait(&changed, &lock);
        if (!s->head)
            break;
        struct task *t = s->head;
        pthread_mutex_unlock(&lock);
        aclError rc = run_task(t);
        pthread_mutex_lock(&lock);
        s->head = t->next;
        if (!s->head)
            s->tail = NULL;
        if (rc && !s->error)
            s->error = rc;
        if (t->event)
            t->event->users--;
        pthread_cond_broadcast(&changed);
        free(t->dump);
        free(t);
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

static aclError enqueue(struct stream *s, struct task *t)
{
    if (!t)
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "out of host memory");
    pthread_mutex_lock(&lock);
    if (t->event) {
        t->event->users++;
        if (t->kind == T_RECORD)
            t->record = ++t->event->issued;
        else if (t->kind == T_WAIT)
            t->record = t->event->issued; /* the latest record queued before this wait */
    }
    if (s->tail)
        s->tail->next = t;
    else
        s->head = t;
    s->tail = t;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
    return ACL_SUCCESS;
}

static struct task *new_task(enum task_kind kind)
{
    struct task *t = calloc(1, sizeof *t);
    if (t)
        t->kind = kind;
    return t;
}

aclError aclrtCreateStream(aclrtStream *stream)
{
    aclError rc = need_context();
    if (rc)
        return rc;
    if (!stream)
        return fail(ACL_ERROR_INVALID_PARAM, "stream is NULL");
    struct stream *s = calloc(1, sizeof *s);
    if (!s)
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "out of host memory");
    s->magic = STREAM_MAGIC;
    if (pthread_create(&s->thread, NULL, stream_worker, s)) {
        free(s);
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "cannot start a stream thread");
    }
    pthread_mutex_lock(&lock);
    live_streams++;
    pthread_mutex_unlock(&lock);
    *stream = s;
    return ACL_SUCCESS;
}

aclError aclrtDestroyStream(aclrtStream stream)
{
    struct stream *s = as_stream(stream);
    if (!s)
        return fail(ACL_ERROR_RT_INVALID_HANDLE, "not a stream");
    pthread_mutex_lock(&lock);
    s->stop = 1; /* the worker runs what is queued, then exits */
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
    pthread_join(s->thread, NULL);
    pthread_mutex_lock(&lock);
    live_streams--;
    pthread_mutex_unlock(&lock);
    s->magic = 0;
    free(s);
    return ACL_SUCCESS;
}

aclError aclrtSynchronizeStreamWithTimeout(aclrtStream stream, int32_t timeout)
{
    struct stream *s = as_stream(stream);
    if (!s)
        return fail(ACL_ERROR_RT_INVALID_HANDLE, "not a stream");
    if (timeout < -1)
        return fail(ACL_ERROR_RT_PARAM_INVALID, "timeout %d", timeout);
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout / 1000;
    deadline.tv_nsec += (long)(timeout % 1000) * 1000000;
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&lock);
    while (s->head) {
        if (timeout == -1) {
            pthread_cond_wait(&changed, &lock);
        } else if (pthread_cond_timedwait(&changed, &lock, &deadline) == ETIMEDOUT && s->head) {
            pthread_mutex_unlock(&lock);
            return fail(ACL_ERROR_RT_STREAM_SYNC_TIMEOUT, "stream busy after %d ms", timeout);
        }
    }
    aclError rc = s->error; /* reported once, then cleared */
    s->error = ACL_SUCCESS;
    pthread_mutex_unlock(&lock);
    return rc;
}

aclError aclrtMemcpyAsync(void *dst, size_t destMax, const void *src, size_t count, int kind, aclrtStream stream)
{
    struct stream *s = as_stream(stream);
    aclError rc = need_context();
    if (!rc && !s)
        rc = fail(ACL_ERROR_RT_INVALID_HANDLE, "not a stream");
    if (!rc)
        rc = check_copy(dst, destMax, src, count, kind);
    if (rc)
        return rc;
    struct task *t = new_task(T_COPY);
    if (t) {
        t->dst = dst;
        t->src = src;
        t->n = count;
    }
    return enqueue(s, t);
}

aclError aclrtMemsetAsync(void *devPtr, size_t maxCount, int32_t value, size_t count, aclrtStream stream)
{
    struct stream *s = as_stream(stream);
    aclError rc = need_context();
    if (!rc && !s)
        rc = fail(ACL_ERROR_RT_INVALID_HANDLE, "not a stream");
    if (!rc)
        rc = check_memset(devPtr, maxCount, count);
    if (rc)
        return rc;
    struct task *t = new_task(T_SET);
    if (t) {
        t->dst = devPtr;
        t->value = value;
        t->n = count;
    }
    return enqueue(s, t);
}

static aclError create_event(aclrtEvent *event, uint32_t flags)
{
    aclError rc = need_context();
    if (rc)
        return rc;
    if (!event)
        return fail(ACL_ERROR_INVALID_PARAM, "event is NULL");
    struct event *e = calloc(1, sizeof *e);
    if (!e)
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "out of host memory");
    e->magic = EVENT_MAGIC;
    e->flags = flags;
    pthread_mutex_lock(&lock);
    live_events++;
    pthread_mutex_unlock(&lock);
    *event = e;
    return ACL_SUCCESS;
}

aclError aclrtCreateEvent(aclrtEvent *event)
{
    return create_event(event, 0x1u | 0x8u); /* a default event syncs and times */
}

aclError aclrtCreateEventWithFlag(aclrtEvent *event, uint32_t flag)
{
    if (flag == 0 || (flag & ~ACL_EVENT_KNOWN_FLAGS))
        return fail(ACL_ERROR_INVALID_PARAM, "event flag %#x", flag);
    return create_event(event, flag);
}

aclError aclrtDestroyEvent(aclrtEvent event)
{
    struct event *e = as_event(event);
    if (!e)
        return fail(ACL_ERROR_RT_INVALID_HANDLE, "not an event");
    pthread_mutex_lock(&lock);
    if (e->users) {
        pthread_mutex_unlock(&lock);
        return fail(ACL_ERROR_INVALID_PARAM, "event %p is still used by %ld queued tasks", event, e->users);
    }
    live_events--;
    pthread_mutex_unlock(&lock);
    e->magic = 0;
    free(e);
    return ACL_SUCCESS;
}

static aclError event_task(enum task_kind kind, aclrtEvent event, aclrtStream stream)
{
    struct stream *s = as_stream(stream);
    struct event *e = as_event(event);
    aclError rc = need_context();
    if (rc)
        return rc;
    if (!s || !e)
        return fail(ACL_ERROR_RT_INVALID_HANDLE, "%s", s ? "not an event" : "not a stream");
    struct task *t = new_task(kind);
    if (t)
        t->event = e;
    return enqueue(s, t);
}

aclError aclrtRecordEvent(aclrtEvent event, aclrtStream stream)
{
    return event_task(T_RECORD, event, stream);
}

aclError aclrtStreamWaitEvent(aclrtStream stream, aclrtEvent event)
{
    return event_task(T_WAIT, event, stream);
}

aclError aclrtResetEvent(aclrtEvent event, aclrtStream stream)
{
    return event_task(T_RESET, event, stream);
}

aclError aclrtQueryEventStatus(aclrtEvent event, int *status)
{
    struct event *e = as_event(event);
    if (!e)
        return fail(ACL_ERROR_RT_INVALID_HANDLE, "not an event");
    if (!status)
        return fail(ACL_ERROR_INVALID_PARAM, "status is NULL");
    pthread_mutex_lock(&lock);
    *status = e->done >= e->issued ? ACL_EVENT_RECORDED_STATUS_COMPLETE : ACL_EVENT_RECORDED_STATUS_NOT_READY;
    pthread_mutex_unlock(&lock);
    return ACL_SUCCESS;
}

aclError aclrtEventElapsedTime(float *ms, aclrtEvent startEvent, aclrtEvent endEvent)
{
    struct event *start = as_event(startEvent), *end = as_event(endEvent);
    if (!ms || !start || !end)
        return fail(ACL_ERROR_INVALID_PARAM, "aclrtEventElapsedTime(%p, %p, %p)", (void *)ms, startEvent, endEvent);
    pthread_mutex_lock(&lock);
    int ok = start->stamped && end->stamped && start->done >= start->issued && end->done >= end->issued;
    if (ok)
        *ms = (float)((double)(end->stamp_ns - start->stamp_ns) / 1e6);
    pthread_mutex_unlock(&lock);
    return ok ? ACL_SUCCESS : fail(ACL_ERROR_INVALID_PARAM, "an event has no completed record");
}

/* ---- tensor descriptors, data buffers, attributes --------------------------------------------- */

typedef struct aclTensorDesc {
    uint32_t magic;
    int dtype, format, ndims;
    int64_t dims[MAX_DIMS];
} aclTensorDesc;

typedef struct aclDataBuffer {
    uint32_t magic;
    void *data;
    size_t size;
} aclDataBuffer;

enum attr_kind { A_BOOL = 1, A_INT, A_FLOAT, A_STRING, A_LIST_INT, A_LIST_FLOAT, A_LIST_BOOL, A_DATA_TYPE };

typedef struct aclopAttr {
    uint32_t magic;
    int count;
    struct {
        char name[32];
        enum attr_kind kind;
        int n;
        double values[MAX_ATTR_VALUES]; /* a string is its characters */
    } items[MAX_ATTRS];
} aclopAttr;

static void count_live(long *counter, long delta)
{
    pthread_mutex_lock(&lock);
    *counter += delta;
    pthread_mutex_unlock(&lock);
}

aclTensorDesc *aclCreateTensorDesc(int dataType, int numDims, const int64_t *dims, int format)
{
    if (numDims < 0 || numDims > MAX_DIMS || (numDims > 0 && !dims)) {
        fail(ACL_ERROR_INVALID_PARAM, "aclCreateTensorDesc: %d dims at %p", numDims, (const void *)dims);
        return NULL;
    }
    aclTensorDesc *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->magic = DESC_MAGIC;
    d->dtype = dataType;
    d->format = format;
    d->ndims = numDims;
    for (int i = 0; i < numDims; i++)
        d->dims[i] = dims[i];
    count_live(&live_descs, 1);
    return d;
}

void aclDestroyTensorDesc(const aclTensorDesc *desc)
{
    if (!desc || desc->magic != DESC_MAGIC)
        return;
    ((aclTensorDesc *)desc)->magic = 0;
    free((void *)desc);
    count_live(&live_descs, -1);
}

aclDataBuffer *aclCreateDataBuffer(void *data, size_t size)
{
    if (!data && size) {
        fail(ACL_ERROR_INVALID_PARAM, "aclCreateDataBuffer(NULL, %zu)", size);
        return NULL;
    }
    aclDataBuffer *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->magic = BUFFER_MAGIC;
    b->data = data;
    b->size = size;
    count_live(&live_buffers, 1);
    return b;
}

aclError aclDestroyDataBuffer(const aclDataBuffer *dataBuffer)
{
    if (!dataBuffer || dataBuffer->magic != BUFFER_MAGIC)
        return fail(ACL_ERROR_INVALID_PARAM, "not a data buffer");
    ((aclDataBuffer *)dataBuffer)->magic = 0;
    free((void *)dataBuffer);
    count_live(&live_buffers, -1);
    return ACL_SUCCESS;
}

aclopAttr *aclopCreateAttr(void)
{
    aclopAttr *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->magic = ATTR_MAGIC;
    count_live(&live_attrs, 1);
    return a;
}

void aclopDestroyAttr(const aclopAttr *attr)
{
    if (!attr || attr->magic != ATTR_MAGIC)
        return;
    ((aclopAttr *)attr)->magic = 0;
    free((void *)attr);
    count_live(&live_attrs, -1);
}

/* The slot for attribute name (a new one unless it is set already), or NULL. */
static int attr_slot(aclopAttr *attr, const char *name, enum attr_kind kind, int n)
{
    if (!attr || attr->magic != ATTR_MAGIC || !name || strlen(name) >= 32 || n < 0 || n > MAX_ATTR_VALUES)
        return -1;
    int i = 0;
    while (i < attr->count && strcmp(attr->items[i].name, name) != 0)
        i++;
    if (i == MAX_ATTRS)
        return -1;
    if (i == attr->count)
        attr->count++;
    strcpy(attr->items[i].name, name);
    attr->items[i].kind = kind;
    attr->items[i].n = n;
    return i;
}

#define SET_ATTR(kind, n, expr)                                                                    \
    do {                                                                                           \
        int slot = attr_slot(attr, attrName, kind, n);                                             \
        if (slot < 0)                                                                              \
            return fail(ACL_ERROR_INVALID_PARAM, "cannot set attribute %s", attrName ? attrName : "(null)"); \
        for (int i = 0; i < (n); i++)                                                              \
            attr->items[slot].values[i] = (double)(expr);                                         \
        return ACL_SUCCESS;                                                                        \
    } while (0)

aclError aclopSetAttrBool(aclopAttr *attr, const char *attrName, uint8_t attrValue)
{
    SET_ATTR(A_BOOL, 1, attrValue != 0);
}

aclError aclopSetAttrInt(aclopAttr *attr, const char *attrName, int64_t attrValue)
{
    SET_ATTR(A_INT, 1, attrValue);
}

aclError aclopSetAttrFloat(aclopAttr *attr, const char *attrName, float attrValue)
{
    SET_ATTR(A_FLOAT, 1, attrValue);
}

aclError aclopSetAttrString(aclopAttr *attr, const char *attrName, const char *attrValue)
{
    if (!attrValue)
        return fail(ACL_ERROR_INVALID_PARAM, "string attribute is NULL");
    SET_ATTR(A_STRING, (int)strlen(attrValue), (unsigned char)attrValue[i]);
}

aclError aclopSetAttrDataType(aclopAttr *attr, const char *attrName, int attrValue)
{
    SET_ATTR(A_DATA_TYPE, 1, attrValue);
}

aclError aclopSetAttrListBool(aclopAttr *attr, const char *attrName, int numValues, const uint8_t *values)
{
    if (numValues > 0 && !values)
        return fail(ACL_ERROR_INVALID_PARAM, "values is NULL");
    SET_ATTR(A_LIST_BOOL, numValues, values[i] != 0);
}

aclError aclopSetAttrListInt(aclopAttr *attr, const char *attrName, int numValues, const int64_t *values)
{
    if (numValues > 0 && !values)
        return fail(ACL_ERROR_INVALID_PARAM, "values is NULL");
    SET_ATTR(A_LIST_INT, numValues, values[i]);
}

aclError aclopSetAttrListFloat(aclopAttr *attr, const char *attrName, int numValues, const float *values)
{
    if (numValues > 0 && !values)
        return fail(ACL_ERROR_INVALID_PARAM, "values is NULL");
    SET_ATTR(A_LIST_FLOAT, numValues, values[i]);
}

/* ---- operators ----------------------------------------------------------------------------- */

static size_t element_count(const aclTensorDesc *d)
{
    size_t n = 1;
    for (int i = 0; i < d->ndims; i++)
        n *= (size_t)d->dims[i];
    return n;
}

static int is_absent(const aclTensorDesc *d, const aclDataBuffer *b)
{
    return d->dtype == ACL_DT_UNDEFINED && d->format == ACL_FORMAT_UNDEFINED && d->ndims == 0 && !b->data &&
           b->size == 0;
}

/* A float32 tensor of n elements in device memory: 0, or the failure code. */
static aclError check_float_tensor(const aclTensorDesc *d, const aclDataBuffer *b, size_t n)
{
    if (d->dtype != ACL_FLOAT)
        return fail(ACL_ERROR_UNSUPPORTED_DATA_TYPE, "dtype %d, want float32", d->dtype);
    pthread_mutex_lock(&lock);
    int ok = element_count(d) == n && b->size >= n * sizeof(float) && (n == 0 || find_alloc(b->data, b->size));
    pthread_mutex_unlock(&lock);
    return ok ? ACL_SUCCESS : fail(ACL_ERROR_INVALID_PARAM, "tensor of %zu floats at %p (%zu bytes)", n, b->data, b->size);
}

aclError aclopExecuteV2(const char *opType, int numInputs, aclTensorDesc *inputDesc[], aclDataBuffer *inputs[],
                        int numOutputs, aclTensorDesc *outputDesc[], aclDataBuffer *outputs[], aclopAttr *attr,
                        aclrtStream stream)
{
    struct stream *s = as_stream(stream);
    aclError rc = need_context();
    if (rc)
        return rc;
    if (!s)
        return fail(ACL_ERROR_RT_INVALID_HANDLE, "not a stream");
    if (!opType || numInputs < 0 || numOutputs < 0 || (numInputs && (!inputDesc || !inputs)) ||
        (numOutputs && (!outputDesc || !outputs)) || (attr && attr->magic != ATTR_MAGIC))
        return fail(ACL_ERROR_INVALID_PARAM, "aclopExecuteV2: bad arguments");
    for (int i = 0; i < numInputs; i++)
        if (!inputDesc[i] || inputDesc[i]->magic != DESC_MAGIC || !inputs[i] || inputs[i]->magic != BUFFER_MAGIC)
            return fail(ACL_ERROR_INVALID_PARAM, "input %d: not a tensor desc and data buffer", i);
    for (int i = 0; i < numOutputs; i++)
        if (!outputDesc[i] || outputDesc[i]->magic != DESC_MAGIC || !outputs[i] || outputs[i]->magic != BUFFER_MAGIC)
            return fail(ACL_ERROR_INVALID_PARAM, "output %d: not a tensor desc and data buffer", i);

    struct task *t;
    if (strcmp(opType, "Add") == 0) {
        if ((numInputs != 2 && numInputs != 3) || numOutputs != 1)
            return fail(ACL_ERROR_INVALID_PARAM, "Add takes 2 inputs (and an absent third) and 1 output");
        if (numInputs == 3 && !is_absent(inputDesc[2], inputs[2]))
            return fail(ACL_ERROR_INVALID_PARAM, "Add: the optional third input must be absent");
        size_t n = element_count(outputDesc[0]);
        for (int i = 0; i < 2; i++)
            if ((rc = check_float_tensor(inputDesc[i], inputs[i], n)))
                return rc;
        if ((rc = check_float_tensor(outputDesc[0], outputs[0], n)))
            return rc;
        t = new_task(T_ADD);
        if (t) {
            t->src = inputs[0]->data;
            t->src2 = inputs[1]->data;
            t->dst = outputs[0]->data;
            t->n = n;
        }
    } else if (strcmp(opType, "FakeSleep") == 0) {
        int i = 0;
        while (attr && i < attr->count && strcmp(attr->items[i].name, "us") != 0)
            i++;
        if (!attr || i == attr->count || attr->items[i].kind != A_INT)
            return fail(ACL_ERROR_INVALID_PARAM, "FakeSleep needs an int attribute \"us\"");
        t = new_task(T_SLEEP);
        if (t)
            t->us = (long)attr->items[i].values[0];
    } else if (strcmp(opType, "FakeAttrDump") == 0) {
        if (numOutputs != 1)
            return fail(ACL_ERROR_INVALID_PARAM, "FakeAttrDump has 1 output");
        size_t n = 0;
        float dump[MAX_ATTRS * (2 + MAX_ATTR_VALUES)];
        for (int i = 0; attr && i < attr->count; i++) {
            dump[n++] = (float)attr->items[i].kind;
            dump[n++] = (float)attr->items[i].n;
            for (int j = 0; j < attr->items[i].n; j++)
                dump[n++] = (float)attr->items[i].values[j];
        }
        if ((rc = check_float_tensor(outputDesc[0], outputs[0], element_count(outputDesc[0]))))
            return rc;
        if (element_count(outputDesc[0]) < n)
            return fail(ACL_ERROR_INVALID_PARAM, "FakeAttrDump needs %zu output elements", n);
        t = new_task(T_DUMP);
        if (t && !(t->dump = malloc(n * sizeof(float) + 1))) {
            free(t);
            t = NULL;
        }
        if (t) {
            memcpy(t->dump, dump, n * sizeof(float));
            t->dst = outputs[0]->data;
            t->n = n;
        }
    } else {
        t = new_task(T_FAIL); /* an unknown operator fails when it runs */
        if (t)
            t->code = ACL_ERROR_OP_NOT_FOUND;
    }
    return enqueue(s, t);
}

/* ---- for the tests --------------------------------------------------------------------------- */

/* Objects alive now: streams, events, tensor descs, data buffers, attrs, device allocations. */
void fakeAclLiveObjects(long counts[6])
{
    pthread_mutex_lock(&lock);
    counts[0] = live_streams;
    counts[1] = live_events;
    counts[2] = live_descs;
    counts[3] = live_buffers;
    counts[4] = live_attrs;
    counts[5] = live_allocs;
    pthread_mutex_unlock(&lock);
}
