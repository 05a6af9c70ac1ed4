// Device discovery and error reporting: everything an application asks before it
// allocates anything. No kernels, so every check holds on the host backend too.
#define PROGRAM_NAME "device_props"
#include "common.h"

static void check_device(int dev) {
  CHECK(cudaSetDevice(dev));
  int current = -1;
  CHECK(cudaGetDevice(&current));
  EXPECT(current == dev, "cudaGetDevice says %d after cudaSetDevice(%d)", current, dev);

  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, dev));
  printf("device %d: %s, %zu MiB, %d SMs, cc %d.%d\n", dev, prop.name,
         prop.totalGlobalMem >> 20, prop.multiProcessorCount, prop.major, prop.minor);
  EXPECT(prop.name[0] != '\0', "empty device name");
  EXPECT(prop.totalGlobalMem > 0, "totalGlobalMem is 0");
  EXPECT(prop.major >= 7, "compute capability %d.%d: the programs are built for sm_75+",
         prop.major, prop.minor);
  EXPECT(prop.warpSize == 32, "warpSize %d", prop.warpSize);

  // The attribute query and the properties struct must describe the same device.
  struct {
    cudaDeviceAttr attr;
    int expected;
    const char* what;
  } attrs[] = {
      {cudaDevAttrMultiProcessorCount, prop.multiProcessorCount, "multiProcessorCount"},
      {cudaDevAttrComputeCapabilityMajor, prop.major, "major"},
      {cudaDevAttrComputeCapabilityMinor, prop.minor, "minor"},
      {cudaDevAttrWarpSize, prop.warpSize, "warpSize"},
      {cudaDevAttrMaxThreadsPerBlock, prop.maxThreadsPerBlock, "maxThreadsPerBlock"},
      {cudaDevAttrMaxSharedMemoryPerBlock, (int)prop.sharedMemPerBlock, "sharedMemPerBlock"},
  };
  for (const auto& a : attrs) {
    int value = -1;
    CHECK(cudaDeviceGetAttribute(&value, a.attr, dev));
    EXPECT(value == a.expected, "attribute %s is %d, properties say %d", a.what, value,
           a.expected);
  }

  size_t free_bytes = 0, total_bytes = 0;
  CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  printf("device %d: cudaMemGetInfo free %zu MiB of %zu MiB\n", dev, free_bytes >> 20,
         total_bytes >> 20);
  EXPECT(total_bytes > 0 && free_bytes <= total_bytes, "free %zu, total %zu", free_bytes,
         total_bytes);
  EXPECT(total_bytes <= prop.totalGlobalMem, "cudaMemGetInfo total %zu > totalGlobalMem %zu",
         total_bytes, prop.totalGlobalMem);

  // The PCI bus id must lead back to the same device.
  char bus_id[64];
  CHECK(cudaDeviceGetPCIBusId(bus_id, sizeof bus_id, dev));
  int from_bus_id = -1;
  CHECK(cudaDeviceGetByPCIBusId(&from_bus_id, bus_id));
  EXPECT(from_bus_id == dev, "bus id %s maps to device %d", bus_id, from_bus_id);
}

static void check_error_strings() {
  struct {
    cudaError_t code;
    const char* name;
  } codes[] = {
      {cudaSuccess, "cudaSuccess"},
      {cudaErrorInvalidValue, "cudaErrorInvalidValue"},
      {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation"},
      {cudaErrorInvalidDevice, "cudaErrorInvalidDevice"},
      {cudaErrorIllegalAddress, "cudaErrorIllegalAddress"},
  };
  for (const auto& c : codes) {
    EXPECT(strcmp(cudaGetErrorName(c.code), c.name) == 0, "cudaGetErrorName(%d) is %s",
           (int)c.code, cudaGetErrorName(c.code));
    const char* text = cudaGetErrorString(c.code);
    EXPECT(text && text[0] && strcmp(text, c.name) != 0, "cudaGetErrorString(%s) is '%s'",
           c.name, text ? text : "(null)");
  }
  EXPECT(strcmp(cudaGetErrorString(cudaSuccess), "no error") == 0, "cudaSuccess reads '%s'",
         cudaGetErrorString(cudaSuccess));
}

// Non-sticky errors: returned by the call, remembered as the thread's last error
// until cudaGetLastError reads it, and harmless to later calls.
static void check_last_error(int count) {
  EXPECT_ERROR(cudaGetLastError(), cudaSuccess);

  EXPECT_ERROR(cudaSetDevice(999), cudaErrorInvalidDevice);
  EXPECT_ERROR(cudaPeekAtLastError(), cudaErrorInvalidDevice);
  EXPECT_ERROR(cudaPeekAtLastError(), cudaErrorInvalidDevice);  // peeking does not reset
  EXPECT_ERROR(cudaGetLastError(), cudaErrorInvalidDevice);
  EXPECT_ERROR(cudaGetLastError(), cudaSuccess);  // reading does
  int current = -1;
  CHECK(cudaGetDevice(&current));
  EXPECT(current == 0, "a failed cudaSetDevice changed the device to %d", current);

  cudaDeviceProp prop;
  EXPECT_ERROR(cudaGetDeviceProperties(&prop, count), cudaErrorInvalidDevice);
  int value = 0;
  EXPECT_ERROR(cudaDeviceGetAttribute(&value, cudaDevAttrWarpSize, count),
               cudaErrorInvalidDevice);
  EXPECT_ERROR(cudaGetLastError(), cudaErrorInvalidDevice);

  // An allocation far beyond any GPU fails cleanly, and the next one works.
  void* huge = nullptr;
  EXPECT_ERROR(cudaMalloc(&huge, size_t(1) << 60), cudaErrorMemoryAllocation);
  EXPECT_ERROR(cudaGetLastError(), cudaErrorMemoryAllocation);
  void* small = nullptr;
  CHECK(cudaMalloc(&small, 4096));
  CHECK(cudaFree(small));
}

int main() {
  int count = 0;
  CHECK(cudaGetDeviceCount(&count));
  printf("%d device(s)\n", count);
  EXPECT(count >= 1, "no device");
  for (int dev = 0; dev < count; ++dev) check_device(dev);
  CHECK(cudaSetDevice(0));

  int driver = 0, runtime = 0;
  CHECK(cudaDriverGetVersion(&driver));
  CHECK(cudaRuntimeGetVersion(&runtime));
  printf("driver %d, runtime %d\n", driver, runtime);
  EXPECT(runtime / 1000 == CUDART_VERSION / 1000, "runtime %d, built against %d", runtime,
         CUDART_VERSION);
  EXPECT(driver >= runtime, "driver %d older than runtime %d", driver, runtime);

  size_t stack = 0;
  CHECK(cudaDeviceGetLimit(&stack, cudaLimitStackSize));
  EXPECT(stack > 0, "stack size limit is 0");

  check_error_strings();
  check_last_error(count);
  return pass();
}
