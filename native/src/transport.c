/* The call channel of one session: a DEALER socket to the client's worker and, when the
 * worker is on this host, the call ring (ring.h) that then carries every call.
 *
 * One lock per session keeps calls in program order whichever thread makes them: an
 * asynchronous call is sent under it, a synchronous call holds it until its reply is in.
 * A socket monitor tells when the worker has gone, so no call waits for a dead peer; the
 * socket stays connected for it (and for the rare message too big for the ring) while
 * the ring carries the calls.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "orion.h"
#include "ring.h"
#include "spin.h"

#define HEADER_SIZE 24
#define MAGIC 0x314E524Fu
#define CONNECT_TIMEOUT_MS 5000
#define POLL_MS 1000
/* reply flags: trailing frames of device output, in this order */
#define REPLY_OUTPUT 2   /* for stdout: device printf */
#define REPLY_ERRORS 4   /* for stderr: device assert messages */
/* Not a CUDA call: offers the worker a call ring (docs/protocol.md); crc32("orionCallRing") */
#define RING_CALL_ID 0xD6DFA992u
/* While waiting on the ring, look at the socket monitor this often: the ring cannot
 * tell that the worker died. */
#define RING_CHECK_US 100000
/* Most synchronous calls in flight on the socket (orion_call_pipelined): 8 chunks of 1 MiB
 * cover a tcp:// round trip of ~1 ms at 4 GB/s, and bound what the worker queues. */
#define PIPELINE_DEPTH 8

struct orion_session {
    void *sock;
    void *monitor;
    pthread_mutex_t lock;
    uint64_t seq;
    int connected;      /* the worker accepted us at least once */
    int dead;           /* the worker disconnected: every call fails from now on */
    char address[256];
    char events[256];   /* the worker's host-function channel (callbacks.c) */
    char token[64];     /* our routing id there: the worker serves no other peer */
    uint64_t unmatched; /* replies whose seq matched no waiting call (logged) */
    orion_ring *ring;   /* set once the worker took it: every call goes through it */
    size_t window;      /* calls orion_call_pipelined keeps in flight on the socket */
};

static void *context;
static pthread_once_t context_once = PTHREAD_ONCE_INIT;

static void create_context(void)
{
    context = zmq_ctx_new();
}

void *orion_zmq_context(void)
{
    pthread_once(&context_once, create_context);
    return context;
}

/* libzmq draws a REQ socket's first request id from rand(), whose state is the
 * application's: a program that makes its data with rand() and no srand() (the same
 * numbers every run) would get other numbers through Orion. So sockets are made while
 * the C library's generator runs on a state of ours (tests/programs/rand_state.cu).
 * Another thread of the application drawing at that moment draws from ours instead. */
void *orion_zmq_socket(int type)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static char ours[128];
    static int seeded;
    pthread_mutex_lock(&lock);
    char *theirs = seeded ? setstate(ours) : initstate(1, ours, sizeof ours);
    seeded = 1;
    void *sock = zmq_socket(orion_zmq_context(), type);
    setstate(theirs);
    pthread_mutex_unlock(&lock);
    return sock;
}

static void offer_ring(orion_session *s);

