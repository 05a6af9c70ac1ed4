#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shm_object.h"

#define NAME_TRIES 64

int orion_shm_create(char *name, size_t len, const char *prefix)
{
    static int counter;
    for (int tries = 0; tries < NAME_TRIES; tries++) {
        snprintf(name, len, "/%s-%d-%d", prefix, (int)getpid(),
                 __sync_fetch_and_add(&counter, 1));
        int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    return -1;
}
