/* Client side of the same-host call ring (ring.h; docs/protocol.md, "Same-host call ring"). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <linux/futex.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ring.h"
#include "shm_object.h"
#include "spin.h"

#define RING_MAGIC 0x474E524Fu   /* "ORNG" little-endian */
#define RING_VERSION 1
#define REQUEST_BYTES (1u << 20)
#define REPLY_BYTES (1u << 20)
#define RECORD_PAD 1u            /* record flag: skip to the start of the ring */
#define MAX_FRAMES 16
/* Poll this long before sleeping on the futex: a call the worker answers within it costs
 * no system call and no wake-up on either side. */
#define SPIN_NS 50000
/* A caller expecting a long wait (orion_ring_wait_reply_busy) stays awake at most this
 * long: a core asleep for a millisecond can take a few hundred microseconds to wake. */
#define BUSY_MAX_NS 20000000LL

/* Shared header. Each cache line after the first is written by one side only (but for
 * the other side clearing a sleeping flag), so polling does not bounce lines. */
struct ring_header {
    uint32_t magic;
    uint16_t version;
    uint16_t header_size;
    uint32_t request_size;       /* bytes of the request ring, a power of two */
    uint32_t reply_size;         /* bytes of the reply area */
    uint8_t reserved0[48];
    /* written by the client */
    uint64_t head;               /* request bytes published */
    uint32_t client_sleeping;    /* futex: 1 while the client sleeps for a reply */
    uint8_t reserved1[52];
    /* written by the worker */
    uint64_t tail;               /* request bytes the worker is done with */
    uint64_t reply_seq;          /* seq of the reply in the reply area, stored after it */
    uint32_t worker_sleeping;    /* futex: 1 while the worker sleeps for a request */
    uint8_t reserved2[108];
};
_Static_assert(sizeof(struct ring_header) == 256, "docs/protocol.md");
_Static_assert(offsetof(struct ring_header, head) == 64, "docs/protocol.md");
_Static_assert(offsetof(struct ring_header, tail) == 128, "docs/protocol.md");
_Static_assert(offsetof(struct ring_header, worker_sleeping) == 144, "docs/protocol.md");

struct orion_ring {
    struct ring_header *h;
    uint8_t *request, *reply;
    size_t map_size;
    uint64_t head;               /* ours alone: h->head is its published copy */
    char name[64];
};

static size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

/* Shared between processes: not FUTEX_PRIVATE. */
static void futex_wait(uint32_t *word, uint32_t value, long long ns)
{
    struct timespec t = {ns / 1000000000LL, ns % 1000000000LL};
    syscall(SYS_futex, word, FUTEX_WAIT, value, &t, NULL, 0);
}

/* The other side's half of the sleep protocol: after publishing, wake it if it said it
 * sleeps. The fence orders our publishing store before the load of its flag, as its own
 * fence orders its flag before its last look at our word (so one of us sees the other). */
static void wake(uint32_t *sleeping)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(sleeping, __ATOMIC_RELAXED) &&
        __atomic_exchange_n(sleeping, 0, __ATOMIC_SEQ_CST))
        syscall(SYS_futex, sleeping, FUTEX_WAKE, 1, NULL, NULL, 0);
}

