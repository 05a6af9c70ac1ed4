// A captured graph that allocates 48 MiB while it runs (cudaMallocAsync and
// cudaFreeAsync captured), fills it and reduces it. With `instantiate-oom`, run on a
// 64 MiB vGPU: once 32 MiB are allocated outside, instantiating the graph must fail with
// cudaErrorMemoryAllocation (its memory would not fit), and succeed after the 32 MiB
// are freed. With `pause`, the program stops for 100 ms in the middle of the capture
// (a throttled session's worker hands its idle compute turn back meanwhile).
#define PROGRAM_NAME "graph_memory"
#include "common.h"

#include <unistd.h>

constexpr size_t kCount = (size_t(48) << 20) / sizeof(int);

__global__ void fill(int* data, size_t n) {
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    data[i] = 1;
}

__global__ void sum(const int* data, size_t n, unsigned long long* total) {
  unsigned long long mine = 0;
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    mine += data[i];
  atomicAdd(total, mine);
}

int main(int argc, char** argv) {
  const bool instantiate_oom = argc > 1 && strcmp(argv[1], "instantiate-oom") == 0;
  const bool pause = argc > 1 && strcmp(argv[1], "pause") == 0;
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  unsigned long long* total = nullptr;
  CHECK(cudaMalloc(&total, sizeof *total));
  CHECK(cudaMemset(total, 0, sizeof *total));

  cudaGraph_t graph;
  CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  int* data = nullptr;
  CHECK(cudaMallocAsync(&data, kCount * sizeof(int), stream));
  fill<<<64, 256, 0, stream>>>(data, kCount);
  if (pause) usleep(100 * 1000);
  sum<<<64, 256, 0, stream>>>(data, kCount, total);
  CHECK(cudaFreeAsync(data, stream));
  CHECK(cudaStreamEndCapture(stream, &graph));

  cudaGraphExec_t exec;
  if (instantiate_oom) {
    void* other = nullptr;
    CHECK(cudaMalloc(&other, size_t(32) << 20));
    EXPECT_ERROR(cudaGraphInstantiate(&exec, graph, 0), cudaErrorMemoryAllocation);
    CHECK(cudaFree(other));
  }
  CHECK(cudaGraphInstantiate(&exec, graph, 0));
  CHECK(cudaGraphLaunch(exec, stream));
  CHECK(cudaStreamSynchronize(stream));
  unsigned long long result = 0;
  CHECK(cudaMemcpy(&result, total, sizeof result, cudaMemcpyDeviceToHost));
  if (kernels_execute() && result != kCount) fail("sum %llu, expected %zu", result, kCount);
  CHECK(cudaGraphExecDestroy(exec));
  CHECK(cudaGraphDestroy(graph));
  printf("PASS %s\n", PROGRAM_NAME);
  return 0;
}
