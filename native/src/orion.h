/* Internal interface of the Orion client runtime (libcudart.so.13 shim).
 *
 * Every CUDA call the application makes lands in a generated stub
 * (native/generated/cudart_stubs.c) or a hand-written one (this directory). Stubs build
 * an orion_msg, then either send it without waiting (asynchronous calls) or wait for the
 * reply of the session that owns the current device. The layout of a message is
 * docs/protocol.md, "Data plane".
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime_api.h>

#define ORION_INTERNAL __attribute__((visibility("hidden")))
#define ORION_ASYNC 1u
#define ORION_MAX_BUFS 4
#define ORION_INLINE_ARGS 256
#define ORION_MAX_DEVICES 64

typedef struct orion_session orion_session;
typedef struct orion_lent orion_lent;

/* One request under construction, and then its reply. Lives on the caller's stack. */
typedef struct orion_msg {
    orion_session *session;
    uint8_t *args;                  /* header + packed arguments */
    size_t len, cap;
    const void *in_buf[ORION_MAX_BUFS];
    size_t in_len[ORION_MAX_BUFS];
    int n_in;
    void *out_buf[ORION_MAX_BUFS];
    size_t out_len[ORION_MAX_BUFS];
    int n_out;
    uint8_t *reply;                 /* packed out values, after the reply header */
    size_t reply_len, reply_pos;
    int failed;                     /* a put could not allocate: answer with an error */
    orion_lent *lent;               /* set: big in_bufs go on the socket uncopied */
    uint8_t inline_args[ORION_INLINE_ARGS];
} orion_msg;

/* ---- messages (message.c) ---- */
void orion_begin(orion_msg *m, uint32_t call_id, unsigned flags);
void orion_put(orion_msg *m, const void *value, size_t size);
void orion_put_in(orion_msg *m, const void *value, size_t size);   /* u8 present + value */
void orion_put_str(orion_msg *m, const char *s);
void orion_put_buf(orion_msg *m, const void *data, size_t size);   /* in_buf */
void orion_expect_buf(orion_msg *m, void *dest, size_t size);      /* out_buf */
cudaError_t orion_send(orion_msg *m);   /* asynchronous: no reply */
cudaError_t orion_call(orion_msg *m);   /* synchronous: waits, fills out_bufs */
void orion_get(orion_msg *m, void *dest, size_t size);
cudaError_t orion_end(orion_msg *m, cudaError_t err);  /* frees, records the last error */

/* ---- errors (errors.c, runtime.c) ---- */
cudaError_t orion_fail(cudaError_t err);               /* records and returns err */
cudaError_t orion_take_last_error(int reset);
/* for calls the runtime makes on its own behalf: their failure is not the app's error */
void orion_set_last_error(cudaError_t err);
cudaError_t orion_unsupported(const char *name);       /* logs the name once */

/* ---- runtime state (runtime.c) ---- */
cudaError_t orion_init(void);            /* lazy, once; the init error afterwards */
int orion_device_count(void);
int orion_current_device(void);
void orion_set_current_device(int device);
/* The session serving `device` and the device's number inside that session. */
orion_session *orion_session_of(int device, uint16_t *remote_index);
const struct orion_device_snapshot *orion_snapshot(int device);

/* ---- transport (transport.c) ---- */
/* Where a session's worker listens, and the token that makes this client the one peer
 * it serves (orion_server/peer.py), as oriond's open_session reply gives them. */
typedef struct orion_session_address {
    char worker[256];
    char events[256];   /* its host-function channel (callbacks.c) */
    char token[64];
} orion_session_address;
orion_session *orion_session_open(const orion_session_address *address);
const char *orion_session_events(const orion_session *s);
/* Before `sock` connects to one of the session's worker sockets: present the token. */
void orion_session_identify(const orion_session *s, void *sock);
void orion_callbacks_stop(void);   /* before the sessions close */
void orion_session_close(orion_session *s);
int orion_session_is_local(const orion_session *s);   /* ipc://: same host */
void *orion_zmq_context(void);
void *orion_zmq_socket(int type);   /* zmq_socket, the application's rand() untouched */
cudaError_t orion_session_send(orion_session *s, orion_msg *m);
cudaError_t orion_session_call(orion_session *s, orion_msg *m);
/* orion_session_call that runs work(ctx) once the request is out, before it waits for
 * the reply (even when the send failed): the client's share of a pipelined copy
 * overlaps the worker's. The session stays locked meanwhile. */
cudaError_t orion_session_call_overlapped(orion_session *s, orion_msg *m,
                                          void (*work)(void *ctx), void *ctx);
/* Bulk bytes lent to the socket instead of copied into messages (uploads over tcp://):
 * a request whose m->lent is set hands libzmq its big in_bufs as they are, and
 * orion_lent_return waits until libzmq has written them all (or the session is lost),
 * so the caller's memory may change after it. NULL when out of memory: then copy. */
orion_lent *orion_lent_new(void);
void orion_lent_return(orion_lent *lent);
/* The calling thread's next synchronous call is expected to take about ns (a big copy):
 * its wait on the call ring stays awake that long instead of sleeping after a short spin
 * (native cudaMemcpy spins too). One call only; 0 clears it. */
void orion_expect_busy(long long ns);
/* n synchronous calls, request i built by build(m, i, ctx) (orion_begin and the puts), all
 * on the current device's session, kept in flight a few at a time; the first error. */
typedef void (*orion_build_fn)(orion_msg *m, size_t i, void *ctx);
cudaError_t orion_call_pipelined(size_t n, orion_build_fn build, void *ctx);

/* ---- bulk host copies (copypool.c) ---- */
/* memcpy, split over a small persistent pool of threads where the size pays for it
 * (ORION_COPY_THREADS, default from the core count); plain memcpy otherwise. */
void orion_memcpy_parallel(void *dst, const void *src, size_t n);

/* ---- logging (log.c) ---- */
void orion_log_open(void);
/* 1 the first time `name` (a string constant: compared by address) is seen. */
int orion_first_time(const char *name);
void orion_log(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define ORION_INFO(...) orion_log("INFO", __VA_ARGS__)
#define ORION_WARN(...) orion_log("WARN", __VA_ARGS__)
#define ORION_ERROR(...) orion_log("ERROR", __VA_ARGS__)

/* Mirror of orion_server/backend.py SNAPSHOT layout: one device's answers to local
 * queries (properties, attributes), taken once when the session opens. */
#define ORION_SNAPSHOT_ATTRS 256
struct orion_device_snapshot {
    uint32_t version;
    uint32_t attr_count;
    char name[256];
    uint8_t uuid[16];
    uint64_t total_mem;
    int32_t attrs[ORION_SNAPSHOT_ATTRS];
};
_Static_assert(sizeof(struct orion_device_snapshot) == 1312, "must match backend.py");

/* Bytes of a cudaMemPoolAttr value: the memory amounts are 64-bit, the flags int. */
static inline size_t orion_mempool_attr_size(enum cudaMemPoolAttr attr)
{
    return attr >= cudaMemPoolAttrReleaseThreshold ? sizeof(uint64_t) : sizeof(int);
}

/* Transport failure: the server or the worker is gone. One documented code. */
#define ORION_TRANSPORT_ERROR cudaErrorDevicesUnavailable
