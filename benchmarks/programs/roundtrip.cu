// Synchronous round trips: calls that cannot return before the GPU (or, through Orion,
// the worker) has answered. Per-call latency; the headline is the median.
//
//   roundtrip_memcpy_d2h_4B          cudaMemcpy of 4 bytes device-to-host, pageable target
//   roundtrip_memcpy_d2h_4B_pinned   the same into cudaMallocHost memory
//   roundtrip_stream_sync_idle       cudaStreamSynchronize on a stream with no work
//   roundtrip_device_sync_idle       cudaDeviceSynchronize with no work anywhere
//   roundtrip_event_query            cudaEventQuery on an event that has completed
#include "bench.h"

static bool memcpy_d2h(const bench::Options &o, const std::string &name, bool pinned)
{
    if (!o.selected(name))
        return true;
    int *device = nullptr, *host = nullptr, pageable = 0;
    BENCH_TRY(cudaMalloc(&device, sizeof(int)), name);
    BENCH_TRY(cudaMemset(device, 0x2a, sizeof(int)), name);
    if (pinned)
        BENCH_TRY(cudaMallocHost(&host, sizeof(int)), name);
    else
        host = &pageable;
    bool ok = bench::sample_latency(name, o.budget(0.3, 0.05), 200000, [&]() {
        return bench::ok(cudaMemcpy(host, device, sizeof(int), cudaMemcpyDeviceToHost), name,
                         "cudaMemcpy");
    });
    if (ok && *host != 0x2a2a2a2a) {
        bench::error(name, "wrong bytes copied back");
        ok = false;
    }
    if (pinned)
        BENCH_TRY(cudaFreeHost(host), name);
    BENCH_TRY(cudaFree(device), name);
    return ok;
}

static bool stream_sync_idle(const bench::Options &o)
{
    const std::string name = "roundtrip_stream_sync_idle";
    if (!o.selected(name))
        return true;
    cudaStream_t s;
    BENCH_TRY(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), name);
    bool ok = bench::sample_latency(name, o.budget(0.3, 0.05), 200000, [&]() {
        return bench::ok(cudaStreamSynchronize(s), name, "cudaStreamSynchronize");
    });
    BENCH_TRY(cudaStreamDestroy(s), name);
    return ok;
}

static bool device_sync_idle(const bench::Options &o)
{
    const std::string name = "roundtrip_device_sync_idle";
    if (!o.selected(name))
        return true;
    return bench::sample_latency(name, o.budget(0.3, 0.05), 200000, [&]() {
        return bench::ok(cudaDeviceSynchronize(), name, "cudaDeviceSynchronize");
    });
}

static bool event_query(const bench::Options &o)
{
    const std::string name = "roundtrip_event_query";
    if (!o.selected(name))
        return true;
    cudaStream_t s;
    cudaEvent_t e;
    BENCH_TRY(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), name);
    BENCH_TRY(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), name);
    BENCH_TRY(cudaEventRecord(e, s), name);
    BENCH_TRY(cudaEventSynchronize(e), name);
    bool ok = bench::sample_latency(name, o.budget(0.3, 0.05), 200000, [&]() {
        return bench::ok(cudaEventQuery(e), name, "cudaEventQuery");
    });
    BENCH_TRY(cudaEventDestroy(e), name);
    BENCH_TRY(cudaStreamDestroy(s), name);
    return ok;
}

int main(int argc, char **argv)
{
    bench::Options o = bench::parse(argc, argv);
    if (!bench::init("roundtrip"))
        return bench::finish();
    memcpy_d2h(o, "roundtrip_memcpy_d2h_4B", false);
    memcpy_d2h(o, "roundtrip_memcpy_d2h_4B_pinned", true);
    stream_sync_idle(o);
    device_sync_idle(o);
    event_query(o);
    return bench::finish();
}
