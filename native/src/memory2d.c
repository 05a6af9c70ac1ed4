/* Pitched (2D), 3D and array copies. Host rows travel packed, width * height bytes, so
 * a pitched host buffer costs no padding on the wire; the device side keeps its pitch. */
#include <stdlib.h>
#include <string.h>

#include "cudart_internal.h"
#include "orion.h"

/* Rows of `width` bytes, `pitch` apart -> one contiguous buffer (or the same memory). */
static const void *pack_rows(const void *src, size_t pitch, size_t width, size_t height,
                             void **scratch)
{
    *scratch = NULL;
    if (pitch == width || height <= 1)
        return src;
    char *packed = malloc(width * height);
    if (!packed)
        return NULL;
    for (size_t y = 0; y < height; y++)
        memcpy(packed + y * width, (const char *)src + y * pitch, width);
    *scratch = packed;
    return packed;
}

static cudaError_t from_device_rows(void *dst, size_t dpitch, size_t width, size_t height,
                                    cudaError_t (*fetch)(void *packed, const void *ctx),
                                    const void *ctx)
{
    if (dpitch == width || height <= 1)
        return fetch(dst, ctx);
    char *packed = malloc(width * height);
    if (!packed)
        return orion_fail(cudaErrorMemoryAllocation);
    cudaError_t err = fetch(packed, ctx);
    for (size_t y = 0; err == cudaSuccess && y < height; y++)
        memcpy((char *)dst + y * dpitch, packed + y * width, width);
    free(packed);
    return err;
}

static cudaError_t check_2d(const void *dst, size_t dpitch, const void *src, size_t spitch,
                            size_t width)
{
    if (!dst || !src || width > dpitch || width > spitch)
        return orion_fail(cudaErrorInvalidPitchValue);
    return cudaSuccess;
}

typedef struct { const void *src; size_t spitch, width, height; cudaStream_t stream; } dtoh_2d;

static cudaError_t fetch_2d(void *packed, const void *ctx)
{
    const dtoh_2d *c = ctx;
    return orionMemcpy2DDtoH(packed, c->src, c->spitch, c->width, c->height, c->stream);
}

