/* Stream capture and graph copies of pageable memory.
 *
 * A captured copy, or a graph memcpy node, must name host memory the worker can reach
 * every time the graph runs: page-locked memory is shared already (shm.h), pageable
 * memory is not. Such a copy goes through a *mirror*, a shared segment of the same
 * size, kept in step by host functions that run in the client in stream order: one
 * that refreshes the mirror from the application's memory before a host-to-device
 * copy, one that writes the mirror back after a device-to-host copy. Later work that
 * depends on the copy (a host function reading the result, say) sees the bytes. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "capture.h"
#include "cudart_internal.h"
#include "orion.h"
#include "shm.h"

cudaError_t orion_host_fn_persistent(cudaHostFn_t fn, void *data, uint64_t *id);

typedef struct mirror {
    void *host;      /* the application's memory */
    void *shared;    /* its mirror, mapped by the worker */
    size_t size;
} mirror;

#define MAX_CAPTURING 64
static cudaStream_t capturing[MAX_CAPTURING];
static int n_capturing;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void refresh(void *data)
{
    mirror *m = data;
    memcpy(m->shared, m->host, m->size);
}

static void write_back(void *data)
{
    mirror *m = data;
    memcpy(m->host, m->shared, m->size);
}

/* Mirrors made during a capture come from an arena mapped before the capture began:
 * mapping (registering) memory while a capture runs would invalidate it. */
#define ARENA_SIZE (16u << 20)
static struct { char *base; size_t used; } arenas[ORION_MAX_DEVICES];

static void prepare_arena(void)
{
    int device = orion_current_device();
    if (device < 0 || device >= ORION_MAX_DEVICES || arenas[device].base)
        return;
    char *base = orion_shm_alloc(ARENA_SIZE);
    if (base && !orion_shm_usable(base, ARENA_SIZE)) {
        orion_shm_free(base);
        base = NULL;
    }
    arenas[device].base = base;
}

static void *arena_take(size_t size)
{
    int device = orion_current_device();
    size = (size + 63) & ~(size_t)63;
    if (device < 0 || device >= ORION_MAX_DEVICES || !arenas[device].base ||
        size > ARENA_SIZE - arenas[device].used)
        return NULL;
    void *p = arenas[device].base + arenas[device].used;
    arenas[device].used += size;
    return p;
}

/* Mirrors live as long as the process: a graph may run any number of times. */
static mirror *new_mirror(void *host, size_t size)
{
    mirror *m = malloc(sizeof *m);
    if (!m)
        return NULL;
    pthread_mutex_lock(&lock);
    void *shared = arena_take(size ? size : 1);
    pthread_mutex_unlock(&lock);
    if (!shared) {
        shared = orion_shm_alloc(size ? size : 1);
        if (shared && !orion_shm_usable(shared, size ? size : 1)) {
            orion_shm_free(shared);
            shared = NULL;
        }
    }
    if (!shared) {
        free(m);
        return NULL;
    }
    *m = (mirror){host, shared, size};
    return m;
}

/* No mirror: the worker cannot map shared memory (another host, or none to be had). */
static cudaError_t no_mirror(cudaError_t err)
{
    ORION_WARN("a graph copy of pageable host memory needs memory shared with the worker "
               "(client and server on one host); use cudaMallocHost memory");
    return orion_fail(err);
}

int orion_stream_capturing(cudaStream_t stream)
{
    int found = 0;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < n_capturing && !found; i++)
        found = capturing[i] == stream;
    pthread_mutex_unlock(&lock);
    return found;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode)
{
    pthread_mutex_lock(&lock);
    prepare_arena();
    pthread_mutex_unlock(&lock);
    cudaError_t err = orionStreamBeginCapture(stream, mode);
    pthread_mutex_lock(&lock);
    if (err == cudaSuccess && n_capturing < MAX_CAPTURING)
        capturing[n_capturing++] = stream;
    pthread_mutex_unlock(&lock);
    return err;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *pGraph)
{
    pthread_mutex_lock(&lock);
    for (int i = 0; i < n_capturing; i++)
        if (capturing[i] == stream)
            capturing[i--] = capturing[--n_capturing];
    pthread_mutex_unlock(&lock);
    return orionStreamEndCapture(stream, pGraph);
}

cudaError_t orion_captured_copy(void *dst, const void *src, size_t count,
                                enum cudaMemcpyKind kind, cudaStream_t stream)
{
    int to_device = kind == cudaMemcpyHostToDevice;
    mirror *m = new_mirror(to_device ? (void *)src : dst, count);
    if (!m)
        return no_mirror(cudaErrorStreamCaptureUnsupported);
    if (to_device) {
        cudaError_t err = cudaLaunchHostFunc(stream, refresh, m);
        return err != cudaSuccess ? err
                                  : orionMemcpyShmAsync(dst, m->shared, count, kind, stream);
    }
    cudaError_t err = orionMemcpyShmAsync(m->shared, src, count, kind, stream);
    return err != cudaSuccess ? err : cudaLaunchHostFunc(stream, write_back, m);
}

