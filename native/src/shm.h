/* Page-locked host memory in shared-memory segments (same host only).
 *
 * cudaMallocHost/cudaHostAlloc memory is a POSIX shared-memory segment mapped in the
 * client and, on first use by a session, in that session's worker, which registers it
 * with the driver. Copies between it and the device are then DMA in the worker with no
 * bytes on the wire, asynchronous copies stay asynchronous, and captured graphs keep
 * valid host addresses. Sessions across hosts never attach: their copies carry bytes.
 *
 * Workers attach by name, lazily: a segment's name is removed once every worker of the
 * application on this host has been asked to map it (at its first use with one server),
 * else at cudaFreeHost or exit; a worker removes the names left by a client that died. */
#pragma once

#include <stddef.h>

/* A new segment of `size` bytes mapped here; NULL if shared memory is unavailable. */
void *orion_shm_alloc(size_t size);
/* 1 when ptr is the start of a segment (then it is unmapped and removed). */
int orion_shm_free(void *ptr);
/* 1 when [ptr, ptr+len) lies in one segment that the current device's session has
 * mapped, mapping it there first if needed. */
int orion_shm_usable(const void *ptr, size_t len);
/* At exit: every segment's name removed (the mappings stay until the process ends). */
void orion_shm_unlink_all(void);
