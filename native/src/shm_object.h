/* Naming the client's POSIX shared-memory objects (segments, call rings). */
#pragma once

#include <stddef.h>

/* A new object "/<prefix>-<pid>-<n>", opened read-write: the fd, or -1. A name that a dead
 * process of the same pid left behind is skipped, never reused or removed: it may still
 * be someone's. */
int orion_shm_create(char *name, size_t len, const char *prefix);
