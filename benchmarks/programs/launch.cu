// Kernel launches per second: an empty kernel, <<<1, 1>>>, launched asynchronously.
//
//   launch_async_1stream   batches of 1000 launches on one stream, one stream
//                          synchronisation per batch, until the budget is spent; the rate
//                          is launches / (enqueue time + synchronisation time), i.e. what
//                          the GPU actually ran, not just how fast the host queued
//   launch_async_4streams  the same, round-robin over 4 streams (one sync per stream per
//                          batch)
//   launch_sync            launch + cudaStreamSynchronize, per-call latency
#include "bench.h"

__global__ void empty_kernel() {}

static bool async_launches(const bench::Options &o, const std::string &name, int nstreams)
{
    if (!o.selected(name))
        return true;
    const int batch = 1000;
    const double budget = o.budget(0.5, 0.1);
    std::vector<cudaStream_t> streams(nstreams);
    for (auto &s : streams)
        BENCH_TRY(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), name);
    auto sync_all = [&]() -> bool {
        for (auto s : streams)
            BENCH_TRY(cudaStreamSynchronize(s), name);
        return true;
    };
    // warm-up: the module is loaded and the kernel resolved before timing
    for (int i = 0; i < batch; i++)
        empty_kernel<<<1, 1, 0, streams[i % nstreams]>>>();
    BENCH_TRY(cudaGetLastError(), name);
    if (!sync_all())
        return false;

    long long launched = 0;
    double enqueue = 0;
    double start = bench::now();
    do {
        double b0 = bench::now();
        for (int i = 0; i < batch; i++)
            empty_kernel<<<1, 1, 0, streams[i % nstreams]>>>();
        enqueue += bench::now() - b0;
        BENCH_TRY(cudaGetLastError(), name);
        if (!sync_all())
            return false;
        launched += batch;
    } while (bench::now() - start < budget);
    double total = bench::now() - start;

    bench::result(name, "launches_per_s", launched / total, "launches/s");
    bench::result(name, "launch_us", total / launched * 1e6, "us");
    bench::result(name, "enqueue_us", enqueue / launched * 1e6, "us");
    bench::result(name, "launches", (double)launched, "count");
    for (auto s : streams)
        BENCH_TRY(cudaStreamDestroy(s), name);
    return true;
}

static bool launch_sync(const bench::Options &o)
{
    const std::string name = "launch_sync";
    if (!o.selected(name))
        return true;
    cudaStream_t s;
    BENCH_TRY(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), name);
    bool ok = bench::sample_latency(name, o.budget(0.3, 0.05), 100000, [&]() {
        empty_kernel<<<1, 1, 0, s>>>();
        return bench::ok(cudaStreamSynchronize(s), name, "cudaStreamSynchronize");
    });
    BENCH_TRY(cudaStreamDestroy(s), name);
    return ok;
}

int main(int argc, char **argv)
{
    bench::Options o = bench::parse(argc, argv);
    if (!bench::init("launch"))
        return bench::finish();
    async_launches(o, "launch_async_1stream", 1);
    async_launches(o, "launch_async_4streams", 4);
    launch_sync(o);
    return bench::finish();
}
