// peers_mlp (dl side): training steps per second of the MLP 784-256-128-10 (ReLU, SGD momentum 0.9,
// lr 0.01, cross-entropy) on synthetic data held in memory, at batch sizes 32, 128 and 512. The
// same model and step run in bench/peers_mlp_libtorch.cpp (libtorch) and bench/peers_mlp.py
// (MXNet Gluon, PyTorch); bench/peers_mlp.sh builds and runs all of them and prints one table.
//
//   build/bench/bench_peers_mlp --threads 2             # table: steps/s and samples/s per batch size
//   build/bench/bench_peers_mlp --threads 1 --json      # one JSON row per batch size (the driver reads these)
//   build/bench/bench_peers_mlp --profile               # also: time forward, backward and step separately
//
// One step is exactly what a user writes (README's tour): record the forward pass and the loss,
// backward(), opt.step(). Each repeat runs enough steps to last ~0.5 s (at least 50); the figure is
// the median of the repeats (default 5) after 20 warm-up steps.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "dl/dl.hpp"
#include "dl/nn/dense.hpp"
#include "dl/nn/module.hpp"
#include "dl/ops/loss.hpp"
#include "dl/optim/sgd.hpp"

namespace {

struct Mlp : dl::nn::Module {
  dl::nn::Dense fc1{784, 256}, fc2{256, 128}, fc3{128, 10};
  Mlp() {
    register_module("fc1", &Mlp::fc1);
    register_module("fc2", &Mlp::fc2);
    register_module("fc3", &Mlp::fc3);
  }
  template <class X>
  auto forward(const X& x) {
    return fc3(dl::relu(fc2(dl::relu(fc1(x)))));
  }
  template <class X>
  auto operator()(const X& x) { return forward(x); }
};

// Synthetic data generated once: `pool` samples cut into contiguous batches of `batch` rows.
struct Data {
  std::vector<dl::NDArray<float>> x;
  std::vector<dl::NDArray<int64_t>> y;
};

Data make_data(int64_t batch, int64_t pool) {
  Data d;
  dl::Generator gen(1234);
  int64_t n = std::max<int64_t>(1, pool / batch);
  for (int64_t i = 0; i < n; ++i) {
    d.x.push_back(dl::randn<float>({batch, 784}, 0.0, 1.0, gen));
    auto labels = dl::rand<float>({batch}, 0.0, 10.0, gen);
    dl::NDArray<int64_t> y(dl::Shape{batch});
    for (int64_t j = 0; j < batch; ++j) y.data()[j] = std::min<int64_t>(9, static_cast<int64_t>(labels.data()[j]));
    d.y.push_back(y);
  }
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  auto opt = dl::bench::parse_options(argc, argv, "[--batch N]... [--profile]");
  std::vector<int64_t> batches;
  bool profile = false;
  for (size_t i = 0; i < opt.rest.size(); ++i) {
    if (opt.rest[i] == "--batch" && i + 1 < opt.rest.size()) batches.push_back(std::atoll(opt.rest[++i].c_str()));
    else if (opt.rest[i] == "--profile") profile = true;
    else {
      std::fprintf(stderr, "%s: unknown argument '%s'\n", argv[0], opt.rest[i].c_str());
      return 2;
    }
  }
  if (batches.empty()) batches = opt.quick ? std::vector<int64_t>{32} : std::vector<int64_t>{32, 128, 512};
  const int repeats = opt.repeats > 0 ? opt.repeats : (opt.quick ? 3 : 5);
  const double target_s = opt.quick ? 0.1 : 0.5;
  dl::set_num_threads(opt.threads);

  dl::bench::Table table("peers_mlp (dl)", opt);
  for (int64_t batch : batches) {
    dl::manual_seed(0);
    Mlp net;
    dl::optim::SGD sgd(net.named_parameters(), /*lr=*/0.01, /*momentum=*/0.9);
    Data data = make_data(batch, 8192);
    size_t next = 0;
    auto step = [&] {
      const size_t i = next++ % data.x.size();
      dl::NDArray<float> loss;
      {
        dl::autograd::record rec;
        loss = dl::cross_entropy(net(data.x[i]), data.y[i]);
      }
      loss.backward();
      sgd.step();
    };
    for (int i = 0; i < 20; ++i) step();
    double t0 = dl::bench::now_s();
    for (int i = 0; i < 10; ++i) step();
    const double per_step = (dl::bench::now_s() - t0) / 10;
    const int steps = std::max(50, static_cast<int>(target_s / std::max(per_step, 1e-7)));
    dl::bench::Timing t = dl::bench::time_it(step, repeats, /*warmup=*/0, steps);
    const std::string group = "batch " + std::to_string(batch);
    table.add_rate(group, "dl steps/s", t, 1.0, 1.0, "steps/s");
    auto& r = table.add_rate(group, "dl", t, static_cast<double>(batch), 1.0, "samples/s");
    r.note = std::to_string(steps) + " steps/repeat";

    if (profile) {
      // Forward (with the tape), backward and optimiser step timed apart, each summed over `steps`.
      double fwd = 0, bwd = 0, upd = 0;
      for (int k = 0; k < steps; ++k) {
        const size_t i = next++ % data.x.size();
        dl::NDArray<float> loss;
        double a = dl::bench::now_s();
        {
          dl::autograd::record rec;
          loss = dl::cross_entropy(net(data.x[i]), data.y[i]);
        }
        double b = dl::bench::now_s();
        loss.backward();
        double c = dl::bench::now_s();
        sgd.step();
        double d = dl::bench::now_s();
        fwd += b - a;
        bwd += c - b;
        upd += d - c;
      }
      std::fprintf(stderr, "profile batch %lld threads %d: forward %.1f us, backward %.1f us, step %.1f us per step\n",
                   static_cast<long long>(batch), opt.threads, 1e6 * fwd / steps, 1e6 * bwd / steps, 1e6 * upd / steps);
    }
  }
  char note[64];
  std::snprintf(note, sizeof note, "load %.2f", dl::bench::Table::load_average());
  table.print(note);
  return 0;
}
