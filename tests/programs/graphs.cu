// CUDA graphs, captured from a stream and built node by node, launched repeatedly
// and updated in place. Each graph has a branch of copies and memsets that no
// kernel touches, so the host backend run still checks what the graph did.
#define PROGRAM_NAME "graphs"
#include "common.h"

#include <vector>

__global__ void add_value(int* data, int value, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) data[i] += value;
}

__global__ void scale_by(int* data, int factor, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) data[i] *= factor;
}

constexpr int kN = 4096;
constexpr size_t kBytes = kN * sizeof(int);
constexpr int kBlock = 256, kGrid = kN / kBlock;

static size_t node_count(cudaGraph_t graph) {
  size_t count = 0;
  CHECK(cudaGraphGetNodes(graph, nullptr, &count));
  return count;
}

// Captured: in -> (+1) -> copy -> (*2) -> out, and in -> copy_out untouched by
// kernels. The pinned host buffers are captured by address, so refilling h_in
// between launches changes what the next launch computes.
static void test_stream_capture(cudaStream_t stream) {
  int *h_in, *h_out, *h_copy, *d_x, *d_y, *d_copy;
  CHECK(cudaMallocHost(&h_in, kBytes));
  CHECK(cudaMallocHost(&h_out, kBytes));
  CHECK(cudaMallocHost(&h_copy, kBytes));
  CHECK(cudaMalloc(&d_x, kBytes));
  CHECK(cudaMalloc(&d_y, kBytes));
  CHECK(cudaMalloc(&d_copy, kBytes));

  CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  CHECK(cudaStreamIsCapturing(stream, &status));
  EXPECT(status == cudaStreamCaptureStatusActive, "capture status %d", (int)status);
  CHECK(cudaMemcpyAsync(d_x, h_in, kBytes, cudaMemcpyHostToDevice, stream));
  add_value<<<kGrid, kBlock, 0, stream>>>(d_x, 1, kN);
  CHECK_LAUNCH();
  CHECK(cudaMemcpyAsync(d_y, d_x, kBytes, cudaMemcpyDeviceToDevice, stream));
  scale_by<<<kGrid, kBlock, 0, stream>>>(d_y, 2, kN);
  CHECK_LAUNCH();
  CHECK(cudaMemcpyAsync(h_out, d_y, kBytes, cudaMemcpyDeviceToHost, stream));
  CHECK(cudaMemcpyAsync(d_copy, h_in, kBytes, cudaMemcpyHostToDevice, stream));
  CHECK(cudaMemcpyAsync(h_copy, d_copy, kBytes, cudaMemcpyDeviceToHost, stream));
  cudaGraph_t graph;
  CHECK(cudaStreamEndCapture(stream, &graph));
  CHECK(cudaStreamIsCapturing(stream, &status));
  EXPECT(status == cudaStreamCaptureStatusNone, "capture status %d after end", (int)status);
  EXPECT(node_count(graph) == 7, "captured %zu nodes, expected 7", node_count(graph));

  cudaGraphExec_t exec;
  CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int launch = 0; launch < 3; ++launch) {
    for (int i = 0; i < kN; ++i) h_in[i] = i + 1000 * launch;
    memset(h_out, 0xFF, kBytes);
    memset(h_copy, 0xFF, kBytes);
    CHECK(cudaGraphLaunch(exec, stream));
    CHECK(cudaStreamSynchronize(stream));
    expect_equal("captured copy branch", h_copy, h_in, kN);
    if (kernels_execute())
      for (int i = 0; i < kN; ++i)
        EXPECT(h_out[i] == (h_in[i] + 1) * 2, "launch %d: out[%d] = %d", launch, i, h_out[i]);
  }

  CHECK(cudaGraphExecDestroy(exec));
  CHECK(cudaGraphDestroy(graph));
  CHECK(cudaFreeHost(h_in));
  CHECK(cudaFreeHost(h_out));
  CHECK(cudaFreeHost(h_copy));
  CHECK(cudaFree(d_x));
  CHECK(cudaFree(d_y));
  CHECK(cudaFree(d_copy));
}

