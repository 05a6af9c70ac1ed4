// Takes a vGPU, allocates memory, says READY and then holds it for argv[1] seconds
// (default 1): the fault tests kill it with SIGKILL meanwhile and check that the
// server and controller clean up. Its page-locked memory is never freed, and a pageable
// upload makes the runtime's staging buffer: neither may outlive it in /dev/shm.
#define PROGRAM_NAME "hold"
#include "common.h"

#include <unistd.h>

int main(int argc, char** argv) {
  const int seconds = argc > 1 ? atoi(argv[1]) : 1;
  void* d = nullptr;
  CHECK(cudaMalloc(&d, 64 << 20));
  CHECK(cudaMemset(d, 0, 64 << 20));
  void* pinned = nullptr;
  CHECK(cudaMallocHost(&pinned, 1 << 20));
  static char pageable[1 << 20];
  CHECK(cudaMemcpy(d, pageable, sizeof pageable, cudaMemcpyHostToDevice));
  CHECK(cudaDeviceSynchronize());
  printf("READY\n");
  fflush(stdout);
  for (int i = 0; i < seconds; ++i) {
    sleep(1);
    CHECK(cudaDeviceSynchronize());
  }
  printf("PASS hold\n");
  return 0;
}
