/* Copies and host memory: the client picks the wire call by direction, so host bytes
 * travel as bulk frames (docs/protocol.md) and device-to-device copies carry no data. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "capture.h"
#include "cudart_internal.h"
#include "hostmem.h"
#include "kernels.h"
#include "orion.h"
#include "shm.h"

/* Resolve cudaMemcpyDefault: host ranges we know are host; otherwise ask the server. */
static int is_device(const void *ptr)
{
    if (orion_hostmem_find(ptr, NULL))
        return 0;
    int type = 0;
    cudaError_t before = orion_take_last_error(0);
    int device = orionPointerType(ptr, &type) == cudaSuccess && type == cudaMemoryTypeDevice;
    orion_set_last_error(before);
    return device;
}

/* Same host, pageable memory: bulk bytes go through a staging segment the worker maps
 * (one per session, used by one copy at a time), in chunks, never through the socket.
 * Each chunk waits for its DMA: CUDA's pageable copies are synchronous in effect. */
#define STAGING_MIN (256u << 10)
#define STAGING_CHUNK (8u << 20)

typedef struct staging {
    orion_session *session;
    char *buffer;
    pthread_mutex_t lock;
} staging;

static staging stagings[ORION_MAX_DEVICES];
static int n_stagings;
static pthread_mutex_t stagings_lock = PTHREAD_MUTEX_INITIALIZER;

/* The current device's staging buffer, locked; NULL where there is none (remote). */
static staging *staging_acquire(void)
{
    uint16_t remote;
    orion_session *s = orion_session_of(orion_current_device(), &remote);
    if (!s || !orion_session_is_local(s))
        return NULL;
    pthread_mutex_lock(&stagings_lock);
    staging *st = NULL;
    for (int i = 0; i < n_stagings && !st; i++)
        if (stagings[i].session == s)
            st = &stagings[i];
    if (!st && n_stagings < ORION_MAX_DEVICES) {
        /* a session whose worker cannot map it keeps a NULL buffer: not asked again */
        char *buffer = orion_shm_alloc(STAGING_CHUNK);
        if (buffer && !orion_shm_usable(buffer, STAGING_CHUNK)) {
            orion_shm_free(buffer);
            buffer = NULL;
        }
        st = &stagings[n_stagings++];
        st->session = s;
        st->buffer = buffer;
        pthread_mutex_init(&st->lock, NULL);
    }
    pthread_mutex_unlock(&stagings_lock);
    if (st && st->buffer)
        pthread_mutex_lock(&st->lock);
    return st && st->buffer ? st : NULL;
}

static cudaError_t staged_copy(staging *st, void *dst, const void *src, size_t count,
                               enum cudaMemcpyKind kind, cudaStream_t stream)
{
    cudaError_t err = cudaSuccess;
    for (size_t done = 0; err == cudaSuccess && done < count; done += STAGING_CHUNK) {
        size_t n = count - done < STAGING_CHUNK ? count - done : STAGING_CHUNK;
        if (kind == cudaMemcpyHostToDevice) {
            memcpy(st->buffer, (const char *)src + done, n);
            err = orionMemcpyShm((char *)dst + done, st->buffer, n, kind, stream);
        } else {
            err = orionMemcpyShm(st->buffer, (const char *)src + done, n, kind, stream);
            if (err == cudaSuccess)
                memcpy((char *)dst + done, st->buffer, n);
        }
    }
    pthread_mutex_unlock(&st->lock);
    return err;
}

/* Bytes on the socket (across hosts, or where shared memory is unavailable) go in
 * frames of at most WIRE_CHUNK: libzmq moves many small messages far faster than one
 * large one, and the worker copies each chunk to the GPU while the next one arrives.
 * The chunks of a host-to-device copy are sent without waiting, all but the last of a
 * synchronous one too; its last chunk's reply carries any error of the earlier ones.
 * A device-to-host copy asks for its chunks a few at a time (orion_call_pipelined): the
 * worker reads the next chunk from the GPU while this one crosses the wire and lands in
 * the caller's memory. Its bytes come back in the replies, so even the async form
 * returns once they are in (as CUDA's copies to pageable memory do). */
#define WIRE_CHUNK (1u << 20)
/* orionMemcpyDtoH(dst: out_buf, src, count, stream): its id and arguments as the
 * generated stub (native/generated/cudart_stubs.c) sends them */
#define CALL_MEMCPY_DTOH 0x356af93au

typedef struct {
    char *dst;
    const char *src;
    size_t count;
    cudaStream_t stream;
} dtoh_chunks;

static void dtoh_chunk(orion_msg *m, size_t i, void *ctx)
{
    const dtoh_chunks *c = ctx;
    size_t done = i * WIRE_CHUNK;
    size_t n = c->count - done < WIRE_CHUNK ? c->count - done : WIRE_CHUNK;
    const char *src = c->src + done;
    orion_begin(m, CALL_MEMCPY_DTOH, 0);
    orion_expect_buf(m, c->dst + done, n);
    orion_put(m, &src, sizeof src);
    orion_put(m, &n, sizeof n);
    orion_put(m, &c->stream, sizeof c->stream);
}