orion_session *orion_session_open(const orion_session_address *a)
{
    static int counter;
    orion_session *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    snprintf(s->address, sizeof s->address, "%s", a->worker);
    snprintf(s->events, sizeof s->events, "%s", a->events);
    snprintf(s->token, sizeof s->token, "%s", a->token);
    s->sock = orion_zmq_socket(ZMQ_DEALER);
    orion_session_identify(s, s->sock);
    int linger = 0, no_reconnect = -1, hb_ivl = 1000, hb_timeout = 5000;
    zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger);
    /* a new worker would not have this session's state: never reconnect */
    zmq_setsockopt(s->sock, ZMQ_RECONNECT_IVL, &no_reconnect, sizeof no_reconnect);
    zmq_setsockopt(s->sock, ZMQ_HEARTBEAT_IVL, &hb_ivl, sizeof hb_ivl);
    zmq_setsockopt(s->sock, ZMQ_HEARTBEAT_TIMEOUT, &hb_timeout, sizeof hb_timeout);
    char mon[64];
    snprintf(mon, sizeof mon, "inproc://orion-monitor-%d", __sync_fetch_and_add(&counter, 1));
    zmq_socket_monitor(s->sock, mon, ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED);
    s->monitor = orion_zmq_socket(ZMQ_PAIR);
    zmq_connect(s->monitor, mon);
    if (zmq_connect(s->sock, s->address) != 0) {
        ORION_ERROR("cannot connect to worker %s: %s", s->address, zmq_strerror(zmq_errno()));
        orion_session_close(s);
        return NULL;
    }
    /* ORION_WIRE_WINDOW (1-PIPELINE_DEPTH): a tuning knob for measurements */
    const char *window = getenv("ORION_WIRE_WINDOW");
    s->window = window && atoi(window) >= 1 && atoi(window) <= PIPELINE_DEPTH
                    ? (size_t)atoi(window) : PIPELINE_DEPTH;
    const char *ring = getenv("ORION_SHM_RING");
    if (orion_session_is_local(s) && !(ring && strcmp(ring, "0") == 0))
        offer_ring(s);
    return s;
}

const char *orion_session_events(const orion_session *s)
{
    return s->events;
}

void orion_session_identify(const orion_session *s, void *sock)
{
    zmq_setsockopt(sock, ZMQ_ROUTING_ID, s->token, strlen(s->token));
}

int orion_session_is_local(const orion_session *s)
{
    return strncmp(s->address, "ipc://", 6) == 0;
}

