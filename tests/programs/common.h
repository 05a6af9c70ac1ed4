// Helpers shared by the Orion test programs: CUDA error checking, PASS/FAIL
// reporting and the switch for Orion's host (GPU-less) test backend.
//
// Every program defines PROGRAM_NAME before including this header. Its last line
// of output is `PASS <name>` (exit 0) or `FAIL <name>: <reason>` (exit 1).
#pragma once

#ifndef PROGRAM_NAME
#error "define PROGRAM_NAME before including common.h"
#endif

#include <cuda_runtime.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

// Prints `FAIL <name>: <message>` and exits 1. Callable from any host thread: the
// first failing thread reports and exits, later ones block instead of printing a
// second, interleaved report.
[[noreturn]] static inline void fail(const char* fmt, ...) {
  static std::mutex report_mutex;
  report_mutex.lock();  // never unlocked: the process is exiting
  char message[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(message, sizeof message, fmt, ap);
  va_end(ap);
  fflush(stdout);
  printf("FAIL %s: %s\n", PROGRAM_NAME, message);
  fflush(stdout);
  exit(1);
}

static inline void check_cuda(cudaError_t err, const char* call, const char* file, int line) {
  if (err != cudaSuccess)
    fail("%s at %s:%d returned %s (%s)", call, file, line, cudaGetErrorName(err),
         cudaGetErrorString(err));
}

static inline void check_cuda_error(cudaError_t err, cudaError_t expected, const char* call,
                             const char* file, int line) {
  if (err != expected)
    fail("%s at %s:%d returned %s, expected %s", call, file, line, cudaGetErrorName(err),
         cudaGetErrorName(expected));
}

// CHECK(call): the call must return cudaSuccess.
#define CHECK(call) check_cuda((call), #call, __FILE__, __LINE__)
// CHECK_LAUNCH(): the kernel launch just made was accepted.
#define CHECK_LAUNCH() CHECK(cudaGetLastError())
// EXPECT_ERROR(call, code): the call must return exactly `code`.
#define EXPECT_ERROR(call, code) check_cuda_error((call), (code), #call, __FILE__, __LINE__)
// EXPECT(cond, fmt, ...): a host-side check with a printf-style explanation.
#define EXPECT(cond, ...)                                                        \
  do {                                                                           \
    if (!(cond)) {                                                               \
      char expect_detail_[1024];                                                 \
      snprintf(expect_detail_, sizeof expect_detail_, __VA_ARGS__);              \
      fail("%s:%d: `%s` failed: %s", __FILE__, __LINE__, #cond, expect_detail_); \
    }                                                                            \
  } while (0)

// In CI, Orion replays the calls on a host-memory backend that records kernel
// launches instead of running them; ORION_TEST_HOST_BACKEND=1 says so. Programs
// then skip the checks of results computed by kernels, and keep all the others.
static inline bool kernels_execute() {
  const char* value = getenv("ORION_TEST_HOST_BACKEND");
  return !(value && strcmp(value, "1") == 0);
}

// Compares two arrays element by element, reporting the first mismatch.
template <typename T>
static inline void expect_equal(const char* what, const T* got, const T* want, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!(got[i] == want[i]))
      fail("%s: element %zu is %.17g, expected %.17g", what, i, (double)got[i],
           (double)want[i]);
}

static inline int pass() {
  if (!kernels_execute())
    printf("note: ORION_TEST_HOST_BACKEND=1, results computed by kernels were not checked\n");
  printf("PASS %s\n", PROGRAM_NAME);
  fflush(stdout);
  return 0;
}
