// Allocation: cudaMalloc immediately followed by cudaFree, per-pair latency (median);
// and the same for page-locked host memory (cudaMallocHost + cudaFreeHost), which
// through Orion is a shared-memory segment the worker maps and registers.
//
//   alloc_free_4KiB, alloc_free_1MiB, alloc_free_64MiB   cudaMalloc + cudaFree
//   alloc_host_free_1MiB                                 cudaMallocHost + cudaFreeHost
#include "bench.h"

static bool device_pair(const bench::Options &o, size_t bytes, const char *label)
{
    const std::string name = std::string("alloc_free_") + label;
    if (!o.selected(name))
        return true;
    return bench::sample_latency(name, o.budget(0.2, 0.03), 5000, [&]() {
        void *p = nullptr;
        return bench::ok(cudaMalloc(&p, bytes), name, "cudaMalloc") &&
               bench::ok(cudaFree(p), name, "cudaFree");
    }, 20, 5);
}

static bool host_pair(const bench::Options &o, size_t bytes, const char *label)
{
    const std::string name = std::string("alloc_host_free_") + label;
    if (!o.selected(name))
        return true;
    return bench::sample_latency(name, o.budget(0.2, 0.03), 2000, [&]() {
        void *p = nullptr;
        return bench::ok(cudaMallocHost(&p, bytes), name, "cudaMallocHost") &&
               bench::ok(cudaFreeHost(p), name, "cudaFreeHost");
    }, 5, 5);
}

int main(int argc, char **argv)
{
    bench::Options o = bench::parse(argc, argv);
    if (!bench::init("alloc"))
        return bench::finish();
    device_pair(o, 4u << 10, "4KiB");
    device_pair(o, 1u << 20, "1MiB");
    device_pair(o, 64u << 20, "64MiB");
    host_pair(o, 1u << 20, "1MiB");
    return bench::finish();
}
