#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "hostmem.h"

typedef struct range {
    uintptr_t base;
    size_t size;
    unsigned flags;
    int owned;   /* allocated by us (cudaMallocHost) rather than registered */
    struct range *next;
} range;

static range *ranges;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

int orion_hostmem_add(void *base, size_t size, unsigned flags, int owned)
{
    range *r = malloc(sizeof *r);
    if (!r)
        return -1;
    *r = (range){(uintptr_t)base, size, flags, owned, NULL};
    pthread_mutex_lock(&lock);
    r->next = ranges;
    ranges = r;
    pthread_mutex_unlock(&lock);
    return 0;
}

int orion_hostmem_find(const void *ptr, unsigned *flags)
{
    uintptr_t p = (uintptr_t)ptr;
    int found = 0;
    pthread_mutex_lock(&lock);
    for (range *r = ranges; r && !found; r = r->next) {
        if (p >= r->base && p < r->base + r->size) {
            found = 1;
            if (flags)
                *flags = r->flags;
        }
    }
    pthread_mutex_unlock(&lock);
    return found;
}

int orion_hostmem_remove(void *base, int *owned)
{
    pthread_mutex_lock(&lock);
    for (range **link = &ranges; *link; link = &(*link)->next) {
        if ((*link)->base == (uintptr_t)base) {
            range *r = *link;
            *link = r->next;
            pthread_mutex_unlock(&lock);
            *owned = r->owned;
            free(r);
            return 1;
        }
    }
    pthread_mutex_unlock(&lock);
    return 0;
}