static cudaError_t copy_2d(void *dst, size_t dpitch, const void *src, size_t spitch,
                           size_t width, size_t height, enum cudaMemcpyKind kind,
                           cudaStream_t stream, int is_async)
{
    if (width == 0 || height == 0)
        return cudaSuccess;
    cudaError_t err = check_2d(dst, dpitch, src, spitch, width);
    if (err != cudaSuccess)
        return err;
    if (kind == cudaMemcpyDefault) {
        struct cudaPointerAttributes d, s;
        if (cudaPointerGetAttributes(&d, dst) || cudaPointerGetAttributes(&s, src))
            return orion_fail(cudaErrorInvalidValue);
        int dd = d.type == cudaMemoryTypeDevice, sd = s.type == cudaMemoryTypeDevice;
        kind = dd ? (sd ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                  : (sd ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
    }
    void *scratch;
    const void *packed;
    switch (kind) {
    case cudaMemcpyHostToHost:
        cudaStreamSynchronize(stream);
        for (size_t y = 0; y < height; y++)
            memmove((char *)dst + y * dpitch, (const char *)src + y * spitch, width);
        return cudaSuccess;
    case cudaMemcpyHostToDevice:
        packed = pack_rows(src, spitch, width, height, &scratch);
        if (!packed)
            return orion_fail(cudaErrorMemoryAllocation);
        err = is_async ? orionMemcpy2DHtoDAsync(dst, dpitch, packed, width, height, stream)
                       : orionMemcpy2DHtoD(dst, dpitch, packed, width, height, stream);
        free(scratch);
        return err;
    case cudaMemcpyDeviceToHost: {
        dtoh_2d ctx = {src, spitch, width, height, stream};
        return from_device_rows(dst, dpitch, width, height, fetch_2d, &ctx);
    }
    case cudaMemcpyDeviceToDevice:
        return is_async ? orionMemcpy2DDtoDAsync(dst, dpitch, src, spitch, width, height, stream)
                        : orionMemcpy2DDtoD(dst, dpitch, src, spitch, width, height, stream);
    default:
        return orion_fail(cudaErrorInvalidMemcpyDirection);
    }
}

cudaError_t cudaMemcpy2D(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                         size_t height, enum cudaMemcpyKind kind)
{
    return copy_2d(dst, dpitch, src, spitch, width, height, kind, 0, 0);
}

cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                              size_t width, size_t height, enum cudaMemcpyKind kind,
                              cudaStream_t stream)
{
    return copy_2d(dst, dpitch, src, spitch, width, height, kind, stream, 1);
}

/* ---- arrays ---- */

static cudaError_t to_array(cudaArray_t dst, size_t wOffset, size_t hOffset, const void *src,
                            size_t spitch, size_t width, size_t height,
                            enum cudaMemcpyKind kind, cudaStream_t stream)
{
    if (!dst || !src || width > spitch)
        return orion_fail(cudaErrorInvalidValue);
    if (width == 0 || height == 0)
        return cudaSuccess;
    if (kind == cudaMemcpyDeviceToDevice)
        return orionMemcpy2DArrayDtoD(dst, wOffset, hOffset, (void *)src, spitch, width, height,
                                      1, stream);
    if (kind != cudaMemcpyHostToDevice && kind != cudaMemcpyDefault)
        return orion_fail(cudaErrorInvalidMemcpyDirection);
    void *scratch;
    const void *packed = pack_rows(src, spitch, width, height, &scratch);
    if (!packed)
        return orion_fail(cudaErrorMemoryAllocation);
    cudaError_t err = orionMemcpy2DToArray(dst, wOffset, hOffset, packed, width, height, stream);
    free(scratch);
    return err;
}

typedef struct { cudaArray_const_t src; size_t w, h, width, height; cudaStream_t stream; }
    from_array_ctx;

static cudaError_t fetch_array(void *packed, const void *ctx)
{
    const from_array_ctx *c = ctx;
    return orionMemcpy2DFromArray(packed, c->src, c->w, c->h, c->width, c->height, c->stream);
}

static cudaError_t from_array(void *dst, size_t dpitch, cudaArray_const_t src, size_t wOffset,
                              size_t hOffset, size_t width, size_t height,
                              enum cudaMemcpyKind kind, cudaStream_t stream)
{
    if (!dst || !src || width > dpitch)
        return orion_fail(cudaErrorInvalidValue);
    if (width == 0 || height == 0)
        return cudaSuccess;
    if (kind == cudaMemcpyDeviceToDevice)
        return orionMemcpy2DArrayDtoD((cudaArray_t)src, wOffset, hOffset, dst, dpitch, width,
                                      height, 0, stream);
    if (kind != cudaMemcpyDeviceToHost && kind != cudaMemcpyDefault)
        return orion_fail(cudaErrorInvalidMemcpyDirection);
    from_array_ctx ctx = {src, wOffset, hOffset, width, height, stream};
    return from_device_rows(dst, dpitch, width, height, fetch_array, &ctx);
}

cudaError_t cudaMemcpy2DToArray(cudaArray_t dst, size_t wOffset, size_t hOffset, const void *src,
                                size_t spitch, size_t width, size_t height,
                                enum cudaMemcpyKind kind)
{
    return to_array(dst, wOffset, hOffset, src, spitch, width, height, kind, 0);
}

cudaError_t cudaMemcpy2DToArrayAsync(cudaArray_t dst, size_t wOffset, size_t hOffset,
                                     const void *src, size_t spitch, size_t width, size_t height,
                                     enum cudaMemcpyKind kind, cudaStream_t stream)
{
    return to_array(dst, wOffset, hOffset, src, spitch, width, height, kind, stream);
}

cudaError_t cudaMemcpy2DFromArray(void *dst, size_t dpitch, cudaArray_const_t src, size_t wOffset,
                                  size_t hOffset, size_t width, size_t height,
                                  enum cudaMemcpyKind kind)
{
    return from_array(dst, dpitch, src, wOffset, hOffset, width, height, kind, 0);
}

cudaError_t cudaMemcpy2DFromArrayAsync(void *dst, size_t dpitch, cudaArray_const_t src,
                                       size_t wOffset, size_t hOffset, size_t width,
                                       size_t height, enum cudaMemcpyKind kind,
                                       cudaStream_t stream)
{
    return from_array(dst, dpitch, src, wOffset, hOffset, width, height, kind, stream);
}

/* The deprecated 1D array copies: `count` bytes from (wOffset, hOffset), wrapping
 * at the end of each array row, as a partial first row, whole rows, a partial last row. */
static cudaError_t array_row_bytes(cudaArray_const_t array, size_t *row)
{
    struct cudaChannelFormatDesc desc;
    struct cudaExtent ext;
    unsigned flags;
    cudaError_t err = cudaArrayGetInfo(&desc, &ext, &flags, (cudaArray_t)array);
    *row = ext.width * (size_t)(desc.x + desc.y + desc.z + desc.w) / 8;
    return err != cudaSuccess ? err : *row ? cudaSuccess : orion_fail(cudaErrorInvalidValue);
}

typedef cudaError_t (*row_copy)(void *array, size_t w, size_t h, char *host, size_t width,
                                size_t height, enum cudaMemcpyKind kind);

static cudaError_t linear_array_copy(void *array, size_t w, size_t h, char *host, size_t count,
                                     enum cudaMemcpyKind kind, row_copy copy)
{
    size_t row;
    cudaError_t err = array_row_bytes(array, &row);
    if (err != cudaSuccess || w >= row)
        return err != cudaSuccess ? err : orion_fail(cudaErrorInvalidValue);
    while (err == cudaSuccess && count) {
        size_t width = w ? row - w : row, height = 1;
        if (width > count)
            width = count;
        else if (!w && count >= row)
            height = count / row;
        err = copy(array, w, h, host, width, height, kind);
        host += width * height;
        count -= width * height;
        h += w + width == row || !w ? height : 0;
        w = (w + width) % row;
    }
    return err;
}

static cudaError_t rows_to_array(void *array, size_t w, size_t h, char *host, size_t width,
                                 size_t height, enum cudaMemcpyKind kind)
{
    return to_array(array, w, h, host, width, width, height, kind, 0);
}

static cudaError_t rows_from_array(void *array, size_t w, size_t h, char *host, size_t width,
                                   size_t height, enum cudaMemcpyKind kind)
{
    return from_array(host, width, array, w, h, width, height, kind, 0);
}

cudaError_t cudaMemcpyToArray(cudaArray_t dst, size_t wOffset, size_t hOffset, const void *src,
                              size_t count, enum cudaMemcpyKind kind)
{
    if (!dst || !src)
        return orion_fail(cudaErrorInvalidValue);
    return linear_array_copy(dst, wOffset, hOffset, (char *)src, count, kind, rows_to_array);
}

cudaError_t cudaMemcpyFromArray(void *dst, cudaArray_const_t src, size_t wOffset,
                                size_t hOffset, size_t count, enum cudaMemcpyKind kind)
{
    if (!dst || !src)
        return orion_fail(cudaErrorInvalidValue);
    return linear_array_copy((void *)src, wOffset, hOffset, dst, count, kind, rows_from_array);
}

/* ---- 3D: a stack of 2D copies, one per depth slice ---- */

static cudaError_t copy_3d(const struct cudaMemcpy3DParms *p, cudaStream_t stream, int is_async)
{
    if (!p)
        return orion_fail(cudaErrorInvalidValue);
    struct cudaExtent e = p->extent;
    if (p->srcArray || p->dstArray) {
        /* arrays: extent width is in elements; only one slice through the 2D path */
        if (e.depth > 1 || p->srcPos.z || p->dstPos.z)
            return orion_unsupported("cudaMemcpy3D with 3D arrays");
        struct cudaChannelFormatDesc desc;
        struct cudaExtent ext;
        unsigned flags;
        cudaArray_t array = p->dstArray ? p->dstArray : p->srcArray;
        cudaError_t err = cudaArrayGetInfo(&desc, &ext, &flags, array);
        if (err != cudaSuccess)
            return err;
        size_t elem = (size_t)(desc.x + desc.y + desc.z + desc.w) / 8;
        size_t width = e.width * elem, height = e.height ? e.height : 1;
        if (p->dstArray)
            return to_array(p->dstArray, p->dstPos.x * elem, p->dstPos.y,
                            (const char *)p->srcPtr.ptr + p->srcPos.z * p->srcPtr.pitch *
                                p->srcPtr.ysize + p->srcPos.y * p->srcPtr.pitch + p->srcPos.x,
                            p->srcPtr.pitch, width, height, p->kind, stream);
        return from_array((char *)p->dstPtr.ptr + p->dstPos.z * p->dstPtr.pitch * p->dstPtr.ysize +
                              p->dstPos.y * p->dstPtr.pitch + p->dstPos.x,
                          p->dstPtr.pitch, p->srcArray, p->srcPos.x * elem, p->srcPos.y, width,
                          height, p->kind, stream);
    }
    const struct cudaPitchedPtr *s = &p->srcPtr, *d = &p->dstPtr;
    for (size_t z = 0; z < e.depth; z++) {
        const char *src = (const char *)s->ptr + ((p->srcPos.z + z) * s->ysize + p->srcPos.y) *
                                                     s->pitch + p->srcPos.x;
        char *dst = (char *)d->ptr + ((p->dstPos.z + z) * d->ysize + p->dstPos.y) * d->pitch +
                    p->dstPos.x;
        cudaError_t err = copy_2d(dst, d->pitch, src, s->pitch, e.width, e.height, p->kind,
                                  stream, is_async);
        if (err != cudaSuccess)
            return err;
    }
    return cudaSuccess;
}

cudaError_t cudaMemcpy3D(const struct cudaMemcpy3DParms *p)
{
    return copy_3d(p, 0, 0);
}

cudaError_t cudaMemcpy3DAsync(const struct cudaMemcpy3DParms *p, cudaStream_t stream)
{
    return copy_3d(p, stream, 1);
}
