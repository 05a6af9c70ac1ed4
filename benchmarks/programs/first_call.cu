// Time from process start to the first CUDA call returning. Through Orion this includes
// taking the vGPU (controller allocate, oriond open_session, the worker's start and its
// CUDA context, the device snapshot); natively, creating the primary context.
//
// The harness puts time.time_ns() (CLOCK_REALTIME) into ORION_BENCH_T0_NS just before it
// starts the process, so exec, dynamic loading and static initialisers (fat binary
// registration) are counted too. The harness runs this program several times per mode
// and keeps the best (min) and the median.
//
//   first_call time_ms          T0 -> cudaFree(0) returned          (the headline)
//   first_call main_to_call_ms  main() entered -> cudaFree(0) returned
//   first_call exec_to_main_ms  T0 -> main() entered
//   first_call first_work_ms    T0 -> cudaMalloc + cudaMemset + 4-byte D2H copy returned
#include "bench.h"

__global__ void touch(int *p) { *p += 1; }

int main(int argc, char **argv)
{
    long long main_ns = bench::realtime_ns();
    double m0 = bench::now();
    cudaError_t err = cudaFree(0);
    long long first_ns = bench::realtime_ns();
    double m1 = bench::now();
    const std::string name = "first_call";
    if (!bench::ok(err, name, "cudaFree(0)"))
        return bench::finish();

    int *device = nullptr, host = 0;
    bool ok = bench::ok(cudaMalloc(&device, sizeof(int)), name, "cudaMalloc") &&
              bench::ok(cudaMemset(device, 0, sizeof(int)), name, "cudaMemset");
    if (ok) {
        touch<<<1, 1>>>(device);
        ok = bench::ok(cudaGetLastError(), name, "launch") &&
             bench::ok(cudaMemcpy(&host, device, sizeof(int), cudaMemcpyDeviceToHost), name,
                       "cudaMemcpy");
    }
    long long work_ns = bench::realtime_ns();
    if (ok && host != 1 && bench::kernels_run())
        bench::error(name, "the kernel did not run");

    const char *t0 = getenv("ORION_BENCH_T0_NS");
    if (t0 && *t0) {
        long long start_ns = atoll(t0);
        bench::result(name, "time_ms", (first_ns - start_ns) / 1e6, "ms");
        bench::result(name, "exec_to_main_ms", (main_ns - start_ns) / 1e6, "ms");
        if (ok)
            bench::result(name, "first_work_ms", (work_ns - start_ns) / 1e6, "ms");
    } else {
        printf("INFO no ORION_BENCH_T0_NS: time from exec not measured\n");
    }
    bench::result(name, "main_to_call_ms", (m1 - m0) * 1e3, "ms");
    bench::report_runtime();
    if (device)
        cudaFree(device);
    return bench::finish();
}
