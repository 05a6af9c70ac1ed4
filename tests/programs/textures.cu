// Texture objects (point and linear filtering) over a cudaArray, and a surface
// object written and read by kernels. The array copies and the object
// descriptors are checked on the host backend too; the fetches are not.
#define PROGRAM_NAME "textures"
#include "common.h"

#include <algorithm>
#include <cmath>
#include <vector>

constexpr int kW = 32, kH = 16;
constexpr size_t kRowBytes = kW * sizeof(float);

// Samples the texture at the centre of texel (x, y), shifted by (dx, dy).
__global__ void sample(cudaTextureObject_t tex, float* out, int w, int h, float dx, float dy) {
  int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x < w && y < h) out[y * w + x] = tex2D<float>(tex, x + dx, y + dy);
}

__global__ void surface_write(cudaSurfaceObject_t surf, int w, int h) {
  int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x < w && y < h) surf2Dwrite(x * 2.0f + y * 1000.0f + 0.25f, surf, x * sizeof(float), y);
}

__global__ void surface_read(cudaSurfaceObject_t surf, float* out, int w, int h) {
  int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x < w && y < h) {
    float v;
    surf2Dread(&v, surf, x * sizeof(float), y);
    out[y * w + x] = v;
  }
}

static const dim3 kBlock(16, 8), kGrid(kW / 16, kH / 8);

static cudaTextureObject_t make_texture(cudaArray_t array, cudaTextureFilterMode filter) {
  cudaResourceDesc res = {};
  res.resType = cudaResourceTypeArray;
  res.res.array.array = array;
  cudaTextureDesc desc = {};
  desc.addressMode[0] = cudaAddressModeClamp;
  desc.addressMode[1] = cudaAddressModeClamp;
  desc.filterMode = filter;
  desc.readMode = cudaReadModeElementType;
  desc.normalizedCoords = 0;
  cudaTextureObject_t tex = 0;
  CHECK(cudaCreateTextureObject(&tex, &res, &desc, nullptr));

  cudaResourceDesc res_back;
  cudaTextureDesc desc_back;
  CHECK(cudaGetTextureObjectResourceDesc(&res_back, tex));
  CHECK(cudaGetTextureObjectTextureDesc(&desc_back, tex));
  EXPECT(res_back.resType == cudaResourceTypeArray && res_back.res.array.array == array,
         "texture resource does not name its array");
  EXPECT(desc_back.filterMode == filter, "filter mode %d, expected %d", (int)desc_back.filterMode,
         (int)filter);
  return tex;
}

static void test_textures(const std::vector<float>& texels) {
  cudaChannelFormatDesc channel = cudaCreateChannelDesc<float>();
  cudaArray_t array;
  CHECK(cudaMallocArray(&array, &channel, kW, kH));
  CHECK(cudaMemcpy2DToArray(array, 0, 0, texels.data(), kRowBytes, kRowBytes, kH,
                            cudaMemcpyHostToDevice));
  std::vector<float> back(kW * kH, 0.f);
  CHECK(cudaMemcpy2DFromArray(back.data(), kRowBytes, array, 0, 0, kRowBytes, kH,
                              cudaMemcpyDeviceToHost));
  expect_equal("texture array upload", back.data(), texels.data(), kW * kH);

  cudaTextureObject_t point = make_texture(array, cudaFilterModePoint);
  cudaTextureObject_t linear = make_texture(array, cudaFilterModeLinear);
  float* d_out;
  CHECK(cudaMalloc(&d_out, kW * kH * sizeof(float)));
  std::vector<float> out(kW * kH);

  sample<<<kGrid, kBlock>>>(point, d_out, kW, kH, 0.5f, 0.5f);
  CHECK_LAUNCH();
  CHECK(cudaMemcpy(out.data(), d_out, out.size() * sizeof(float), cudaMemcpyDeviceToHost));
  if (kernels_execute()) expect_equal("point sampling", out.data(), texels.data(), kW * kH);

  // Half way between texel x and x+1 horizontally; clamping repeats the last column.
  sample<<<kGrid, kBlock>>>(linear, d_out, kW, kH, 1.0f, 0.5f);
  CHECK_LAUNCH();
  CHECK(cudaMemcpy(out.data(), d_out, out.size() * sizeof(float), cudaMemcpyDeviceToHost));
  if (kernels_execute())
    for (int y = 0; y < kH; ++y)
      for (int x = 0; x < kW; ++x) {
        float want = 0.5f * (texels[y * kW + x] + texels[y * kW + std::min(x + 1, kW - 1)]);
        float got = out[y * kW + x];
        // Filtering weights are 9-bit fixed point in hardware: allow a little.
        EXPECT(std::fabs(got - want) <= 1e-3f * std::fabs(want) + 1e-3f,
               "linear sample (%d,%d) = %g, expected %g", x, y, got, want);
      }

  CHECK(cudaDestroyTextureObject(point));
  CHECK(cudaDestroyTextureObject(linear));
  CHECK(cudaFree(d_out));
  CHECK(cudaFreeArray(array));
}

