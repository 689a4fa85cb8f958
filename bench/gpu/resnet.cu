// bench_gpu_resnet: ResNet-18 and ResNet-50 training steps on the GPU, dl eager (this program)
// against PyTorch eager (bench/gpu/resnet_torch.py, torchvision's models); bench/gpu/check.sh runs
// both and prints the ratios. Issue #8's target: >= 0.9x PyTorch's images/s, fp32 and TF32.
//
// The models are torchvision's layouts built from dl::nn modules: a 7x7/2 stem conv (no bias),
// batch norm, relu, 3x3/2 max pool; four stages (64, 128, 256, 512 channels; strides 1, 2, 2, 2) of
// basic blocks [2, 2, 2, 2] (ResNet-18) or bottlenecks [3, 4, 6, 3] with expansion 4 and the stride
// on the 3x3 (ResNet-50, "v1.5"); global average pool; a 1000-way dense layer. Step: forward,
// cross_entropy against random labels, backward, optim::SGD (lr 0.1, momentum 0.9) on the device.
// Synthetic data: one random batch on the GPU (no loader: the GPU's speed is measured).
// Timing: CUDA events around --steps steps after 3 warm-up steps; median of 3 repeats.
//
//   bench_gpu_resnet [--steps 10] [--batch 128] [--size 224] [--model resnet18|resnet50|all]
//                    [--precision fp32|tf32|all] [--json]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

// Narrow headers, not dl/dl.hpp: graph/exec.hpp does not compile under nvcc 13 yet (docs/gpu.md).
#include "dl/autograd/engine.hpp"
#include "dl/backend/cuda/cuda.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/nn/batch_norm.hpp"
#include "dl/nn/conv.hpp"
#include "dl/nn/dense.hpp"
#include "dl/nn/module.hpp"
#include "dl/nn/module_list.hpp"
#include "dl/nn/pool.hpp"
#include "dl/nn/residual.hpp"
#include "dl/ops/loss.hpp"
#include "dl/optim/sgd.hpp"

namespace dc = dl::cuda;
using dl::NDArray;
using dl::Shape;

namespace {

// torchvision's Bottleneck (v1.5): 1x1 -> 3x3 (stride) -> 1x1 (x4), each followed by batch norm;
// a projection shortcut (1x1 with the stride, batch norm) when the shape changes.
class Bottleneck : public dl::nn::Module {
 public:
  static constexpr int64_t kExpansion = 4;
  dl::nn::Conv2d conv1, conv2, conv3;
  dl::nn::BatchNorm2d bn1, bn2, bn3;
  std::optional<dl::nn::Sequential<dl::nn::Conv2d, dl::nn::BatchNorm2d>> shortcut;

  Bottleneck(int64_t in, int64_t width, int64_t stride)
      : conv1(in, width, 1, 1, 0, false), conv2(width, width, 3, stride, 1, false),
        conv3(width, width * kExpansion, 1, 1, 0, false), bn1(width), bn2(width), bn3(width * kExpansion) {
    register_module("conv1", &Bottleneck::conv1);
    register_module("bn1", &Bottleneck::bn1);
    register_module("conv2", &Bottleneck::conv2);
    register_module("bn2", &Bottleneck::bn2);
    register_module("conv3", &Bottleneck::conv3);
    register_module("bn3", &Bottleneck::bn3);
    if (stride != 1 || in != width * kExpansion) {
      shortcut.emplace(dl::nn::Conv2d(in, width * kExpansion, 1, stride, 0, false), dl::nn::BatchNorm2d(width * kExpansion));
      register_module_accessor("shortcut", [](Module& self) -> Module& { return *static_cast<Bottleneck&>(self).shortcut; });
    }
  }
  static int64_t out_channels(int64_t width) { return width * kExpansion; }

  NDArray<float> forward(const NDArray<float>& x) {
    NDArray<float> h = dl::relu(bn1(conv1(x)));
    h = dl::relu(bn2(conv2(h)));
    NDArray<float> y = bn3(conv3(h));
    return dl::relu(y + (shortcut ? NDArray<float>((*shortcut)(x)) : x));
  }
  NDArray<float> operator()(const NDArray<float>& x) { return forward(x); }
};

// dl::nn::BasicBlock under the same (in, width, stride) constructor as Bottleneck.
class Basic : public dl::nn::BasicBlock {
 public:
  Basic(int64_t in, int64_t width, int64_t stride) : BasicBlock(in, width, stride) {}
  static int64_t out_channels(int64_t width) { return width; }
};

template <class Block>
class ResNet : public dl::nn::Module {
 public:
  dl::nn::Conv2d stem;
  dl::nn::BatchNorm2d stem_bn;
  dl::nn::MaxPool2d pool{3, 2, 1};
  dl::nn::ModuleList<Block> blocks;
  dl::nn::GlobalAvgPool2d gap;
  dl::nn::Dense fc;

