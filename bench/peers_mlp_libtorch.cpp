// peers_mlp (libtorch side): the MLP 784-256-128-10 step of bench/peers_mlp.cpp in libtorch 1.13
// C++ (Debian libtorch-dev), for bench/peers_mlp.sh. Same model (3 torch::nn::Linear, ReLU), loss
// (cross_entropy, mean), optimiser (SGD lr 0.01 momentum 0.9), synthetic data (8192 samples cut
// into batches, generated once), warm-up and timing rule (repeats of >= 0.5 s, median of 5).
//
// Built outside Meson (the Debian package has no pkg-config file):
//   g++ -O3 -march=native -std=c++17 -DDL_BENCH_LIBTORCH -I bench -I /usr/include/torch/csrc/api/include
//       bench/peers_mlp_libtorch.cpp -ltorch -ltorch_cpu -lc10 -o peers_mlp_libtorch
// bench/meson.build builds every bench/*.cpp without libtorch: without DL_BENCH_LIBTORCH this file
// is a stub that says how to build it.
//   OPENBLAS_NUM_THREADS=1 ./peers_mlp_libtorch --threads 2 [--json] [--batch N]...
//
// Best configuration (shared/BENCHMARKING.md): libtorch links OpenBLAS (pthreads) and OpenMP, and
// the two pools fight over the cores unless OPENBLAS_NUM_THREADS=1; the driver sets it.
// torch::set_num_threads(--threads) sets the intra-op (OpenMP) pool. Gradients are reset to
// undefined before each backward (PyTorch's zero_grad(set_to_none=True), the cheaper choice).
#include <cstdio>

#ifndef DL_BENCH_LIBTORCH
int main() {
  std::fprintf(stderr, "peers_mlp_libtorch: built without libtorch; run bench/peers_mlp.sh, which builds it with "
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

struct MlpImpl : torch::nn::Module {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
  MlpImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(784, 256));
    fc2 = register_module("fc2", torch::nn::Linear(256, 128));
    fc3 = register_module("fc3", torch::nn::Linear(128, 10));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return fc3->forward(torch::relu(fc2->forward(torch::relu(fc1->forward(x)))));
  }
};
TORCH_MODULE(Mlp);

}  // namespace

int main(int argc, char** argv) {
  auto opt = dl::bench::parse_options(argc, argv, "[--batch N]...");
  std::vector<int64_t> batches;
  for (size_t i = 0; i < opt.rest.size(); ++i) {
    if (opt.rest[i] == "--batch" && i + 1 < opt.rest.size()) batches.push_back(std::atoll(opt.rest[++i].c_str()));
    else {
      std::fprintf(stderr, "%s: unknown argument '%s'\n", argv[0], opt.rest[i].c_str());
      return 2;
    }
  }
  if (batches.empty()) batches = opt.quick ? std::vector<int64_t>{32} : std::vector<int64_t>{32, 128, 512};
  const int repeats = opt.repeats > 0 ? opt.repeats : (opt.quick ? 3 : 5);
  const double target_s = opt.quick ? 0.1 : 0.5;
  torch::set_num_threads(opt.threads);
  const char* blas = std::getenv("OPENBLAS_NUM_THREADS");

  dl::bench::Table table("peers_mlp (libtorch " TORCH_VERSION ")", opt);
  for (int64_t batch : batches) {
    torch::manual_seed(0);
    Mlp net;
    torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
    std::vector<torch::Tensor> xs, ys;
    const int64_t n = std::max<int64_t>(1, 8192 / batch);
    for (int64_t i = 0; i < n; ++i) {
      xs.push_back(torch::randn({batch, 784}));
      ys.push_back(torch::randint(0, 10, {batch}, torch::kLong));
    }
    size_t next = 0;
    auto step = [&] {
      const size_t i = next++ % xs.size();
      for (auto& p : net->parameters()) p.mutable_grad() = torch::Tensor();  // zero_grad(set_to_none=True)
      torch::Tensor loss = torch::nn::functional::cross_entropy(net->forward(xs[i]), ys[i]);
      loss.backward();
      sgd.step();
    };
    auto [t, steps] = dl::bench::time_steps(step, repeats, target_s, /*warmup=*/20, /*probe=*/10, /*min_steps=*/50);
    const std::string group = "batch " + std::to_string(batch);
    table.add_rate(group, "libtorch steps/s", t, 1.0, 1.0, "steps/s");
    auto& r = table.add_rate(group, "libtorch", t, static_cast<double>(batch), 1.0, "samples/s");
    r.note = std::to_string(steps) + " steps/repeat, torch threads " + std::to_string(torch::get_num_threads()) +
             ", OPENBLAS_NUM_THREADS=" + (blas ? blas : "unset");
  }
  char note[64];
  std::snprintf(note, sizeof note, "load %.2f", dl::bench::Table::load_average());
  table.print(note);
  return 0;
}
#endif  // DL_BENCH_LIBTORCH
