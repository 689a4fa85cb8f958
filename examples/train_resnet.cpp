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
//   build-release/examples/train_resnet --compiled           # each residual block a compiled graph
#include <string>
#include <utility>
#include <vector>

#include "common/trainer.hpp"
#include "dl/nn/batch_norm.hpp"
#include "dl/nn/conv.hpp"
#include "dl/nn/dense.hpp"
#include "dl/nn/init.hpp"
#include "dl/nn/module_list.hpp"
#include "dl/nn/pool.hpp"
#include "dl/nn/residual.hpp"

// Fashion-MNIST pixel statistics, for normalisation inside the model (fused into the first conv's input).
constexpr float kMean = 0.2860f, kStd = 0.3530f;

// --compiled: a residual block as a compiled graph (the same type for every block).
inline auto compile_block(dl::nn::BasicBlock& block) {
  return dl::graph::compile([b = &block](auto x) { return (*b)(x); });
}
using BlockGraph = decltype(compile_block(std::declval<dl::nn::BasicBlock&>()));

class ResNet : public dl::nn::Module {
 public:
  dl::nn::Conv2d conv1;
  dl::nn::BatchNorm2d bn1;
  dl::nn::ModuleList<dl::nn::BasicBlock> layer1, layer2, layer3;
  dl::nn::GlobalAvgPool2d pool;
  dl::nn::Dense fc;

  // depth = 6 * blocks_per_stage + 2; `width` is the first stage's channels (doubled per stage).
  ResNet(int depth, int64_t width, int64_t classes = 10)
      : conv1(1, width, 3, 1, 1, /*bias=*/false), bn1(width), fc(4 * width, classes) {
    dl::check<dl::ValueError>(depth >= 8 && (depth - 2) % 6 == 0, "ResNet: depth must be 6n + 2 (20, 32, 44, 56, ...), got ",
                              depth);
    const int n = (depth - 2) / 6;
    for (int i = 0; i < n; ++i) layer1.emplace_back(width, width, 1);
    for (int i = 0; i < n; ++i) layer2.emplace_back(i == 0 ? width : 2 * width, 2 * width, i == 0 ? 2 : 1);
    for (int i = 0; i < n; ++i) layer3.emplace_back(i == 0 ? 2 * width : 4 * width, 4 * width, i == 0 ? 2 : 1);
    register_module("conv1", &ResNet::conv1);
    register_module("bn1", &ResNet::bn1);
    register_module("layer1", &ResNet::layer1);
    register_module("layer2", &ResNet::layer2);
    register_module("layer3", &ResNet::layer3);
    register_module("fc", &ResNet::fc);
    // He initialisation for the convolutions and the classifier (as the CIFAR ResNet papers do);
    // batch norms keep gamma = 1, beta = 0.
    for (auto& [name, p] : named_parameters())
      if (p.rank() >= 2) dl::nn::init::kaiming_normal(p, 0.0, dl::nn::init::FanMode::fan_in);
  }

  // x: (batch, 1, 28, 28) images in [0, 1] -> (batch, 10) logits. After compile_blocks()
  // (--compiled) each residual block runs as its compiled graph: one tape node while recording.
  template <class X>
  auto forward(const X& x) {
    dl::NDArray<float> h = dl::relu(bn1(conv1((x - kMean) / kStd)));
    size_t k = 0;
    for (auto* stage : {&layer1, &layer2, &layer3})
      for (auto& block : *stage) h = block_graphs_.empty() ? block(h) : block_graphs_[k++](h);
    h = pool(h);
    return fc(h.reshape({h.shape(0), -1}));
  }
  template <class X>
  auto operator()(const X& x) { return forward(x); }

  // --compiled, block by block. ResNet-20 as one graph does not compile in reasonable time: a
  // block's symbolic forward uses its input three times (convolutions, the projection branch's
  // type, the identity), so the whole graph's type repeats the stem 3^9 times (gcc: > 5 min CPU and
  // 3.4 GB without finishing). One graph per block instead, all of one type (BasicBlock's symbolic
  // forward picks identity or projection when traced), so the compile cost is that of one block; the
  // stem, pooling, classifier and loss stay eager. Each graph keeps a training plan (traced in train
  // mode, as a tape node) and an inference plan (traced in eval mode, for evaluation).
  void compile_blocks() {
    block_graphs_.clear();
    for (auto* stage : {&layer1, &layer2, &layer3})
      for (auto& block : *stage) block_graphs_.push_back(compile_block(block));
  }

 private:
  std::vector<BlockGraph> block_graphs_;
};

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
