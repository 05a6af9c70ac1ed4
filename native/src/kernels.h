/* Kernels and device variables the program registered at start-up. */
#pragma once

#include "orion.h"

/* Device address and size of a registered __device__/__constant__ variable. */
cudaError_t orion_symbol(const void *host_var, void **address, size_t *size);

/* A kernel's arguments packed at the offsets of its parameter layout, as a launch or a
 * graph kernel node sends them. */
typedef struct orion_packed_args {
    uint64_t function;        /* the worker's handle of the kernel on this device */
    unsigned char *bytes;
    size_t size;
    unsigned char small[4096];
} orion_packed_args;

cudaError_t orion_pack_args(const void *func, void **args, orion_packed_args *out);
void orion_packed_args_free(orion_packed_args *packed);
