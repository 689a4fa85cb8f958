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

#include "bench_train.hpp"
#include "bench_util.hpp"
#include "dl/dl.hpp"
#include "dl/optim/sgd.hpp"

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
    dl::bench::Mlp net;
    dl::optim::SGD sgd(net.named_parameters(), /*lr=*/0.01, /*momentum=*/0.9);
    dl::bench::Data data = dl::bench::make_data(batch, 8192, dl::Shape{784}, /*normal=*/true);
    size_t next = 0;
    auto step = [&] { dl::bench::train_step(net, sgd, data, next); };
    auto [t, steps] = dl::bench::time_steps(step, repeats, target_s, /*warmup=*/20, /*probe=*/10, /*min_steps=*/50);
    const std::string group = "batch " + std::to_string(batch);
    table.add_rate(group, "dl steps/s", t, 1.0, 1.0, "steps/s");
    auto& r = table.add_rate(group, "dl", t, static_cast<double>(batch), 1.0, "samples/s");
    r.note = std::to_string(steps) + " steps/repeat";

    if (profile) {
      const dl::bench::StepProfile p = dl::bench::profile_steps(net, sgd, data, next, steps);
      std::fprintf(stderr, "profile batch %lld threads %d: forward %.1f us, backward %.1f us, step %.1f us per step\n",
                   static_cast<long long>(batch), opt.threads, 1e6 * p.forward_s, 1e6 * p.backward_s, 1e6 * p.update_s);
    }
  }
  char note[64];
  std::snprintf(note, sizeof note, "load %.2f", dl::bench::Table::load_average());
  table.print(note);
  return 0;
}
