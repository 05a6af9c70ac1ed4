/* Kernels and device variables the program registered at start-up. */
#pragma once

#include "orion.h"

/* Device address and size of a registered __device__/__constant__ variable. */
cudaError_t orion_symbol(const void *host_var, void **address, size_t *size);