  explicit ResNet(const std::vector<int>& depths)
      : stem(3, 64, 7, 2, 3, false), stem_bn(64), fc(Block::out_channels(512), 1000) {
    int64_t in = 64;
    const int64_t widths[4] = {64, 128, 256, 512};
    for (int s = 0; s < 4; ++s)
      for (int b = 0; b < depths[static_cast<size_t>(s)]; ++b) {
        blocks.emplace_back(in, widths[s], b == 0 && s > 0 ? 2 : 1);
        in = Block::out_channels(widths[s]);
      }
    register_module("conv1", &ResNet::stem);
    register_module("bn1", &ResNet::stem_bn);
    register_module("blocks", &ResNet::blocks);
    register_module("fc", &ResNet::fc);
  }
  NDArray<float> forward(const NDArray<float>& x) {
    NDArray<float> h = pool(NDArray<float>(dl::relu(stem_bn(stem(x)))));
    for (auto& b : blocks) h = b(h);
    NDArray<float> g = gap(h);
    return fc(g.reshape(Shape{g.shape(0), g.shape(1)}));
  }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <class Block>
void run(const char* name, const std::vector<int>& depths, bool tf32, int64_t batch, int64_t size, int steps, bool json) {
  dc::set_allow_tf32(tf32);
  const dl::Device gpu = dl::Device::cuda(0);
  ResNet<Block> net(depths);
  net.to(gpu);
  dl::optim::SGD opt(net.named_parameters(), 0.1, 0.9);
  dl::Generator gen(3);
  NDArray<float> x = dl::randn<float>({batch, 3, size, size}, 0.0, 1.0, gen).to(gpu);
  NDArray<int64_t> labels(Shape{batch});
  for (int64_t i = 0; i < batch; ++i) labels.at({i}) = (i * 7919) % 1000;
  NDArray<int64_t> y = labels.to(gpu);
  float last_loss = 0;
  auto step = [&] {
    {
      dl::autograd::record rec;
      NDArray<float> loss = dl::cross_entropy(net.forward(x), y);
      loss.backward();
    }
    opt.step();
  };
  for (int i = 0; i < 3; ++i) step();
  dc::reset_peak_memory_stats(0);
  cudaStream_t s = dc::compute_stream(0);
  cudaEvent_t start, stop;
  DL_CUDA_CHECK(cudaEventCreate(&start));
  DL_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> ms;
  for (int r = 0; r < 3; ++r) {
    DL_CUDA_CHECK(cudaEventRecord(start, s));
    for (int i = 0; i < steps; ++i) step();
    DL_CUDA_CHECK(cudaEventRecord(stop, s));
    DL_CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0;
    DL_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t / steps);
  }
  {
    dl::autograd::pause no_tape;
    last_loss = dl::cross_entropy(net.forward(x), y).item();
  }
  DL_CUDA_CHECK(cudaEventDestroy(start));
  DL_CUDA_CHECK(cudaEventDestroy(stop));
  const double step_ms = median(ms);
  const double peak_mib = static_cast<double>(dc::memory_stats(0).peak_bytes_in_use) / (1 << 20);
  if (json)
    std::printf("{\"bench\": \"gpu_resnet\", \"name\": \"dl\", \"model\": \"%s\", \"precision\": \"%s\", \"batch\": %lld, "
                "\"size\": %lld, \"ms_per_step\": %.3f, \"images_per_s\": %.1f, \"peak_mib\": %.0f, \"loss\": %.4f}\n",
                name, tf32 ? "tf32" : "fp32", static_cast<long long>(batch), static_cast<long long>(size), step_ms,
                1000.0 * static_cast<double>(batch) / step_ms, peak_mib, static_cast<double>(last_loss));
  else
    std::printf("dl %s %s batch %lld %lldx%lld: %.2f ms/step, %.1f images/s, peak %.0f MiB, loss %.4f\n", name,
                tf32 ? "tf32" : "fp32", static_cast<long long>(batch), static_cast<long long>(size),
                static_cast<long long>(size), step_ms, 1000.0 * static_cast<double>(batch) / step_ms, peak_mib,
                static_cast<double>(last_loss));
  std::fflush(stdout);
  dc::set_allow_tf32(false);
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 10;
  int64_t batch = 128, size = 224;
  std::string model = "all", precision = "all";
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--steps" && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (a == "--batch" && i + 1 < argc) batch = std::atoll(argv[++i]);
    else if (a == "--size" && i + 1 < argc) size = std::atoll(argv[++i]);
    else if (a == "--model" && i + 1 < argc) model = argv[++i];
    else if (a == "--precision" && i + 1 < argc) precision = argv[++i];
    else if (a == "--json") json = true;
    else {
      std::fprintf(stderr,
                   "usage: %s [--steps N] [--batch B] [--size S] [--model resnet18|resnet50|all] "
                   "[--precision fp32|tf32|all] [--json]\n",
                   argv[0]);
      return 2;
    }
  }
  const bool model_ok = model == "all" || model == "resnet18" || model == "resnet50";
  const bool precision_ok = precision == "all" || precision == "fp32" || precision == "tf32";
  if (!model_ok || !precision_ok || steps < 1 || batch < 1 || size < 32) {
    std::fprintf(stderr, "bench_gpu_resnet: bad arguments (model %s, precision %s, steps %d, batch %lld, size %lld)\n",
                 model.c_str(), precision.c_str(), steps, static_cast<long long>(batch), static_cast<long long>(size));
    return 2;
  }
  if (!dc::is_available()) {
    std::fprintf(stderr, "bench_gpu_resnet: no CUDA device visible; this benchmark needs a GPU\n");
    return 1;
  }
  try {
    for (bool tf32 : {false, true}) {
      if (precision != "all" && (precision == "tf32") != tf32) continue;
      if (model == "all" || model == "resnet18") run<Basic>("resnet18", {2, 2, 2, 2}, tf32, batch, size, steps, json);
      if (model == "all" || model == "resnet50") run<Bottleneck>("resnet50", {3, 4, 6, 3}, tf32, batch, size, steps, json);
    }
  } catch (const dl::Error& e) {
    std::fprintf(stderr, "bench_gpu_resnet: %s\n", e.what());
    return 1;
  }
  return 0;
}
