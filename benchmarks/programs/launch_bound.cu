// Application level, launch-bound: a training loop of small kernels with a few
// synchronisations, as a framework runs one.
//
// A "model" of --layers (24) elementwise layers on vectors of --width (65536) floats.
// One step: upload a batch (cudaMemcpyAsync from pinned memory), the forward pass (one
// kernel per layer), the loss (a one-block reduction) and its gradient, the backward
// pass (one kernel per layer), SGD (one kernel per layer): 3 * layers + 2 kernels. Every
// 10 steps the loss is read back (cudaMemcpyAsync to pinned memory +
// cudaStreamSynchronize, like loss.item()). Everything runs on one stream.
//
// Natively (no --steps) a warm-up of 5 steps and a timing of 20 set the step count for
// about --seconds (1 s; 0.2 s with --quick), printed as `PARAM steps N`; the harness
// passes `--steps N` to the Orion runs. The warm-up runs in every mode and the weights
// are reset afterwards, so the checksum (`CHECK launch_bound`) depends on N only.
//
// Timed (wall_s): N steps, then the last layer's weights downloaded.
#include "bench.h"

__global__ void forward(float *out, const float *in, const float *w, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        out[i] = tanhf(in[i] * w[i] + 0.01f);
}

// one block: mean of squares (deterministic: fixed reduction order)
__global__ void loss_kernel(const float *act, float *result, int n)
{
    __shared__ float part[1024];
    float s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        s += act[i] * act[i];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if ((int)threadIdx.x < stride)
            part[threadIdx.x] += part[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        *result = part[0] / n;
}

__global__ void loss_grad(float *grad, const float *act, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        grad[i] = 2.0f * act[i] / n;
}

// out = tanh(in * w + b): d/d(in) and d/d(w)
__global__ void backward(float *grad_in, float *grad_w, const float *grad_out, const float *out,
                         const float *in, const float *w, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float d = grad_out[i] * (1.0f - out[i] * out[i]);
        grad_in[i] = d * w[i];
        grad_w[i] = d * in[i];
    }
}

__global__ void sgd(float *w, const float *grad_w, float lr, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        w[i] -= lr * grad_w[i];
}

struct Model {
    int layers, width;
    float *act, *grad, *gw, *w, *loss;   // device: act/grad (layers+1) x width
    float *batch_host, *loss_host;       // pinned
    std::vector<float> w_init;
    cudaStream_t s;
    double loss_sum = 0;
    long kernels = 0;

    float *A(int l) const { return act + (size_t)l * width; }
    float *G(int l) const { return grad + (size_t)l * width; }
    float *W(int l) const { return w + (size_t)l * width; }
    float *GW(int l) const { return gw + (size_t)l * width; }

    bool step(long index, const std::string &name)
    {
        const int threads = 256, blocks = (width + threads - 1) / threads;
        BENCH_TRY(cudaMemcpyAsync(A(0), batch_host, width * sizeof(float),
                                  cudaMemcpyHostToDevice, s), name);
        for (int l = 0; l < layers; l++)
            forward<<<blocks, threads, 0, s>>>(A(l + 1), A(l), W(l), width);
        loss_kernel<<<1, 1024, 0, s>>>(A(layers), loss, width);
        loss_grad<<<blocks, threads, 0, s>>>(G(layers), A(layers), width);
        for (int l = layers - 1; l >= 0; l--)
            backward<<<blocks, threads, 0, s>>>(G(l), GW(l), G(l + 1), A(l + 1), A(l), W(l),
                                                width);
        for (int l = 0; l < layers; l++)
            sgd<<<blocks, threads, 0, s>>>(W(l), GW(l), 0.05f, width);
        kernels += 3 * layers + 2;
        if ((index + 1) % 10 == 0) {
            BENCH_TRY(cudaGetLastError(), name);
            BENCH_TRY(cudaMemcpyAsync(loss_host, loss, sizeof(float),
                                      cudaMemcpyDeviceToHost, s), name);
            BENCH_TRY(cudaStreamSynchronize(s), name);
            loss_sum += *loss_host;
        }
        return true;
    }

    bool reset(const std::string &name)
    {
        BENCH_TRY(cudaMemcpy(w, w_init.data(), w_init.size() * sizeof(float),
                             cudaMemcpyHostToDevice), name);
        BENCH_TRY(cudaDeviceSynchronize(), name);
        loss_sum = 0;
        kernels = 0;
        return true;
    }
};

