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
 * (one per session, used by one copy at a time), never through the socket. A copy of at
 * least PIPELINE_MIN is cut into chunks that take turns in the segment's two slots, each
 * chunk one synchronous orionMemcpyShm, one in flight at a time: while the worker copies
 * chunk k between its slot and the GPU, the client fills the other slot with chunk k+1
 * (to the device), or empties it of chunk k-1 (to the host), with a few threads
 * (orion_memcpy_parallel). A slot is refilled only after its chunk's call returned, so
 * the GPU is done with it. Every chunk waits for its DMA: CUDA's pageable copies are
 * synchronous in effect (an async upload returns once its source was consumed, an async
 * download once the bytes are in the caller's memory). */
#define STAGING_MIN (256u << 10)
#define STAGING_SLOT (4u << 20)
#define PIPELINE_MIN (2u << 20)
#define CHUNK_MIN (1u << 20)
/* orionMemcpyShm(dst, src, count, kind, stream) is built here with its arguments in the
 * order the generated stub (native/generated/cudart_stubs.c) sends them */

typedef struct staging {
    orion_session *session;
    char *buffer;                /* two slots of STAGING_SLOT */
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
        char *buffer = orion_shm_alloc(2 * STAGING_SLOT);
        if (buffer && !orion_shm_usable(buffer, 2 * STAGING_SLOT)) {
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

/* What the client copies while one chunk's call is in flight. */
typedef struct {
    char *to;
    const char *from;
    size_t n;
} host_part;

static void copy_host_part(void *ctx)
{
    const host_part *p = ctx;
    if (p->n)
        orion_memcpy_parallel(p->to, p->from, p->n);
}

/* One chunk between a slot and the device, synchronous, `meanwhile` copied during it. */
static cudaError_t chunk_call(char *slot, char *device, size_t n, enum cudaMemcpyKind kind,
                              cudaStream_t stream, host_part *meanwhile)
{
    orion_msg m;
    void *dst = kind == cudaMemcpyHostToDevice ? device : slot;
    const void *src = kind == cudaMemcpyHostToDevice ? (const void *)slot : device;
    orion_begin(&m, ORION_CALL_ID_orionMemcpyShm, 0);
    orion_put(&m, &dst, sizeof dst);
    orion_put(&m, &src, sizeof src);
    orion_put(&m, &n, sizeof n);
    orion_put(&m, &kind, sizeof kind);
    orion_put(&m, &stream, sizeof stream);
    cudaError_t err;
    if (m.failed) {
        copy_host_part(meanwhile);
        err = (cudaError_t)m.failed;
    } else {
        orion_expect_busy((long long)(n / 4));   /* stay awake for up to ~4 GB/s */
        err = orion_session_call_overlapped(m.session, &m, copy_host_part, meanwhile);
    }
    return orion_end(&m, err);   /* records an error as the application's last */
}

static cudaError_t staged_copy(staging *st, void *dst, const void *src, size_t count,
                               enum cudaMemcpyKind kind, cudaStream_t stream)
{
    size_t chunk = count;
    if (count >= PIPELINE_MIN) {
        /* at least two chunks, so the two sides overlap */
        chunk = ((count + 1) / 2 + 65535) & ~(size_t)65535;
        if (chunk > STAGING_SLOT)
            chunk = STAGING_SLOT;
        if (chunk < CHUNK_MIN)
            chunk = CHUNK_MIN;
    }
    size_t chunks = (count + chunk - 1) / chunk;
    char *slots[2] = {st->buffer, st->buffer + STAGING_SLOT};
    cudaError_t err = cudaSuccess;
#define CHUNK_LEN(k) ((k) + 1 < chunks ? chunk : count - (k) * chunk)
    if (kind == cudaMemcpyHostToDevice) {
        orion_memcpy_parallel(slots[0], src, CHUNK_LEN(0));
        for (size_t k = 0; err == cudaSuccess && k < chunks; k++) {
            host_part next = {0};
            if (k + 1 < chunks)
                next = (host_part){slots[(k + 1) % 2], (const char *)src + (k + 1) * chunk,
                                   CHUNK_LEN(k + 1)};
            err = chunk_call(slots[k % 2], (char *)dst + k * chunk, CHUNK_LEN(k), kind,
                             stream, &next);
        }
    } else {
        size_t k = 0;
        for (; err == cudaSuccess && k < chunks; k++) {
            host_part previous = {0};
            if (k > 0)
                previous = (host_part){(char *)dst + (k - 1) * chunk, slots[(k - 1) % 2],
                                       CHUNK_LEN(k - 1)};
            err = chunk_call(slots[k % 2], (char *)src + k * chunk, CHUNK_LEN(k), kind,
                             stream, &previous);
        }
        if (err == cudaSuccess)
            orion_memcpy_parallel((char *)dst + (chunks - 1) * chunk, slots[(chunks - 1) % 2],
                                  CHUNK_LEN(chunks - 1));
    }
#undef CHUNK_LEN
    pthread_mutex_unlock(&st->lock);
    return err;
}

/* Bytes on the socket (across hosts, or where shared memory is unavailable) go in
 * frames of at most WIRE_CHUNK: libzmq moves many small messages far faster than one
 * large one, and the worker copies each chunk to the GPU while the next one arrives.
 *
 * The chunks of a host-to-device copy are sent without waiting, all but the last of a
 * synchronous one too; its last chunk's reply carries any error of the earlier ones.
 * Their bytes are lent to libzmq, not copied (orion_lent), and the copy returns once
 * libzmq has written them, as CUDA's upload from pageable memory returns once its source
 * is consumed, async or not. Copying into messages instead cost the client a memcpy and,
 * worse, page faults: glibc hands libzmq's 1 MiB message buffers back to the kernel
 * between copies (~190,000 faults/s at 3.6 GB/s on the H100 host; benchmarks/NOTES.md).
 * An async upload from page-locked memory waits for the wire too, where CUDA's returns
 * at once: over a socket, the copy into messages it would take instead is hardly quicker.
 *
 * A device-to-host copy asks for its chunks a few at a time (orion_call_pipelined): the
 * worker reads the next chunk from the GPU while this one crosses the wire and lands in
 * the caller's memory. Its bytes come back in the replies, so even the async form
 * returns once they are in (as CUDA's copies to pageable memory do).
 *
 * orionMemcpyHtoD[Async](dst, src: in_buf, count, stream) and orionMemcpyDtoH(dst:
 * out_buf, src, count, stream) are built here with their arguments in the order the
 * generated stubs (native/generated/cudart_stubs.c) send them. */
#define WIRE_CHUNK (1u << 20)

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
    orion_begin(m, ORION_CALL_ID_orionMemcpyDtoH, 0);
    orion_expect_buf(m, c->dst + done, n);
    orion_put(m, &src, sizeof src);
    orion_put(m, &n, sizeof n);
    orion_put(m, &c->stream, sizeof c->stream);
}

static cudaError_t htod_chunk(char *dst, const char *src, size_t n, cudaStream_t stream,
                              int wait, orion_lent *lent)
{
    orion_msg m;
    orion_begin(&m, wait ? ORION_CALL_ID_orionMemcpyHtoD : ORION_CALL_ID_orionMemcpyHtoDAsync,
                wait ? 0 : ORION_ASYNC);
    orion_put(&m, &dst, sizeof dst);
    orion_put_buf(&m, src, n);
    orion_put(&m, &n, sizeof n);
    orion_put(&m, &stream, sizeof stream);
    m.lent = lent;
    cudaError_t err = wait ? orion_call(&m) : orion_send(&m);
    return orion_end(&m, err);
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
    orion_lent *lent = orion_lent_new();
    cudaError_t err = cudaSuccess;
    for (size_t done = 0; err == cudaSuccess && done < count; done += WIRE_CHUNK) {
        size_t n = count - done < WIRE_CHUNK ? count - done : WIRE_CHUNK;
        err = htod_chunk((char *)dst + done, (const char *)src + done, n, stream,
                         !is_async && done + n == count, lent);
    }
    orion_lent_return(lent);
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
    /* page-locked memory (a shared segment): one call, the worker's one DMA. A
     * synchronous one waits awake for its reply, as the driver's own cudaMemcpy spins:
     * a core left asleep through a 1 ms copy took ~0.1-0.3 ms to wake (H100 host) */
    if ((kind == cudaMemcpyHostToDevice && orion_shm_usable(src, count)) ||
        (kind == cudaMemcpyDeviceToHost && orion_shm_usable(dst, count))) {
        if (is_async)
            return orionMemcpyShmAsync(dst, src, count, kind, stream);
        orion_expect_busy((long long)(count / 4));
        return orionMemcpyShm(dst, src, count, kind, stream);
    }
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
