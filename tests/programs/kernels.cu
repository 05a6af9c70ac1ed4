// Kernel launches: parameter passing of every shape, launch APIs, function
// attributes, occupancy, cooperative launch and atomics.
//
// The argument values are fixed: with ORION_TEST_HOST_BACKEND=1 the kernels only
// get recorded, and the host backend's test compares the recorded parameter bytes
// with the table in tests/programs/README.md. Keep the two in step.
#define PROGRAM_NAME "kernels"
#include "common.h"

#include <cooperative_groups.h>

#include <algorithm>
#include <cstddef>
#include <vector>

namespace cg = cooperative_groups;

// Launch 1.
__global__ void vec_add(const float* a, const float* b, float* c, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) c[i] = a[i] + b[i];
}

// A struct passed by value. The padding the compiler would insert is spelled out
// and zeroed, so every byte of the parameter is deterministic.
struct Mixed {
  int i;           // offset 0
  int pad0;        // 4
  double d;        // 8
  char c;          // 16
  char pad1[15];   // 17
  float4 f;        // 32 (16-byte aligned)
};
static_assert(sizeof(Mixed) == 48 && alignof(Mixed) == 16, "layout documented in README");
static_assert(offsetof(Mixed, d) == 8 && offsetof(Mixed, c) == 16 && offsetof(Mixed, f) == 32,
              "layout documented in README");

// Launch 2.
__global__ void echo_mixed(Mixed m, Mixed* out) { *out = m; }

// Launch 3: scalars of every size; the kernel sends each back as a long long
// (floating-point values as their bit patterns) so the host compares exactly.
__global__ void echo_scalars(char c, short s, int i, long long ll, float f, double d,
                             const int* p, char c2, long long* out) {
  out[0] = c;
  out[1] = s;
  out[2] = i;
  out[3] = ll;
  out[4] = __float_as_int(f);
  out[5] = __double_as_longlong(d);
  out[6] = *p;
  out[7] = c2;
}

// Launch 4: 32000 bytes of parameter. Over 4 KB needs CUDA 12.1+ and Volta+, which
// allow up to 32764 bytes.
constexpr int kBigInts = 8000;
struct BigParam {
  int v[kBigInts];
};
__global__ void copy_big_param(BigParam p, int* out) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < kBigInts; i += gridDim.x * blockDim.x)
    out[i] = p.v[i];
}

// Launches 5 and 6: one template, two instantiations with differently sized T.
template <typename T>
__global__ void scale(T* data, T factor, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) data[i] *= factor;
}

// Launches 7 and 8: each block reverses `chunk` elements through dynamic shared
// memory of `chunk` ints.
__global__ void reverse_chunks(const int* in, int* out, int chunk) {
  extern __shared__ int tile[];
  const int* src = in + (size_t)blockIdx.x * chunk;
  int* dst = out + (size_t)blockIdx.x * chunk;
  for (int j = threadIdx.x; j < chunk; j += blockDim.x) tile[j] = src[j];
  __syncthreads();
  for (int j = threadIdx.x; j < chunk; j += blockDim.x) dst[j] = tile[chunk - 1 - j];
}

// Launch 9 (cudaLaunchKernel).
__global__ void axpy(float a, const float* x, float* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] += a * x[i];
}

// Launch 10 (cudaLaunchKernelExC).
__global__ void iota(int* out, int n, int start) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = start + i;
}

// Launch 11 (cudaLaunchCooperativeKernel): phase 2 reads what other blocks wrote
// in phase 1, which is only safe because of the grid-wide barrier.
__global__ void coop_reverse(int* scratch, int* out, int n) {
  cg::grid_group grid = cg::this_grid();
  for (int i = grid.thread_rank(); i < n; i += grid.size()) scratch[i] = i * 7;
  grid.sync();
  for (int i = grid.thread_rank(); i < n; i += grid.size()) out[i] = scratch[n - 1 - i];
}

// Launch 12.
constexpr int kBins = 16;
__global__ void atomics(const int* in, int n, unsigned int* bins, int* max_out, double* sum_out) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    int v = in[i];
    atomicAdd(&bins[v % kBins], 1u);
    atomicMax(max_out, v);
    atomicAdd(sum_out, v * 0.5);  // exact: small integers and halves
  }
}

