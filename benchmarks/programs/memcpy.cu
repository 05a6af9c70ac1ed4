// Copy bandwidth: cudaMemcpy and cudaMemcpyAsync, host-to-device and device-to-host,
// pinned (cudaMallocHost) and pageable (malloc, touched beforehand) host memory, from
// 4 KiB to 256 MiB in powers of 4 (--quick: 4 KiB, 1 MiB, 64 MiB).
//
// Case names: <api>_<dir>_<memory>_<size>, e.g. memcpy_h2d_pinned_64MiB,
// memcpyasync_d2h_pageable_4KiB. Per case: two warm-up copies; the second one's time
// sets the repetitions n (budget / time, clamped to [3, 5000]); then, in GROUPS groups
// of n / GROUPS copies (at least one)
//   memcpy:       cudaMemcpy calls back to back
//   memcpyasync:  cudaMemcpyAsync calls on one stream, then one cudaStreamSynchronize
// bandwidth = the median group's copies * size / elapsed, in GB/s (10^9 bytes per
// second). The median of groups, not the whole run: the H100 machines have phases of
// 0.1-0.2 s, every second or two, where a 64 MiB copy takes twice as long, natively as
// through Orion (benchmarks/NOTES.md). So copies of 16 MiB and more are timed over
// 0.45 s, longer than a phase, in 15 groups: one phase spoils a few groups, not the
// median (over 0.15 s in 5 groups, one moved a ratio by 5-30 %).
#include "bench.h"

#include <algorithm>
#include <vector>

static const int GROUPS = 15;   // timed groups per case, odd: the median is one of them
static const size_t LONG_CASE_BYTES = 16u << 20;   // copies timed over the longer budget

struct Buffers {
    char *device = nullptr, *pinned = nullptr, *pageable = nullptr;
    cudaStream_t stream = nullptr;
};

static const char *size_label(size_t bytes, char *buf, size_t len)
{
    if (bytes >= (1u << 20))
        snprintf(buf, len, "%zuMiB", bytes >> 20);
    else
        snprintf(buf, len, "%zuKiB", bytes >> 10);
    return buf;
}

static bool one_copy(const Buffers &b, bool async, bool h2d, bool pinned, size_t bytes,
                     const std::string &name)
{
    char *host = pinned ? b.pinned : b.pageable;
    void *dst = h2d ? (void *)b.device : (void *)host;
    const void *src = h2d ? (const void *)host : (const void *)b.device;
    cudaMemcpyKind kind = h2d ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
    if (async)
        return bench::ok(cudaMemcpyAsync(dst, src, bytes, kind, b.stream), name,
                         "cudaMemcpyAsync");
    return bench::ok(cudaMemcpy(dst, src, bytes, kind), name, "cudaMemcpy");
}

static bool copy_case(const bench::Options &o, const Buffers &b, bool async, bool h2d,
                      bool pinned, size_t bytes)
{
    char label[32];
    std::string name = std::string(async ? "memcpyasync" : "memcpy") + (h2d ? "_h2d" : "_d2h") +
                       (pinned ? "_pinned_" : "_pageable_") +
                       size_label(bytes, label, sizeof label);
    if (!o.selected(name))
        return true;
    auto timed = [&](long n, double *elapsed) -> bool {
        double t0 = bench::now();
        for (long i = 0; i < n; i++)
            if (!one_copy(b, async, h2d, pinned, bytes, name))
                return false;
        if (async)
            BENCH_TRY(cudaStreamSynchronize(b.stream), name);
        *elapsed = bench::now() - t0;
        return true;
    };
    double t1 = 0;
    if (!timed(1, &t1) || !timed(1, &t1))   // warm-up; the second one calibrates
        return false;
    const double budget = bytes >= LONG_CASE_BYTES ? o.budget(0.45, 0.02) : o.budget(0.15, 0.02);
    long n = (long)std::ceil(budget / std::max(t1, 1e-7));
    n = std::max(3L, std::min(5000L, n));
    const long per_group = std::max(1L, n / GROUPS);
    std::vector<double> group_s(GROUPS);
    for (double &elapsed : group_s)
        if (!timed(per_group, &elapsed))
            return false;
    std::sort(group_s.begin(), group_s.end());
    const double median = group_s[GROUPS / 2];
    bench::result(name, "bandwidth", (double)bytes * per_group / median / 1e9, "GB/s");
    bench::result(name, "time_us", median / per_group * 1e6, "us");
    bench::result(name, "copies", (double)per_group * GROUPS, "count");
    return true;
}

