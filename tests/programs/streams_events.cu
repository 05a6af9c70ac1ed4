// Streams, events and host callbacks: ordering within a stream, across streams
// through events, and host functions that run (in the client process) only once
// the work queued before them is done.
//
// A kernel that spins for a fixed time keeps a stream busy, so that work queued
// behind it visibly waits. On the host backend kernels do not run, so the
// "still busy" observations are skipped; the ordering checks are not.
#define PROGRAM_NAME "streams_events"
#include "common.h"

#include <mutex>
#include <vector>

__device__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__global__ void spin(unsigned long long duration_ns) {
  unsigned long long start = global_ns();
  while (global_ns() - start < duration_ns) {
  }
}

constexpr unsigned long long kSpinNs = 200ull * 1000 * 1000;  // 200 ms

static void test_stream_properties(cudaStream_t* hi, cudaStream_t* lo) {
  int least = 0, greatest = 0;
  CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  printf("stream priorities: least %d, greatest %d\n", least, greatest);
  EXPECT(greatest <= least, "greatest priority %d is numerically above least %d", greatest, least);

  CHECK(cudaStreamCreateWithPriority(hi, cudaStreamNonBlocking, greatest));
  CHECK(cudaStreamCreateWithPriority(lo, cudaStreamNonBlocking, least));
  int priority = 1;
  unsigned int flags = 0;
  CHECK(cudaStreamGetPriority(*hi, &priority));
  EXPECT(priority == greatest, "high-priority stream reports %d", priority);
  CHECK(cudaStreamGetPriority(*lo, &priority));
  EXPECT(priority == least, "low-priority stream reports %d", priority);
  CHECK(cudaStreamGetFlags(*hi, &flags));
  EXPECT(flags == cudaStreamNonBlocking, "stream flags %#x", flags);

  cudaStream_t plain, blocking;
  CHECK(cudaStreamCreate(&plain));
  CHECK(cudaStreamCreateWithFlags(&blocking, cudaStreamDefault));
  CHECK(cudaStreamGetFlags(plain, &flags));
  EXPECT(flags == cudaStreamDefault, "cudaStreamCreate flags %#x", flags);
  CHECK(cudaStreamQuery(plain));  // idle: cudaSuccess
  CHECK(cudaStreamSynchronize(blocking));
  CHECK(cudaStreamDestroy(plain));
  CHECK(cudaStreamDestroy(blocking));
}

// cudaErrorNotReady while the spin kernel runs (GPU), either answer otherwise.
static void expect_busy(cudaError_t err, const char* what) {
  if (kernels_execute())
    EXPECT(err == cudaErrorNotReady, "%s behind a running kernel: %s", what, cudaGetErrorName(err));
  else
    EXPECT(err == cudaErrorNotReady || err == cudaSuccess, "%s: %s", what, cudaGetErrorName(err));
}

static void test_events(cudaStream_t stream) {
  cudaEvent_t start, stop, untimed;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  CHECK(cudaEventCreateWithFlags(&untimed, cudaEventDisableTiming));
  CHECK(cudaEventQuery(stop));  // never recorded: complete

  CHECK(cudaEventRecord(start, stream));
  spin<<<1, 1, 0, stream>>>(kSpinNs);
  CHECK_LAUNCH();
  CHECK(cudaEventRecord(stop, stream));
  CHECK(cudaEventRecord(untimed, stream));
  expect_busy(cudaStreamQuery(stream), "cudaStreamQuery");
  expect_busy(cudaEventQuery(stop), "cudaEventQuery");

  CHECK(cudaEventSynchronize(stop));
  CHECK(cudaEventQuery(stop));
  CHECK(cudaEventSynchronize(untimed));
  CHECK(cudaStreamQuery(stream));

  float ms = -1.f;
  CHECK(cudaEventElapsedTime(&ms, start, stop));
  printf("spin kernel took %.1f ms by events\n", ms);
  EXPECT(ms >= 0.f, "negative elapsed time %f", ms);
  if (kernels_execute())
    EXPECT(ms >= kSpinNs / 1e6 * 0.9, "elapsed %.1f ms for a %.0f ms kernel", ms, kSpinNs / 1e6);

  // An event without timing cannot be measured; the error is not sticky.
  EXPECT_ERROR(cudaEventElapsedTime(&ms, start, untimed), cudaErrorInvalidResourceHandle);
  EXPECT_ERROR(cudaGetLastError(), cudaErrorInvalidResourceHandle);
  CHECK(cudaEventElapsedTime(&ms, start, stop));

  CHECK(cudaEventDestroy(start));
  CHECK(cudaEventDestroy(stop));
  CHECK(cudaEventDestroy(untimed));
}

