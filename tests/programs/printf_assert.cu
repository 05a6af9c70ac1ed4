// Device-side printf and assert.
//
//   ./printf_assert          prints 4 known lines from the device (the harness checks
//                            stdout for them; their order is unspecified)
//   ./printf_assert assert   a failing device assert: the next synchronization returns
//                            cudaErrorAssert, and so does every call after it (sticky)
#define PROGRAM_NAME "printf_assert"
#undef NDEBUG  // the assert under test must not compile away
#include "common.h"

#include <cassert>

// Each thread prints
//   ORION_PRINTF block=<b> thread=<t> value=42 half=1.50 tag=c0ffee str=orion
__global__ void say_hello(int value, float half, unsigned long long tag) {
  printf("ORION_PRINTF block=%d thread=%d value=%d half=%.2f tag=%llx str=%s\n", blockIdx.x,
         threadIdx.x, value, half, tag, "orion");
}

__global__ void check_not_answer(int value) { assert(value != 42); }

static int run_printf() {
  say_hello<<<2, 2>>>(42, 1.5f, 0xC0FFEEull);
  CHECK_LAUNCH();
  CHECK(cudaDeviceSynchronize());  // flushes the device printf buffer to stdout
  fflush(stdout);
  return pass();
}

static int run_assert() {
  int* d;
  CHECK(cudaMalloc(&d, sizeof(int)));
  check_not_answer<<<1, 1>>>(42);
  CHECK_LAUNCH();  // the launch itself is fine; the failure comes at the sync
  if (!kernels_execute()) {
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaFree(d));
    return pass();
  }
  EXPECT_ERROR(cudaDeviceSynchronize(), cudaErrorAssert);
  // Sticky: the context is unusable, whatever the call and however often asked.
  EXPECT_ERROR(cudaPeekAtLastError(), cudaErrorAssert);
  EXPECT_ERROR(cudaGetLastError(), cudaErrorAssert);
  void* more;
  EXPECT_ERROR(cudaMalloc(&more, 16), cudaErrorAssert);
  int h = 0;
  EXPECT_ERROR(cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost), cudaErrorAssert);
  EXPECT_ERROR(cudaDeviceSynchronize(), cudaErrorAssert);
  return pass();
}

int main(int argc, char** argv) {
  CHECK(cudaSetDevice(0));
  if (argc == 1) return run_printf();
  if (argc == 2 && strcmp(argv[1], "assert") == 0) return run_assert();
  fail("usage: %s [assert]", argv[0]);
}
