// train_lenet: a LeNet-5 style convolutional network on Fashion-MNIST (Debian package
// dataset-fashion-mnist), with the flags, progress output, log and plot of every example trainer.
// LeNet-5's layout with batch norm and twice the classic channels (6, 16): the classic widths
// reach about 91.2% in 10 epochs, these about 92.3% (docs: the figures and commands).
//
//   conv 5x5 (16, pad 2) - bn - relu - maxpool 2     (N, 1, 28, 28) -> (N, 16, 14, 14)
//   conv 5x5 (32)        - bn - relu - maxpool 2                    -> (N, 32, 5, 5)
//   fc 800-120 - relu - fc 120-84 - relu - fc 84-10
//
//   build-release/examples/train_lenet                          # the defaults: >= 91% in 10 epochs
//   build-release/examples/train_lenet --channels 6,16 --no-batch-norm --log run.csv --plot run.png
//   build-release/examples/train_lenet --compiled              # the same model as a compiled static graph
#include <optional>
#include <sstream>
#include <vector>

#include "common/models.hpp"
#include "common/trainer.hpp"

// The model (LeNet) is examples/common/models.hpp's, shared with bench/peers_cnn.cpp.
using examples::LeNet;

int main(int argc, char** argv) {
  CLI::App app{"Train a LeNet-5 style CNN on Fashion-MNIST with dl", "train_lenet"};
  examples::TrainConfig config;
  config.weight_decay = 5e-4;
  std::string channels = "16,32";
  bool batch_norm = true;
  int64_t crop_padding = 0;
  examples::add_common_flags(app, config);
  app.add_option("--channels", channels, "output channels of the two convolutions, comma-separated")->capture_default_str();
  app.add_flag("--batch-norm,!--no-batch-norm", batch_norm, "batch norm after each convolution (default on)");
  app.add_option("--crop-padding", crop_padding, "augment: random 28x28 crop after this much zero padding (0: off)")
      ->check(examples::kNonNegative)->capture_default_str();
  app.add_option("--limit-test", config.limit_test, "evaluate on the first N test samples only (quick runs)")
      ->check(examples::kNonNegative);
  return examples::main_guard(app, argc, argv, [&] {
    std::vector<int64_t> c;
    std::stringstream ss(channels);
    for (std::string item; std::getline(ss, item, ',');) {
      char* end = nullptr;
      long v = std::strtol(item.c_str(), &end, 10);
      dl::check<dl::ValueError>(!item.empty() && *end == '\0' && v > 0,
                                "--channels: expected two positive integers like 6,16, got '", channels, "'");
      c.push_back(v);
    }
    dl::check<dl::ValueError>(c.size() == 2, "--channels: expected two positive integers like 6,16, got '", channels, "'");
    if (crop_padding > 0) config.train_transform = dl::data::make_transform(dl::data::RandomCrop(28, crop_padding));
    dl::manual_seed(config.seed);
    LeNet net(c[0], c[1], batch_norm);
    return examples::run_training("train_lenet", net, config);
  });
}
