// Two sessions, one GPU: `foreign_pointer own SECONDS` allocates 1 MiB, prints
// `POINTER <address>` and READY, and holds it; `foreign_pointer <address>` (another
// application) must get cudaErrorInvalidValue for every copy and memset that names that
// memory, and go on working. Run through Orion only (natively the second process's
// driver would answer for its own address space), so not one of the automatic runs.
#define PROGRAM_NAME "foreign_pointer"
#include "common.h"

#include <unistd.h>

int main(int argc, char** argv) {
  if (argc < 2) fail("usage: foreign_pointer own SECONDS | foreign_pointer ADDRESS");
  if (strcmp(argv[1], "own") == 0) {
    void* mine = nullptr;
    CHECK(cudaMalloc(&mine, 1 << 20));
    CHECK(cudaMemset(mine, 0x5a, 1 << 20));
    CHECK(cudaDeviceSynchronize());
    printf("POINTER %p\nREADY\n", mine);
    fflush(stdout);
    sleep(argc > 2 ? atoi(argv[2]) : 1);
    unsigned char byte = 0;
    CHECK(cudaMemcpy(&byte, mine, 1, cudaMemcpyDeviceToHost));
    if (kernels_execute() && byte != 0x5a) fail("my memory changed: 0x%02x", byte);
    printf("PASS %s\n", PROGRAM_NAME);
    return 0;
  }
  void* theirs = (void*)strtoull(argv[1], nullptr, 16);
  unsigned char host[64] = {0};
  EXPECT_ERROR(cudaMemcpy(host, theirs, sizeof host, cudaMemcpyDeviceToHost),
               cudaErrorInvalidValue);
  EXPECT_ERROR(cudaMemcpy(theirs, host, sizeof host, cudaMemcpyHostToDevice),
               cudaErrorInvalidValue);
  EXPECT_ERROR(cudaMemset(theirs, 0, sizeof host), cudaErrorInvalidValue);
  void* mine = nullptr;   // the session goes on working
  CHECK(cudaMalloc(&mine, sizeof host));
  CHECK(cudaMemcpy(mine, host, sizeof host, cudaMemcpyHostToDevice));
  EXPECT_ERROR(cudaMemcpy(host, mine, 2 * sizeof host, cudaMemcpyDeviceToHost),
               cudaErrorInvalidValue);   // past its own allocation's end
  CHECK(cudaDeviceSynchronize());
  printf("PASS %s\n", PROGRAM_NAME);
  return 0;
}
