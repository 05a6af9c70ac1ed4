/* The worker's call loop: the calls every training step makes, taken from a session's
 * call ring and handed to the driver without Python in between
 * (orion_server/fast_path.py drives it).
 *
 * Measured on the H100 machine: cuLaunchKernel called from a C loop takes 3.2-3.9 us per
 * launch, from a Python loop through cffi 6.0 us, and the worker's own Python per launch
 * (record decoding, checks) another ~2 us; a synchronous call through the generic path
 * costs ~8.6 us of Python before the driver is called (benchmarks/worker_call.py). So
 * the loop that walks the ring, checks a record, calls the driver and, for a
 * synchronous call, writes the reply is C. It takes:
 *
 *   orionLaunchKernel (async)                      -> cuLaunchKernel (or a backend's)
 *   cudaStreamSynchronize, cudaEventQuery,
 *   cudaEventSynchronize, cudaDeviceSynchronize    -> the driver's, then the reply
 *   orionMemcpyShm (sync), orionMemcpyShmAsync     -> cuMemcpyAsync between a device
 *        range and the session's shared memory (+ cuStreamSynchronize, the reply)
 *
 * and comes back to Python only for a decision: a handle (function, stream, event), a
 * device range or a shared segment it has not been told is the session's; a compute
 * turn; a failed asynchronous call; a synchronous call's reply that is not a plain one
 * (an error, device printf output waiting, an error owed from an earlier call); or a
 * record it does not take, which the generic path answers. Python remembers nothing
 * for it: what it is told is forgotten when a handle may have ended (fast_path.py).
 *
 * Records are checked exactly as fast_path.py describes them (docs/protocol.md,
 * "Records"); the caller passes the words a record must carry (record header, request
 * header, call ids), derived from the generated call table, so the C side holds no
 * layout of its own beyond the field order, which fast_path.py checks against this
 * file's sizes at load.
 *
 * x86-64 only, as the ring is (TSO: plain loads of `head` see the records published
 * before it; release stores hand back the room and publish replies). */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef int (*launch_fn)(uintptr_t function, unsigned gx, unsigned gy, unsigned gz,
                         unsigned bx, unsigned by, unsigned bz, unsigned shared,
                         uintptr_t stream, void **params, void **extra);
typedef int (*handle_fn)(uintptr_t handle);
typedef int (*context_fn)(void);
typedef int (*memcpy_fn)(uintptr_t dst, uintptr_t src, size_t count, uintptr_t stream);

/* Why a run stopped: what Python does next (fast_path.py). */
enum {
    STOP_EMPTY = 0,           /* every published record is taken */
    STOP_GENERIC = 1,         /* the record at tail is for the generic path */
    STOP_UNKNOWN_FUNCTION = 2,/* run->handle: tell the loop its argument size, or not */
    STOP_UNKNOWN_STREAM = 3,  /* run->handle: tell the loop it is the session's, or not */
    STOP_TURN = 4,            /* a compute turn is needed before the next launch */
    STOP_FAILED = 5,          /* the async call before tail returned run->status */
    STOP_UNKNOWN_EVENT = 6,   /* run->handle */
    STOP_UNKNOWN_RANGE = 7,   /* run->handle, run->count: a device range */
    STOP_UNKNOWN_SEGMENT = 8, /* run->handle, run->count: a range of shared memory */
    STOP_ANSWER = 9,          /* the sync call before tail returned run->status: Python
                                 replies to run->seq (run->call is its id) */
};

/* The calls the loop takes, by kind. */
enum { CALL_LAUNCH, CALL_STREAM_SYNC, CALL_EVENT_QUERY, CALL_EVENT_SYNC, CALL_MEMCPY,
       CALL_MEMCPY_ASYNC, CALL_DEVICE_SYNC, CALLS };

#define TABLE_BITS 12         /* handle tables: open addressing, 4096 slots, */
#define TABLE_SIZE (1 << TABLE_BITS)
#define TABLE_FULL (TABLE_SIZE * 3 / 4)   /* emptied at 3/4 full (a cache of Python's) */
#define RANGES 32             /* device ranges and segments remembered, each */
#define HEAD_WORD 8           /* u64 words of the ring header (orion_server/ring.py) */
#define TAIL_WORD 16
#define REPLY_SEQ_WORD 17
#define CLIENT_SLEEPING_WORD32 18   /* u32 words */
#define HEADER_BYTES 256
#define PUBLISH_EVERY 32      /* launches between stores of the tail during a run */
#define NOT_READY 600         /* cudaErrorNotReady: a query's answer, not a failure */
#define HOST_TO_DEVICE 1      /* cudaMemcpyKind */
#define DEVICE_TO_HOST 2

