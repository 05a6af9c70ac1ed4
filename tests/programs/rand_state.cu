// The C library's random numbers stay the application's: a program that makes its data
// with rand() and no srand() gets the same numbers on every run, and must get them
// through Orion too (libzmq, which the client runtime uses, draws from rand() when it
// makes a socket). A child forked before any CUDA call draws the numbers the program
// would draw undisturbed; the program draws them after initialising CUDA, allocating,
// copying and synchronising, and compares.
#define PROGRAM_NAME "rand_state"
#include "common.h"

#include <sys/wait.h>
#include <unistd.h>

static const int DRAWS = 8;

int main() {
  int pipe_fds[2];
  EXPECT(pipe(pipe_fds) == 0, "pipe failed");
  pid_t child = fork();
  EXPECT(child >= 0, "fork failed");
  if (child == 0) {
    int values[DRAWS];
    for (int& v : values) v = rand();
    _exit(write(pipe_fds[1], values, sizeof values) == (ssize_t)sizeof values ? 0 : 1);
  }
  int undisturbed[DRAWS];
  EXPECT(read(pipe_fds[0], undisturbed, sizeof undisturbed) == (ssize_t)sizeof undisturbed,
         "the child sent no numbers");
  int status = 0;
  waitpid(child, &status, 0);

  CHECK(cudaSetDevice(0));
  int* d;
  CHECK(cudaMalloc(&d, 64));
  CHECK(cudaMemset(d, 7, 64));
  int h[16];
  CHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost));
  CHECK(cudaDeviceSynchronize());
  CHECK(cudaFree(d));
  for (int i = 0; i < DRAWS; i++) {
    int v = rand();
    EXPECT(v == undisturbed[i], "rand() draw %d gave %d, %d without CUDA", i, v, undisturbed[i]);
  }
  return pass();
}
