/* Page-locked host memory the application asked for (cudaMallocHost, cudaHostAlloc,
 * cudaHostRegister): the client remembers each range so that copies can tell host from
 * device addresses and cudaFreeHost can check what it frees. */
#pragma once

#include <stddef.h>

int orion_hostmem_add(void *base, size_t size, unsigned flags, int owned);
/* 1 when ptr lies in a recorded range; its flags in *flags when asked */
int orion_hostmem_find(const void *ptr, unsigned *flags);
/* removes the range starting at base; 1 when it was there; *owned tells who frees it */
int orion_hostmem_remove(void *base, int *owned);