/* The ring's record header and the request header (docs/protocol.md). */
struct __attribute__((packed)) request_start {
    uint32_t size;
    uint64_t frames;          /* frame count, record flags, frame 0's length */
    uint32_t args_length;     /* frame 1's (a launch) or padding */
    uint64_t header;          /* magic, version, flags */
    uint64_t call;            /* call id, device, reserved */
    uint64_t seq;
};

/* A launch record (fast_path.py's LAUNCH): then the argument bytes at LAUNCH_ARGS. */
struct __attribute__((packed)) launch_record {
    struct request_start r;
    uint64_t function;
    uint32_t grid[3], block[3];
    uint64_t shared;
    uint64_t stream;
    uint32_t flags;
    uint64_t args_buffer;     /* the in_buf's length */
    uint64_t args_size;
};
#define LAUNCH_ARGS ((sizeof(struct launch_record) + 7) & ~(size_t)7)

struct __attribute__((packed)) handle_record {    /* stream or event calls */
    struct request_start r;
    uint64_t handle;
};

struct __attribute__((packed)) memcpy_record {    /* orionMemcpyShm[Async] */
    struct request_start r;
    uint64_t dst, src, count;
    uint32_t kind;
    uint64_t stream;
};

/* The sizes fast_path.py checks: launch, handle and memcpy records, the run. */
struct orion_call_loop_sizes {
    uint64_t launch, handle, memcpy, run;
};

struct slot {
    uint64_t key;             /* a handle (0 is one: the legacy default stream) */
    uint32_t value;
    uint32_t used;
};

struct table {
    struct slot slots[TABLE_SIZE];
    uint32_t count;
};

struct range {
    uint64_t base, end;       /* [base, end): the client's addresses */
    uint64_t local;           /* a segment's address in this process (base's) */
};

struct ranges {
    struct range r[RANGES];
    uint32_t count, next;     /* when full, the oldest goes */
};

/* What the caller sets up once (fast_path.py, `struct orion_call_loop_setup`). */
struct orion_call_loop_setup {
    uint64_t frames[CALLS];   /* the record header word each kind carries */
    uint64_t header_sync, header_async;   /* the request header word of sync, async calls */
    uint32_t ids[CALLS];      /* call ids */
    launch_fn launch;         /* NULL: launches take the generic path; so for the rest */
    handle_fn stream_synchronize, event_query, event_synchronize;
    memcpy_fn memcpy_async;
    context_fn context_synchronize;   /* the current device's */
    int output_fds[2];        /* pipes of device printf, -1: none (fflush + poll) */
    volatile int *output_waiting;   /* set while output sits read but not sent */
};

struct orion_call_loop {
    const uint8_t *request;
    volatile uint64_t *control;
    uint8_t *reply;
    uint64_t size;            /* of the request ring, a power of two */
    struct orion_call_loop_setup setup;
    struct table functions, streams, events;
    struct ranges device, shared;
};

struct orion_call_run {
    uint64_t tail, head;      /* in: where to start, what is published; out: the tail */
    uint32_t device;          /* the session's current device */
    int32_t may_reply;        /* in: no error is owed: plain replies may go from here */
    int64_t turn_end_ns;      /* CLOCK_MONOTONIC; INT64_MAX: no turns */
    int32_t new_turn;         /* in: a turn was just given: the next launch goes on it */
    uint64_t calls;           /* calls made by this run (accumulates) */
    uint64_t handle, count;   /* out: what STOP_UNKNOWN_* asks about */
    uint64_t seq;             /* out: STOP_ANSWER's call */
    uint32_t call;
    int32_t status;           /* out: STOP_FAILED's, STOP_ANSWER's status */
};

