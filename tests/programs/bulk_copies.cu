// Large and odd-sized copies, byte for byte. Across hosts (tcp://) Orion moves bulk bytes
// in 1 MiB chunks, device-to-host ones several in flight at a time; on the same host,
// pageable copies of 2 MiB and more go through two staging slots in chunks of 1-4 MiB,
// so sizes and offsets straddle chunk boundaries here: one byte, a chunk less or more
// one, the number of chunks in flight and one more, 64 MiB and a few bytes. Also: copies queued behind other work of
// their stream see its result, two threads copying at once each get their own bytes, and
// (with BULK_COPIES_RANGE_ERRORS=1, through Orion only: natively such a copy is undefined)
// a device-to-host copy running past its allocation fails cleanly mid-way and the
// next copies are still right.
#define PROGRAM_NAME "bulk_copies"
#include "common.h"

#include <cstdint>
#include <thread>
#include <vector>

static const size_t MiB = 1 << 20;
static const size_t kDevice = 64 * MiB + 4096;

// A byte that depends on its position: a chunk landing a chunk early or late differs.
static unsigned char pattern(size_t i, unsigned seed) {
  uint32_t x = (uint32_t)i * 2654435761u + seed * 0x9E3779B9u;
  return (unsigned char)((x >> 24) ^ (x >> 11) ^ (uint32_t)(i >> 20));
}

static void fill(unsigned char* p, size_t n, size_t first, unsigned seed) {
  for (size_t i = 0; i < n; ++i) p[i] = pattern(first + i, seed);
}

static void expect_pattern(const char* what, const unsigned char* p, size_t n, size_t first,
                           unsigned seed) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != pattern(first + i, seed))
      fail("%s: byte %zu of %zu is %#x, expected %#x", what, i, n, p[i],
           pattern(first + i, seed));
}

// Device bytes d[i] = pattern(i, seed), uploaded from pageable memory.
static void upload(unsigned char* d, unsigned seed, std::vector<unsigned char>& host) {
  fill(host.data(), kDevice, 0, seed);
  CHECK(cudaMemcpy(d, host.data(), kDevice, cudaMemcpyHostToDevice));
}

