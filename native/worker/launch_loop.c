/* The worker's launch loop: kernel launches taken from a session's call ring and handed
 * to the driver without Python in between (orion_server/launch_path.py drives it).
 *
 * Measured on the H100 machine: cuLaunchKernel called from a C loop takes 3.2-3.9 us per
 * launch, from a Python loop through cffi 6.0 us, and the worker's own Python per launch
 * (record decoding, checks) another ~2 us (benchmarks/NOTES.md). So the loop that walks
 * the ring, checks a launch record and calls the driver is C, and Python comes back only
 * for what needs a decision: a function or stream handle the loop has not been told is
 * the session's, a compute turn, a failed launch, or a record that is not a plain launch
 * (the generic path answers that one).
 *
 * Records are checked exactly as launch_path.py describes them (docs/protocol.md,
 * "Records"); the caller passes the words a launch record must carry (record header,
 * request header, call id and device), derived from the generated call table, so the C
 * side holds no layout of its own beyond the field order, which launch_path.py checks
 * against this file's ORION_LAUNCH_RECORD_SIZE at import.
 *
 * x86-64 only, as the ring is (TSO: plain loads of `head` see the records published
 * before it; a release store of `tail` hands the room back). */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int (*launch_fn)(uintptr_t function, unsigned gx, unsigned gy, unsigned gz,
                         unsigned bx, unsigned by, unsigned bz, unsigned shared,
                         uintptr_t stream, void **params, void **extra);

/* Why a run stopped: what Python does next (launch_path.py). */
enum {
    STOP_EMPTY = 0,           /* every published record is taken */
    STOP_GENERIC = 1,         /* the record at tail is for the generic path */
    STOP_UNKNOWN_FUNCTION = 2,/* run->function: tell the loop its argument size, or not */
    STOP_UNKNOWN_STREAM = 3,  /* run->stream: tell the loop it is the session's, or not */
    STOP_TURN = 4,            /* a compute turn is needed before the next launch */
    STOP_FAILED = 5,          /* the launch before tail returned run->status */
};

#define TABLE_BITS 12         /* handle tables: open addressing, 4096 slots, */
#define TABLE_SIZE (1 << TABLE_BITS)
#define TABLE_FULL (TABLE_SIZE * 3 / 4)   /* emptied at 3/4 full (a cache of Python's) */
#define HEAD_WORD 8           /* u64 words of the ring header (orion_server/ring.py) */
#define TAIL_WORD 16
#define PUBLISH_EVERY 32      /* launches between stores of the tail during a run */

/* A launch record: ring record header, request header, orionLaunchKernel's arguments
 * (launch_path.py's RECORD), then the argument bytes at ORION_LAUNCH_ARGS. */
struct __attribute__((packed)) launch_record {
    uint32_t size;
    uint64_t frames;          /* frame count, record flags, frame 0's length */
    uint32_t args_length;     /* frame 1's */
    uint64_t header;          /* magic, version, flags */
    uint64_t call;            /* call id, device, reserved */
    uint64_t seq;
    uint64_t function;
    uint32_t grid[3], block[3];
    uint64_t shared;
    uint64_t stream;
    uint32_t flags;
    uint64_t args_buffer;     /* the in_buf's length */
    uint64_t args_size;
};
#define ORION_LAUNCH_RECORD_SIZE sizeof(struct launch_record)
#define ORION_LAUNCH_ARGS ((ORION_LAUNCH_RECORD_SIZE + 7) & ~(size_t)7)

struct slot {
    uint64_t key;             /* a handle (0 is one: the legacy default stream) */
    uint32_t value;
    uint32_t used;
};

struct table {
    struct slot slots[TABLE_SIZE];
    uint32_t count;
};

struct orion_launch_loop {
    const uint8_t *request;
    volatile uint64_t *control;
    uint64_t size;            /* of the request ring, a power of two */
    uint64_t frames, header;  /* the words every launch record carries */
    launch_fn launch;
    struct table functions, streams;
};

