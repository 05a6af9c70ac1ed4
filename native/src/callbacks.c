/* Host functions enqueued on a stream (cudaLaunchHostFunc, cudaStreamAddCallback) run
 * in the client process, where their code and data live, when the stream reaches them,
 * and the stream waits for them: the worker announces each one on the session's events
 * channel (orion_server/host_functions.py) and a thread of ours runs it and answers.
 * The calls themselves return at once, as CUDA's do. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "capture.h"
#include "cudart_internal.h"
#include "orion.h"

typedef struct host_fn {
    uint64_t id;
    cudaHostFn_t fn;                /* cudaLaunchHostFunc */
    cudaStreamCallback_t callback;  /* or cudaStreamAddCallback */
    cudaStream_t stream;
    void *data;
    int persistent;                 /* a graph's host node: runs at every launch */
    struct host_fn *next;
} host_fn;

typedef struct channel {
    orion_session *session;
    void *sock;
    pthread_t thread;
    volatile int stop;
} channel;

static host_fn *due;
static channel channels[ORION_MAX_DEVICES];
static int channel_count;
static uint64_t next_id;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* The entry of `id`, unlinked unless it is a graph's (those stay for the next launch). */
static host_fn *take(uint64_t id)
{
    pthread_mutex_lock(&lock);
    host_fn **link = &due;
    while (*link && (*link)->id != id)
        link = &(*link)->next;
    host_fn *f = *link;
    if (f && !f->persistent)
        *link = f->next;
    pthread_mutex_unlock(&lock);
    return f;
}

static void *serve(void *arg)
{
    channel *c = arg;
    while (!c->stop) {
        zmq_pollitem_t item = {c->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, 200) <= 0)
            continue;
        uint64_t id;
        if (zmq_recv(c->sock, &id, sizeof id, 0) != sizeof id)
            continue;
        host_fn *f = take(id);
        if (f) {
            if (f->fn)
                f->fn(f->data);
            else
                f->callback(f->stream, cudaSuccess, f->data);
            if (!f->persistent)
                free(f);
        }
        zmq_send(c->sock, &id, sizeof id, 0);   /* the stream may go on */
    }
    return NULL;
}

/* The channel of the current device's session, started on first use. Lock held. */
static channel *channel_of_current(void)
{
    uint16_t remote;
    orion_session *s = orion_session_of(orion_current_device(), &remote);
    if (!s)
        return NULL;
    for (int i = 0; i < channel_count; i++)
        if (channels[i].session == s)
            return &channels[i];
    if (channel_count == ORION_MAX_DEVICES || !orion_session_events(s)[0])
        return NULL;
    channel *c = &channels[channel_count];
    c->session = s;
    c->stop = 0;
    c->sock = orion_zmq_socket(ZMQ_DEALER);
    orion_session_identify(s, c->sock);
    int linger = 0;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(c->sock, orion_session_events(s)) != 0 ||
        zmq_send(c->sock, "hello", 5, 0) != 5 ||
        pthread_create(&c->thread, NULL, serve, c) != 0) {
        ORION_ERROR("host functions: cannot reach %s", orion_session_events(s));
        zmq_close(c->sock);
        return NULL;
    }
    channel_count++;
    return c;
}

/* Record a host function under a new id, with the channel that will announce it. */
static cudaError_t add(cudaHostFn_t fn, cudaStreamCallback_t callback, cudaStream_t stream,
                       void *data, int persistent, host_fn **out)
{
    cudaError_t err = orion_init();
    if (err != cudaSuccess)
        return orion_fail(err);
    host_fn *f = calloc(1, sizeof *f);
    if (!f)
        return orion_fail(cudaErrorMemoryAllocation);
    *f = (host_fn){0, fn, callback, stream, data, persistent, NULL};
    pthread_mutex_lock(&lock);
    channel *c = channel_of_current();
    if (c) {
        f->id = ++next_id;
        f->next = due;
        due = f;
    }
    pthread_mutex_unlock(&lock);
    if (!c) {
        free(f);
        return orion_fail(ORION_TRANSPORT_ERROR);
    }
    *out = f;
    return cudaSuccess;
}

cudaError_t orion_host_fn_persistent(cudaHostFn_t fn, void *data, uint64_t *id)
{
    host_fn *f;
    cudaError_t err = add(fn, NULL, NULL, data, 1, &f);
    if (err == cudaSuccess)
        *id = f->id;
    return err;
}

static cudaError_t enqueue(cudaStream_t stream, cudaHostFn_t fn, cudaStreamCallback_t callback,
                           void *data)
{
    host_fn *f;
    /* captured into a graph, it runs at every launch of the graph: keep it */
    cudaError_t err = add(fn, callback, stream, data, orion_stream_capturing(stream), &f);
    if (err != cudaSuccess)
        return err;
    err = orionHostFunc(stream, f->id);
    if (err != cudaSuccess && take(f->id))
        free(f);
    return err;
}

cudaError_t cudaLaunchHostFunc(cudaStream_t stream, cudaHostFn_t fn, void *userData)
{
    if (!fn)
        return orion_fail(cudaErrorInvalidValue);
    return enqueue(stream, fn, NULL, userData);
}

cudaError_t cudaStreamAddCallback(cudaStream_t stream, cudaStreamCallback_t callback,
                                  void *userData, unsigned int flags)
{
    if (!callback || flags != 0)
        return orion_fail(cudaErrorInvalidValue);
    return enqueue(stream, NULL, callback, userData);
}

void orion_callbacks_stop(void)
{
    /* joined without the lock: a thread may be finishing a host function */
    pthread_mutex_lock(&lock);
    int count = channel_count;
    channel_count = 0;
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < count; i++) {
        channels[i].stop = 1;
        pthread_join(channels[i].thread, NULL);
        zmq_close(channels[i].sock);
    }
}
