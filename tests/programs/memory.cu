// Memory management and copies in every shape the runtime offers. All checks but
// the last (a kernel reading the symbols) hold on the host backend too.
#define PROGRAM_NAME "memory"
#include "common.h"

#include <algorithm>
#include <cstdint>
#include <vector>

__device__ int d_table[256];
__constant__ float c_coeffs[64];

// Proves that kernels see what the host wrote into both kinds of symbol.
__global__ void read_symbols(float* out) {
  int i = threadIdx.x;
  out[i] = d_table[i] + c_coeffs[i % 64];
}

static std::vector<int> iota_ints(size_t n, int start) {
  std::vector<int> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + (int)i;
  return v;
}

static void test_linear_copies() {
  const size_t n = 1 << 16, bytes = n * sizeof(int);
  std::vector<int> src = iota_ints(n, 7), dst(n, 0);
  int *d_a, *d_b;
  CHECK(cudaMalloc(&d_a, bytes));
  CHECK(cudaMalloc(&d_b, bytes));

  CHECK(cudaMemcpy(d_a, src.data(), bytes, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(d_b, d_a, bytes, cudaMemcpyDeviceToDevice));
  CHECK(cudaMemcpy(dst.data(), d_b, bytes, cudaMemcpyDeviceToHost));
  expect_equal("H2D/D2D/D2H", dst.data(), src.data(), n);

  // cudaMemcpyDefault infers each direction from the pointers (unified addressing).
  std::vector<int> src2 = iota_ints(n, -5000), dst2(n, 0);
  CHECK(cudaMemcpy(d_a, src2.data(), bytes, cudaMemcpyDefault));
  CHECK(cudaMemcpy(d_b, d_a, bytes, cudaMemcpyDefault));
  CHECK(cudaMemcpy(dst2.data(), d_b, bytes, cudaMemcpyDefault));
  expect_equal("cudaMemcpyDefault", dst2.data(), src2.data(), n);

  // Offsets inside an allocation: overwrite the middle 100 elements.
  CHECK(cudaMemcpy(d_b + 1000, src.data(), 100 * sizeof(int), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dst2.data(), d_b, bytes, cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < n; ++i) {
    int want = (i >= 1000 && i < 1100) ? src[i - 1000] : src2[i];
    EXPECT(dst2[i] == want, "offset copy: element %zu is %d, expected %d", i, dst2[i], want);
  }

  cudaPointerAttributes attr;
  CHECK(cudaPointerGetAttributes(&attr, d_a));
  EXPECT(attr.type == cudaMemoryTypeDevice && attr.device == 0,
         "device pointer reported as type %d on device %d", (int)attr.type, attr.device);
  CHECK(cudaPointerGetAttributes(&attr, src.data()));
  EXPECT(attr.type == cudaMemoryTypeUnregistered, "pageable pointer reported as type %d",
         (int)attr.type);

  CHECK(cudaFree(d_a));
  CHECK(cudaFree(d_b));
  CHECK(cudaFree(nullptr));  // freeing NULL is a no-op
}

static void test_memset_and_async(cudaStream_t stream) {
  const size_t bytes = 1 << 20;
  unsigned char* d;
  CHECK(cudaMalloc(&d, bytes));
  std::vector<unsigned char> h(bytes);

  CHECK(cudaMemset(d, 0xA5, bytes));
  CHECK(cudaMemcpy(h.data(), d, bytes, cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < bytes; ++i) EXPECT(h[i] == 0xA5, "memset byte %zu is %#x", i, h[i]);

  // Stream-ordered: memset the whole buffer, then overwrite its second half.
  unsigned char* pinned;
  CHECK(cudaMallocHost(&pinned, bytes));
  for (size_t i = 0; i < bytes; ++i) pinned[i] = (unsigned char)(i * 13);
  CHECK(cudaMemsetAsync(d, 0x3C, bytes, stream));
  CHECK(cudaMemcpyAsync(d + bytes / 2, pinned, bytes / 2, cudaMemcpyHostToDevice, stream));
  CHECK(cudaMemcpyAsync(pinned, d, bytes, cudaMemcpyDeviceToHost, stream));
  CHECK(cudaStreamSynchronize(stream));
  for (size_t i = 0; i < bytes; ++i) {
    unsigned char want = i < bytes / 2 ? 0x3C : (unsigned char)((i - bytes / 2) * 13);
    EXPECT(pinned[i] == want, "async byte %zu is %#x, expected %#x", i, pinned[i], want);
  }

  cudaPointerAttributes attr;
  CHECK(cudaPointerGetAttributes(&attr, pinned));
  EXPECT(attr.type == cudaMemoryTypeHost, "cudaMallocHost pointer reported as type %d",
         (int)attr.type);
  CHECK(cudaFreeHost(pinned));
  CHECK(cudaFree(d));
}

static void test_pitched_2d() {
  const size_t width = 100, height = 20, row_bytes = width * sizeof(int);
  int* d;
  size_t pitch = 0;
  CHECK(cudaMallocPitch((void**)&d, &pitch, row_bytes, height));
  EXPECT(pitch >= row_bytes, "pitch %zu < row %zu", pitch, row_bytes);

  std::vector<int> src = iota_ints(width * height, 100), dst(width * height, 0);
  CHECK(cudaMemset2D(d, pitch, 0, row_bytes, height));
  CHECK(cudaMemcpy2D(d, pitch, src.data(), row_bytes, row_bytes, height, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy2D(dst.data(), row_bytes, d, pitch, row_bytes, height, cudaMemcpyDeviceToHost));
  expect_equal("cudaMemcpy2D round trip", dst.data(), src.data(), width * height);

  // Pitched to tightly packed on the device, then a plain 1D copy back: only
  // correct if the pitch was honoured on both sides.
  int* packed;
  CHECK(cudaMalloc(&packed, row_bytes * height));
  CHECK(cudaMemcpy2D(packed, row_bytes, d, pitch, row_bytes, height, cudaMemcpyDeviceToDevice));
  std::fill(dst.begin(), dst.end(), 0);
  CHECK(cudaMemcpy(dst.data(), packed, row_bytes * height, cudaMemcpyDeviceToHost));
  expect_equal("cudaMemcpy2D D2D to packed", dst.data(), src.data(), width * height);
  CHECK(cudaFree(packed));
  CHECK(cudaFree(d));
}

static void test_3d() {
  const size_t w = 40, h = 8, depth = 4;  // w in ints
  cudaExtent extent = make_cudaExtent(w * sizeof(int), h, depth);
  cudaPitchedPtr dev;
  CHECK(cudaMalloc3D(&dev, extent));
  EXPECT(dev.pitch >= w * sizeof(int), "3D pitch %zu", dev.pitch);
  CHECK(cudaMemset3D(dev, 0x5A, extent));

  // Copy a 10x3x2 box of host data to position (x=4, y=2, z=1) of the volume.
  const size_t bw = 10, bh = 3, bd = 2, x0 = 4, y0 = 2, z0 = 1;
  std::vector<int> box = iota_ints(bw * bh * bd, 1);
  cudaMemcpy3DParms up = {};
  up.srcPtr = make_cudaPitchedPtr(box.data(), bw * sizeof(int), bw, bh);
  up.dstPtr = dev;
  up.dstPos = make_cudaPos(x0 * sizeof(int), y0, z0);
  up.extent = make_cudaExtent(bw * sizeof(int), bh, bd);
  up.kind = cudaMemcpyHostToDevice;
  CHECK(cudaMemcpy3D(&up));

  std::vector<int> whole(w * h * depth, 0);
  cudaMemcpy3DParms down = {};
  down.srcPtr = dev;
  down.dstPtr = make_cudaPitchedPtr(whole.data(), w * sizeof(int), w, h);
  down.extent = extent;
  down.kind = cudaMemcpyDeviceToHost;
  CHECK(cudaMemcpy3D(&down));

  int fill;
  memset(&fill, 0x5A, sizeof fill);
  for (size_t z = 0; z < depth; ++z)
    for (size_t y = 0; y < h; ++y)
      for (size_t x = 0; x < w; ++x) {
        bool inside = x >= x0 && x < x0 + bw && y >= y0 && y < y0 + bh && z >= z0 && z < z0 + bd;
        int want = inside ? box[((z - z0) * bh + (y - y0)) * bw + (x - x0)] : fill;
        int got = whole[(z * h + y) * w + x];
        EXPECT(got == want, "3D element (%zu,%zu,%zu) is %#x, expected %#x", x, y, z, got, want);
      }
  CHECK(cudaFree(dev.ptr));
}

static void test_pinned_and_registered(cudaStream_t stream) {
  const size_t n = 1 << 18, bytes = n * sizeof(int);
  int* d;
  CHECK(cudaMalloc(&d, bytes));

  int* portable;
  CHECK(cudaHostAlloc(&portable, bytes, cudaHostAllocPortable));
  unsigned int flags = 0;
  CHECK(cudaHostGetFlags(&flags, portable));
  EXPECT(flags & cudaHostAllocPortable, "cudaHostGetFlags gives %#x", flags);

  // Page-aligned pageable memory, pinned after the fact.
  const size_t page = 4096;
  int* registered = static_cast<int*>(aligned_alloc(page, bytes));
  EXPECT(registered != nullptr, "aligned_alloc failed");
  CHECK(cudaHostRegister(registered, bytes, cudaHostRegisterDefault));
  cudaPointerAttributes attr;
  CHECK(cudaPointerGetAttributes(&attr, registered));
  EXPECT(attr.type == cudaMemoryTypeHost, "registered memory reported as type %d",
         (int)attr.type);

  for (size_t i = 0; i < n; ++i) portable[i] = (int)(i * 3 + 1);
  CHECK(cudaMemcpyAsync(d, portable, bytes, cudaMemcpyHostToDevice, stream));
  CHECK(cudaMemcpyAsync(registered, d, bytes, cudaMemcpyDeviceToHost, stream));
  CHECK(cudaStreamSynchronize(stream));
  expect_equal("cudaHostAlloc -> device -> cudaHostRegister", registered, portable, n);

  CHECK(cudaHostUnregister(registered));
  free(registered);
  CHECK(cudaFreeHost(portable));
  CHECK(cudaFree(d));
}

static void test_symbols(cudaStream_t stream) {
  std::vector<int> table = iota_ints(256, 1000);
  CHECK(cudaMemcpyToSymbol(d_table, table.data(), sizeof(d_table)));
  // A partial write at a byte offset: elements 32..47.
  std::vector<int> patch = iota_ints(16, -16);
  CHECK(cudaMemcpyToSymbol(d_table, patch.data(), 16 * sizeof(int), 32 * sizeof(int)));
  std::copy(patch.begin(), patch.end(), table.begin() + 32);

  std::vector<int> table_back(256, 0);
  CHECK(cudaMemcpyFromSymbol(table_back.data(), d_table, sizeof(d_table)));
  expect_equal("__device__ symbol", table_back.data(), table.data(), 256);

  std::vector<float> coeffs(64), coeffs_back(64, 0.f);
  for (int i = 0; i < 64; ++i) coeffs[i] = 0.5f * i;
  CHECK(cudaMemcpyToSymbolAsync(c_coeffs, coeffs.data(), sizeof(c_coeffs), 0,
                                cudaMemcpyHostToDevice, stream));
  CHECK(cudaMemcpyFromSymbolAsync(coeffs_back.data(), c_coeffs, sizeof(c_coeffs), 0,
                                  cudaMemcpyDeviceToHost, stream));
  CHECK(cudaStreamSynchronize(stream));
  expect_equal("__constant__ symbol", coeffs_back.data(), coeffs.data(), 64);

  // The symbol's address is ordinary device memory.
  void* table_addr = nullptr;
  size_t table_size = 0, coeffs_size = 0;
  CHECK(cudaGetSymbolAddress(&table_addr, d_table));
  CHECK(cudaGetSymbolSize(&table_size, d_table));
  CHECK(cudaGetSymbolSize(&coeffs_size, c_coeffs));
  EXPECT(table_size == sizeof(d_table), "d_table size %zu", table_size);
  EXPECT(coeffs_size == sizeof(c_coeffs), "c_coeffs size %zu", coeffs_size);
  std::fill(table_back.begin(), table_back.end(), 0);
  CHECK(cudaMemcpy(table_back.data(), table_addr, table_size, cudaMemcpyDeviceToHost));
  expect_equal("cudaGetSymbolAddress", table_back.data(), table.data(), 256);

  float* d_out;
  CHECK(cudaMalloc(&d_out, 256 * sizeof(float)));
  read_symbols<<<1, 256>>>(d_out);
  CHECK_LAUNCH();
  std::vector<float> out(256);
  CHECK(cudaMemcpy(out.data(), d_out, sizeof(float) * 256, cudaMemcpyDeviceToHost));
  if (kernels_execute()) {
    for (int i = 0; i < 256; ++i) {
      float want = table[i] + coeffs[i % 64];
      EXPECT(out[i] == want, "read_symbols[%d] = %g, expected %g", i, out[i], want);
    }
  }
  CHECK(cudaFree(d_out));
}

static void test_peer(cudaStream_t stream) {
  const size_t n = 4096, bytes = n * sizeof(int);
  std::vector<int> src = iota_ints(n, 42), dst(n, 0);
  int *d_a, *d_b;
  CHECK(cudaMalloc(&d_a, bytes));
  CHECK(cudaMalloc(&d_b, bytes));
  CHECK(cudaMemcpy(d_a, src.data(), bytes, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpyPeer(d_b, 0, d_a, 0, bytes));
  CHECK(cudaMemcpy(dst.data(), d_b, bytes, cudaMemcpyDeviceToHost));
  expect_equal("cudaMemcpyPeer", dst.data(), src.data(), n);

  CHECK(cudaMemset(d_a, 0, bytes));
  CHECK(cudaMemcpyPeerAsync(d_a, 0, d_b, 0, bytes, stream));
  CHECK(cudaStreamSynchronize(stream));
  std::fill(dst.begin(), dst.end(), 0);
  CHECK(cudaMemcpy(dst.data(), d_a, bytes, cudaMemcpyDeviceToHost));
  expect_equal("cudaMemcpyPeerAsync", dst.data(), src.data(), n);
  CHECK(cudaFree(d_a));
  CHECK(cudaFree(d_b));
}

static void test_array() {
  const size_t w = 64, h = 32, row_bytes = w * sizeof(int);
  cudaChannelFormatDesc desc = cudaCreateChannelDesc<int>();
  cudaArray_t array;
  CHECK(cudaMallocArray(&array, &desc, w, h));

  cudaChannelFormatDesc got_desc;
  cudaExtent got_extent;
  unsigned int got_flags = 0;
  CHECK(cudaArrayGetInfo(&got_desc, &got_extent, &got_flags, array));
  EXPECT(got_desc.x == 32 && got_desc.f == cudaChannelFormatKindSigned, "desc x=%d f=%d",
         got_desc.x, (int)got_desc.f);
  EXPECT(got_extent.width == w && got_extent.height == h, "extent %zux%zu", got_extent.width,
         got_extent.height);

  std::vector<int> src = iota_ints(w * h, 5), dst(w * h, 0);
  CHECK(cudaMemcpy2DToArray(array, 0, 0, src.data(), row_bytes, row_bytes, h,
                            cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy2DFromArray(dst.data(), row_bytes, array, 0, 0, row_bytes, h,
                              cudaMemcpyDeviceToHost));
  expect_equal("array round trip", dst.data(), src.data(), w * h);

  // A sub-rectangle: 8 ints wide, 4 rows, from x=4 (16 bytes), y=2.
  const size_t sw = 8, sh = 4, sx = 4, sy = 2;
  std::vector<int> sub(sw * sh, 0);
  CHECK(cudaMemcpy2DFromArray(sub.data(), sw * sizeof(int), array, sx * sizeof(int), sy,
                              sw * sizeof(int), sh, cudaMemcpyDeviceToHost));
  for (size_t y = 0; y < sh; ++y)
    for (size_t x = 0; x < sw; ++x)
      EXPECT(sub[y * sw + x] == src[(y + sy) * w + x + sx], "array sub (%zu,%zu) is %d", x, y,
             sub[y * sw + x]);

  // Device linear memory into the array.
  std::vector<int> src2 = iota_ints(w * h, -3000);
  int* d;
  CHECK(cudaMalloc(&d, row_bytes * h));
  CHECK(cudaMemcpy(d, src2.data(), row_bytes * h, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy2DToArray(array, 0, 0, d, row_bytes, row_bytes, h, cudaMemcpyDeviceToDevice));
  CHECK(cudaMemcpy2DFromArray(dst.data(), row_bytes, array, 0, 0, row_bytes, h,
                              cudaMemcpyDeviceToHost));
  expect_equal("device -> array", dst.data(), src2.data(), w * h);
  CHECK(cudaFree(d));
  CHECK(cudaFreeArray(array));
}

// FNV-1a over 32-bit words.
static uint64_t checksum(const uint32_t* words, size_t n) {
  uint64_t hash = 14695981039346656037ull;
  for (size_t i = 0; i < n; ++i) hash = (hash ^ words[i]) * 1099511628211ull;
  return hash;
}

static void test_large() {
  const size_t bytes = size_t(64) << 20, n = bytes / sizeof(uint32_t);
  std::vector<uint32_t> src(n), dst(n, 0);
  uint32_t x = 2463534242u;  // xorshift32: no pattern a transfer could get right by luck
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    src[i] = x;
  }
  uint32_t *d_a, *d_b;
  CHECK(cudaMalloc(&d_a, bytes));
  CHECK(cudaMalloc(&d_b, bytes));
  CHECK(cudaMemcpy(d_a, src.data(), bytes, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(d_b, d_a, bytes, cudaMemcpyDeviceToDevice));
  CHECK(cudaMemcpy(dst.data(), d_b, bytes, cudaMemcpyDeviceToHost));
  uint64_t want = checksum(src.data(), n), got = checksum(dst.data(), n);
  printf("64 MiB copy checksum %016llx\n", (unsigned long long)got);
  EXPECT(got == want, "64 MiB checksum %016llx, expected %016llx", (unsigned long long)got,
         (unsigned long long)want);
  expect_equal("64 MiB copy", dst.data(), src.data(), n);
  CHECK(cudaFree(d_a));
  CHECK(cudaFree(d_b));
}

int main() {
  CHECK(cudaSetDevice(0));
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  test_linear_copies();
  test_memset_and_async(stream);
  test_pitched_2d();
  test_3d();
  test_pinned_and_registered(stream);
  test_symbols(stream);
  test_peer(stream);
  test_array();
  test_large();

  CHECK(cudaStreamDestroy(stream));
  return pass();
}
