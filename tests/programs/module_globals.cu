// A module with a 96 MiB device variable: its memory counts against the vGPU from the
// moment the module is loaded (at the first launch). With `expect-oom` (run on a vGPU
// too small for it) that launch must fail with cudaErrorMemoryAllocation and the
// program must go on working; otherwise it prints how much the vGPU's use grew.
#define PROGRAM_NAME "module_globals"
#include "common.h"

constexpr size_t kBig = size_t(96) << 20;
__device__ char big[kBig];

__global__ void touch(int* out) {
  big[threadIdx.x] = 1;
  big[kBig - 1 - threadIdx.x] = 2;
  out[threadIdx.x] = big[threadIdx.x] + big[kBig - 1 - threadIdx.x];
}

int main(int argc, char** argv) {
  const bool expect_oom = argc > 1 && strcmp(argv[1], "expect-oom") == 0;
  int* out = nullptr;
  CHECK(cudaMalloc(&out, 32 * sizeof(int)));
  size_t free_before = 0, free_after = 0, total = 0;
  CHECK(cudaMemGetInfo(&free_before, &total));
  touch<<<1, 32>>>(out);
  if (expect_oom) {
    EXPECT_ERROR(cudaGetLastError(), cudaErrorMemoryAllocation);
    void* small = nullptr;   // the session goes on working
    CHECK(cudaMalloc(&small, 1 << 20));
    CHECK(cudaMemset(small, 0, 1 << 20));
    CHECK(cudaDeviceSynchronize());
    printf("PASS %s\n", PROGRAM_NAME);
    return 0;
  }
  CHECK(cudaGetLastError());
  int host[32];
  CHECK(cudaMemcpy(host, out, sizeof host, cudaMemcpyDeviceToHost));
  for (int i = 0; kernels_execute() && i < 32; ++i)
    if (host[i] != 3) fail("out[%d] = %d", i, host[i]);
  CHECK(cudaMemGetInfo(&free_after, &total));
  printf("USED_GROWTH_MIB %lld\n", ((long long)free_before - (long long)free_after) >> 20);
  printf("PASS %s\n", PROGRAM_NAME);
  return 0;
}
