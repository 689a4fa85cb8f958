// peers_cnn (libtorch side): the LeNet and ResNet-20 training steps of bench/peers_cnn.cpp in
// libtorch 1.13 C++ (Debian libtorch-dev), for bench/peers_cnn.sh. Same models (layer for layer:
// the input normalisation, bias-free convolutions before batch norm, projections where a block
// changes shape), loss (cross_entropy, mean), optimiser (SGD lr 0.01, momentum 0.9, weight decay
// 5e-4), synthetic data (2048 images in [0, 1) cut into batches, generated once), warm-up and
// timing rule (5 warm-up steps, repeats of >= 1 s and >= 3 steps, median of 5).
//
// Built outside Meson (the Debian package has no pkg-config file), by bench/peers_common.sh:
//   g++ -O3 -march=native -std=c++17 -DDL_BENCH_LIBTORCH -I bench -I /usr/include/torch/csrc/api/include
//       bench/peers_cnn_libtorch.cpp -ltorch -ltorch_cpu -lc10 -o peers_cnn_libtorch
// Without DL_BENCH_LIBTORCH (bench/meson.build skips *_libtorch.cpp anyway) this is a stub.
//   OPENBLAS_NUM_THREADS=1 ./peers_cnn_libtorch --threads 2 [--json] [--model lenet|resnet20]... [--batch N]...
//
// Best configuration (shared/BENCHMARKING.md): OPENBLAS_NUM_THREADS=1 (the driver sets it; the
// convolutions run in oneDNN, the Linear layers in OpenBLAS), torch::set_num_threads(--threads),
// gradients reset to undefined before each backward (zero_grad(set_to_none=True)).
#include <cstdio>

#ifndef DL_BENCH_LIBTORCH
int main() {
  std::fprintf(stderr, "peers_cnn_libtorch: built without libtorch; run bench/peers_cnn.sh, which builds it with "
                       "-DDL_BENCH_LIBTORCH against Debian's libtorch-dev\n");
  return 77;  // "skipped"
}
#else
#include <torch/torch.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "bench_util.hpp"

