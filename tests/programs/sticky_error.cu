// A kernel that stores through an invalid pointer: the next synchronization returns
// cudaErrorIllegalAddress, and every later call returns it too: the error is sticky,
// cudaGetLastError does not clear it. CUDA documents that the process must then be
// restarted (after cudaDeviceReset, an H100 answers the next allocation with
// cudaErrorDevicesUnavailable), so the program stops there.
//
// On the host backend the kernel is not run, so there is no error to observe: the
// program then checks that the launch and the calls after it succeed.
#define PROGRAM_NAME "sticky_error"
#include "common.h"

__global__ void store(int* base, long long index, int value) { base[index] = value; }

// A working kernel and copy, before and after the error.
static void check_device_works(const char* when) {
  int* d;
  CHECK(cudaMalloc(&d, 16 * sizeof(int)));
  CHECK(cudaMemset(d, 0, 16 * sizeof(int)));
  store<<<1, 1>>>(d, 3, 123);
  CHECK_LAUNCH();
  int h[16];
  CHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost));
  if (kernels_execute()) EXPECT(h[3] == 123, "%s: store gave %d", when, h[3]);
  CHECK(cudaFree(d));
}

int main() {
  CHECK(cudaSetDevice(0));
  check_device_works("before the error");

  int* d;
  CHECK(cudaMalloc(&d, sizeof(int)));
  store<<<1, 1>>>(nullptr, 16, 0xdead);  // writes address 64: never mapped
  CHECK_LAUNCH();  // accepted; the fault happens while it runs

  if (!kernels_execute()) {
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaFree(d));
    check_device_works("after the launch");
    return pass();
  }

  EXPECT_ERROR(cudaDeviceSynchronize(), cudaErrorIllegalAddress);
  EXPECT_ERROR(cudaPeekAtLastError(), cudaErrorIllegalAddress);
  EXPECT_ERROR(cudaGetLastError(), cudaErrorIllegalAddress);
  void* more;
  EXPECT_ERROR(cudaMalloc(&more, 16), cudaErrorIllegalAddress);
  int h = 0;
  EXPECT_ERROR(cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost), cudaErrorIllegalAddress);
  cudaStream_t stream;
  EXPECT_ERROR(cudaStreamCreate(&stream), cudaErrorIllegalAddress);
  EXPECT_ERROR(cudaDeviceSynchronize(), cudaErrorIllegalAddress);
  return pass();
}
