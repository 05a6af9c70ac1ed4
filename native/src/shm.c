#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cudart_internal.h"
#include "orion.h"
#include "shm.h"
#include "shm_object.h"

enum { MAPPED = 1, UNMAPPABLE = 2, SHARED = 3 };

typedef struct segment {
    uintptr_t base;
    size_t size;
    char name[64];
    /* per device: 0 not yet asked, MAPPED by this device's worker, SHARED: mapped by
     * the same worker for another device, UNMAPPABLE: remote or refused */
    unsigned char attached[ORION_MAX_DEVICES];
    int named;              /* its name still exists */
    struct segment *next;
} segment;

static segment *segments;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

void *orion_shm_alloc(size_t size)
{
    segment *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    int fd = orion_shm_create(s->name, sizeof s->name, "orion");
    void *p = MAP_FAILED;
    if (fd >= 0 && ftruncate(fd, (off_t)size) == 0)
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (fd >= 0) {
        close(fd);
        if (p == MAP_FAILED)
            shm_unlink(s->name);
    }
    if (p == MAP_FAILED) {
        ORION_WARN("no shared memory for %zu bytes of page-locked memory", size);
        free(s);
        return NULL;
    }
    s->base = (uintptr_t)p;
    s->size = size;
    s->named = 1;
    pthread_mutex_lock(&lock);
    s->next = segments;
    segments = s;
    pthread_mutex_unlock(&lock);
    return p;
}

void orion_shm_unlink_all(void)
{
    pthread_mutex_lock(&lock);
    for (segment *s = segments; s; s = s->next)
        if (s->named)
            shm_unlink(s->name);
    pthread_mutex_unlock(&lock);
}

int orion_shm_free(void *ptr)
{
    pthread_mutex_lock(&lock);
    segment **link = &segments;
    while (*link && (*link)->base != (uintptr_t)ptr)
        link = &(*link)->next;
    segment *s = *link;
    if (s)
        *link = s->next;
    pthread_mutex_unlock(&lock);
    if (!s)
        return 0;
    int saved = orion_current_device();
    for (int d = 0; d < ORION_MAX_DEVICES; d++) {
        if (s->attached[d] == MAPPED) {
            orion_set_current_device(d);
            orionShmDetach(s->base);
        }
    }
    orion_set_current_device(saved);
    munmap((void *)s->base, s->size);
    if (s->named)
        shm_unlink(s->name);
    free(s);
    return 1;
}

/* Whether every worker on this host that serves the application has been asked to map
 * `s` (asked once: it mapped it or never will), so no worker opens the name again.
 * Called with the lock held. */
static int asked_every_local_worker(const segment *s)
{
    uint16_t remote;
    int devices = orion_device_count() < ORION_MAX_DEVICES ? orion_device_count()
                                                           : ORION_MAX_DEVICES;
    for (int d = 0; d < devices; d++) {
        orion_session *session = orion_session_of(d, &remote);
        if (!session || !orion_session_is_local(session))
            continue;
        int asked = 0;
        for (int e = 0; e < devices && !asked; e++)
            asked = s->attached[e] && orion_session_of(e, &remote) == session;
        if (!asked)
            return 0;
    }
    return 1;
}

int orion_shm_usable(const void *ptr, size_t len)
{
    uintptr_t p = (uintptr_t)ptr;
    int device = orion_current_device();
    if (device < 0 || device >= ORION_MAX_DEVICES)
        return 0;
    pthread_mutex_lock(&lock);
    segment *s = segments;
    while (s && !(p >= s->base && p - s->base < s->size))
        s = s->next;
    int usable = 0;
    if (s && len <= s->size - (p - s->base)) {
        uint16_t remote;
        orion_session *session = orion_session_of(device, &remote);
        for (int d = 0; d < ORION_MAX_DEVICES && !s->attached[device]; d++)
            if (s->attached[d] == MAPPED && orion_session_of(d, &remote) == session)
                s->attached[device] = SHARED;
        if (!s->attached[device]) {
            int local = session && orion_session_is_local(session);
            cudaError_t before = orion_take_last_error(0);
            s->attached[device] = local && orionShmAttach(s->name, s->size, s->base) ==
                                  cudaSuccess ? MAPPED : UNMAPPABLE;
            orion_set_last_error(before);
            if (s->attached[device] == UNMAPPABLE && local)
                ORION_WARN("worker could not map %s: copies of it travel as bytes", s->name);
        }
        usable = s->attached[device] == MAPPED || s->attached[device] == SHARED;
        if (s->named && asked_every_local_worker(s)) {
            shm_unlink(s->name);   /* no worker opens it again: a crash leaves nothing */
            s->named = 0;
        }
    }
    pthread_mutex_unlock(&lock);
    return usable;
}
