// Stream-ordered allocation: the device's default pool, its attributes, and a
// pool of our own, also installed as the device's current pool.
#define PROGRAM_NAME "mempool"
#include "common.h"

#include <cstdint>

__global__ void fill_index(int* data, int n, int mul) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) data[i] = i * mul;
}

constexpr int kN = 1 << 20;  // 4 MiB of ints
constexpr size_t kBytes = kN * sizeof(int);

static uint64_t pool_attr(cudaMemPool_t pool, cudaMemPoolAttr attr) {
  uint64_t value = 0;
  CHECK(cudaMemPoolGetAttribute(pool, attr, &value));
  return value;
}

static void test_default_pool(cudaStream_t stream, int* h_a, int* h_b) {
  cudaMemPool_t pool, current;
  CHECK(cudaDeviceGetDefaultMemPool(&pool, 0));
  CHECK(cudaDeviceGetMemPool(&current, 0));
  EXPECT(pool == current, "the current pool is not the default pool");

  // Keep up to 64 MiB cached in the pool across synchronizations.
  uint64_t threshold = 64ull << 20;
  CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  EXPECT(pool_attr(pool, cudaMemPoolAttrReleaseThreshold) == threshold, "threshold read back as %llu",
         (unsigned long long)pool_attr(pool, cudaMemPoolAttrReleaseThreshold));

  int* d;
  CHECK(cudaMallocAsync(&d, kBytes, stream));
  CHECK(cudaMemsetAsync(d, 0x3C, kBytes, stream));
  CHECK(cudaMemcpyAsync(h_a, d, kBytes, cudaMemcpyDeviceToHost, stream));
  fill_index<<<kN / 256, 256, 0, stream>>>(d, kN, 3);
  CHECK_LAUNCH();
  CHECK(cudaMemcpyAsync(h_b, d, kBytes, cudaMemcpyDeviceToHost, stream));
  CHECK(cudaFreeAsync(d, stream));
  CHECK(cudaStreamSynchronize(stream));
  for (int i = 0; i < kN; ++i) EXPECT(h_a[i] == 0x3C3C3C3C, "memset[%d] = %#x", i, h_a[i]);
  if (kernels_execute())
    for (int i = 0; i < kN; ++i) EXPECT(h_b[i] == i * 3, "fill_index[%d] = %d", i, h_b[i]);

  // Freed memory returns to the pool, which keeps it under the threshold.
  EXPECT(pool_attr(pool, cudaMemPoolAttrUsedMemCurrent) == 0, "%llu bytes still in use",
         (unsigned long long)pool_attr(pool, cudaMemPoolAttrUsedMemCurrent));
  EXPECT(pool_attr(pool, cudaMemPoolAttrReservedMemCurrent) >= kBytes,
         "pool reserves only %llu bytes",
         (unsigned long long)pool_attr(pool, cudaMemPoolAttrReservedMemCurrent));

  // Allocate and free in stream order, with no synchronization in between.
  for (int round = 0; round < 10; ++round) {
    void* p;
    CHECK(cudaMallocAsync(&p, (round + 1) * 100000, stream));
    CHECK(cudaMemsetAsync(p, round, (round + 1) * 100000, stream));
    CHECK(cudaFreeAsync(p, stream));
  }
  CHECK(cudaStreamSynchronize(stream));
  CHECK(cudaMemPoolTrimTo(pool, 0));
}

static void test_own_pool(cudaStream_t stream, int* h_a, int* h_b) {
  cudaMemPoolProps props = {};
  props.allocType = cudaMemAllocationTypePinned;
  props.handleTypes = cudaMemHandleTypeNone;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = 0;
  cudaMemPool_t pool, default_pool;
  CHECK(cudaMemPoolCreate(&pool, &props));
  CHECK(cudaDeviceGetDefaultMemPool(&default_pool, 0));

  for (int i = 0; i < kN; ++i) h_a[i] = kN - i;
  int *from_pool, *from_default;
  CHECK(cudaMallocFromPoolAsync((void**)&from_pool, kBytes, pool, stream));
  CHECK(cudaMallocAsync(&from_default, kBytes, stream));
  CHECK(cudaMemcpyAsync(from_pool, h_a, kBytes, cudaMemcpyHostToDevice, stream));
  CHECK(cudaMemcpyAsync(from_default, from_pool, kBytes, cudaMemcpyDeviceToDevice, stream));
  CHECK(cudaMemcpyAsync(h_b, from_default, kBytes, cudaMemcpyDeviceToHost, stream));
  CHECK(cudaFreeAsync(from_pool, stream));
  CHECK(cudaFreeAsync(from_default, stream));
  CHECK(cudaStreamSynchronize(stream));
  expect_equal("own pool -> default pool copy", h_b, h_a, kN);

  // With our pool as the device's current one, cudaMallocAsync draws from it.
  CHECK(cudaDeviceSetMemPool(0, pool));
  cudaMemPool_t current;
  CHECK(cudaDeviceGetMemPool(&current, 0));
  EXPECT(current == pool, "cudaDeviceSetMemPool did not take");
  int* d;
  CHECK(cudaMallocAsync(&d, kBytes, stream));
  CHECK(cudaStreamSynchronize(stream));
  EXPECT(pool_attr(pool, cudaMemPoolAttrUsedMemCurrent) >= kBytes, "own pool uses %llu bytes",
         (unsigned long long)pool_attr(pool, cudaMemPoolAttrUsedMemCurrent));
  CHECK(cudaMemsetAsync(d, 0, kBytes, stream));
  CHECK(cudaFreeAsync(d, stream));
  CHECK(cudaStreamSynchronize(stream));

  CHECK(cudaDeviceSetMemPool(0, default_pool));
  CHECK(cudaMemPoolTrimTo(pool, 0));
  CHECK(cudaMemPoolDestroy(pool));
}

int main() {
  CHECK(cudaSetDevice(0));
  int supported = 0;
  CHECK(cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, 0));
  EXPECT(supported == 1, "memory pools not supported");

  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  int *h_a, *h_b;
  CHECK(cudaMallocHost(&h_a, kBytes));
  CHECK(cudaMallocHost(&h_b, kBytes));

  test_default_pool(stream, h_a, h_b);
  test_own_pool(stream, h_a, h_b);

  CHECK(cudaFreeHost(h_a));
  CHECK(cudaFreeHost(h_b));
  CHECK(cudaStreamDestroy(stream));
  return pass();
}
