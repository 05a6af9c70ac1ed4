// Shared helpers of the benchmark programs (benchmarks/programs/*.cu).
//
// Every program measures itself with std::chrono::steady_clock around its measured
// loop, after a warm-up, and prints one line per figure on stdout:
//
//   RESULT <case> <metric> <value> <unit>    a measured figure
//   PARAM <name> <value>                     a calibrated parameter (the harness passes
//                                            it to the Orion runs: same work both ways)
//   CHECK <case> <value>                     a checksum that must equal the native one
//   INFO <key> <value...>                    e.g. which libcudart.so.13 was loaded
//   ERROR <case> <message>                   a case failed (the program exits 1)
//   DONE <failures>                          last line
//
// Common options: --quick (short budgets, fewer sizes: a sanity pass), --only SUBSTRING
// (run only the cases whose name contains it), --scale X (multiply the time budgets).
#pragma once

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace bench {

inline double now()
{
    return std::chrono::duration<double>(
               std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CLOCK_REALTIME in ns: comparable with Python's time.time_ns() in the harness.
inline long long realtime_ns()
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

struct Options {
    bool quick = false;
    double scale = 1.0;          // multiplies every time budget
    std::string only;            // run only cases whose name contains this
    std::vector<std::string> rest;

    // value of "--name VALUE" among the remaining arguments, or fallback
    double number(const char *name, double fallback) const
    {
        for (size_t i = 0; i + 1 < rest.size(); i++)
            if (rest[i] == name)
                return atof(rest[i + 1].c_str());
        return fallback;
    }
    bool has(const char *name) const
    {
        return std::find(rest.begin(), rest.end(), std::string(name)) != rest.end();
    }
    // a time budget in seconds: full, or the quick one with --quick
    double budget(double full, double quick_budget) const
    {
        return (this->quick ? quick_budget : full) * scale;
    }
    bool selected(const std::string &name) const
    {
        return only.empty() || name.find(only) != std::string::npos;
    }
};

inline Options parse(int argc, char **argv)
{
    Options o;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--quick")
            o.quick = true;
        else if (a == "--scale" && i + 1 < argc)
            o.scale = atof(argv[++i]);
        else if (a == "--only" && i + 1 < argc)
            o.only = argv[++i];
        else
            o.rest.push_back(a);
    }
    if (!(o.scale > 0))
        o.scale = 1.0;
    return o;
}

inline int &failures()
{
    static int count = 0;
    return count;
}

inline void result(const std::string &name, const char *metric, double value, const char *unit)
{
    printf("RESULT %s %s %.6g %s\n", name.c_str(), metric, value, unit);
    fflush(stdout);
}

inline void param(const char *name, long long value)
{
    printf("PARAM %s %lld\n", name, value);
    fflush(stdout);
}

inline void check(const std::string &name, const char *value)
{
    printf("CHECK %s %s\n", name.c_str(), value);
    fflush(stdout);
}

inline void error(const std::string &name, const std::string &what)
{
    printf("ERROR %s %s\n", name.c_str(), what.c_str());
    fflush(stdout);
    failures()++;
}

inline bool ok(cudaError_t e, const std::string &name, const char *what)
{
    if (e == cudaSuccess)
        return true;
    error(name, std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) +
                    ")");
    return false;
}

// inside a function returning bool: report and give up on this case
#define BENCH_TRY(call, name)                          \
    do {                                               \
        if (!bench::ok((call), (name), #call))         \
            return false;                              \
    } while (0)

// Which libcudart.so.13 answers (the real one, or Orion's): the harness checks it.
inline void report_runtime()
{
    void *sym = dlsym(RTLD_DEFAULT, "cudaMalloc");
    Dl_info info;
    if (sym && dladdr(sym, &info) && info.dli_fname)
        printf("INFO cudart %s\n", info.dli_fname);
    int version = 0;
    if (cudaRuntimeGetVersion(&version) == cudaSuccess)
        printf("INFO runtime_version %d\n", version);
    fflush(stdout);
}

// CUDA initialised (context created) before anything is measured.
inline bool init(const char *program)
{
    if (!ok(cudaFree(0), std::string(program) + "_init", "cudaFree(0)"))
        return false;
    report_runtime();
    return true;
}

// False on Orion's host-memory test backend (ORION_TEST_HOST_BACKEND=1), which records
// kernel launches without running them: results of kernels are not checked there.
inline bool kernels_run()
{
    const char *host = getenv("ORION_TEST_HOST_BACKEND");
    return !(host && *host && strcmp(host, "0") != 0);
}

inline int finish()
{
    printf("DONE %d\n", failures());
    fflush(stdout);
    return failures() ? 1 : 0;
}

// Latency statistics of per-call samples (seconds) -> microseconds.
struct Stats {
    double median_us, mean_us, p99_us, min_us;
    size_t count;
};

inline Stats stats(std::vector<double> samples)
{
    Stats s{0, 0, 0, 0, samples.size()};
    if (samples.empty())
        return s;
    std::sort(samples.begin(), samples.end());
    double sum = 0;
    for (double v : samples)
        sum += v;
    size_t n = samples.size();
    s.median_us = (n % 2 ? samples[n / 2] : 0.5 * (samples[n / 2 - 1] + samples[n / 2])) * 1e6;
    s.mean_us = sum / n * 1e6;
    s.p99_us = samples[std::min(n - 1, (size_t)std::ceil(0.99 * n) - 1)] * 1e6;
    s.min_us = samples[0] * 1e6;
    return s;
}

inline void report_latency(const std::string &name, const Stats &s)
{
    result(name, "latency_us", s.median_us, "us");
    result(name, "mean_us", s.mean_us, "us");
    result(name, "p99_us", s.p99_us, "us");
    result(name, "min_us", s.min_us, "us");
    result(name, "samples", (double)s.count, "count");
}

// Time fn() per call: `warmup` calls untimed, then calls until `budget` seconds have
// passed or `max_samples` were taken (at least `min_samples`). fn returns false on error.
template <typename F>
inline bool sample_latency(const std::string &name, double budget, size_t max_samples, F fn,
                           int warmup = 100, size_t min_samples = 10)
{
    for (int i = 0; i < warmup; i++)
        if (!fn())
            return false;
    std::vector<double> samples;
    samples.reserve(std::min<size_t>(max_samples, 1 << 20));
    double start = now();
    while (samples.size() < max_samples &&
           (samples.size() < min_samples || now() - start < budget)) {
        double t0 = now();
        if (!fn())
            return false;
        samples.push_back(now() - t0);
    }
    report_latency(name, stats(samples));
    return true;
}

}  // namespace bench