// Built by hand:
//   memset d_z = 7  ->  add_value(d_z, v)  ->  memcpy (3D params) d_z -> h_z
//   memset d_w = 0xAB bytes  ->  memcpy 1D d_w -> h_w  ---^ (extra edge into the kernel)
static void test_explicit_graph(cudaStream_t stream) {
  int *d_z, *d_w, *h_z, *h_w;
  CHECK(cudaMalloc(&d_z, kBytes));
  CHECK(cudaMalloc(&d_w, kBytes));
  CHECK(cudaMallocHost(&h_z, kBytes));
  CHECK(cudaMallocHost(&h_w, kBytes));

  cudaGraph_t graph;
  CHECK(cudaGraphCreate(&graph, 0));

  cudaMemsetParams set_z = {};
  set_z.dst = d_z;
  set_z.value = 7;
  set_z.elementSize = sizeof(int);
  set_z.width = kN;
  set_z.height = 1;
  cudaGraphNode_t memset_z;
  CHECK(cudaGraphAddMemsetNode(&memset_z, graph, nullptr, 0, &set_z));

  int value = 5, n = kN;
  void* args[] = {&d_z, &value, &n};
  cudaKernelNodeParams kernel_params = {};
  kernel_params.func = (void*)add_value;
  kernel_params.gridDim = dim3(kGrid);
  kernel_params.blockDim = dim3(kBlock);
  kernel_params.sharedMemBytes = 0;
  kernel_params.kernelParams = args;
  cudaGraphNode_t kernel;
  CHECK(cudaGraphAddKernelNode(&kernel, graph, &memset_z, 1, &kernel_params));

  cudaMemcpy3DParms copy_z = {};
  copy_z.srcPtr = make_cudaPitchedPtr(d_z, kBytes, kN, 1);
  copy_z.dstPtr = make_cudaPitchedPtr(h_z, kBytes, kN, 1);
  copy_z.extent = make_cudaExtent(kBytes, 1, 1);
  copy_z.kind = cudaMemcpyDeviceToHost;
  cudaGraphNode_t memcpy_z;
  CHECK(cudaGraphAddMemcpyNode(&memcpy_z, graph, &kernel, 1, &copy_z));

  cudaMemsetParams set_w = {};
  set_w.dst = d_w;
  set_w.value = 0xAB;
  set_w.elementSize = 1;
  set_w.width = kBytes;
  set_w.height = 1;
  cudaGraphNode_t memset_w, memcpy_w;
  CHECK(cudaGraphAddMemsetNode(&memset_w, graph, nullptr, 0, &set_w));
  CHECK(cudaGraphAddMemcpyNode1D(&memcpy_w, graph, &memset_w, 1, h_w, d_w, kBytes,
                                 cudaMemcpyDeviceToHost));
  CHECK(cudaGraphAddDependencies(graph, &memcpy_w, &kernel, nullptr, 1));
  EXPECT(node_count(graph) == 5, "built %zu nodes, expected 5", node_count(graph));

  cudaGraphExec_t exec;
  CHECK(cudaGraphInstantiate(&exec, graph, 0));

  // Launch, then check both branches; `expected_z` is what the kernel branch gives.
  auto run_and_check = [&](int launches, int expected_z, const char* what) {
    memset(h_z, 0, kBytes);
    memset(h_w, 0, kBytes);
    for (int i = 0; i < launches; ++i) CHECK(cudaGraphLaunch(exec, stream));
    CHECK(cudaStreamSynchronize(stream));
    const unsigned char* bytes = reinterpret_cast<const unsigned char*>(h_w);
    for (size_t i = 0; i < kBytes; ++i)
      EXPECT(bytes[i] == 0xAB, "%s: memset branch byte %zu is %#x", what, i, bytes[i]);
    if (kernels_execute())
      for (int i = 0; i < kN; ++i)
        EXPECT(h_z[i] == expected_z, "%s: z[%d] = %d, expected %d", what, i, h_z[i], expected_z);
  };

  // The memset restarts the chain, so back-to-back launches give the same result.
  run_and_check(5, 7 + 5, "explicit graph");

  // Change the instantiated kernel's argument only.
  value = 10;
  CHECK(cudaGraphExecKernelNodeSetParams(exec, kernel, &kernel_params));
  run_and_check(1, 7 + 10, "cudaGraphExecKernelNodeSetParams");

  // Change the graph, then carry the change over to the instantiated graph.
  value = 20;
  CHECK(cudaGraphKernelNodeSetParams(kernel, &kernel_params));
  cudaGraphExecUpdateResultInfo info = {};
  CHECK(cudaGraphExecUpdate(exec, graph, &info));
  EXPECT(info.result == cudaGraphExecUpdateSuccess, "cudaGraphExecUpdate result %d",
         (int)info.result);
  run_and_check(1, 7 + 20, "cudaGraphExecUpdate");

  CHECK(cudaGraphExecDestroy(exec));
  CHECK(cudaGraphDestroy(graph));
  CHECK(cudaFree(d_z));
  CHECK(cudaFree(d_w));
  CHECK(cudaFreeHost(h_z));
  CHECK(cudaFreeHost(h_w));
}

int main() {
  CHECK(cudaSetDevice(0));
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  test_stream_capture(stream);
  test_explicit_graph(stream);
  CHECK(cudaStreamDestroy(stream));
  return pass();
}
