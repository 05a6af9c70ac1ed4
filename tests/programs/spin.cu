// Keeps the GPU busy with fixed-size arithmetic kernels for argv[1] seconds (default 1)
// and reports its progress: the compute-share tests run several at once and compare
// how much work each got done. Allocates argv[2] MiB first (default 64), says READY,
// then prints `WORK <unix ms> <kernels completed>` about every 100 ms.
#define PROGRAM_NAME "spin"
#include "common.h"

#include <chrono>
#include <ctime>

// Each thread runs `iterations` rounds of four independent multiply-adds: the same
// work per kernel whatever else shares the GPU (no clock-based spinning, which would
// count time, not work).
__global__ void burn(float* out, int iterations) {
  float a = threadIdx.x, b = blockIdx.x, c = 1.0f, d = 2.0f;
  for (int i = 0; i < iterations; ++i) {
    a = a * 0.999f + 0.5f; b = b * 0.999f + 0.25f;
    c = c * 0.999f + 0.125f; d = d * 0.999f + 0.0625f;
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = a + b + c + d;
}

static long long unix_ms() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? atof(argv[1]) : 1.0;
  const size_t mib = argc > 2 ? strtoull(argv[2], nullptr, 10) : 64;
  const int iterations = getenv("SPIN_ITERATIONS") ? atoi(getenv("SPIN_ITERATIONS")) : 4096;
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const int blocks = sms * 8, threads = 256;
  void* held = nullptr;
  CHECK(cudaMalloc(&held, mib << 20));
  CHECK(cudaMemset(held, 0, mib << 20));
  float* out = nullptr;
  CHECK(cudaMalloc(&out, sizeof(float) * blocks * threads));
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  CHECK(cudaDeviceSynchronize());
  printf("READY sms=%d\n", sms);
  fflush(stdout);

  using steady = std::chrono::steady_clock;
  const auto start = steady::now();
  const auto end = start + std::chrono::duration_cast<steady::duration>(
                                std::chrono::duration<double>(seconds));
  auto next_report = start;
  long long kernels = 0;
  while (steady::now() < end) {
    for (int i = 0; i < 4; ++i) burn<<<blocks, threads, 0, stream>>>(out, iterations);
    CHECK(cudaGetLastError());
    CHECK(cudaStreamSynchronize(stream));
    kernels += 4;
    if (steady::now() >= next_report) {
      printf("WORK %lld %lld\n", unix_ms(), kernels);
      fflush(stdout);
      next_report += std::chrono::milliseconds(100);
    }
  }
  printf("WORK %lld %lld\n", unix_ms(), kernels);
  float sample = 0;
  CHECK(cudaMemcpy(&sample, out, sizeof sample, cudaMemcpyDeviceToHost));
  if (kernels_execute() && !(sample > 0)) fail("kernel result %f", sample);
  printf("PASS spin\n");
  return 0;
}
