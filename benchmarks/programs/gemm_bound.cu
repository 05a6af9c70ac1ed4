// Application level, GPU-bound: seconds of fp32 matrix multiplication (a shared-memory
// tiled kernel, no cuBLAS), C = A * B with n x n matrices (n = 2048 unless --n).
//
// Before the timed part (not counted): inputs uploaded, one untimed and three timed
// warm-up multiplications. Natively (no --iterations) those three set the number of
// multiplications for about --seconds of GPU time (3 s; 0.5 s with --quick) and print
// `PARAM iterations N`; the harness passes `--iterations N` to the Orion runs, so both
// do the same work.
//
// Timed (wall_s): upload A and B, N multiplications back to back on the default stream,
// download C (cudaMemcpy, which waits for them). Then C is checked against the CPU on a
// few elements (inputs are multiples of 1/8, so fp32 sums are exact) and its checksum
// printed (`CHECK gemm_bound`).
#include "bench.h"

#define TILE 32
#define ROWS 8   // block = TILE x ROWS threads, each computes TILE / ROWS outputs

__global__ void sgemm(int n, const float *__restrict__ A, const float *__restrict__ B,
                      float *__restrict__ C)
{
    __shared__ float As[TILE][TILE + 1];
    __shared__ float Bs[TILE][TILE + 1];
    const int col = blockIdx.x * TILE + threadIdx.x;
    const int row0 = blockIdx.y * TILE + threadIdx.y;
    float acc[TILE / ROWS] = {0};
    for (int k0 = 0; k0 < n; k0 += TILE) {
        for (int r = 0; r < TILE; r += ROWS) {
            As[threadIdx.y + r][threadIdx.x] = A[(size_t)(row0 + r) * n + k0 + threadIdx.x];
            Bs[threadIdx.y + r][threadIdx.x] = B[(size_t)(k0 + threadIdx.y + r) * n + col];
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < TILE; k++) {
            const float b = Bs[k][threadIdx.x];
#pragma unroll
            for (int r = 0; r < TILE / ROWS; r++)
                acc[r] += As[threadIdx.y + r * ROWS][k] * b;
        }
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < TILE / ROWS; r++)
        C[(size_t)(row0 + r * ROWS) * n + col] = acc[r];
}

static float a_value(size_t i) { return (float)((int)(i * 7 % 13) - 6) / 8.0f; }
static float b_value(size_t i) { return (float)((int)(i * 5 % 11) - 5) / 8.0f; }

int main(int argc, char **argv)
{
    bench::Options o = bench::parse(argc, argv);
    const std::string name = "gemm_bound";
    if (!bench::init("gemm_bound"))
        return bench::finish();
    int n = (int)o.number("--n", 2048);
    n = std::max(TILE, n / TILE * TILE);
    const double seconds = o.number("--seconds", o.quick ? 0.5 : 3.0) * o.scale;
    long iterations = (long)o.number("--iterations", 0);
    const size_t elems = (size_t)n * n, bytes = elems * sizeof(float);

    std::vector<float> A(elems), B(elems), C(elems);
    for (size_t i = 0; i < elems; i++) {
        A[i] = a_value(i);
        B[i] = b_value(i);
    }
    float *dA, *dB, *dC;
    auto fail = [&](cudaError_t e, const char *what) { return !bench::ok(e, name, what); };
    if (fail(cudaMalloc(&dA, bytes), "cudaMalloc") || fail(cudaMalloc(&dB, bytes), "cudaMalloc") ||
        fail(cudaMalloc(&dC, bytes), "cudaMalloc") ||
        fail(cudaMemcpy(dA, A.data(), bytes, cudaMemcpyHostToDevice), "cudaMemcpy") ||
        fail(cudaMemcpy(dB, B.data(), bytes, cudaMemcpyHostToDevice), "cudaMemcpy"))
        return bench::finish();
    const dim3 grid(n / TILE, n / TILE), block(TILE, ROWS);

    // warm-up, and the native run's calibration
    sgemm<<<grid, block>>>(n, dA, dB, dC);
    if (fail(cudaGetLastError(), "launch") || fail(cudaDeviceSynchronize(), "sync"))
        return bench::finish();
    double w0 = bench::now();
    for (int i = 0; i < 3; i++)
        sgemm<<<grid, block>>>(n, dA, dB, dC);
    if (fail(cudaDeviceSynchronize(), "sync"))
        return bench::finish();
    const double per_gemm = (bench::now() - w0) / 3;
    if (iterations <= 0)
        iterations = std::max(1L, (long)std::lround(seconds / per_gemm));
    bench::param("iterations", iterations);
    if (fail(cudaMemset(dC, 0, bytes), "cudaMemset") || fail(cudaDeviceSynchronize(), "sync"))
        return bench::finish();

    const double t0 = bench::now();
    if (fail(cudaMemcpy(dA, A.data(), bytes, cudaMemcpyHostToDevice), "cudaMemcpy") ||
        fail(cudaMemcpy(dB, B.data(), bytes, cudaMemcpyHostToDevice), "cudaMemcpy"))
        return bench::finish();
    for (long i = 0; i < iterations; i++)
        sgemm<<<grid, block>>>(n, dA, dB, dC);
    if (fail(cudaGetLastError(), "launch") ||
        fail(cudaMemcpy(C.data(), dC, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy"))
        return bench::finish();
    const double wall = bench::now() - t0;

    // a few elements against the CPU (exact: every partial sum is a multiple of 1/64)
    for (int s = 0; s < 16 && bench::kernels_run(); s++) {
        const size_t i = (size_t)(s * 7919u) % (size_t)n, j = (size_t)(s * 104729u) % (size_t)n;
        double expect = 0;
        for (int k = 0; k < n; k++)
            expect += (double)a_value(i * n + k) * (double)b_value((size_t)k * n + j);
        if (std::fabs(expect - C[i * n + j]) > 1e-3 * (1 + std::fabs(expect))) {
            char msg[160];
            snprintf(msg, sizeof msg, "C[%zu][%zu] = %.6g, expected %.6g", i, j, C[i * n + j],
                     expect);
            bench::error(name, msg);
            break;
        }
    }
    double sum = 0;
    for (size_t i = 0; i < elems; i++)
        sum += C[i] * (double)((i % 97) + 1);
    char text[64];
    snprintf(text, sizeof text, "%.17g", sum);
    bench::check(name, text);

    bench::result(name, "wall_s", wall, "s");
    bench::result(name, "gemm_ms", per_gemm * 1e3, "ms");
    bench::result(name, "tflops", 2.0 * n * n * (double)n * iterations / wall / 1e12, "TFLOP/s");
    bench::result(name, "iterations", (double)iterations, "count");
    cudaFree(dA);
    cudaFree(dB);
    cudaFree(dC);
    return bench::finish();
}