// `consumer` copies what `producer` writes only after the producer's event, even
// though the producer is held up by a spinning kernel.
static void test_cross_stream_wait(cudaStream_t producer, cudaStream_t consumer) {
  const size_t n = 1 << 16, bytes = n * sizeof(int);
  int *h_src, *h_dst, *d_a, *d_b;
  CHECK(cudaMallocHost(&h_src, bytes));
  CHECK(cudaMallocHost(&h_dst, bytes));
  CHECK(cudaMalloc(&d_a, bytes));
  CHECK(cudaMalloc(&d_b, bytes));
  for (size_t i = 0; i < n; ++i) h_src[i] = (int)(i ^ 0x5555);
  memset(h_dst, 0, bytes);
  CHECK(cudaMemset(d_a, 0, bytes));
  CHECK(cudaDeviceSynchronize());

  cudaEvent_t written;
  CHECK(cudaEventCreateWithFlags(&written, cudaEventDisableTiming));
  spin<<<1, 1, 0, producer>>>(kSpinNs / 2);
  CHECK_LAUNCH();
  CHECK(cudaMemcpyAsync(d_a, h_src, bytes, cudaMemcpyHostToDevice, producer));
  CHECK(cudaEventRecord(written, producer));

  CHECK(cudaStreamWaitEvent(consumer, written, 0));
  CHECK(cudaMemcpyAsync(d_b, d_a, bytes, cudaMemcpyDeviceToDevice, consumer));
  CHECK(cudaMemcpyAsync(h_dst, d_b, bytes, cudaMemcpyDeviceToHost, consumer));
  CHECK(cudaStreamSynchronize(consumer));
  expect_equal("copy ordered by cudaStreamWaitEvent", h_dst, h_src, n);

  CHECK(cudaStreamSynchronize(producer));
  CHECK(cudaEventDestroy(written));
  CHECK(cudaFreeHost(h_src));
  CHECK(cudaFreeHost(h_dst));
  CHECK(cudaFree(d_a));
  CHECK(cudaFree(d_b));
}

// What the host callbacks saw. Callbacks run on a runtime thread, so under a lock.
struct CallbackLog {
  std::mutex mutex;
  std::vector<int> order;
  const int* h_out = nullptr;  // pinned buffer that the stream fills
  std::vector<int> seen_first; // h_out[0] as each callback saw it
};

struct CallbackTag {
  CallbackLog* log;
  int id;
  int expected_first;
};

static void record(const CallbackTag* tag) {
  std::lock_guard<std::mutex> lock(tag->log->mutex);
  tag->log->order.push_back(tag->id);
  tag->log->seen_first.push_back(tag->log->h_out[0]);
}

static void CUDART_CB host_func(void* data) { record(static_cast<CallbackTag*>(data)); }

static void CUDART_CB stream_callback(cudaStream_t, cudaError_t status, void* data) {
  auto* tag = static_cast<CallbackTag*>(data);
  if (status != cudaSuccess) fail("stream callback %d got status %s", tag->id, cudaGetErrorName(status));
  record(tag);
}

