/* The client's log: one file per application run under ~/.orion/log/ (reference:
 * "Client logs: ~/.orion/log/, one file per run"). ORION_LOG_LEVEL=DEBUG|INFO|WARN|ERROR;
 * ORION_LOG_TO_SCREEN=1 copies lines to stderr. Nothing is printed on the
 * application's own output unless asked. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "orion.h"

static FILE *log_file;
static int to_screen;
static int min_level = 1;   /* 0 DEBUG, 1 INFO, 2 WARN, 3 ERROR */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *const levels[] = {"DEBUG", "INFO", "WARN", "ERROR"};

static int level_of(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (name && strcasecmp(name, levels[i]) == 0)
            return i;
    return 1;
}

void orion_log_open(void)
{
    const char *level = getenv("ORION_LOG_LEVEL");
    if (level)
        min_level = level_of(level);
    const char *screen = getenv("ORION_LOG_TO_SCREEN");
    to_screen = screen && strcmp(screen, "0") != 0;
    const char *home = getenv("HOME");
    const char *dir_env = getenv("ORION_LOG_DIR");
    char dir[512], path[640];
    if (dir_env)
        snprintf(dir, sizeof dir, "%s", dir_env);
    else
        snprintf(dir, sizeof dir, "%s/.orion/log", home ? home : "/tmp");
    /* mkdir -p of the two levels we may need */
    char parent[512];
    snprintf(parent, sizeof parent, "%s", dir);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = 0;
        mkdir(parent, 0755);
    }
    mkdir(dir, 0755);
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    snprintf(path, sizeof path, "%s/client-%04d%02d%02d-%02d%02d%02d-%d.log", dir,
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)getpid());
    log_file = fopen(path, "a");
    if (!log_file && to_screen)
        fprintf(stderr, "orion: cannot open log %s: %s\n", path, strerror(errno));
}

void orion_log(const char *level, const char *fmt, ...)
{
    if (level_of(level) < min_level || (!log_file && !to_screen))
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    pthread_mutex_lock(&log_lock);
    if (log_file) {
        fprintf(log_file, "%02d:%02d:%02d.%03ld %s %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
                ts.tv_nsec / 1000000, level, line);
        fflush(log_file);
    }
    if (to_screen)
        fprintf(stderr, "orion %s: %s\n", level, line);
    pthread_mutex_unlock(&log_lock);
}

int orion_first_time(const char *name)
{
    static const char *seen[512];
    static int n_seen;
    static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
    int known = 0;
    pthread_mutex_lock(&seen_lock);
    for (int i = 0; i < n_seen && !known; i++)
        known = seen[i] == name;
    if (!known && n_seen < 512)
        seen[n_seen++] = name;
    pthread_mutex_unlock(&seen_lock);
    return !known;
}
