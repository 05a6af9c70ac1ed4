// Host threads sharing the runtime: each has its own stream and buffers and runs a
// stream of copies, kernels, allocations and events, all at the same time. Also
// checks that the last-error state is per thread.
#define PROGRAM_NAME "threads"
#include "common.h"

#include <condition_variable>
#include <thread>
#include <vector>

__global__ void add_scalar(int* data, int n, int value) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) data[i] += value;
}

constexpr int kThreads = 8, kIters = 25;
constexpr int kN = 1 << 16;
constexpr size_t kBytes = kN * sizeof(int);

// Lets all threads pass a point together, so their work really overlaps.
class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    int generation = generation_;
    if (++waiting_ == count_) {
      waiting_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation != generation_; });
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int count_, waiting_ = 0, generation_ = 0;
};

static void worker(int id, Barrier* barrier) {
  CHECK(cudaSetDevice(0));
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaEvent_t done;
  CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  int *h_in, *h_echo, *h_out, *d_in, *d_work;
  CHECK(cudaMallocHost(&h_in, kBytes));
  CHECK(cudaMallocHost(&h_echo, kBytes));
  CHECK(cudaMallocHost(&h_out, kBytes));
  CHECK(cudaMalloc(&d_in, kBytes));
  CHECK(cudaMalloc(&d_work, kBytes));

  barrier->wait();
  for (int it = 0; it < kIters; ++it) {
    const int add = id * 100 + it;
    for (int i = 0; i < kN; ++i) h_in[i] = id * 1000000 + it * 1000 + i;
    // A short-lived allocation each iteration, to race cudaMalloc/cudaFree too.
    int* d_tmp;
    CHECK(cudaMalloc(&d_tmp, kBytes));
    CHECK(cudaMemcpyAsync(d_in, h_in, kBytes, cudaMemcpyHostToDevice, stream));
    CHECK(cudaMemcpyAsync(d_tmp, d_in, kBytes, cudaMemcpyDeviceToDevice, stream));
    CHECK(cudaMemcpyAsync(d_work, d_tmp, kBytes, cudaMemcpyDeviceToDevice, stream));
    add_scalar<<<kN / 256, 256, 0, stream>>>(d_work, kN, add);
    CHECK_LAUNCH();
    CHECK(cudaMemcpyAsync(h_echo, d_in, kBytes, cudaMemcpyDeviceToHost, stream));
    CHECK(cudaMemcpyAsync(h_out, d_work, kBytes, cudaMemcpyDeviceToHost, stream));
    CHECK(cudaEventRecord(done, stream));
    CHECK(cudaEventSynchronize(done));
    CHECK(cudaFree(d_tmp));
    expect_equal("copies", h_echo, h_in, kN);
    if (kernels_execute())
      for (int i = 0; i < kN; ++i)
        EXPECT(h_out[i] == h_in[i] + add, "thread %d iteration %d: out[%d] = %d", id, it, i, h_out[i]);
  }

  // Odd threads make an error; only they see it as their last error.
  barrier->wait();
  if (id % 2) EXPECT_ERROR(cudaSetDevice(999), cudaErrorInvalidDevice);
  barrier->wait();
  EXPECT_ERROR(cudaGetLastError(), id % 2 ? cudaErrorInvalidDevice : cudaSuccess);
  EXPECT_ERROR(cudaGetLastError(), cudaSuccess);

  CHECK(cudaStreamDestroy(stream));
  CHECK(cudaEventDestroy(done));
  CHECK(cudaFreeHost(h_in));
  CHECK(cudaFreeHost(h_echo));
  CHECK(cudaFreeHost(h_out));
  CHECK(cudaFree(d_in));
  CHECK(cudaFree(d_work));
}

int main() {
  Barrier barrier(kThreads);
  std::vector<std::thread> threads;
  for (int id = 0; id < kThreads; ++id) threads.emplace_back(worker, id, &barrier);
  for (auto& t : threads) t.join();
  CHECK(cudaDeviceSynchronize());
  return pass();
}
