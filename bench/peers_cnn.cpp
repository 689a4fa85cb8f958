// peers_cnn (dl side): training steps per second of two CNNs on synthetic 1x28x28 images with 10
// classes held in memory, at batch sizes 64 and 128. The same models and step run in
// bench/peers_cnn_libtorch.cpp (libtorch) and bench/peers_cnn.py (MXNet Gluon, PyTorch);
// bench/peers_cnn.sh builds and runs all of them and prints one table.
//
//   lenet     exactly examples/train_lenet.cpp's default model (the class is shared:
//             examples/common/models.hpp):
//             (x - 0.2860) / 0.3530 - conv 5x5 1->16 pad 2 (no bias) - bn - relu - maxpool 2
//             - conv 5x5 16->32 (no bias) - bn - relu - maxpool 2 - fc 800-120 - relu - fc 120-84
//             - relu - fc 84-10
//   resnet20  exactly examples/train_resnet.cpp's default model (ResNet-20, width 16; the same
//             header):
//             normalise - conv 3x3 1->16 - bn - relu - 3 stages of 3 BasicBlocks (16, 32, 64
//             channels; stride 2 and a 1x1 conv + bn projection at the start of stages 2 and 3)
//             - global average pool - fc 64-10
// Step: cross-entropy (mean), SGD lr 0.01, momentum 0.9, weight decay 5e-4 (the examples' decay;
// a small lr so random labels never diverge). Batch norm in training mode.
//
//   build/bench/bench_peers_cnn --threads 2                        # table: samples/s per model and batch
//   build/bench/bench_peers_cnn --threads 1 --json                 # one JSON row per case (the driver reads these)
//   build/bench/bench_peers_cnn --model lenet --batch 64 --profile # also: forward, backward and update apart
//
// One step is what a user writes: record the forward pass and the loss, backward(), opt.step().
// Timing: 5 warm-up steps, then repeats of enough steps to last ~1 s (at least 3), median of 5
// repeats (--quick: 3 repeats of ~0.2 s, batch 64 only).
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "../examples/common/models.hpp"  // relative: the Meson build and peers_common.sh's g++ build alike
#include "bench_train.hpp"
#include "bench_util.hpp"
#include "dl/dl.hpp"
#include "dl/ops/loss.hpp"
#include "dl/optim/sgd.hpp"

namespace {

// The examples' models themselves (one definition: examples/common/models.hpp), at their defaults.
using examples::LeNet;   // channels 16, 32; batch norm on
using examples::ResNet;  // depth 20, width 16

template <class Net>
void run_case(dl::bench::Table& table, const dl::bench::Options& opt, const std::string& model, int64_t batch,
              bool profile) {
  const int repeats = opt.repeats > 0 ? opt.repeats : (opt.quick ? 3 : 5);
  const double target_s = opt.quick ? 0.2 : 1.0;
  dl::manual_seed(0);
  Net net;
  dl::optim::SGD sgd(net.named_parameters(), /*lr=*/0.01, /*momentum=*/0.9, /*nesterov=*/false, /*weight_decay=*/5e-4);
  // Synthetic images in [0, 1) and labels, generated once.
  dl::bench::Data data = dl::bench::make_data(batch, 2048, dl::Shape{1, 28, 28}, /*normal=*/false);
  size_t next = 0;
  auto step = [&] { dl::bench::train_step(net, sgd, data, next); };
  auto [t, steps] = dl::bench::time_steps(step, repeats, target_s, /*warmup=*/5, /*probe=*/3, /*min_steps=*/3);
  const std::string group = model + " batch " + std::to_string(batch);
  auto& r = table.add_rate(group, "dl", t, static_cast<double>(batch), 1.0, "samples/s");
  r.note = std::to_string(steps) + " steps/repeat";
  table.add_rate(group, "dl steps/s", t, 1.0, 1.0, "steps/s");

  if (profile) {
    const dl::bench::StepProfile p = dl::bench::profile_steps(net, sgd, data, next, steps);
    std::fprintf(stderr, "profile %s threads %d: forward %.2f ms, backward %.2f ms, step %.2f ms per step\n",
                 group.c_str(), opt.threads, 1e3 * p.forward_s, 1e3 * p.backward_s, 1e3 * p.update_s);
  }
}

}  // namespace

int main(int argc, char** argv) {
  auto opt = dl::bench::parse_options(argc, argv, "[--model lenet|resnet20]... [--batch N]... [--profile]");
  std::vector<int64_t> batches;
  std::vector<std::string> models;
  bool profile = false;
  for (size_t i = 0; i < opt.rest.size(); ++i) {
    if (opt.rest[i] == "--batch" && i + 1 < opt.rest.size()) batches.push_back(std::atoll(opt.rest[++i].c_str()));
    else if (opt.rest[i] == "--model" && i + 1 < opt.rest.size()) models.push_back(opt.rest[++i]);
    else if (opt.rest[i] == "--profile") profile = true;
    else {
      std::fprintf(stderr, "%s: unknown argument '%s'\n", argv[0], opt.rest[i].c_str());
      return 2;
    }
  }
  if (batches.empty()) batches = opt.quick ? std::vector<int64_t>{64} : std::vector<int64_t>{64, 128};
  if (models.empty()) models = {"lenet", "resnet20"};
  for (const auto& m : models)
    if (m != "lenet" && m != "resnet20") {
      std::fprintf(stderr, "%s: unknown model '%s' (lenet, resnet20)\n", argv[0], m.c_str());
      return 2;
    }
  dl::set_num_threads(opt.threads);

  dl::bench::Table table("peers_cnn (dl)", opt);
  for (const auto& m : models)
    for (int64_t batch : batches) {
      if (m == "lenet") run_case<LeNet>(table, opt, m, batch, profile);
      else run_case<ResNet>(table, opt, m, batch, profile);
    }
  char note[64];
  std::snprintf(note, sizeof note, "load %.2f", dl::bench::Table::load_average());
  table.print(note);
  return 0;
}