struct orion_launch_run {
    uint64_t tail, head;      /* in: where to start, what is published; out: the tail */
    uint64_t call;            /* the call word for the session's current device */
    int64_t turn_end_ns;      /* CLOCK_MONOTONIC; INT64_MAX: no turns */
    int32_t new_turn;         /* in: a turn was just given: the next launch goes on it */
    uint64_t taken;           /* launches made by this run (accumulates) */
    uint64_t function, stream;/* out: the handle of STOP_UNKNOWN_* */
    int32_t status;           /* out: the launch function's status (STOP_FAILED) */
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

struct orion_launch_loop *orion_launch_loop_new(const void *request, uint64_t size,
                                                void *control, uint64_t frames,
                                                uint64_t header, launch_fn launch)
{
    if (size & (size - 1) || size < ORION_LAUNCH_ARGS)
        return NULL;
    struct orion_launch_loop *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->request = request;
    l->control = control;
    l->size = size;
    l->frames = frames;
    l->header = header;
    l->launch = launch;
    return l;
}

void orion_launch_loop_free(struct orion_launch_loop *l)
{
    free(l);
}

/* For the Python side's check that it reads this file's layouts. */
uint64_t orion_launch_record_size(void)
{
    return ORION_LAUNCH_RECORD_SIZE;
}

uint64_t orion_launch_run_size(void)
{
    return sizeof(struct orion_launch_run);
}

/* A kernel of the session, taking `args_size` argument bytes. */
void orion_launch_loop_allow_function(struct orion_launch_loop *l, uint64_t function,
                                      uint32_t args_size)
{
    put(&l->functions, function, args_size);
}

/* A stream of the session (or one of the special handles). */
void orion_launch_loop_allow_stream(struct orion_launch_loop *l, uint64_t stream)
{
    put(&l->streams, stream, 1);
}

/* Forget every handle (a stream destroyed, the device changed). */
void orion_launch_loop_forget(struct orion_launch_loop *l)
{
    memset(&l->functions, 0, sizeof l->functions);
    memset(&l->streams, 0, sizeof l->streams);
}

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Launch the records from run->tail on until one needs Python; the reason (STOP_*). */
int orion_launch_loop_run(struct orion_launch_loop *l, struct orion_launch_run *run)
{
    const uint64_t mask = l->size - 1;
    uint64_t tail = run->tail, head = run->head, since_publish = 0;
    size_t length_word = 0;
    void *extra[5] = {(void *)1, NULL, (void *)2, &length_word, NULL};   /* BUFFER_POINTER,
                                                                   BUFFER_SIZE, END */
    int stop;
    for (;;) {
        if (head - tail < ORION_LAUNCH_ARGS) {
            head = __atomic_load_n(&l->control[HEAD_WORD], __ATOMIC_ACQUIRE);
            if (head - tail < ORION_LAUNCH_ARGS) {
                stop = STOP_EMPTY;
                break;
            }
        }
        uint64_t pos = tail & mask;
        struct launch_record r;
        if (pos + ORION_LAUNCH_ARGS > l->size) {
            stop = STOP_GENERIC;
            break;
        }
        memcpy(&r, l->request + pos, sizeof r);
        uint64_t record = ORION_LAUNCH_ARGS + ((r.args_length + 7) & ~7ull);
        if (r.call != run->call || r.frames != l->frames || r.header != l->header ||
            r.args_buffer != r.args_length || r.size != record || pos + record > l->size ||
            tail + record > head || r.args_size != r.args_length || r.flags != 0 ||
            r.shared > 0xFFFFFFFFu) {
            stop = STOP_GENERIC;
            break;
        }
        struct slot *f = find(&l->functions, r.function);
        if (!f->used) {
            run->function = r.function;
            stop = STOP_UNKNOWN_FUNCTION;
            break;
        }
        if (f->value != r.args_length) {
            stop = STOP_GENERIC;   /* orionLaunchKernel answers cudaErrorInvalidValue */
            break;
        }
        struct slot *s = find(&l->streams, r.stream);
        if (!s->used) {
            run->stream = r.stream;
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
        int status;
        if (r.args_length) {
            extra[1] = (void *)(l->request + pos + ORION_LAUNCH_ARGS);
            length_word = r.args_length;   /* the driver copies the bytes before returning */
            status = l->launch(r.function, r.grid[0], r.grid[1], r.grid[2], r.block[0],
                               r.block[1], r.block[2], (unsigned)r.shared, r.stream, NULL,
                               extra);
        } else {
            status = l->launch(r.function, r.grid[0], r.grid[1], r.grid[2], r.block[0],
                               r.block[1], r.block[2], (unsigned)r.shared, r.stream, NULL,
                               NULL);
        }
        tail += record;
        run->taken++;
        if (status) {
            run->status = status;
            stop = STOP_FAILED;
            break;
        }
        if (++since_publish == PUBLISH_EVERY) {
            __atomic_store_n(&l->control[TAIL_WORD], tail, __ATOMIC_RELEASE);
            since_publish = 0;
        }
    }
    if (tail != run->tail)
        __atomic_store_n(&l->control[TAIL_WORD], tail, __ATOMIC_RELEASE);
    run->tail = tail;
    run->head = head;
    return stop;
}