static void test_surface(const std::vector<float>& texels) {
  cudaChannelFormatDesc channel = cudaCreateChannelDesc<float>();
  cudaArray_t array;
  CHECK(cudaMallocArray(&array, &channel, kW, kH, cudaArraySurfaceLoadStore));
  CHECK(cudaMemcpy2DToArray(array, 0, 0, texels.data(), kRowBytes, kRowBytes, kH,
                            cudaMemcpyHostToDevice));
  cudaResourceDesc res = {};
  res.resType = cudaResourceTypeArray;
  res.res.array.array = array;
  cudaSurfaceObject_t surf = 0;
  CHECK(cudaCreateSurfaceObject(&surf, &res));
  cudaResourceDesc res_back;
  CHECK(cudaGetSurfaceObjectResourceDesc(&res_back, surf));
  EXPECT(res_back.res.array.array == array, "surface resource does not name its array");

  std::vector<float> want(kW * kH), got(kW * kH);
  for (int y = 0; y < kH; ++y)
    for (int x = 0; x < kW; ++x) want[y * kW + x] = x * 2.0f + y * 1000.0f + 0.25f;
  CHECK(cudaMemcpy2DFromArray(got.data(), kRowBytes, array, 0, 0, kRowBytes, kH,
                              cudaMemcpyDeviceToHost));
  expect_equal("surface array upload", got.data(), texels.data(), kW * kH);

  surface_write<<<kGrid, kBlock>>>(surf, kW, kH);
  CHECK_LAUNCH();
  CHECK(cudaMemcpy2DFromArray(got.data(), kRowBytes, array, 0, 0, kRowBytes, kH,
                              cudaMemcpyDeviceToHost));
  if (kernels_execute()) expect_equal("surface written by kernel", got.data(), want.data(), kW * kH);

  float* d_out;
  CHECK(cudaMalloc(&d_out, kW * kH * sizeof(float)));
  surface_read<<<kGrid, kBlock>>>(surf, d_out, kW, kH);
  CHECK_LAUNCH();
  CHECK(cudaMemcpy(got.data(), d_out, got.size() * sizeof(float), cudaMemcpyDeviceToHost));
  if (kernels_execute()) expect_equal("surface read by kernel", got.data(), want.data(), kW * kH);

  CHECK(cudaDestroySurfaceObject(surf));
  CHECK(cudaFree(d_out));
  CHECK(cudaFreeArray(array));
}

int main() {
  CHECK(cudaSetDevice(0));
  std::vector<float> texels(kW * kH);
  for (int y = 0; y < kH; ++y)
    for (int x = 0; x < kW; ++x) texels[y * kW + x] = x * 3.0f + y * 100.0f;
  test_textures(texels);
  test_surface(texels);
  return pass();
}