void orion_session_close(orion_session *s)
{
    if (!s)
        return;
    zmq_socket_monitor(s->sock, NULL, 0);
    zmq_close(s->monitor);
    zmq_close(s->sock);
    orion_ring_destroy(s->ring);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* Read pending monitor events; called with the lock held. */
static void drain_monitor(orion_session *s)
{
    for (;;) {
        zmq_msg_t event, endpoint;
        zmq_msg_init(&event);
        if (zmq_msg_recv(&event, s->monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&event);
            return;
        }
        uint16_t id = 0;
        if (zmq_msg_size(&event) >= 2)
            memcpy(&id, zmq_msg_data(&event), 2);
        zmq_msg_close(&event);
        zmq_msg_init(&endpoint);
        zmq_msg_recv(&endpoint, s->monitor, 0);
        zmq_msg_close(&endpoint);
        if (id == ZMQ_EVENT_CONNECTED)
            s->connected = 1;
        else if (id == ZMQ_EVENT_DISCONNECTED && !s->dead) {
            s->dead = 1;
            ORION_ERROR("worker %s disconnected: the session is lost", s->address);
        }
    }
}

/* Frames libzmq holds of a lender's memory, plus one for the lender; freed by whoever
 * drops the last (a frame may outlive a lender that gave up on a lost session). */
struct orion_lent {
    int refs;
    orion_session *session;   /* the one its frames went to */
};

/* Below this a copy into the message costs less than the wait for its release. */
#define LEND_MIN (64u << 10)

orion_lent *orion_lent_new(void)
{
    orion_lent *lent = calloc(1, sizeof *lent);
    if (lent)
        lent->refs = 1;
    return lent;
}

static void lent_drop(orion_lent *lent)
{
    if (__atomic_sub_fetch(&lent->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(lent);
}

/* libzmq's free function for a lent frame (its I/O thread, once the bytes are written) */
static void lent_released(void *data, void *hint)
{
    (void)data;
    lent_drop(hint);
}

/* Released frames come back within microseconds of their bytes reaching the kernel, so
 * the wait spins a little, then naps; a session that died keeps its frames unwritten. */
#define LENT_SPIN_NS 20000
#define LENT_NAP_US 20
#define LENT_CHECK_NS 100000000LL

void orion_lent_return(orion_lent *lent)
{
    if (!lent)
        return;
    long long start = orion_now_ns(), checked = start;
    while (__atomic_load_n(&lent->refs, __ATOMIC_ACQUIRE) > 1) {
        long long now = orion_now_ns();
        if (now - start < LENT_SPIN_NS) {
            orion_cpu_relax();
            continue;
        }
        if (now - checked >= LENT_CHECK_NS) {
            orion_session *s = lent->session;
            pthread_mutex_lock(&s->lock);
            drain_monitor(s);
            int dead = s->dead;
            pthread_mutex_unlock(&s->lock);
            if (dead)
                break;   /* no connection reads them now, and none will (no reconnect) */
            checked = now;
        }
        usleep(LENT_NAP_US);
    }
    lent_drop(lent);
}

/* One frame of a request's bulk bytes: lent where the request allows, copied otherwise. */
static int send_bytes(orion_session *s, const orion_msg *m, int i, int flags)
{
    if (m->lent && m->in_len[i] >= LEND_MIN) {
        zmq_msg_t part;
        __atomic_add_fetch(&m->lent->refs, 1, __ATOMIC_ACQ_REL);
        m->lent->session = s;
        if (zmq_msg_init_data(&part, (void *)m->in_buf[i], m->in_len[i], lent_released,
                              m->lent) == 0) {
            if (zmq_msg_send(&part, s->sock, flags) >= 0)
                return 0;
            zmq_msg_close(&part);   /* releases it */
            return -1;
        }
        lent_drop(m->lent);
    }
    return zmq_send(s->sock, m->in_len[i] ? m->in_buf[i] : "", m->in_len[i], flags);
}

static cudaError_t socket_send(orion_session *s, orion_msg *m)
{
    int more = m->n_in ? ZMQ_SNDMORE : 0;
    if (zmq_send(s->sock, m->args, m->len, more) < 0)
        return ORION_TRANSPORT_ERROR;
    for (int i = 0; i < m->n_in; i++)
        if (send_bytes(s, m, i, i + 1 < m->n_in ? ZMQ_SNDMORE : 0) < 0)
            return ORION_TRANSPORT_ERROR;
    return cudaSuccess;
}

static cudaError_t ring_send(orion_session *s, orion_msg *m)
{
    orion_frame frames[1 + ORION_MAX_BUFS] = {{m->args, m->len}};
    for (int i = 0; i < m->n_in; i++)
        frames[i + 1] = (orion_frame){m->in_buf[i], m->in_len[i]};
    int n = 1 + m->n_in;
    unsigned flags = 0;
    for (;;) {
        int rc = orion_ring_put(s->ring, frames, n, flags, RING_CHECK_US);
        if (rc == ORION_RING_OK)
            return cudaSuccess;
        if (rc == ORION_RING_TOO_BIG) {
            /* rare (bulk bytes of this host go through shared segments): the frames go
             * on the socket, and a record in the ring tells the worker when to read them;
             * a send to a worker gone would block, so look first */
            drain_monitor(s);
            if (s->dead || socket_send(s, m) != cudaSuccess)
                return ORION_TRANSPORT_ERROR;
            n = 0;
            flags = ORION_RING_ON_SOCKET;
            continue;
        }
        drain_monitor(s);   /* the ring stays full: is the worker still there? */
        if (s->dead)
            return ORION_TRANSPORT_ERROR;
    }
}

static cudaError_t send_locked(orion_session *s, orion_msg *m)
{
    /* On the ring, its waits read the monitor instead: a look at every call would cost
     * half a microsecond, a good part of the ring's round trip. */
    if (!s->ring)
        drain_monitor(s);
    if (s->dead)
        return ORION_TRANSPORT_ERROR;
    uint64_t seq = ++s->seq;
    memcpy(m->args + 16, &seq, sizeof seq);
    return s->ring ? ring_send(s, m) : socket_send(s, m);
}

cudaError_t orion_session_send(orion_session *s, orion_msg *m)
{
    pthread_mutex_lock(&s->lock);
    cudaError_t err = send_locked(s, m);
    pthread_mutex_unlock(&s->lock);
    return err;
}

/* Skip the rest of a multipart message (a reply we cannot use). */
static void discard_rest(void *sock)
{
    int more = 1;
    size_t sz = sizeof more;
    while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        zmq_msg_recv(&part, sock, 0);
        zmq_msg_close(&part);
    }
}

/* What the kernels printed, where the application's own output goes. */
static void write_device_output(FILE *to, const void *text, size_t len)
{
    fwrite(text, 1, len, to);
    fflush(to);
}

/* Frame 0 of a reply: 1 when it answers `seq` (its status and flags out, the packed
 * outputs kept in m->reply), 0 when it is malformed or answers another call (logged). */
static int take_head(orion_session *s, orion_msg *m, const uint8_t *data, size_t size,
                     uint64_t seq, uint32_t *status, uint16_t *flags)
{
    uint64_t reply_seq = 0;
    if (size >= HEADER_SIZE) {
        memcpy(flags, data + 6, 2);
        memcpy(status, data + 8, 4);
        memcpy(&reply_seq, data + 16, 8);
    }
    if (size < HEADER_SIZE || reply_seq != seq) {
        s->unmatched++;
        ORION_WARN("dropped a reply for call %llu while waiting for %llu (%llu so far)",
                   (unsigned long long)reply_seq, (unsigned long long)seq,
                   (unsigned long long)s->unmatched);
        return 0;
    }
    m->reply_len = size - HEADER_SIZE;
    m->reply = m->reply_len ? malloc(m->reply_len) : NULL;
    if (m->reply)
        memcpy(m->reply, data + HEADER_SIZE, m->reply_len);
    return 1;
}

/* Receive one reply; 1 when it answered `seq` (status in *err), 0 for a stray one. */
static int receive_reply(orion_session *s, orion_msg *m, uint64_t seq, cudaError_t *err)
{
    zmq_msg_t head;
    zmq_msg_init(&head);
    if (zmq_msg_recv(&head, s->sock, 0) < 0) {
        zmq_msg_close(&head);
        *err = ORION_TRANSPORT_ERROR;
        return 1;
    }
    uint32_t status = 0;
    uint16_t flags = 0;
    int matched = take_head(s, m, zmq_msg_data(&head), zmq_msg_size(&head), seq, &status,
                            &flags);
    zmq_msg_close(&head);
    if (!matched) {
        discard_rest(s->sock);
        return 0;
    }
    *err = (cudaError_t)status;
    /* out_buf frames go straight into the caller's memory: one copy, no staging */
    for (int i = 0; status == 0 && i < m->n_out; i++) {
        int more = 0;
        size_t sz = sizeof more;
        zmq_getsockopt(s->sock, ZMQ_RCVMORE, &more, &sz);
        int n = more ? zmq_recv(s->sock, m->out_buf[i], m->out_len[i], 0) : -1;
        if (n < 0 || (size_t)n != m->out_len[i]) {
            ORION_ERROR("reply buffer %d: got %d bytes, expected %zu", i, n, m->out_len[i]);
            *err = ORION_TRANSPORT_ERROR;
            break;
        }
    }
    for (int flag = REPLY_OUTPUT; flag <= REPLY_ERRORS; flag <<= 1) {
        int more = 0;
        size_t sz = sizeof more;
        zmq_getsockopt(s->sock, ZMQ_RCVMORE, &more, &sz);
        if (!(flags & flag) || !more)
            continue;
        zmq_msg_t text;
        zmq_msg_init(&text);
        if (zmq_msg_recv(&text, s->sock, 0) >= 0)
            write_device_output(flag == REPLY_OUTPUT ? stdout : stderr, zmq_msg_data(&text),
                                zmq_msg_size(&text));
        zmq_msg_close(&text);
    }
    discard_rest(s->sock);
    return 1;
}

/* The reply to `seq` from the socket. */
static cudaError_t socket_wait(orion_session *s, orion_msg *m, uint64_t seq)
{
    cudaError_t err = cudaSuccess;
    long long started = orion_now_ns() / 1000000;
    for (;;) {
        zmq_pollitem_t items[] = {{s->sock, 0, ZMQ_POLLIN, 0}, {s->monitor, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, POLL_MS) < 0 && zmq_errno() != EINTR)
            return ORION_TRANSPORT_ERROR;
        if ((items[0].revents & ZMQ_POLLIN) && receive_reply(s, m, seq, &err))
            return err;
        drain_monitor(s);
        if (s->dead || (!s->connected && orion_now_ns() / 1000000 - started > CONNECT_TIMEOUT_MS)) {
            if (!s->dead)
                ORION_ERROR("worker %s did not accept the connection", s->address);
            s->dead = 1;
            return ORION_TRANSPORT_ERROR;
        }
    }
}

/* The reply to `seq` from the ring (or from the socket, where the ring says it went). */
static __thread long long busy_hint_ns;

/* Only where a waiter spinning on its core leaves others to the worker (and the copy
 * threads): on a machine of 2-3 cores it would take the worker's. */
#define BUSY_MIN_CORES 4

void orion_expect_busy(long long ns)
{
    static int cores;
    if (!cores)
        cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    busy_hint_ns = cores >= BUSY_MIN_CORES ? ns : 0;
}

static cudaError_t ring_wait(orion_session *s, orion_msg *m, uint64_t seq)
{
    long long busy_ns = busy_hint_ns;
    busy_hint_ns = 0;
    while (!orion_ring_wait_reply_busy(s->ring, seq, RING_CHECK_US, busy_ns)) {
        drain_monitor(s);
        if (s->dead)
            return ORION_TRANSPORT_ERROR;
    }
    orion_frame frames[2 + ORION_MAX_BUFS];
    unsigned ring_flags;
    int n = orion_ring_reply(s->ring, frames, 2 + ORION_MAX_BUFS, &ring_flags);
    if (n >= 0 && (ring_flags & ORION_RING_ON_SOCKET))
        return socket_wait(s, m, seq);
    uint32_t status = 0;
    uint16_t flags = 0;
    if (n < 1 || !take_head(s, m, frames[0].data, frames[0].len, seq, &status, &flags)) {
        ORION_ERROR("malformed reply in the call ring for call %llu", (unsigned long long)seq);
        return ORION_TRANSPORT_ERROR;
    }
    for (int i = 0; status == 0 && i < m->n_out; i++) {
        if (i + 1 >= n || frames[i + 1].len != m->out_len[i]) {
            ORION_ERROR("reply buffer %d: got %zu bytes, expected %zu", i,
                        i + 1 < n ? frames[i + 1].len : 0, m->out_len[i]);
            return ORION_TRANSPORT_ERROR;
        }
        memcpy(m->out_buf[i], frames[i + 1].data, m->out_len[i]);
    }
    int next = 1 + (status == 0 ? m->n_out : 0);
    for (int flag = REPLY_OUTPUT; flag <= REPLY_ERRORS; flag <<= 1)
        if ((flags & flag) && next < n) {
            write_device_output(flag == REPLY_OUTPUT ? stdout : stderr, frames[next].data,
                                frames[next].len);
            next++;
        }
    return (cudaError_t)status;
}

cudaError_t orion_session_call(orion_session *s, orion_msg *m)
{
    pthread_mutex_lock(&s->lock);
    cudaError_t err = send_locked(s, m);
    if (err == cudaSuccess)
        err = s->ring ? ring_wait(s, m, s->seq) : socket_wait(s, m, s->seq);
    busy_hint_ns = 0;
    pthread_mutex_unlock(&s->lock);
    return err;
}

cudaError_t orion_session_call_overlapped(orion_session *s, orion_msg *m,
                                          void (*work)(void *ctx), void *ctx)
{
    pthread_mutex_lock(&s->lock);
    cudaError_t err = send_locked(s, m);
    work(ctx);
    if (err == cudaSuccess)
        err = s->ring ? ring_wait(s, m, s->seq) : socket_wait(s, m, s->seq);
    busy_hint_ns = 0;
    pthread_mutex_unlock(&s->lock);
    return err;
}

/* Synchronous calls in a pipeline (bulk device-to-host bytes over the socket): up to
 * PIPELINE_DEPTH requests in flight (fewer with ORION_WIRE_WINDOW), their replies taken
 * in order while the worker executes the next ones, so the worker's copy, the transfer
 * and the client's copy of successive chunks overlap instead of adding up. A ring session
 * has one reply area: one call at a time there. The session stays locked throughout, so
 * no other thread's call takes one of these replies. After the first error no more
 * requests go out; those in flight are still answered and taken. The first error is
 * returned (not recorded: the caller does that). */
cudaError_t orion_call_pipelined(size_t n, orion_build_fn build, void *ctx)
{
    if (n == 0)
        return cudaSuccess;
    orion_msg ms[PIPELINE_DEPTH];
    uint64_t seqs[PIPELINE_DEPTH];
    build(&ms[0], 0, ctx);
    orion_session *s = ms[0].session;
    if (ms[0].failed || !s) {
        cudaError_t err = ms[0].failed ? (cudaError_t)ms[0].failed : cudaErrorInvalidDevice;
        orion_end(&ms[0], cudaSuccess);   /* frees; the caller records the error */
        return err;
    }
    pthread_mutex_lock(&s->lock);
    size_t window = s->ring ? 1 : s->window;
    cudaError_t first = cudaSuccess;
    size_t sent = 0, done = 0;
    for (;;) {
        while (first == cudaSuccess && sent < n && sent - done < window) {
            orion_msg *m = &ms[sent % PIPELINE_DEPTH];
            if (sent > 0)
                build(m, sent, ctx);
            cudaError_t err = m->failed ? (cudaError_t)m->failed
                              : m->session != s ? cudaErrorInvalidDevice : send_locked(s, m);
            if (err != cudaSuccess) {
                orion_end(m, cudaSuccess);
                first = err;
                break;
            }
            seqs[sent % PIPELINE_DEPTH] = s->seq;
            sent++;
        }
        if (done == sent)
            break;
        orion_msg *m = &ms[done % PIPELINE_DEPTH];
        uint64_t seq = seqs[done % PIPELINE_DEPTH];
        cudaError_t err = s->ring ? ring_wait(s, m, seq) : socket_wait(s, m, seq);
        orion_end(m, cudaSuccess);
        done++;
        if (err != cudaSuccess && first == cudaSuccess)
            first = err;
        if (err == ORION_TRANSPORT_ERROR) {
            /* the worker is gone or the reply stream broke: nothing more will match */
            for (; done < sent; done++)
                orion_end(&ms[done % PIPELINE_DEPTH], cudaSuccess);
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return first;
}

/* Offer the worker a call ring, over the socket: a request of the data-plane header with
 * the call id RING_CALL_ID and the ring's name as a `str` argument. Status 0 means the
 * worker has mapped it and now reads calls there only; anything else (an older worker, a
 * worker that cannot map it) leaves the session on the socket. */
static void offer_ring(orion_session *s)
{
    orion_ring *ring = orion_ring_create();
    if (!ring) {
        ORION_WARN("no shared memory for a call ring: calls go through ZeroMQ");
        return;
    }
    const char *name = orion_ring_name(ring);
    orion_msg m = {.session = s};
    uint32_t magic = MAGIC, call = RING_CALL_ID, len = (uint32_t)strlen(name);
    uint16_t version = 1;
    m.args = m.inline_args;
    memcpy(m.args, &magic, 4);
    memcpy(m.args + 4, &version, 2);
    memcpy(m.args + 8, &call, 4);
    memcpy(m.args + HEADER_SIZE, &len, 4);
    memcpy(m.args + HEADER_SIZE + 4, name, len);
    m.len = HEADER_SIZE + 4 + len;
    cudaError_t err = orion_session_call(s, &m);
    free(m.reply);
    orion_ring_unlink(ring);   /* mapped by the worker now, or never: the name can go */
    if (err == cudaSuccess) {
        s->ring = ring;
        ORION_INFO("call ring up with %s (%s)", s->address, name);
    } else {
        ORION_INFO("worker %s took no call ring (error %d): calls go through ZeroMQ",
                   s->address, err);
        orion_ring_destroy(ring);
    }
}
