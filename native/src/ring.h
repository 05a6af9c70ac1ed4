/* The same-host call ring: one session's requests and replies through shared memory.
 *
 * A ZeroMQ round trip between the client and a Python worker costs ~65 µs (libzmq's
 * thread hand-offs); a shared-memory word both sides poll costs under a microsecond. So
 * when the worker is on this host, the client creates this region, offers it to the
 * worker over the session's socket, and from then on every request and reply of the
 * session travels here, framed exactly as on the socket. Layout, records and the wake-up
 * protocol: docs/protocol.md, "Same-host call ring"; the worker's side is
 * orion_server/ring.py.
 *
 * One producer per direction: the client writes requests under its session lock, the
 * worker's serve loop writes replies. This file has no ZeroMQ and no logging, so the
 * unit tests load it on its own (tests/unit/test_ring.py).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct orion_ring orion_ring;

typedef struct orion_frame {
    const void *data;
    size_t len;
} orion_frame;

/* Record flag: the message itself travels on the ZeroMQ socket (too big for the ring);
 * the record keeps its place in the order. */
#define ORION_RING_ON_SOCKET 2u

enum { ORION_RING_OK, ORION_RING_BUSY, ORION_RING_TOO_BIG };

/* A new region (POSIX shm "/orion-ring-<pid>-<n>") mapped here; NULL if there is none. */
orion_ring *orion_ring_create(void);
const char *orion_ring_name(const orion_ring *r);
/* Remove the name: the worker has mapped the region (or never will). */
void orion_ring_unlink(orion_ring *r);
void orion_ring_destroy(orion_ring *r);

/* Queue one request (its frames, or none with ORION_RING_ON_SOCKET) and wake the worker.
 * BUSY: no room came within timeout_us (the worker is behind, or gone: check, then call
 * again); TOO_BIG: it can never fit, send it on the socket. */
int orion_ring_put(orion_ring *r, const orion_frame *frames, int n, unsigned flags,
                   int timeout_us);
/* 1 once the reply to `seq` is in the reply area, 0 if it did not come within timeout_us.
 * Spins for a while first, then sleeps on a futex. */
int orion_ring_wait_reply(orion_ring *r, uint64_t seq, int timeout_us);
/* The same, but after the spin it stays awake (sched_yield) until busy_ns have passed
 * before it sleeps: for calls expected to take that long (big copies). */
int orion_ring_wait_reply_busy(orion_ring *r, uint64_t seq, int timeout_us, long long busy_ns);
/* The frames of the reply in the reply area (pointers into it, valid until the next
 * request): their number, or -1 if the record is malformed. *flags: the record's. */
int orion_ring_reply(const orion_ring *r, orion_frame *frames, int max, unsigned *flags);
