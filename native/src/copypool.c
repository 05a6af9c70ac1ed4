/* Big host-side copies (the staging of pageable memory, memory.c) split over a few
 * threads: one core's memcpy moves ~6-10 GB/s, well below what the GPU's DMA and the
 * memory bus take. The helpers are started once, on the first copy that pays, and live
 * as long as the process: a copy is cut into equal parts that the helpers and the
 * caller claim one by one; the caller returns once all are copied. One copy at a time uses them; a copy that finds them busy (another
 * application thread's) does its memcpy alone. Between copies a helper spins a little
 * (the next chunk of a pipelined copy comes within ~0.1-1 ms) before it sleeps.
 *
 * ORION_COPY_THREADS: threads per copy, the caller included (1 = no helpers); default
 * a quarter of the cores, at most 4. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "orion.h"
#include "spin.h"

#define MAX_THREADS 8
#define PART_MIN (512u << 10)        /* smaller parts are not worth a helper */
#define HELPER_SPIN_NS 500000LL      /* a helper's look for more work before it sleeps */

/* A copy's parts are claimed, one at a time, from `work`: copy number << 16, parts << 8,
 * next part to claim. The job fields are written before `work` publishes them and stay
 * until every part is done (`remaining` back at 0), so a claim made on a copy's word
 * always copies that copy's part, however late a helper comes. */
static struct {
    pthread_once_t once;
    int threads;                     /* per copy, the caller included */
    pid_t pid;                       /* a forked child has no helpers */
    pthread_mutex_t busy;            /* held by the copy using the helpers */
    pthread_mutex_t lock;            /* sleeping, and the condition below */
    pthread_cond_t go;
    int sleeping;
    uint64_t work;                   /* atomic */
    int remaining;                   /* atomic: parts claimed or not, not yet copied */
    char *dst;
    const char *src;
    size_t n, part;
} pool = {.once = PTHREAD_ONCE_INIT,
          .busy = PTHREAD_MUTEX_INITIALIZER,
          .lock = PTHREAD_MUTEX_INITIALIZER,
          .go = PTHREAD_COND_INITIALIZER};

static int claimable(uint64_t w)
{
    return (w & 0xff) < ((w >> 8) & 0xff);
}

/* Claim and copy parts of the published copy while there are any. */
static void take_parts(void)
{
    uint64_t w = __atomic_load_n(&pool.work, __ATOMIC_ACQUIRE);
    while (claimable(w)) {
        if (!__atomic_compare_exchange_n(&pool.work, &w, w + 1, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE))
            continue;    /* w reloaded */
        size_t from = (size_t)(w & 0xff) * pool.part;
        if (from < pool.n)
            memcpy(pool.dst + from, pool.src + from,
                   pool.n - from < pool.part ? pool.n - from : pool.part);
        __atomic_sub_fetch(&pool.remaining, 1, __ATOMIC_RELEASE);
        w = __atomic_load_n(&pool.work, __ATOMIC_ACQUIRE);
    }
}

static void *helper(void *arg)
{
    (void)arg;
    for (;;) {
        long long spin_until = orion_now_ns() + HELPER_SPIN_NS;
        int spins = 0;
        while (!claimable(__atomic_load_n(&pool.work, __ATOMIC_ACQUIRE))) {
            if ((++spins & 63) == 0 && orion_now_ns() > spin_until) {
                pthread_mutex_lock(&pool.lock);
                pool.sleeping++;
                while (!claimable(__atomic_load_n(&pool.work, __ATOMIC_ACQUIRE)))
                    pthread_cond_wait(&pool.go, &pool.lock);
                pool.sleeping--;
                pthread_mutex_unlock(&pool.lock);
                break;
            }
            orion_cpu_relax();
        }
        take_parts();
    }
    return NULL;
}

static void start(void)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = cores >= 8 ? (int)(cores / 4) : 1;
    const char *env = getenv("ORION_COPY_THREADS");
    if (env && *env)
        threads = atoi(env);
    if (threads < 1)
        threads = 1;
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    if (threads > 4 && !(env && *env))
        threads = 4;
    /* helpers take no signals: the application's handlers run on its own threads */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int started = 1;
    for (int i = 1; i < threads; i++) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 64 << 10);
        if (pthread_create(&t, &attr, helper, (void *)(long)i) == 0)
            started++;
        pthread_attr_destroy(&attr);
        if (started <= i)
            break;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pool.threads = started;
    pool.pid = getpid();
    if (started > 1)
        ORION_INFO("bulk host copies: %d threads", started);
}

void orion_memcpy_parallel(void *dst, const void *src, size_t n)
{
    if (n < 2 * PART_MIN) {
        memcpy(dst, src, n);
        return;
    }
    pthread_once(&pool.once, start);
    int parts = (int)(n / PART_MIN);
    if (parts > pool.threads)
        parts = pool.threads;
    if (parts < 2 || pool.pid != getpid() || pthread_mutex_trylock(&pool.busy) != 0) {
        memcpy(dst, src, n);
        return;
    }
    pool.dst = dst;
    pool.src = src;
    pool.n = n;
    pool.part = ((n + (size_t)parts - 1) / (size_t)parts + 4095) & ~(size_t)4095;
    __atomic_store_n(&pool.remaining, parts, __ATOMIC_RELAXED);
    uint64_t copies = (__atomic_load_n(&pool.work, __ATOMIC_RELAXED) >> 16) + 1;
    __atomic_store_n(&pool.work, copies << 16 | (uint64_t)parts << 8, __ATOMIC_RELEASE);
    pthread_mutex_lock(&pool.lock);
    if (pool.sleeping)
        pthread_cond_broadcast(&pool.go);
    pthread_mutex_unlock(&pool.lock);
    take_parts();     /* the caller's share: whatever the helpers have not claimed */
    while (__atomic_load_n(&pool.remaining, __ATOMIC_ACQUIRE) > 0)
        orion_cpu_relax();
    pthread_mutex_unlock(&pool.busy);
}
