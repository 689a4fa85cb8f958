// train_resnet: a CIFAR-style ResNet (He et al. 2016; ResNet-20 by default) on Fashion-MNIST, with
// the flags, progress output, log and plot of every example trainer.
//
//   conv 3x3 (16) - bn - relu                                 (N, 1, 28, 28) -> (N, 16, 28, 28)
//   layer1: n basic blocks, 16 channels                                      -> (N, 16, 28, 28)
//   layer2: n basic blocks, 32 channels, the first with stride 2             -> (N, 32, 14, 14)
//   layer3: n basic blocks, 64 channels, the first with stride 2             -> (N, 64, 7, 7)
//   global average pool - fc 64-10                     depth = 6n + 2 (20: n = 3)
//
// Shortcuts are identities, or 1x1 conv + batch norm projections where a block changes the shape.
// Training: SGD with momentum 0.9, weight decay 5e-4, cosine schedule from lr 0.1, and per-sample
// augmentation (random 28x28 crop of the image zero-padded by 4, horizontal flip) in the loader's
// prefetch thread.
//
//   build-release/examples/train_resnet                       # ResNet-20, 30 epochs (aims at >= 93%)
//   build-release/examples/train_resnet --epochs 1 --limit-train 12800 --limit-test 1000   # a quick check
//   build-release/examples/train_resnet --compiled           # the whole ResNet as one compiled graph
#include <string>
#include <utility>
#include <vector>

#include "common/models.hpp"
#include "common/trainer.hpp"

// The model (ResNet, with its --compiled blocks) is examples/common/models.hpp's, shared with
// bench/peers_cnn.cpp.
using examples::ResNet;

int main(int argc, char** argv) {
  CLI::App app{"Train a ResNet on Fashion-MNIST with dl", "train_resnet"};
  examples::TrainConfig config;
  config.epochs = 30;
  config.lr = 0.1;
  config.momentum = 0.9;
  config.weight_decay = 5e-4;
  config.schedule = "cosine";
  int depth = 20;
  int64_t width = 16;
  int64_t crop_padding = 4;
  double flip = 0.5;
  examples::add_common_flags(app, config);
  app.add_option("--depth", depth, "layers: 6n + 2 (20, 32, 44, 56, ...)")->capture_default_str();
  app.add_option("--width", width, "channels of the first stage (doubled per stage)")
      ->check(examples::kPositive)->capture_default_str();
  app.add_option("--crop-padding", crop_padding, "augment: random 28x28 crop after this much zero padding (0: off)")
      ->check(examples::kNonNegative)->capture_default_str();
  app.add_option("--flip", flip, "augment: horizontal flip probability (0: off)")
      ->check(examples::kFraction)->capture_default_str();
  app.add_option("--limit-test", config.limit_test, "evaluate on the first N test samples only (quick runs)")
      ->check(examples::kNonNegative);
  return examples::main_guard(app, argc, argv, [&] {
    std::vector<std::shared_ptr<const dl::data::Transform>> stages;
    if (crop_padding > 0) stages.push_back(std::make_shared<const dl::data::RandomCrop>(28, crop_padding));
    if (flip > 0) stages.push_back(std::make_shared<const dl::data::RandomHorizontalFlip>(flip));
    if (!stages.empty()) config.train_transform = std::make_shared<const dl::data::Compose>(std::move(stages));
    dl::manual_seed(config.seed);
    ResNet net(depth, width);
    return examples::run_training("train_resnet", net, config);
  });
}
