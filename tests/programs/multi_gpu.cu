// Every device the runtime reports, driven from several host threads that switch
// devices (the current device is per host thread), then combined on the host and
// moved between devices with peer copies. With one device it all runs on device 0.
#define PROGRAM_NAME "multi_gpu"
#include "common.h"

#include <thread>
#include <vector>

__global__ void affine(const int* in, int* out, int n, int mul, int add) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = in[i] * mul + add;
}

constexpr int kN = 1 << 18;
constexpr size_t kBytes = kN * sizeof(int);
constexpr int kRounds = 4;

// One unit of work: chunk `chunk` processed on `device`.
struct Task {
  int chunk = 0, device = 0;
  std::vector<int> in, out;
  long long sum = 0;  // of `out`, as the GPU computed it
};

static void run_task(Task& t, cudaStream_t stream) {
  int* d;
  CHECK(cudaMalloc(&d, 2 * kBytes));
  CHECK(cudaMemcpyAsync(d, t.in.data(), kBytes, cudaMemcpyHostToDevice, stream));
  affine<<<kN / 256, 256, 0, stream>>>(d, d + kN, kN, t.device + 2, t.chunk);
  CHECK_LAUNCH();
  std::vector<int> echo(kN);
  CHECK(cudaMemcpyAsync(echo.data(), d, kBytes, cudaMemcpyDeviceToHost, stream));
  CHECK(cudaMemcpyAsync(t.out.data(), d + kN, kBytes, cudaMemcpyDeviceToHost, stream));
  CHECK(cudaStreamSynchronize(stream));
  expect_equal("input read back", echo.data(), t.in.data(), kN);
  for (int v : t.out) t.sum += v;
  CHECK(cudaFree(d));
}

// Thread `id` visits the devices round-robin, one task per round.
static void worker(int id, int devices, std::vector<Task>* tasks) {
  for (int round = 0; round < kRounds; ++round) {
    Task& t = (*tasks)[id * kRounds + round];
    t.device = (id + round) % devices;
    CHECK(cudaSetDevice(t.device));
    int current = -1;
    CHECK(cudaGetDevice(&current));
    EXPECT(current == t.device, "thread %d is on device %d, set %d", id, current, t.device);
    cudaStream_t stream;
    CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    run_task(t, stream);
    CHECK(cudaStreamDestroy(stream));
  }
}

// Data made on each device reaches device 0 through cudaMemcpyPeer, and back.
static void test_peer_copies(int devices) {
  std::vector<int> src(kN), dst(kN);
  for (int i = 0; i < kN; ++i) src[i] = i * 5 - 77;
  CHECK(cudaSetDevice(0));
  int* on_0;
  CHECK(cudaMalloc(&on_0, kBytes));
  for (int dev = 0; dev < devices; ++dev) {
    if (dev > 0) {
      int can_access = 0;
      CHECK(cudaDeviceCanAccessPeer(&can_access, 0, dev));
      printf("device 0 %s access device %d directly\n", can_access ? "can" : "cannot", dev);
    }
    CHECK(cudaSetDevice(0));
    CHECK(cudaMemset(on_0, 0, kBytes));
    CHECK(cudaSetDevice(dev));
    int* on_dev;
    CHECK(cudaMalloc(&on_dev, kBytes));
    CHECK(cudaMemcpy(on_dev, src.data(), kBytes, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpyPeer(on_0, 0, on_dev, dev, kBytes));
    CHECK(cudaMemset(on_dev, 0, kBytes));
    CHECK(cudaMemcpyPeer(on_dev, dev, on_0, 0, kBytes));
    CHECK(cudaMemcpy(dst.data(), on_dev, kBytes, cudaMemcpyDeviceToHost));
    expect_equal("device -> device 0 -> device", dst.data(), src.data(), kN);
    CHECK(cudaFree(on_dev));
  }
  CHECK(cudaSetDevice(0));
  CHECK(cudaFree(on_0));
}

int main() {
  int devices = 0;
  CHECK(cudaGetDeviceCount(&devices));
  EXPECT(devices >= 1, "no device");
  printf("%d device(s)\n", devices);
  for (int dev = 0; dev < devices; ++dev) {
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, dev));
    printf("device %d: %s\n", dev, prop.name);
  }
  CHECK(cudaSetDevice(0));

  // At least two threads, so that device switching happens even with one device.
  const int threads = devices < 2 ? 2 : devices;
  std::vector<Task> tasks(threads * kRounds);
  for (size_t c = 0; c < tasks.size(); ++c) {
    tasks[c].chunk = (int)c;
    tasks[c].in.resize(kN);
    tasks[c].out.resize(kN);
    for (int i = 0; i < kN; ++i) tasks[c].in[i] = (int)c * 1000 + i;
  }
  std::vector<std::thread> pool;
  for (int id = 0; id < threads; ++id) pool.emplace_back(worker, id, devices, &tasks);
  for (auto& t : pool) t.join();

  int current = -1;
  CHECK(cudaGetDevice(&current));
  EXPECT(current == 0, "the workers' cudaSetDevice moved the main thread to device %d", current);

  // Combine: the total over all tasks, against the CPU.
  long long total = 0, want_total = 0;
  std::vector<int> used(devices, 0);
  for (const Task& t : tasks) {
    total += t.sum;
    used[t.device]++;
    for (int i = 0; i < kN; ++i) want_total += (long long)t.in[i] * (t.device + 2) + t.chunk;
  }
  for (int dev = 0; dev < devices; ++dev)
    EXPECT(used[dev] > 0, "no task ran on device %d", dev);
  if (kernels_execute()) {
    for (const Task& t : tasks)
      for (int i = 0; i < kN; ++i) {
        int want = t.in[i] * (t.device + 2) + t.chunk;
        EXPECT(t.out[i] == want, "chunk %d on device %d: out[%d] = %d, expected %d", t.chunk,
               t.device, i, t.out[i], want);
      }
    EXPECT(total == want_total, "total %lld, expected %lld", total, want_total);
    printf("combined total %lld over %zu tasks\n", total, tasks.size());
  }

  test_peer_copies(devices);
  return pass();
}