orion_ring *orion_ring_create(void)
{
    orion_ring *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->map_size = sizeof *r->h + REQUEST_BYTES + REPLY_BYTES;
    int fd = orion_shm_create(r->name, sizeof r->name, "orion-ring");
    void *p = MAP_FAILED;
    if (fd >= 0 && ftruncate(fd, (off_t)r->map_size) == 0)
        p = mmap(NULL, r->map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (fd >= 0) {
        close(fd);
        if (p == MAP_FAILED)
            shm_unlink(r->name);
    }
    if (p == MAP_FAILED) {
        free(r);
        return NULL;
    }
    r->h = p;   /* a new segment reads as zeros: counters and flags start at 0 */
    r->h->magic = RING_MAGIC;
    r->h->version = RING_VERSION;
    r->h->header_size = sizeof *r->h;
    r->h->request_size = REQUEST_BYTES;
    r->h->reply_size = REPLY_BYTES;
    r->request = (uint8_t *)p + sizeof *r->h;
    r->reply = r->request + REQUEST_BYTES;
    return r;
}

const char *orion_ring_name(const orion_ring *r)
{
    return r->name;
}

void orion_ring_unlink(orion_ring *r)
{
    shm_unlink(r->name);
}

void orion_ring_destroy(orion_ring *r)
{
    if (!r)
        return;
    munmap(r->h, r->map_size);
    shm_unlink(r->name);
    free(r);
}

/* Record: u32 size (bytes to the next record), u16 frame count, u16 flags, u32 length of
 * each frame, then the frames, each starting 8-aligned. */
static size_t record_size(const orion_frame *frames, int n)
{
    size_t size = align8(8 + 4 * (size_t)n);
    for (int i = 0; i < n; i++)
        size += align8(frames[i].len);
    return size;
}

static void write_record(uint8_t *at, size_t size, const orion_frame *frames, int n,
                         unsigned flags)
{
    uint32_t size32 = (uint32_t)size;
    uint16_t n16 = (uint16_t)n, flags16 = (uint16_t)flags;
    memcpy(at, &size32, 4);
    memcpy(at + 4, &n16, 2);
    memcpy(at + 6, &flags16, 2);
    size_t pos = align8(8 + 4 * (size_t)n);
    for (int i = 0; i < n; i++) {
        uint32_t len = (uint32_t)frames[i].len;
        memcpy(at + 8 + 4 * i, &len, 4);
        if (len)
            memcpy(at + pos, frames[i].data, len);
        pos += align8(len);
    }
}

int orion_ring_put(orion_ring *r, const orion_frame *frames, int n, unsigned flags,
                   int timeout_us)
{
    size_t cap = r->h->request_size, size = record_size(frames, n);
    /* at most half the ring: then a record and the padding before it always fit once
     * the worker has caught up */
    if (n > MAX_FRAMES || size > cap / 2)
        return ORION_RING_TOO_BIG;
    size_t pos = r->head & (cap - 1);
    size_t pad = pos + size > cap ? cap - pos : 0;   /* a record never wraps */
    long long deadline = orion_now_ns() + timeout_us * 1000LL;
    while (r->head + pad + size - __atomic_load_n(&r->h->tail, __ATOMIC_ACQUIRE) > cap) {
        /* full: the worker is busy (it sleeps only on an empty ring), so poll */
        if (orion_now_ns() > deadline)
            return ORION_RING_BUSY;
        struct timespec pause = {0, 20000};
        nanosleep(&pause, NULL);
    }
    if (pad) {
        write_record(r->request + pos, pad, NULL, 0, RECORD_PAD);
        pos = 0;
    }
    write_record(r->request + pos, size, frames, n, flags);
    r->head += pad + size;
    __atomic_store_n(&r->h->head, r->head, __ATOMIC_RELEASE);
    wake(&r->h->worker_sleeping);
    return ORION_RING_OK;
}

int orion_ring_wait_reply(orion_ring *r, uint64_t seq, int timeout_us)
{
    return orion_ring_wait_reply_busy(r, seq, timeout_us, 0);
}

int orion_ring_wait_reply_busy(orion_ring *r, uint64_t seq, int timeout_us, long long busy_ns)
{
    struct ring_header *h = r->h;
    long long start = orion_now_ns(), deadline = start + timeout_us * 1000LL;
    if (busy_ns > BUSY_MAX_NS)
        busy_ns = BUSY_MAX_NS;
    while (__atomic_load_n(&h->reply_seq, __ATOMIC_ACQUIRE) != seq) {
        long long t = orion_now_ns();
        if (t >= deadline)
            return 0;
        if (t - start < SPIN_NS) {
            orion_cpu_relax();
            continue;
        }
        if (t - start < busy_ns) {
            /* a long call (a big copy): stay awake, as the CUDA driver's own wait does,
             * but let other threads of this core run */
            sched_yield();
            continue;
        }
        /* say we sleep, then look once more: the worker stores reply_seq before it
         * reads our flag, so either we see the reply or it sees the flag and wakes us */
        __atomic_store_n(&h->client_sleeping, 1, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (__atomic_load_n(&h->reply_seq, __ATOMIC_ACQUIRE) != seq)
            futex_wait(&h->client_sleeping, 1, deadline - t);
        __atomic_store_n(&h->client_sleeping, 0, __ATOMIC_RELAXED);
    }
    return 1;
}

int orion_ring_reply(const orion_ring *r, orion_frame *frames, int max, unsigned *flags)
{
    uint32_t size;
    uint16_t n, flags16;
    memcpy(&size, r->reply, 4);
    memcpy(&n, r->reply + 4, 2);
    memcpy(&flags16, r->reply + 6, 2);
    *flags = flags16;
    if (n > max || size > r->h->reply_size)
        return -1;
    size_t pos = align8(8 + 4 * (size_t)n);
    for (int i = 0; i < n; i++) {
        uint32_t len;
        memcpy(&len, r->reply + 8 + 4 * i, 4);
        if (pos + len > size)
            return -1;
        frames[i] = (orion_frame){r->reply + pos, len};
        pos += align8(len);
    }
    return n;
}