template <typename T>
static T* device_copy(const std::vector<T>& host) {
  T* d;
  CHECK(cudaMalloc(&d, host.size() * sizeof(T)));
  CHECK(cudaMemcpy(d, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

template <typename T>
static std::vector<T> host_copy(const T* d, size_t n) {
  std::vector<T> host(n);
  CHECK(cudaMemcpy(host.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}

static void launch_vec_add() {
  const int n = 1 << 20;
  std::vector<float> a(n), b(n), want(n);
  for (int i = 0; i < n; ++i) {
    a[i] = (float)i;
    b[i] = 2.0f * i;
    want[i] = 3.0f * i;  // exact in float for i < 2^22
  }
  float *d_a = device_copy(a), *d_b = device_copy(b), *d_c;
  CHECK(cudaMalloc(&d_c, n * sizeof(float)));
  vec_add<<<(n + 255) / 256, 256>>>(d_a, d_b, d_c, n);
  CHECK_LAUNCH();
  std::vector<float> c = host_copy(d_c, n);
  if (kernels_execute()) expect_equal("vec_add", c.data(), want.data(), n);
  CHECK(cudaFree(d_a));
  CHECK(cudaFree(d_b));
  CHECK(cudaFree(d_c));
}

static void launch_echo_mixed() {
  Mixed m;
  memset(&m, 0, sizeof m);
  m.i = 1;
  m.d = 2.5;
  m.c = 'x';
  m.f = make_float4(1.f, 2.f, 3.f, 4.f);
  Mixed* d_out;
  CHECK(cudaMalloc(&d_out, sizeof(Mixed)));
  CHECK(cudaMemset(d_out, 0, sizeof(Mixed)));
  echo_mixed<<<1, 1>>>(m, d_out);
  CHECK_LAUNCH();
  Mixed got = host_copy(d_out, 1)[0];
  if (kernels_execute())
    EXPECT(memcmp(&got, &m, sizeof m) == 0, "echo_mixed returned i=%d d=%g c=%c f=(%g,%g,%g,%g)",
           got.i, got.d, got.c, got.f.x, got.f.y, got.f.z, got.f.w);
  CHECK(cudaFree(d_out));
}

static void launch_echo_scalars() {
  const char c = 'a';
  const short s = -2;
  const int i = 0x12345678;
  const long long ll = 0x0102030405060708ll;
  const float f = 1.5f;
  const double d = -0.25;
  const char c2 = 'z';
  int* d_p = device_copy(std::vector<int>{77});
  long long* d_out;
  CHECK(cudaMalloc(&d_out, 8 * sizeof(long long)));
  echo_scalars<<<1, 1>>>(c, s, i, ll, f, d, d_p, c2, d_out);
  CHECK_LAUNCH();
  std::vector<long long> got = host_copy(d_out, 8);
  long long f_bits = 0, d_bits = 0;
  memcpy(&f_bits, &f, sizeof f);
  memcpy(&d_bits, &d, sizeof d);
  const long long want[8] = {c, s, i, ll, f_bits, d_bits, 77, c2};
  if (kernels_execute()) expect_equal("echo_scalars", got.data(), want, 8);
  CHECK(cudaFree(d_p));
  CHECK(cudaFree(d_out));
}

static void launch_copy_big_param() {
  static BigParam p;  // 32 KB: kept off the stack
  for (int i = 0; i < kBigInts; ++i) p.v[i] = i * 3;
  int* d_out;
  CHECK(cudaMalloc(&d_out, sizeof p.v));
  copy_big_param<<<32, 256>>>(p, d_out);
  CHECK_LAUNCH();
  std::vector<int> got = host_copy(d_out, kBigInts);
  if (kernels_execute()) expect_equal("copy_big_param", got.data(), p.v, kBigInts);
  CHECK(cudaFree(d_out));
}

static void launch_templates() {
  const int n = 4096;
  std::vector<float> f(n), f_want(n);
  std::vector<double> d(n), d_want(n);
  for (int i = 0; i < n; ++i) {
    f[i] = i + 0.5f;
    f_want[i] = f[i] * 2.0f;
    d[i] = i - 0.25;
    d_want[i] = d[i] * 3.0;
  }
  float* d_f = device_copy(f);
  double* d_d = device_copy(d);
  scale<float><<<16, 256>>>(d_f, 2.0f, n);
  CHECK_LAUNCH();
  scale<double><<<16, 256>>>(d_d, 3.0, n);
  CHECK_LAUNCH();
  std::vector<float> f_got = host_copy(d_f, n);
  std::vector<double> d_got = host_copy(d_d, n);
  if (kernels_execute()) {
    expect_equal("scale<float>", f_got.data(), f_want.data(), n);
    expect_equal("scale<double>", d_got.data(), d_want.data(), n);
  }
  CHECK(cudaFree(d_f));
  CHECK(cudaFree(d_d));
}

static void launch_shared_memory() {
  const int n = 1 << 16;
  std::vector<int> in(n);
  for (int i = 0; i < n; ++i) in[i] = i * 11 - 5;
  int* d_in = device_copy(in);
  int* d_out;
  CHECK(cudaMalloc(&d_out, n * sizeof(int)));

  auto expect_reversed = [&](const char* what, int chunk) {
    std::vector<int> got = host_copy(d_out, n);
    if (!kernels_execute()) return;
    for (int i = 0; i < n; ++i) {
      int base = i / chunk * chunk;
      int want = in[base + chunk - 1 - (i - base)];
      EXPECT(got[i] == want, "%s: element %d is %d, expected %d", what, i, got[i], want);
    }
  };

  // 1 KB of dynamic shared memory over 256 blocks covers the n elements.
  reverse_chunks<<<n / 256, 256, 256 * sizeof(int)>>>(d_in, d_out, 256);
  CHECK_LAUNCH();
  expect_reversed("reverse_chunks 256", 256);

  // 64 KB is over the default 48 KB limit: opt in first (sm_75 allows 64 KB).
  const int big_chunk = 16384, big_bytes = big_chunk * sizeof(int);
  CHECK(cudaFuncSetAttribute(reverse_chunks, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             big_bytes));
  cudaFuncAttributes attr;
  CHECK(cudaFuncGetAttributes(&attr, reverse_chunks));
  EXPECT(attr.maxDynamicSharedSizeBytes == big_bytes, "maxDynamicSharedSizeBytes is %d",
         attr.maxDynamicSharedSizeBytes);
  reverse_chunks<<<n / big_chunk, 1024, big_bytes>>>(d_in, d_out, big_chunk);
  CHECK_LAUNCH();
  expect_reversed("reverse_chunks 16384", big_chunk);

  CHECK(cudaFree(d_in));
  CHECK(cudaFree(d_out));
}

static void launch_axpy_via_cudaLaunchKernel(cudaStream_t stream) {
  const int n = 4096;
  std::vector<float> x(n), y(n), want(n);
  for (int i = 0; i < n; ++i) {
    x[i] = (float)i;
    y[i] = 1.0f;
    want[i] = 1.0f + 2.0f * i;
  }
  float a = 2.0f;
  float *d_x = device_copy(x), *d_y = device_copy(y);
  int count = n;
  void* args[] = {&a, &d_x, &d_y, &count};
  CHECK(cudaLaunchKernel((const void*)axpy, dim3(16), dim3(256), args, 0, stream));
  CHECK(cudaStreamSynchronize(stream));
  std::vector<float> got = host_copy(d_y, n);
  if (kernels_execute()) expect_equal("axpy", got.data(), want.data(), n);
  CHECK(cudaFree(d_x));
  CHECK(cudaFree(d_y));
}

static void launch_iota_via_cudaLaunchKernelExC(cudaStream_t stream) {
  const int n = 4096;
  int* d_out;
  CHECK(cudaMalloc(&d_out, n * sizeof(int)));
  int count = n, start = 100;
  void* args[] = {&d_out, &count, &start};

  // A config with one attribute and no cluster dimensions.
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributePriority;
  attr[0].val.priority = 0;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(16);
  config.blockDim = dim3(256);
  config.dynamicSmemBytes = 0;
  config.stream = stream;
  config.attrs = attr;
  config.numAttrs = 1;
  CHECK(cudaLaunchKernelExC(&config, (const void*)iota, args));
  CHECK(cudaStreamSynchronize(stream));
  std::vector<int> got = host_copy(d_out, n);
  if (kernels_execute())
    for (int i = 0; i < n; ++i) EXPECT(got[i] == 100 + i, "iota[%d] = %d", i, got[i]);
  CHECK(cudaFree(d_out));
}

static void query_function_attributes() {
  cudaFuncAttributes attr;
  CHECK(cudaFuncGetAttributes(&attr, vec_add));
  printf("vec_add: %d registers, max %d threads/block, binary sm_%d\n", attr.numRegs,
         attr.maxThreadsPerBlock, attr.binaryVersion);
  EXPECT(attr.maxThreadsPerBlock >= 256, "vec_add maxThreadsPerBlock %d", attr.maxThreadsPerBlock);
  EXPECT(attr.binaryVersion >= 75, "binaryVersion %d", attr.binaryVersion);

  int blocks = 0;
  CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, vec_add, 256, 0));
  EXPECT(blocks >= 1, "occupancy of vec_add at 256 threads: %d blocks/SM", blocks);
}

static void launch_cooperative() {
  int supported = 0, sms = 0, blocks_per_sm = 0;
  CHECK(cudaDeviceGetAttribute(&supported, cudaDevAttrCooperativeLaunch, 0));
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  EXPECT(supported == 1, "cooperative launch not supported");
  CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_per_sm, coop_reverse, 256, 0));
  EXPECT(blocks_per_sm >= 1, "coop_reverse cannot be resident");

  // One block per SM is always co-resident, as a grid-wide barrier requires.
  const int n = 1 << 16;
  int *d_scratch, *d_out;
  CHECK(cudaMalloc(&d_scratch, n * sizeof(int)));
  CHECK(cudaMalloc(&d_out, n * sizeof(int)));
  int count = n;
  void* args[] = {&d_scratch, &d_out, &count};
  CHECK(cudaLaunchCooperativeKernel((const void*)coop_reverse, dim3(sms), dim3(256), args, 0, 0));
  std::vector<int> got = host_copy(d_out, n);
  if (kernels_execute())
    for (int i = 0; i < n; ++i)
      EXPECT(got[i] == (n - 1 - i) * 7, "coop_reverse[%d] = %d", i, got[i]);
  CHECK(cudaFree(d_scratch));
  CHECK(cudaFree(d_out));
}

static void launch_atomics() {
  const int n = 4096;
  std::vector<int> in(n);
  std::vector<unsigned int> want_bins(kBins, 0);
  int want_max = 0;
  double want_sum = 0;
  for (int i = 0; i < n; ++i) {
    in[i] = (i * 37) % 1000;
    want_bins[in[i] % kBins]++;
    want_max = std::max(want_max, in[i]);
    want_sum += in[i] * 0.5;
  }
  int* d_in = device_copy(in);
  unsigned int* d_bins;
  int* d_max;
  double* d_sum;
  CHECK(cudaMalloc(&d_bins, kBins * sizeof(unsigned int)));
  CHECK(cudaMalloc(&d_max, sizeof(int)));
  CHECK(cudaMalloc(&d_sum, sizeof(double)));
  CHECK(cudaMemset(d_bins, 0, kBins * sizeof(unsigned int)));
  CHECK(cudaMemset(d_max, 0, sizeof(int)));
  CHECK(cudaMemset(d_sum, 0, sizeof(double)));
  atomics<<<16, 256>>>(d_in, n, d_bins, d_max, d_sum);
  CHECK_LAUNCH();
  std::vector<unsigned int> bins = host_copy(d_bins, kBins);
  int got_max = host_copy(d_max, 1)[0];
  double got_sum = host_copy(d_sum, 1)[0];
  if (kernels_execute()) {
    expect_equal("atomic histogram", bins.data(), want_bins.data(), kBins);
    EXPECT(got_max == want_max, "atomicMax gave %d, expected %d", got_max, want_max);
    EXPECT(got_sum == want_sum, "double atomicAdd gave %.17g, expected %.17g", got_sum, want_sum);
  }
  CHECK(cudaFree(d_in));
  CHECK(cudaFree(d_bins));
  CHECK(cudaFree(d_max));
  CHECK(cudaFree(d_sum));
}

int main() {
  CHECK(cudaSetDevice(0));
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  // The order of the launches is the numbering in README.md.
  launch_vec_add();                                // 1
  launch_echo_mixed();                             // 2
  launch_echo_scalars();                           // 3
  launch_copy_big_param();                         // 4
  launch_templates();                              // 5, 6
  launch_shared_memory();                          // 7, 8
  launch_axpy_via_cudaLaunchKernel(stream);        // 9
  launch_iota_via_cudaLaunchKernelExC(stream);     // 10
  query_function_attributes();
  launch_cooperative();                            // 11
  launch_atomics();                                // 12

  CHECK(cudaDeviceSynchronize());
  CHECK(cudaStreamDestroy(stream));
  return pass();
}