int main(int argc, char **argv)
{
    bench::Options o = bench::parse(argc, argv);
    const std::string name = "launch_bound";
    if (!bench::init("launch_bound"))
        return bench::finish();
    Model m;
    m.layers = std::max(1, (int)o.number("--layers", 24));
    m.width = std::max(1024, (int)o.number("--width", 65536));
    const double seconds = o.number("--seconds", o.quick ? 0.2 : 1.0) * o.scale;
    long steps = (long)o.number("--steps", 0);
    const size_t vec = (size_t)m.width * sizeof(float);

    m.w_init.resize((size_t)m.layers * m.width);
    for (size_t i = 0; i < m.w_init.size(); i++)
        m.w_init[i] = 0.5f + 0.01f * (float)(i * 13 % 7);
    auto fail = [&](cudaError_t e, const char *what) { return !bench::ok(e, name, what); };
    if (fail(cudaStreamCreateWithFlags(&m.s, cudaStreamNonBlocking), "cudaStreamCreate") ||
        fail(cudaMalloc(&m.act, vec * (m.layers + 1)), "cudaMalloc") ||
        fail(cudaMalloc(&m.grad, vec * (m.layers + 1)), "cudaMalloc") ||
        fail(cudaMalloc(&m.gw, vec * m.layers), "cudaMalloc") ||
        fail(cudaMalloc(&m.w, vec * m.layers), "cudaMalloc") ||
        fail(cudaMalloc(&m.loss, sizeof(float)), "cudaMalloc") ||
        fail(cudaMallocHost(&m.batch_host, vec), "cudaMallocHost") ||
        fail(cudaMallocHost(&m.loss_host, sizeof(float)), "cudaMallocHost"))
        return bench::finish();
    for (int i = 0; i < m.width; i++)
        m.batch_host[i] = (float)((i * 31 % 17) - 8) / 8.0f;
    if (!m.reset(name))
        return bench::finish();

    // warm-up and calibration (the same in every mode)
    for (long i = 0; i < 5; i++)
        if (!m.step(i, name))
            return bench::finish();
    if (fail(cudaStreamSynchronize(m.s), "sync"))
        return bench::finish();
    double c0 = bench::now();
    for (long i = 0; i < 20; i++)
        if (!m.step(i, name))
            return bench::finish();
    if (fail(cudaStreamSynchronize(m.s), "sync"))
        return bench::finish();
    const double per_step = (bench::now() - c0) / 20;
    if (steps <= 0) {
        steps = (long)std::lround(seconds / per_step / 10) * 10;
        steps = std::max(10L, steps);
    }
    bench::param("steps", steps);
    if (!m.reset(name))
        return bench::finish();

    std::vector<float> w_last(m.width);
    const double t0 = bench::now();
    for (long i = 0; i < steps; i++)
        if (!m.step(i, name))
            return bench::finish();
    if (fail(cudaMemcpyAsync(w_last.data(), m.W(m.layers - 1), vec, cudaMemcpyDeviceToHost, m.s),
             "cudaMemcpyAsync") ||
        fail(cudaStreamSynchronize(m.s), "sync"))
        return bench::finish();
    const double wall = bench::now() - t0;

    double sum = m.loss_sum;
    for (int i = 0; i < m.width; i++)
        sum += w_last[i] * (double)(i % 13 + 1);
    if (!std::isfinite(sum))
        bench::error(name, "the weights are not finite");
    char text[64];
    snprintf(text, sizeof text, "%.17g", sum);
    bench::check(name, text);

    bench::result(name, "wall_s", wall, "s");
    bench::result(name, "step_us", wall / steps * 1e6, "us");
    bench::result(name, "kernels_per_s", m.kernels / wall, "kernels/s");
    bench::result(name, "kernels", (double)m.kernels, "count");
    bench::result(name, "syncs", (double)(steps / 10), "count");
    bench::result(name, "steps", (double)steps, "count");
    cudaFreeHost(m.batch_host);
    cudaFreeHost(m.loss_host);
    cudaFree(m.act);
    cudaFree(m.grad);
    cudaFree(m.gw);
    cudaFree(m.w);
    cudaFree(m.loss);
    cudaStreamDestroy(m.s);
    return bench::finish();
}