namespace {

constexpr double kMean = 0.2860, kStd = 0.3530;
namespace F = torch::nn::functional;

torch::nn::Conv2dOptions conv_options(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad) {
  return torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(pad).bias(false);
}

struct LeNetImpl : torch::nn::Module {
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
  LeNetImpl() {
    conv1 = register_module("conv1", torch::nn::Conv2d(conv_options(1, 16, 5, 1, 2)));
    bn1 = register_module("bn1", torch::nn::BatchNorm2d(16));
    conv2 = register_module("conv2", torch::nn::Conv2d(conv_options(16, 32, 5, 1, 0)));
    bn2 = register_module("bn2", torch::nn::BatchNorm2d(32));
    fc1 = register_module("fc1", torch::nn::Linear(32 * 5 * 5, 120));
    fc2 = register_module("fc2", torch::nn::Linear(120, 84));
    fc3 = register_module("fc3", torch::nn::Linear(84, 10));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = F::max_pool2d(torch::relu(bn1->forward(conv1->forward((x - kMean) / kStd))), F::MaxPool2dFuncOptions(2));
    h = F::max_pool2d(torch::relu(bn2->forward(conv2->forward(h))), F::MaxPool2dFuncOptions(2));
    h = torch::relu(fc1->forward(h.flatten(1)));
    h = torch::relu(fc2->forward(h));
    return fc3->forward(h);
  }
};
TORCH_MODULE(LeNet);

struct BasicBlockImpl : torch::nn::Module {
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Sequential shortcut{nullptr};  // empty: identity
  BasicBlockImpl(int64_t in, int64_t out, int64_t stride) {
    conv1 = register_module("conv1", torch::nn::Conv2d(conv_options(in, out, 3, stride, 1)));
    bn1 = register_module("bn1", torch::nn::BatchNorm2d(out));
    conv2 = register_module("conv2", torch::nn::Conv2d(conv_options(out, out, 3, 1, 1)));
    bn2 = register_module("bn2", torch::nn::BatchNorm2d(out));
    if (stride != 1 || in != out)
      shortcut = register_module(
          "shortcut", torch::nn::Sequential(torch::nn::Conv2d(conv_options(in, out, 1, stride, 0)), torch::nn::BatchNorm2d(out)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = torch::relu(bn1->forward(conv1->forward(x)));
    h = bn2->forward(conv2->forward(h));
    return torch::relu(h + (shortcut ? shortcut->forward(x) : x));
  }
};
TORCH_MODULE(BasicBlock);

struct ResNetImpl : torch::nn::Module {
  torch::nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  torch::nn::Sequential blocks;
  torch::nn::Linear fc{nullptr};
  explicit ResNetImpl(int depth = 20, int64_t width = 16) {
    conv1 = register_module("conv1", torch::nn::Conv2d(conv_options(1, width, 3, 1, 1)));
    bn1 = register_module("bn1", torch::nn::BatchNorm2d(width));
    const int n = (depth - 2) / 6;
    int64_t in = width;
    for (int stage = 0; stage < 3; ++stage)
      for (int i = 0; i < n; ++i) {
        const int64_t out = width << stage;
        blocks->push_back(BasicBlock(in, out, stage > 0 && i == 0 ? 2 : 1));
        in = out;
      }
    register_module("blocks", blocks);
    fc = register_module("fc", torch::nn::Linear(4 * width, 10));
    for (auto& p : parameters())
      if (p.dim() >= 2) torch::nn::init::kaiming_normal_(p, 0.0, torch::kFanIn);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = torch::relu(bn1->forward(conv1->forward((x - kMean) / kStd)));
    h = blocks->forward(h);
    return fc->forward(h.mean({2, 3}));
  }
};
TORCH_MODULE(ResNet);

template <class Net>
void run_case(dl::bench::Table& table, const dl::bench::Options& opt, const std::string& model, int64_t batch,
              const char* blas) {
  const int repeats = opt.repeats > 0 ? opt.repeats : (opt.quick ? 3 : 5);
  const double target_s = opt.quick ? 0.2 : 1.0;
  torch::manual_seed(0);
  Net net;
  net->train();
  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9).weight_decay(5e-4));
  std::vector<torch::Tensor> xs, ys;
  const int64_t n = std::max<int64_t>(1, 2048 / batch);
  for (int64_t i = 0; i < n; ++i) {
    xs.push_back(torch::rand({batch, 1, 28, 28}));
    ys.push_back(torch::randint(0, 10, {batch}, torch::kLong));
  }
  size_t next = 0;
  auto step = [&] {
    const size_t i = next++ % xs.size();
    for (auto& p : net->parameters()) p.mutable_grad() = torch::Tensor();  // zero_grad(set_to_none=True)
    torch::Tensor loss = F::cross_entropy(net->forward(xs[i]), ys[i]);
    loss.backward();
    sgd.step();
  };
  auto [t, steps] = dl::bench::time_steps(step, repeats, target_s, /*warmup=*/5, /*probe=*/3, /*min_steps=*/3);
  const std::string group = model + " batch " + std::to_string(batch);
  auto& r = table.add_rate(group, "libtorch", t, static_cast<double>(batch), 1.0, "samples/s");
  r.note = std::to_string(steps) + " steps/repeat, torch threads " + std::to_string(torch::get_num_threads()) +
           ", OPENBLAS_NUM_THREADS=" + (blas ? blas : "unset");
  table.add_rate(group, "libtorch steps/s", t, 1.0, 1.0, "steps/s");
}

}  // namespace

int main(int argc, char** argv) {
  auto opt = dl::bench::parse_options(argc, argv, "[--model lenet|resnet20]... [--batch N]...");
  std::vector<int64_t> batches;
  std::vector<std::string> models;
  for (size_t i = 0; i < opt.rest.size(); ++i) {
    if (opt.rest[i] == "--batch" && i + 1 < opt.rest.size()) batches.push_back(std::atoll(opt.rest[++i].c_str()));
    else if (opt.rest[i] == "--model" && i + 1 < opt.rest.size()) models.push_back(opt.rest[++i]);
    else {
      std::fprintf(stderr, "%s: unknown argument '%s'\n", argv[0], opt.rest[i].c_str());
      return 2;
    }
  }
  if (batches.empty()) batches = opt.quick ? std::vector<int64_t>{64} : std::vector<int64_t>{64, 128};
  if (models.empty()) models = {"lenet", "resnet20"};
  torch::set_num_threads(opt.threads);
  const char* blas = std::getenv("OPENBLAS_NUM_THREADS");

  dl::bench::Table table("peers_cnn (libtorch " TORCH_VERSION ")", opt);
  for (const auto& m : models)
    for (int64_t batch : batches) {
      if (m == "lenet") run_case<LeNet>(table, opt, m, batch, blas);
      else if (m == "resnet20") run_case<ResNet>(table, opt, m, batch, blas);
      else {
        std::fprintf(stderr, "%s: unknown model '%s' (lenet, resnet20)\n", argv[0], m.c_str());
        return 2;
      }
    }
  char note[64];
  std::snprintf(note, sizeof note, "load %.2f", dl::bench::Table::load_average());
  table.print(note);
  return 0;
}
#endif  // DL_BENCH_LIBTORCH