static void test_callbacks(cudaStream_t stream) {
  const size_t n = 1024, bytes = n * sizeof(int);
  int *h_in, *h_out, *d;
  CHECK(cudaMallocHost(&h_in, bytes));
  CHECK(cudaMallocHost(&h_out, bytes));
  CHECK(cudaMalloc(&d, bytes));
  for (size_t i = 0; i < n; ++i) h_in[i] = 1000 + (int)i;
  memset(h_out, 0, bytes);

  CallbackLog log;
  log.h_out = h_out;
  // Each callback records h_out[0] when it runs: proof that the copies queued
  // before it had finished, and those after it had not started.
  CallbackTag tags[] = {{&log, 1, 0}, {&log, 2, 1000}, {&log, 3, 1000}, {&log, 4, 0x01010101}};

  spin<<<1, 1, 0, stream>>>(kSpinNs / 2);
  CHECK_LAUNCH();
  CHECK(cudaLaunchHostFunc(stream, host_func, &tags[0]));
  CHECK(cudaMemcpyAsync(d, h_in, bytes, cudaMemcpyHostToDevice, stream));
  CHECK(cudaMemcpyAsync(h_out, d, bytes, cudaMemcpyDeviceToHost, stream));
  CHECK(cudaLaunchHostFunc(stream, host_func, &tags[1]));
  CHECK(cudaStreamAddCallback(stream, stream_callback, &tags[2], 0));
  CHECK(cudaMemsetAsync(d, 0x01, bytes, stream));
  CHECK(cudaMemcpyAsync(h_out, d, bytes, cudaMemcpyDeviceToHost, stream));
  CHECK(cudaLaunchHostFunc(stream, host_func, &tags[3]));
  if (kernels_execute()) {
    std::lock_guard<std::mutex> lock(log.mutex);
    EXPECT(log.order.empty(), "%zu callback(s) ran before the kernel ahead of them finished",
           log.order.size());
  }
  CHECK(cudaStreamSynchronize(stream));

  std::lock_guard<std::mutex> lock(log.mutex);
  EXPECT(log.order.size() == 4, "%zu of 4 callbacks ran", log.order.size());
  for (int i = 0; i < 4; ++i) {
    EXPECT(log.order[i] == tags[i].id, "callback %d ran in position %d", log.order[i], i);
    EXPECT(log.seen_first[i] == tags[i].expected_first, "callback %d saw h_out[0] = %#x, expected %#x",
           tags[i].id, log.seen_first[i], tags[i].expected_first);
  }
  CHECK(cudaFreeHost(h_in));
  CHECK(cudaFreeHost(h_out));
  CHECK(cudaFree(d));
}

// The legacy default stream and cudaDeviceSynchronize wait for everything.
static void test_device_synchronize(cudaStream_t a, cudaStream_t b) {
  const size_t bytes = 1 << 20;
  unsigned char *d, *h;
  CHECK(cudaMalloc(&d, 2 * bytes));
  CHECK(cudaMallocHost(&h, 2 * bytes));
  memset(h, 0, 2 * bytes);
  spin<<<1, 1, 0, a>>>(kSpinNs / 4);
  CHECK_LAUNCH();
  CHECK(cudaMemsetAsync(d, 0x11, bytes, a));
  CHECK(cudaMemcpyAsync(h, d, bytes, cudaMemcpyDeviceToHost, a));
  CHECK(cudaMemsetAsync(d + bytes, 0x22, bytes, b));
  CHECK(cudaMemcpyAsync(h + bytes, d + bytes, bytes, cudaMemcpyDeviceToHost, b));
  CHECK(cudaDeviceSynchronize());
  CHECK(cudaStreamQuery(a));
  CHECK(cudaStreamQuery(b));
  for (size_t i = 0; i < 2 * bytes; ++i) {
    unsigned char want = i < bytes ? 0x11 : 0x22;
    EXPECT(h[i] == want, "byte %zu is %#x after cudaDeviceSynchronize", i, h[i]);
  }

  CHECK(cudaMemsetAsync(d, 0x33, bytes, 0));
  CHECK(cudaMemcpyAsync(h, d, bytes, cudaMemcpyDeviceToHost, 0));
  CHECK(cudaStreamSynchronize(0));
  for (size_t i = 0; i < bytes; ++i) EXPECT(h[i] == 0x33, "default stream byte %zu is %#x", i, h[i]);
  CHECK(cudaFree(d));
  CHECK(cudaFreeHost(h));
}

int main() {
  CHECK(cudaSetDevice(0));
  cudaStream_t hi, lo;
  test_stream_properties(&hi, &lo);
  test_events(lo);
  test_cross_stream_wait(lo, hi);
  test_callbacks(hi);
  test_device_synchronize(hi, lo);
  CHECK(cudaStreamDestroy(hi));
  CHECK(cudaStreamDestroy(lo));
  return pass();
}
