// bench_gpu_mlp: training steps of an MLP on the GPU, dl eager (this program) against PyTorch eager
// (bench/gpu/mlp_torch.py, the same step); bench/gpu/check.sh runs both and prints the ratio.
//
// Model 784 -> width x3 (ReLU) -> 10, float32, plain SGD (lr 0.01). Configurations: batch 64 width
// 256 (launch-bound: many small kernels) and batch 1024 width 1024 (GEMM-bound). The loss is
// 0.5 * |out - onehot|^2 / batch, whose gradient (out - onehot) / batch is passed to backward()
// directly: dl has no GPU cross-entropy yet, and the peer does exactly the same.
// Timing: CUDA events around --steps steps after 20 warm-up steps; median of 5 repeats.
//
//   bench_gpu_mlp [--steps 200] [--json] [--batch B --width W]
// --batch/--width run that one configuration (for a profiler); the default runs both above. The
// host's wall time per step (std::chrono around the same steps, stream synchronised) is printed
// beside the device time: far above it means the GPU waits for the host.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

// Narrow headers, not dl/dl.hpp: graph/exec.hpp does not compile under nvcc 13 yet (docs/gpu.md).
#include "dl/autograd/engine.hpp"
#include "dl/autograd/gradcheck.hpp"
#include "dl/backend/cuda/cuda.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/ops/elementwise.hpp"
#include "dl/ops/matmul.hpp"

namespace dc = dl::cuda;
using dl::NDArray;
using dl::Shape;

namespace {

struct Mlp {
  std::vector<NDArray<float>> w, b;  // w[l]: (out, in), b[l]: (out)

  Mlp(const std::vector<int64_t>& sizes, dl::Device device) {
    dl::Generator gen(0);
    for (size_t l = 0; l + 1 < sizes.size(); ++l) {
      double scale = std::sqrt(2.0 / static_cast<double>(sizes[l]));
      w.push_back(dl::randn<float>({sizes[l + 1], sizes[l]}, 0.0, scale, gen).to(device));
      b.push_back(dl::zeros<float>({sizes[l + 1]}, device));
      w.back().attach_grad();
      b.back().attach_grad();
    }
  }

  void step(const NDArray<float>& x, const NDArray<float>& onehot, float lr) {
    {
      dl::autograd::record rec;
      NDArray<float> h = x;
      for (size_t l = 0; l < w.size(); ++l) {
        NDArray<float> z = dl::matmul(h, w[l].transpose());
        if (l + 1 < w.size()) h = dl::relu(z + b[l]);  // bias + ReLU: one fused kernel
        else h = z + b[l];
      }
      NDArray<float> head = (h.detach() - onehot) * (1.0f / static_cast<float>(x.shape(0)));
      h.backward(head);
    }
    dl::autograd::pause no_tape;
    for (size_t l = 0; l < w.size(); ++l) {
      w[l] -= w[l].grad() * lr;
      b[l] -= b[l].grad() * lr;
    }
  }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 200;
  bool json = false;
  struct Config { int64_t batch, width; };
  Config only{0, 0};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--steps" && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (a == "--json") json = true;
    else if (a == "--batch" && i + 1 < argc) only.batch = std::atoll(argv[++i]);
    else if (a == "--width" && i + 1 < argc) only.width = std::atoll(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--steps N] [--json] [--batch B --width W]\n", argv[0]);
      return 2;
    }
  }
  if (!dc::is_available()) {
    std::fprintf(stderr, "bench_gpu_mlp: no CUDA device visible; this benchmark needs a GPU\n");
    return 1;
  }
  const dl::Device gpu = dl::Device::cuda(0);
  std::vector<Config> configs{{64, 256}, {1024, 1024}};
  if (only.batch > 0 || only.width > 0) {
    if (only.batch <= 0 || only.width <= 0) {
      std::fprintf(stderr, "bench_gpu_mlp: --batch and --width go together, both > 0\n");
      return 2;
    }
    configs = {only};
  }
  for (Config c : configs) {
    Mlp net({784, c.width, c.width, c.width, 10}, gpu);
    dl::Generator gen(1);
    NDArray<float> x = dl::randn<float>({c.batch, 784}, 0.0, 1.0, gen).to(gpu);
    NDArray<float> onehot = dl::zeros<float>({c.batch, 10});
    for (int64_t i = 0; i < c.batch; ++i) onehot.at({i, i % 10}) = 1.0f;
    onehot = onehot.to(gpu);
    for (int i = 0; i < 20; ++i) net.step(x, onehot, 0.01f);
    cudaStream_t s = dc::compute_stream(0);
    cudaEvent_t start, stop;
    DL_CUDA_CHECK(cudaEventCreate(&start));
    DL_CUDA_CHECK(cudaEventCreate(&stop));
    std::vector<double> ms, host_ms;
    for (int r = 0; r < 5; ++r) {
      DL_CUDA_CHECK(cudaStreamSynchronize(s));
      auto t0 = std::chrono::steady_clock::now();
      DL_CUDA_CHECK(cudaEventRecord(start, s));
      for (int i = 0; i < steps; ++i) net.step(x, onehot, 0.01f);
      DL_CUDA_CHECK(cudaEventRecord(stop, s));
      DL_CUDA_CHECK(cudaEventSynchronize(stop));
      host_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / steps);
      float t = 0;
      DL_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
      ms.push_back(t / steps);
    }
    DL_CUDA_CHECK(cudaEventDestroy(start));
    DL_CUDA_CHECK(cudaEventDestroy(stop));
    double step_ms = median(ms);
    auto mem = dc::memory_stats(0);
    if (json)
      std::printf("{\"bench\": \"gpu_mlp\", \"name\": \"dl\", \"batch\": %lld, \"width\": %lld, \"ms_per_step\": %.4f, "
                  "\"host_ms_per_step\": %.4f, \"peak_mib\": %.1f}\n",
                  static_cast<long long>(c.batch), static_cast<long long>(c.width), step_ms, median(host_ms),
                  static_cast<double>(mem.peak_bytes_in_use) / (1 << 20));
    else
      std::printf("dl gpu mlp batch %lld width %lld: %.4f ms/step, host %.4f ms/step (peak %.1f MiB)\n",
                  static_cast<long long>(c.batch), static_cast<long long>(c.width), step_ms, median(host_ms),
                  static_cast<double>(mem.peak_bytes_in_use) / (1 << 20));
  }
  return 0;
}