static void test_sizes(unsigned char* d, unsigned char* pinned) {
  std::vector<unsigned char> host(kDevice + 64);
  cudaStream_t side;
  CHECK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
  upload(d, 1, host);
  const size_t sizes[] = {1, 13, 4095, MiB - 1, MiB, MiB + 1, 2 * MiB - 1, 2 * MiB,
                          2 * MiB + 1, 3 * MiB + 7, 4 * MiB, 8 * MiB, 8 * MiB + 1,
                          9 * MiB + 5, 12 * MiB - 3, 17 * MiB + 3};
  const size_t offsets[] = {0, 3, MiB - 1};
  for (size_t size : sizes)
    for (size_t offset : offsets) {
      // pageable, synchronous, to an odd address
      unsigned char* out = host.data() + 1;
      memset(host.data(), 0, size + 2);
      CHECK(cudaMemcpy(out, d + offset, size, cudaMemcpyDeviceToHost));
      char what[128];
      snprintf(what, sizeof what, "cudaMemcpy D2H of %zu bytes at +%zu", size, offset);
      expect_pattern(what, out, size, offset, 1);
      EXPECT(out[size] == 0 && host[0] == 0, "%s wrote outside its range", what);
      // page-locked, asynchronous, on the legacy stream
      memset(pinned, 0, size + 1);
      CHECK(cudaMemcpyAsync(pinned, d + offset, size, cudaMemcpyDeviceToHost, 0));
      CHECK(cudaStreamSynchronize(0));
      snprintf(what, sizeof what, "cudaMemcpyAsync D2H of %zu bytes at +%zu", size, offset);
      expect_pattern(what, pinned, size, offset, 1);
      EXPECT(pinned[size] == 0, "%s wrote past its end", what);
      // pageable, asynchronous on a stream of its own: the bytes are in on return
      memset(host.data(), 0, size + 2);
      CHECK(cudaMemcpyAsync(out, d + offset, size, cudaMemcpyDeviceToHost, side));
      snprintf(what, sizeof what, "pageable cudaMemcpyAsync D2H of %zu bytes at +%zu", size,
               offset);
      expect_pattern(what, out, size, offset, 1);
      EXPECT(out[size] == 0 && host[0] == 0, "%s wrote outside its range", what);
    }

  // uploads from pageable memory at odd addresses, sync and async, each read back
  // through page-locked memory; the source is overwritten as soon as an async upload
  // returns (it must have been consumed by then)
  unsigned char* scratch = d + 40 * MiB;
  for (size_t size : sizes)
    for (size_t offset : offsets) {
      for (int async = 0; async < 2; ++async) {
        unsigned seed = 10 + async;
        fill(host.data() + 1, size, offset, seed);
        if (async) {
          CHECK(cudaMemcpyAsync(scratch + offset, host.data() + 1, size,
                                cudaMemcpyHostToDevice, side));
          memset(host.data(), 0xEE, size + 2);
        } else {
          CHECK(cudaMemcpy(scratch + offset, host.data() + 1, size, cudaMemcpyHostToDevice));
        }
        memset(pinned, 0, size);
        CHECK(cudaMemcpyAsync(pinned, scratch + offset, size, cudaMemcpyDeviceToHost, side));
        CHECK(cudaStreamSynchronize(side));
        char what[128];
        snprintf(what, sizeof what, "pageable %s H2D of %zu bytes at +%zu",
                 async ? "cudaMemcpyAsync" : "cudaMemcpy", size, offset);
        expect_pattern(what, pinned, size, offset, seed);
      }
    }
  upload(d, 1, host);

  // 64 MiB and 13 bytes from an odd device address, both kinds of host memory
  const size_t big = 64 * MiB + 13;
  memset(host.data(), 0, big + 1);
  CHECK(cudaMemcpy(host.data() + 1, d + 3, big, cudaMemcpyDeviceToHost));
  expect_pattern("64 MiB + 13 D2H, pageable", host.data() + 1, big, 3, 1);
  memset(pinned, 0, big);
  CHECK(cudaMemcpyAsync(pinned, d + 3, big, cudaMemcpyDeviceToHost, 0));
  CHECK(cudaDeviceSynchronize());
  expect_pattern("64 MiB + 13 D2H, page-locked, async", pinned, big, 3, 1);
  // cudaMemcpyDefault works out the direction from the pointers
  memset(host.data(), 0, big);
  CHECK(cudaMemcpy(host.data(), d + 3, big, cudaMemcpyDefault));
  expect_pattern("64 MiB + 13 D2H, cudaMemcpyDefault", host.data(), big, 3, 1);

  // and the other way: odd-sized uploads, checked by reading them back
  fill(host.data(), big, 5, 2);
  CHECK(cudaMemcpy(d + 5, host.data(), big, cudaMemcpyHostToDevice));
  memset(pinned, 0, big);
  CHECK(cudaMemcpy(pinned, d + 5, big, cudaMemcpyDeviceToHost));
  expect_pattern("64 MiB + 13 H2D then D2H", pinned, big, 5, 2);
  CHECK(cudaStreamDestroy(side));
}

// Copies to the host wait for the work queued before them on their stream.
static void test_stream_order(unsigned char* d, unsigned char* pinned) {
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const size_t n = 24 * MiB + 11;
  std::vector<unsigned char> out(n), src(n);
  CHECK(cudaMemsetAsync(d, 0x5A, n, stream));
  CHECK(cudaMemcpyAsync(out.data(), d, n, cudaMemcpyDeviceToHost, stream));
  CHECK(cudaStreamSynchronize(stream));
  for (size_t i = 0; i < n; ++i) EXPECT(out[i] == 0x5A, "after memset: byte %zu is %#x", i, out[i]);

  fill(src.data(), n, 0, 3);
  CHECK(cudaMemcpyAsync(d + 7, src.data(), n, cudaMemcpyHostToDevice, stream));
  CHECK(cudaMemcpyAsync(pinned, d + 7, n, cudaMemcpyDeviceToHost, stream));
  CHECK(cudaStreamSynchronize(stream));
  expect_pattern("upload then download on one stream", pinned, n, 0, 3);
  CHECK(cudaStreamDestroy(stream));
}