/* A memcpy node between device memory and pageable `host`: the node copies the mirror,
 * with a host node before it (refresh) or after it (write back). */
static cudaError_t mirrored_node(cudaGraphNode_t *pGraphNode, cudaGraph_t graph,
                                 const cudaGraphNode_t *deps, size_t n, void *host,
                                 size_t span, int to_device,
                                 cudaError_t (*add_copy)(cudaGraphNode_t *, cudaGraph_t,
                                                         const cudaGraphNode_t *, size_t,
                                                         void *shared, const void *ctx),
                                 const void *ctx)
{
    mirror *m = new_mirror(host, span);
    if (!m)
        return no_mirror(cudaErrorNotSupported);
    uint64_t id;
    cudaError_t err = orion_host_fn_persistent(to_device ? refresh : write_back, m, &id);
    if (err != cudaSuccess)
        return err;
    cudaGraphNode_t sync_node, copy_node;
    if (to_device) {
        err = orionGraphAddHostNode(&sync_node, graph, deps, n, id);
        if (err == cudaSuccess)
            err = add_copy(pGraphNode, graph, &sync_node, 1, m->shared, ctx);
        return err;
    }
    err = add_copy(&copy_node, graph, deps, n, m->shared, ctx);
    if (err == cudaSuccess)   /* later nodes depend on the write-back, so see the bytes */
        err = orionGraphAddHostNode(pGraphNode, graph, &copy_node, 1, id);
    return err;
}

typedef struct { void *dst; const void *src; size_t count; enum cudaMemcpyKind kind; } copy_1d;

static cudaError_t add_1d(cudaGraphNode_t *node, cudaGraph_t graph, const cudaGraphNode_t *deps,
                          size_t n, void *shared, const void *ctx)
{
    const copy_1d *c = ctx;
    int to_device = c->kind == cudaMemcpyHostToDevice;
    return orionGraphAddMemcpyNode1D(node, graph, deps, n, to_device ? c->dst : shared,
                                     to_device ? shared : c->src, c->count, c->kind);
}

cudaError_t cudaGraphAddMemcpyNode1D(cudaGraphNode_t *pGraphNode, cudaGraph_t graph,
                                     const cudaGraphNode_t *pDependencies,
                                     size_t numDependencies, void *dst, const void *src,
                                     size_t count, enum cudaMemcpyKind kind)
{
    if (!pGraphNode)
        return orion_fail(cudaErrorInvalidValue);
    void *host = kind == cudaMemcpyHostToDevice ? (void *)src
               : kind == cudaMemcpyDeviceToHost ? dst : NULL;
    if (!host || orion_shm_usable(host, count))
        return orionGraphAddMemcpyNode1D(pGraphNode, graph, pDependencies, numDependencies,
                                         dst, src, count, kind);
    copy_1d c = {dst, src, count, kind};
    return mirrored_node(pGraphNode, graph, pDependencies, numDependencies, host, count,
                         kind == cudaMemcpyHostToDevice, add_1d, &c);
}

static cudaError_t add_3d(cudaGraphNode_t *node, cudaGraph_t graph, const cudaGraphNode_t *deps,
                          size_t n, void *shared, const void *ctx)
{
    struct cudaMemcpy3DParms p = *(const struct cudaMemcpy3DParms *)ctx;
    if (p.kind == cudaMemcpyHostToDevice)
        p.srcPtr.ptr = shared;
    else
        p.dstPtr.ptr = shared;
    return orionGraphAddMemcpyNode(node, graph, deps, n, &p);
}

cudaError_t cudaGraphAddMemcpyNode(cudaGraphNode_t *pGraphNode, cudaGraph_t graph,
                                   const cudaGraphNode_t *pDependencies, size_t numDependencies,
                                   const struct cudaMemcpy3DParms *p)
{
    if (!pGraphNode || !p)
        return orion_fail(cudaErrorInvalidValue);
    int to_device = p->kind == cudaMemcpyHostToDevice;
    const struct cudaPitchedPtr *hp = to_device ? &p->srcPtr : &p->dstPtr;
    const struct cudaPos *pos = to_device ? &p->srcPos : &p->dstPos;
    int host_side = to_device || p->kind == cudaMemcpyDeviceToHost;
    size_t span = hp->pitch * (hp->ysize ? hp->ysize : 1) *
                      (p->extent.depth + pos->z ? p->extent.depth + pos->z - 1 : 0) +
                  hp->pitch * (p->extent.height + pos->y ? p->extent.height + pos->y - 1 : 0) +
                  p->extent.width + pos->x;
    if (!host_side || (to_device ? p->srcArray : p->dstArray) || !hp->ptr ||
        orion_shm_usable(hp->ptr, span))
        return orionGraphAddMemcpyNode(pGraphNode, graph, pDependencies, numDependencies, p);
    return mirrored_node(pGraphNode, graph, pDependencies, numDependencies, hp->ptr, span,
                         to_device, add_3d, p);
}