/* The handle's slot, or the empty one where it would go (the table is never full). */
static struct slot *find(struct table *t, uint64_t key)
{
    uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> (64 - TABLE_BITS);
    while (t->slots[i].used && t->slots[i].key != key)
        i = (i + 1) & (TABLE_SIZE - 1);
    return &t->slots[i];
}

static void put(struct table *t, uint64_t key, uint32_t value)
{
    struct slot *s = find(t, key);
    if (!s->used) {
        if (t->count == TABLE_FULL) {     /* start over: Python is asked again */
            memset(t, 0, sizeof *t);
            s = find(t, key);
        }
        t->count++;
    }
    *s = (struct slot){key, value, 1};
}

static int known(struct table *t, uint64_t key)
{
    return find(t, key)->used;
}

/* The remembered range holding [p, p + n), or NULL. */
static const struct range *within(const struct ranges *rs, uint64_t p, uint64_t n)
{
    for (uint32_t i = 0; i < rs->count; i++)
        if (p >= rs->r[i].base && n <= rs->r[i].end - p && p < rs->r[i].end)
            return &rs->r[i];
    return NULL;
}

static void remember(struct ranges *rs, uint64_t base, uint64_t size, uint64_t local)
{
    uint32_t i = rs->count < RANGES ? rs->count++ : rs->next++ % RANGES;
    rs->r[i] = (struct range){base, base + size, local};
}

struct orion_call_loop *orion_call_loop_new(const void *header, uint64_t request_size,
                                            const struct orion_call_loop_setup *setup)
{
    if (request_size & (request_size - 1) || request_size < LAUNCH_ARGS)
        return NULL;
    struct orion_call_loop *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->control = (volatile uint64_t *)header;
    l->request = (const uint8_t *)header + HEADER_BYTES;
    l->reply = (uint8_t *)header + HEADER_BYTES + request_size;
    l->size = request_size;
    l->setup = *setup;
    return l;
}

void orion_call_loop_free(struct orion_call_loop *l)
{
    free(l);
}

void orion_call_loop_sizes(struct orion_call_loop_sizes *out)
{
    *out = (struct orion_call_loop_sizes){sizeof(struct launch_record),
                                          sizeof(struct handle_record),
                                          sizeof(struct memcpy_record),
                                          sizeof(struct orion_call_run)};
}

/* What Python tells the loop is the session's. */
void orion_call_loop_allow_function(struct orion_call_loop *l, uint64_t function,
                                    uint32_t args_size)
{
    put(&l->functions, function, args_size);
}

void orion_call_loop_allow_stream(struct orion_call_loop *l, uint64_t stream)
{
    put(&l->streams, stream, 1);
}

void orion_call_loop_allow_event(struct orion_call_loop *l, uint64_t event)
{
    put(&l->events, event, 1);
}

void orion_call_loop_allow_range(struct orion_call_loop *l, uint64_t base, uint64_t size)
{
    remember(&l->device, base, size, 0);
}

void orion_call_loop_allow_segment(struct orion_call_loop *l, uint64_t client_base,
                                   uint64_t size, uint64_t local_base)
{
    remember(&l->shared, client_base, size, local_base);
}

/* Forget everything (a handle may have ended, memory was freed, the device changed). */
void orion_call_loop_forget(struct orion_call_loop *l)
{
    memset(&l->functions, 0, sizeof l->functions);
    memset(&l->streams, 0, sizeof l->streams);
    memset(&l->events, 0, sizeof l->events);
    memset(&l->device, 0, sizeof l->device);
    memset(&l->shared, 0, sizeof l->shared);
}

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Whether device output waits to go with a reply. The drain threads of fast_path.py's
 * outputs set `output_waiting` before they read a pipe, so output is either still in a
 * pipe when we poll or flagged by then. */
static int output_waiting(const struct orion_call_loop_setup *s)
{
    if (s->output_fds[0] < 0)
        return 0;
    fflush(NULL);       /* the driver prints with stdio */
    struct pollfd fds[2] = {{s->output_fds[0], POLLIN, 0}, {s->output_fds[1], POLLIN, 0}};
    int ready = poll(fds, s->output_fds[1] < 0 ? 1 : 2, 0);
    return ready != 0 || *s->output_waiting;
}

/* Publish a reply of status only (the ring's reply area, docs/protocol.md), and wake
 * the client if it sleeps. */