// The bytes really arrive: pinned -> device -> pageable and back, compared.
static bool check_copies(const Buffers &b)
{
    const std::string name = "memcpy_check";
    const size_t bytes = (1 << 20) + 12;
    for (size_t i = 0; i < bytes; i++)
        b.pinned[i] = (char)(i * 131 + 7);
    memset(b.pageable, 0, bytes);
    BENCH_TRY(cudaMemcpy(b.device, b.pinned, bytes, cudaMemcpyHostToDevice), name);
    BENCH_TRY(cudaMemcpy(b.pageable, b.device, bytes, cudaMemcpyDeviceToHost), name);
    if (memcmp(b.pinned, b.pageable, bytes) != 0) {
        bench::error(name, "pinned -> device -> pageable: bytes differ");
        return false;
    }
    for (size_t i = 0; i < bytes; i++)
        b.pageable[i] = (char)(i * 17 + 3);
    BENCH_TRY(cudaMemcpyAsync(b.device, b.pageable, bytes, cudaMemcpyHostToDevice, b.stream), name);
    BENCH_TRY(cudaMemcpyAsync(b.pinned, b.device, bytes, cudaMemcpyDeviceToHost, b.stream), name);
    BENCH_TRY(cudaStreamSynchronize(b.stream), name);
    if (memcmp(b.pinned, b.pageable, bytes) != 0) {
        bench::error(name, "pageable -> device -> pinned (async): bytes differ");
        return false;
    }
    return true;
}

int main(int argc, char **argv)
{
    bench::Options o = bench::parse(argc, argv);
    if (!bench::init("memcpy"))
        return bench::finish();
    std::vector<size_t> sizes;
    if (o.quick)
        sizes = {4u << 10, 1u << 20, 64u << 20};
    else
        for (size_t s = 4u << 10; s <= (256u << 20); s *= 4)
            sizes.push_back(s);
    const size_t largest = sizes.back();

    Buffers b;
    const std::string setup = "memcpy_setup";
    if (!bench::ok(cudaMalloc(&b.device, largest), setup, "cudaMalloc") ||
        !bench::ok(cudaMallocHost(&b.pinned, largest), setup, "cudaMallocHost") ||
        !bench::ok(cudaStreamCreateWithFlags(&b.stream, cudaStreamNonBlocking), setup,
                   "cudaStreamCreateWithFlags"))
        return bench::finish();
    b.pageable = (char *)malloc(largest);
    if (!b.pageable) {
        bench::error(setup, "malloc failed");
        return bench::finish();
    }
    // touch every page, so that no page fault lands in a measured loop
    memset(b.pageable, 1, largest);
    memset(b.pinned, 2, largest);
    if (!bench::ok(cudaMemset(b.device, 3, largest), setup, "cudaMemset"))
        return bench::finish();

    if (!o.selected("memcpy_check") || check_copies(b)) {
        for (bool pinned : {true, false})
            for (bool h2d : {true, false})
                for (bool async : {false, true})
                    for (size_t s : sizes)
                        copy_case(o, b, async, h2d, pinned, s);
    }
    cudaStreamDestroy(b.stream);
    cudaFreeHost(b.pinned);
    cudaFree(b.device);
    free(b.pageable);
    return bench::finish();
}
