// Takes a vGPU, allocates memory, says READY and then waits to be killed: the fault
// tests kill it with SIGKILL and check that the server and controller clean up.
#define PROGRAM_NAME "hold"
#include "common.h"

#include <unistd.h>

int main() {
  void* d = nullptr;
  CHECK(cudaMalloc(&d, 64 << 20));
  CHECK(cudaMemset(d, 0, 64 << 20));
  CHECK(cudaDeviceSynchronize());
  printf("READY\n");
  fflush(stdout);
  for (int i = 0; i < 600; ++i) {   // ten minutes at most, then give up by itself
    sleep(1);
    CHECK(cudaDeviceSynchronize());
  }
  printf("PASS hold\n");
  return 0;
}