static cudaError_t wire_copy(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind,
                            cudaStream_t stream, int is_async)
{
    if (kind == cudaMemcpyDeviceToHost) {
        dtoh_chunks c = {dst, src, count, stream};
        cudaError_t err = orion_call_pipelined((count + WIRE_CHUNK - 1) / WIRE_CHUNK,
                                               dtoh_chunk, &c);
        return err == cudaSuccess ? err : orion_fail(err);
    }
    cudaError_t err = cudaSuccess;
    for (size_t done = 0; err == cudaSuccess && done < count; done += WIRE_CHUNK) {
        size_t n = count - done < WIRE_CHUNK ? count - done : WIRE_CHUNK;
        int last = done + n == count;
        err = is_async || !last
                  ? orionMemcpyHtoDAsync((char *)dst + done, (const char *)src + done, n, stream)
                  : orionMemcpyHtoD((char *)dst + done, (const char *)src + done, n, stream);
    }
    return err;
}

static cudaError_t copy(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind,
                        cudaStream_t stream, int is_async)
{
    if (count == 0)
        return cudaSuccess;
    if (!dst || !src)
        return orion_fail(cudaErrorInvalidValue);
    if (kind == cudaMemcpyDefault) {
        int d = is_device(dst), s = is_device(src);
        kind = d ? (s ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                 : (s ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
    }
    if (kind == cudaMemcpyHostToDevice && orion_shm_usable(src, count))
        return is_async ? orionMemcpyShmAsync(dst, src, count, kind, stream)
                        : orionMemcpyShm(dst, src, count, kind, stream);
    if (kind == cudaMemcpyDeviceToHost && orion_shm_usable(dst, count))
        return is_async ? orionMemcpyShmAsync(dst, src, count, kind, stream)
                        : orionMemcpyShm(dst, src, count, kind, stream);
    if (is_async && stream && (kind == cudaMemcpyHostToDevice ||
                               kind == cudaMemcpyDeviceToHost) && orion_stream_capturing(stream))
        return orion_captured_copy(dst, src, count, kind, stream);
    /* device-to-host copies of any size: the worker writes into the staging segment
     * instead of building a reply frame (the same path as page-locked memory's) */
    if ((count >= STAGING_MIN && kind == cudaMemcpyHostToDevice) ||
        kind == cudaMemcpyDeviceToHost) {
        staging *st = staging_acquire();
        if (st)
            return staged_copy(st, dst, src, count, kind, stream);
    }
    switch (kind) {
    case cudaMemcpyHostToHost:
        if (!is_async)
            cudaStreamSynchronize(stream);   /* a host copy still orders after the stream */
        memmove(dst, src, count);
        return cudaSuccess;
    case cudaMemcpyHostToDevice:
    case cudaMemcpyDeviceToHost:
        return wire_copy(dst, src, count, kind, stream, is_async);
    case cudaMemcpyDeviceToDevice:
        return is_async ? orionMemcpyDtoDAsync(dst, src, count, stream)
                        : orionMemcpyDtoD(dst, src, count, stream);
    default:
        return orion_fail(cudaErrorInvalidMemcpyDirection);
    }
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind)
{
    return copy(dst, src, count, kind, 0, 0);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind,
                            cudaStream_t stream)
{
    return copy(dst, src, count, kind, stream, 1);
}

/* ---- symbols: __device__ / __constant__ variables registered by the program ---- */

cudaError_t cudaGetSymbolAddress(void **devPtr, const void *symbol)
{
    size_t size;
    if (!devPtr)
        return orion_fail(cudaErrorInvalidValue);
    return orion_symbol(symbol, devPtr, &size);
}

cudaError_t cudaGetSymbolSize(size_t *size, const void *symbol)
{
    void *address;
    if (!size)
        return orion_fail(cudaErrorInvalidValue);
    return orion_symbol(symbol, &address, size);
}

static cudaError_t symbol_copy(const void *symbol, size_t count, size_t offset, void **address)
{
    size_t size;
    cudaError_t err = orion_symbol(symbol, address, &size);
    if (err != cudaSuccess)
        return err;
    if (offset > size || count > size - offset)
        return orion_fail(cudaErrorInvalidValue);
    *address = (char *)*address + offset;
    return cudaSuccess;
}

static cudaError_t to_symbol(const void *symbol, const void *src, size_t count, size_t offset,
                             enum cudaMemcpyKind kind, cudaStream_t stream, int is_async)
{
    void *address;
    cudaError_t err = symbol_copy(symbol, count, offset, &address);
    if (err != cudaSuccess)
        return err;
    if (kind != cudaMemcpyHostToDevice && kind != cudaMemcpyDeviceToDevice &&
        kind != cudaMemcpyDefault)
        return orion_fail(cudaErrorInvalidMemcpyDirection);
    return copy(address, src, count, kind, stream, is_async);
}

static cudaError_t from_symbol(void *dst, const void *symbol, size_t count, size_t offset,
                               enum cudaMemcpyKind kind, cudaStream_t stream, int is_async)
{
    void *address;
    cudaError_t err = symbol_copy(symbol, count, offset, &address);
    if (err != cudaSuccess)
        return err;
    if (kind != cudaMemcpyDeviceToHost && kind != cudaMemcpyDeviceToDevice &&
        kind != cudaMemcpyDefault)
        return orion_fail(cudaErrorInvalidMemcpyDirection);
    return copy(dst, address, count, kind, stream, is_async);
}

cudaError_t cudaMemcpyToSymbol(const void *symbol, const void *src, size_t count, size_t offset,
                               enum cudaMemcpyKind kind)
{
    return to_symbol(symbol, src, count, offset, kind, 0, 0);
}

cudaError_t cudaMemcpyToSymbolAsync(const void *symbol, const void *src, size_t count,
                                    size_t offset, enum cudaMemcpyKind kind, cudaStream_t stream)
{
    return to_symbol(symbol, src, count, offset, kind, stream, 1);
}

cudaError_t cudaMemcpyFromSymbol(void *dst, const void *symbol, size_t count, size_t offset,
                                 enum cudaMemcpyKind kind)
{
    return from_symbol(dst, symbol, count, offset, kind, 0, 0);
}

cudaError_t cudaMemcpyFromSymbolAsync(void *dst, const void *symbol, size_t count,
                                      size_t offset, enum cudaMemcpyKind kind,
                                      cudaStream_t stream)
{
    return from_symbol(dst, symbol, count, offset, kind, stream, 1);
}

/* ---- host memory ----
 * Page-locked memory is a shared-memory segment (shm.h) where the platform allows,
 * else ordinary memory whose copies travel like pageable ones. */

cudaError_t cudaHostAlloc(void **pHost, size_t size, unsigned int flags)
{
    if (!pHost)
        return orion_fail(cudaErrorInvalidValue);
    cudaError_t err = orion_init();
    if (err != cudaSuccess)
        return orion_fail(err);
    void *p = orion_shm_alloc(size ? size : 1);
    if (!p && posix_memalign(&p, 4096, size ? size : 1) != 0)
        return orion_fail(cudaErrorMemoryAllocation);
    if (orion_hostmem_add(p, size, flags, 1)) {
        if (!orion_shm_free(p))
            free(p);
        return orion_fail(cudaErrorMemoryAllocation);
    }
    /* map it in the current device's worker now: registering memory later, say during
     * a stream capture, would break the capture */
    orion_shm_usable(p, size ? size : 1);
    *pHost = p;
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **ptr, size_t size)
{
    return cudaHostAlloc(ptr, size, cudaHostAllocDefault);
}

cudaError_t cudaFreeHost(void *ptr)
{
    int owned = 0;
    if (!ptr)
        return cudaSuccess;
    if (!orion_hostmem_remove(ptr, &owned) || !owned)
        return orion_fail(cudaErrorInvalidValue);
    if (!orion_shm_free(ptr))
        free(ptr);
    return cudaSuccess;
}

cudaError_t cudaHostRegister(void *ptr, size_t size, unsigned int flags)
{
    if (!ptr || !size)
        return orion_fail(cudaErrorInvalidValue);
    if (orion_hostmem_find(ptr, NULL))
        return orion_fail(cudaErrorHostMemoryAlreadyRegistered);
    return orion_hostmem_add(ptr, size, flags, 0) ? orion_fail(cudaErrorMemoryAllocation)
                                                  : cudaSuccess;
}

cudaError_t cudaHostUnregister(void *ptr)
{
    int owned = 0;
    if (!orion_hostmem_remove(ptr, &owned))
        return orion_fail(cudaErrorHostMemoryNotRegistered);
    return cudaSuccess;
}

cudaError_t cudaHostGetFlags(unsigned int *pFlags, void *pHost)
{
    if (!pFlags || !orion_hostmem_find(pHost, pFlags))
        return orion_fail(cudaErrorInvalidValue);
    return cudaSuccess;
}

cudaError_t cudaHostGetDevicePointer(void **pDevice, void *pHost, unsigned int flags)
{
    if (!pDevice || flags != 0)
        return orion_fail(cudaErrorInvalidValue);
    /* mapped memory needs pages the worker sees too: the shared segments */
    if (!orion_shm_usable(pHost, 1))
        return orion_fail(cudaErrorInvalidValue);
    return orionShmDevicePointer(pHost, pDevice);
}

cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *attributes, const void *ptr)
{
    if (!attributes)
        return orion_fail(cudaErrorInvalidValue);
    memset(attributes, 0, sizeof *attributes);
    attributes->device = orion_current_device();
    if (orion_hostmem_find(ptr, NULL)) {
        attributes->type = cudaMemoryTypeHost;
        attributes->hostPointer = (void *)ptr;
        return cudaSuccess;
    }
    int type = 0;
    cudaError_t err = orionPointerType(ptr, &type);
    if (err != cudaSuccess)
        return err;
    attributes->type = (enum cudaMemoryType)type;
    if (type == cudaMemoryTypeDevice)
        attributes->devicePointer = (void *)ptr;
    return cudaSuccess;
}