// Two threads download different regions at the same time, over and over.
static void test_threads(unsigned char* d) {
  std::vector<unsigned char> host(kDevice);
  upload(d, 4, host);
  const size_t n = 20 * MiB + 9;
  auto download = [&](size_t first, int thread) {
    CHECK(cudaSetDevice(0));
    std::vector<unsigned char> out(n);
    for (int round = 0; round < 3; ++round) {
      memset(out.data(), 0, n);
      CHECK(cudaMemcpy(out.data(), d + first, n, cudaMemcpyDeviceToHost));
      char what[64];
      snprintf(what, sizeof what, "thread %d, round %d", thread, round);
      expect_pattern(what, out.data(), n, first, 4);
    }
  };
  std::thread a(download, 1, 0), b(download, 32 * MiB + 1, 1);
  a.join();
  b.join();
}

// Two threads at once, each on a stream of its own: one uploads and reads back its half
// while the other downloads the other half, then the other way round.
static void test_threads_both_ways(unsigned char* d) {
  std::vector<unsigned char> host(kDevice);
  upload(d, 7, host);
  const size_t n = 18 * MiB + 5;
  auto work = [&](size_t first, int thread) {
    CHECK(cudaSetDevice(0));
    cudaStream_t stream;
    CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    std::vector<unsigned char> buf(n + 1);
    for (int round = 0; round < 4; ++round) {
      char what[64];
      snprintf(what, sizeof what, "thread %d, round %d", thread, round);
      if ((round + thread) % 2 == 0) {   // upload new bytes, read them back
        unsigned seed = 20 + 2 * thread + round;
        fill(buf.data() + 1, n, first, seed);
        CHECK(cudaMemcpyAsync(d + first, buf.data() + 1, n, cudaMemcpyHostToDevice, stream));
        memset(buf.data(), 0, n + 1);
        CHECK(cudaMemcpyAsync(buf.data(), d + first, n, cudaMemcpyDeviceToHost, stream));
        expect_pattern(what, buf.data(), n, first, seed);
      } else {                           // download what the last round left there
        unsigned seed = round == 0 ? 7 : 20 + 2 * thread + round - 1;
        memset(buf.data(), 0, n + 1);
        CHECK(cudaMemcpy(buf.data() + 1, d + first, n, cudaMemcpyDeviceToHost));
        expect_pattern(what, buf.data() + 1, n, first, seed);
      }
    }
    CHECK(cudaStreamDestroy(stream));
  };
  std::thread a(work, 3, 0), b(work, 32 * MiB + 3, 1);
  a.join();
  b.join();
}

// A download running past its allocation fails (part-way through its chunks, over
// tcp://), and leaves nothing behind: the next copies get their own bytes.
static void test_range_error(unsigned char* d) {
  const size_t size = 4 * MiB + 100;
  unsigned char* small;
  CHECK(cudaMalloc(&small, size));
  std::vector<unsigned char> host(10 * MiB);
  fill(host.data(), size, 0, 6);
  CHECK(cudaMemcpy(small, host.data(), size, cudaMemcpyHostToDevice));
  EXPECT_ERROR(cudaMemcpy(host.data(), small, 10 * MiB, cudaMemcpyDeviceToHost),
               cudaErrorInvalidValue);
  EXPECT_ERROR(cudaGetLastError(), cudaErrorInvalidValue);
  memset(host.data(), 0, size);
  CHECK(cudaMemcpy(host.data(), small, size, cudaMemcpyDeviceToHost));
  expect_pattern("after a failed download", host.data(), size, 0, 6);
  int value = 0;
  CHECK(cudaMemcpy(&value, small + 8, sizeof value, cudaMemcpyDeviceToHost));
  unsigned char want[4];
  fill(want, 4, 8, 6);
  EXPECT(memcmp(&value, want, 4) == 0, "4-byte download after a failed one");
  CHECK(cudaFree(small));
}

int main() {
  unsigned char *d, *pinned;
  CHECK(cudaMalloc(&d, kDevice));
  CHECK(cudaMallocHost(&pinned, kDevice));
  test_sizes(d, pinned);
  test_stream_order(d, pinned);
  test_threads(d);
  test_threads_both_ways(d);
  const char* errors = getenv("BULK_COPIES_RANGE_ERRORS");
  if (errors && strcmp(errors, "1") == 0) test_range_error(d);
  CHECK(cudaFreeHost(pinned));
  CHECK(cudaFree(d));
  CHECK(cudaGetLastError());
  return pass();
}