static void reply(struct orion_call_loop *l, uint64_t seq, uint32_t status, uint64_t magic)
{
    uint8_t *r = l->reply;
    uint32_t size = 16 + 24, zero = 0, length = 24;
    uint16_t frames = 1, flags = 0;
    memcpy(r, &size, 4);
    memcpy(r + 4, &frames, 2);
    memcpy(r + 6, &flags, 2);
    memcpy(r + 8, &length, 4);
    memcpy(r + 12, &zero, 4);
    memcpy(r + 16, &magic, 8);           /* magic, version, reply flags 0 */
    memcpy(r + 24, &status, 4);
    memcpy(r + 28, &zero, 4);
    memcpy(r + 32, &seq, 8);
    __atomic_store_n(&l->control[REPLY_SEQ_WORD], seq, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint32_t *sleeping = (uint32_t *)l->control + CLIENT_SLEEPING_WORD32;
    if (__atomic_load_n(sleeping, __ATOMIC_RELAXED) &&
        __atomic_exchange_n(sleeping, 0, __ATOMIC_SEQ_CST))
        syscall(SYS_futex, sleeping, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* Which kind of call the record at `p` is, from its call word; -1: none of ours. */
static int kind_of(const struct orion_call_loop *l, uint64_t call_word, uint32_t device)
{
    if ((call_word >> 32) != device)
        return -1;
    uint32_t id = (uint32_t)call_word;
    for (int k = 0; k < CALLS; k++)
        if (id == l->setup.ids[k])
            return k;
    return -1;
}

/* Run the records from run->tail on until one needs Python; the reason (STOP_*). */
int orion_call_loop_run(struct orion_call_loop *l, struct orion_call_run *run)
{
    const struct orion_call_loop_setup *s = &l->setup;
    const uint64_t mask = l->size - 1;
    uint64_t tail = run->tail, head = run->head, since_publish = 0;
    size_t length_word = 0;
    void *extra[5] = {(void *)1, NULL, (void *)2, &length_word, NULL};   /* BUFFER_POINTER,
                                                                   BUFFER_SIZE, END */
    int stop;
    for (;;) {
        if (head - tail < sizeof(struct request_start)) {
            head = __atomic_load_n(&l->control[HEAD_WORD], __ATOMIC_ACQUIRE);
            if (head - tail < sizeof(struct request_start)) {
                stop = STOP_EMPTY;
                break;
            }
        }
        uint64_t pos = tail & mask;
        if (pos + LAUNCH_ARGS > l->size) {   /* room for the longest record we read */
            stop = STOP_GENERIC;
            break;
        }
        const uint8_t *p = l->request + pos;
        struct request_start r;
        memcpy(&r, p, sizeof r);
        int kind = kind_of(l, r.call, run->device);
        int is_async = kind == CALL_LAUNCH || kind == CALL_MEMCPY_ASYNC;
        uint64_t record = kind == CALL_LAUNCH
                          ? LAUNCH_ARGS + ((r.args_length + 7) & ~7ull)
                          : 16 + (((r.frames >> 32) + 7) & ~7ull);
        if (kind < 0 || r.frames != s->frames[kind] || r.size != record ||
            r.header != (is_async ? s->header_async : s->header_sync) ||
            pos + record > l->size || tail + record > head) {
            stop = STOP_GENERIC;
            break;
        }
        int status;
        if (kind == CALL_LAUNCH) {
            struct launch_record a;
            memcpy(&a, p, sizeof a);
            if (!s->launch || a.args_buffer != a.r.args_length ||
                a.args_size != a.r.args_length || a.flags != 0 || a.shared > 0xFFFFFFFFu) {
                stop = STOP_GENERIC;
                break;
            }
            struct slot *f = find(&l->functions, a.function);
            if (!f->used) {
                run->handle = a.function;
                stop = STOP_UNKNOWN_FUNCTION;
                break;
            }
            if (f->value != a.r.args_length) {
                stop = STOP_GENERIC;   /* orionLaunchKernel answers cudaErrorInvalidValue */
                break;
            }
            if (!known(&l->streams, a.stream)) {
                run->handle = a.stream;
                stop = STOP_UNKNOWN_STREAM;
                break;
            }
            if (run->turn_end_ns != INT64_MAX) {
                if (run->new_turn)
                    run->new_turn = 0;
                else if (now_ns() >= run->turn_end_ns) {
                    stop = STOP_TURN;
                    break;
                }
            }
            void **with = NULL;
            if (a.r.args_length) {
                extra[1] = (void *)(p + LAUNCH_ARGS);
                length_word = a.r.args_length;   /* the driver copies them before returning */
                with = extra;
            }
            status = s->launch(a.function, a.grid[0], a.grid[1], a.grid[2], a.block[0],
                               a.block[1], a.block[2], (unsigned)a.shared, a.stream, NULL,
                               with);
        } else if (kind == CALL_MEMCPY || kind == CALL_MEMCPY_ASYNC) {
            struct memcpy_record m;
            memcpy(&m, p, sizeof m);
            int upload = m.kind == HOST_TO_DEVICE;
            uint64_t device = upload ? m.dst : m.src, host = upload ? m.src : m.dst;
            if (!s->memcpy_async || !s->stream_synchronize || m.count == 0 ||
                (m.kind != HOST_TO_DEVICE && m.kind != DEVICE_TO_HOST) ||
                (kind == CALL_MEMCPY && !run->may_reply)) {
                stop = STOP_GENERIC;
                break;
            }
            if (!within(&l->device, device, m.count)) {
                run->handle = device;
                run->count = m.count;
                stop = STOP_UNKNOWN_RANGE;
                break;
            }
            const struct range *seg = within(&l->shared, host, m.count);
            if (!seg) {
                run->handle = host;
                run->count = m.count;
                stop = STOP_UNKNOWN_SEGMENT;
                break;
            }
            if (!known(&l->streams, m.stream)) {
                run->handle = m.stream;
                stop = STOP_UNKNOWN_STREAM;
                break;
            }
            uint64_t local = seg->local + (host - seg->base);
            status = s->memcpy_async(upload ? m.dst : local, upload ? local : m.src, m.count,
                                     m.stream);
            if (status == 0 && kind == CALL_MEMCPY)
                status = s->stream_synchronize(m.stream);
        } else if (kind == CALL_DEVICE_SYNC) {
            if (!s->context_synchronize || !run->may_reply) {
                stop = STOP_GENERIC;
                break;
            }
            status = s->context_synchronize();
        } else {
            struct handle_record h;
            memcpy(&h, p, sizeof h);
            handle_fn call = kind == CALL_STREAM_SYNC ? s->stream_synchronize
                             : kind == CALL_EVENT_QUERY ? s->event_query : s->event_synchronize;
            if (!call || !run->may_reply) {
                stop = STOP_GENERIC;
                break;
            }
            int stream = kind == CALL_STREAM_SYNC;
            if (!known(stream ? &l->streams : &l->events, h.handle)) {
                run->handle = h.handle;
                stop = stream ? STOP_UNKNOWN_STREAM : STOP_UNKNOWN_EVENT;
                break;
            }
            status = call(h.handle);
        }
        tail += record;
        run->calls++;
        if (is_async) {
            if (status) {
                run->status = status;
                stop = STOP_FAILED;
                break;
            }
            if (++since_publish == PUBLISH_EVERY) {
                __atomic_store_n(&l->control[TAIL_WORD], tail, __ATOMIC_RELEASE);
                since_publish = 0;
            }
            continue;
        }
        /* a synchronous call: its room back, then its reply (as the generic path does);
         * a query's "not ready" is an answer, anything else but success is Python's to
         * report, and so is a reply that carries device output */
        __atomic_store_n(&l->control[TAIL_WORD], tail, __ATOMIC_RELEASE);
        since_publish = 0;
        int syncing = kind != CALL_EVENT_QUERY;
        if ((status != 0 && !(status == NOT_READY && !syncing)) ||
            ((status != 0 || syncing) && output_waiting(s))) {
            run->status = status;
            run->seq = r.seq;
            run->call = (uint32_t)r.call;
            stop = STOP_ANSWER;
            break;
        }
        reply(l, r.seq, (uint32_t)status, s->header_sync & 0xFFFFFFFFFFFFull);
    }
    if (tail != run->tail)
        __atomic_store_n(&l->control[TAIL_WORD], tail, __ATOMIC_RELEASE);
    run->tail = tail;
    run->head = head;
    return stop;
}
