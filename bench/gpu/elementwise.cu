// bench_gpu_elementwise: a fused elementwise chain over 2^28 floats against the device's own
// copy bandwidth measured in the same run (cudaMemcpyAsync device -> device). Both move bytes
// through HBM once: the chain y = relu(a * b + c) * 0.5f + a reads 3 arrays and writes 1 (16 bytes
// per element), the copy reads 1 and writes 1 (8 bytes per element). Target: the chain reaches
// >= 85% of the copy's bytes per second (docs/gpu.md). Timed with CUDA events on the compute
// stream: median of --repeats (default 20) after 3 warm-up runs.
//
//   bench_gpu_elementwise [--log2n 28] [--repeats 20] [--json]
// First run on an H100: docs/benchmarks.md ("GPU").
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
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

namespace {

// Median milliseconds of `repeats` timed runs of fn on device 0's compute stream.
double median_ms(const std::function<void()>& fn, int repeats) {
  cudaStream_t s = dc::compute_stream(0);
  cudaEvent_t start, stop;
  DL_CUDA_CHECK(cudaEventCreate(&start));
  DL_CUDA_CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < 3; ++i) fn();
  std::vector<double> ms;
  for (int r = 0; r < repeats; ++r) {
    DL_CUDA_CHECK(cudaEventRecord(start, s));
    fn();
    DL_CUDA_CHECK(cudaEventRecord(stop, s));
    DL_CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0;
    DL_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  DL_CUDA_CHECK(cudaEventDestroy(start));
  DL_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int log2n = 28, repeats = 20;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--log2n" && i + 1 < argc) log2n = std::atoi(argv[++i]);
    else if (a == "--repeats" && i + 1 < argc) repeats = std::atoi(argv[++i]);
    else if (a == "--json") json = true;
    else {
      std::fprintf(stderr, "usage: %s [--log2n N] [--repeats N] [--json]\n", argv[0]);
      return 2;
    }
  }
  if (!dc::is_available()) {
    std::fprintf(stderr, "bench_gpu_elementwise: no CUDA device visible; this benchmark needs a GPU\n");
    return 1;
  }
  const int64_t n = int64_t{1} << log2n;
  const dl::Device gpu = dl::Device::cuda(0);
  dl::NDArray<float> a(dl::Shape{n}, gpu), b(dl::Shape{n}, gpu), c(dl::Shape{n}, gpu), y(dl::Shape{n}, gpu);
  dc::rand_fill(a, -1, 1);
  dc::rand_fill(b, -1, 1);
  dc::rand_fill(c, -1, 1);
  const double bytes = static_cast<double>(n) * sizeof(float);

  double copy_ms = median_ms([&] {
    DL_CUDA_CHECK(cudaMemcpyAsync(y.data(), a.data(), static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice, dc::compute_stream(0)));
  }, repeats);
  double fused_ms = median_ms([&] { y.assign(dl::relu(a * b + c) * 0.5f + a); }, repeats);
  double copy_gbs = 2 * bytes / (copy_ms * 1e-3) / 1e9, fused_gbs = 4 * bytes / (fused_ms * 1e-3) / 1e9;

  // Spot-check the result against the CPU on a few elements (a benchmark of wrong results is void).
  std::vector<float> av = a.slice(0, 0, 4096).to_vector(), bv = b.slice(0, 0, 4096).to_vector(),
                     cv = c.slice(0, 0, 4096).to_vector(), yv = y.slice(0, 0, 4096).to_vector();
  int wrong = 0;
  for (size_t i = 0; i < yv.size(); ++i) {
    float want = std::max(av[i] * bv[i] + cv[i], 0.0f) * 0.5f + av[i];
    if (std::abs(yv[i] - want) > 1e-6f * std::max(1.0f, std::abs(want))) ++wrong;
  }
  double ratio = fused_gbs / copy_gbs;
  if (json) {
    std::printf("{\"bench\": \"gpu_elementwise\", \"name\": \"copy\", \"value\": %.1f, \"unit\": \"GB/s\", \"median_ms\": %.3f}\n",
                copy_gbs, copy_ms);
    std::printf("{\"bench\": \"gpu_elementwise\", \"name\": \"dl fused\", \"value\": %.1f, \"unit\": \"GB/s\", \"ratio\": %.3f, "
                "\"baseline\": \"copy\", \"median_ms\": %.3f, \"wrong\": %d}\n",
                fused_gbs, ratio, fused_ms, wrong);
  } else {
    std::printf("gpu elementwise, n = 2^%d floats\n", log2n);
    std::printf("  %-34s %10s %10s %8s\n", "", "ms", "GB/s", "ratio");
    std::printf("  %-34s %10.3f %10.1f %8s\n", "cudaMemcpy device->device", copy_ms, copy_gbs, "1.00");
    std::printf("  %-34s %10.3f %10.1f %8.2f\n", "dl fused relu(a*b+c)*0.5+a", fused_ms, fused_gbs, ratio);
    std::printf("  target >= 0.85 of copy: %s; spot check: %d of %zu wrong\n", ratio >= 0.85 ? "met" : "NOT met", wrong,
                yv.size());
  }
  return wrong == 0 ? 0 : 1;
}
