/* Waiting by polling: a monotonic clock and the CPU's spin-wait hint, shared by the
 * call ring and the copy threads. */
#pragma once
#include <time.h>

static inline long long orion_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void orion_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}
