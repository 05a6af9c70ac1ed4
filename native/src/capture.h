/* Stream capture as the client sees it (capture.c). */
#pragma once

#include <cuda_runtime_api.h>

/* 1 while `stream` is being captured into a graph. */
int orion_stream_capturing(cudaStream_t stream);
/* An asynchronous copy between the device and pageable memory, captured: through a
 * mirror kept in step by host functions. */
cudaError_t orion_captured_copy(void *dst, const void *src, size_t count,
                                enum cudaMemcpyKind kind, cudaStream_t stream);
