// The convolutional models of the example trainers, shared with the benchmarks that time them:
// examples/train_lenet.cpp and examples/train_resnet.cpp train these classes, bench/peers_cnn.cpp
// times one training step of them against libtorch, MXNet and PyTorch. One definition, so the
// benchmark always measures exactly the model the examples train.
//
//   examples::LeNet  net(16, 32, true);  // (N, 1, 28, 28) -> (N, 10); the defaults of train_lenet
//   examples::ResNet net(20, 16);        // ResNet-20, width 16: the defaults of train_resnet
#pragma once
#include <optional>
#include <utility>
#include <vector>

#include "dl/dl.hpp"
#include "dl/graph/compile.hpp"
#include "dl/nn/batch_norm.hpp"
#include "dl/nn/conv.hpp"
#include "dl/nn/dense.hpp"
#include "dl/nn/flatten.hpp"
#include "dl/nn/init.hpp"
#include "dl/nn/module.hpp"
#include "dl/nn/module_list.hpp"
#include "dl/nn/pool.hpp"
#include "dl/nn/residual.hpp"

namespace examples {

// Fashion-MNIST pixel statistics, for normalisation inside the models (fused into the first conv's input).
constexpr float kFashionMean = 0.2860f, kFashionStd = 0.3530f;

// LeNet-5's layout with batch norm and twice the classic channels (6, 16) by default:
//   conv 5x5 (c1, pad 2) - bn - relu - maxpool 2     (N, 1, 28, 28) -> (N, c1, 14, 14)
//   conv 5x5 (c2)        - bn - relu - maxpool 2                    -> (N, c2, 5, 5)
//   fc (c2*25)-120 - relu - fc 120-84 - relu - fc 84-10
class LeNet : public dl::nn::Module {
 public:
  dl::nn::Conv2d conv1, conv2;
  std::optional<dl::nn::BatchNorm2d> bn1, bn2;  // empty without batch norm
  dl::nn::MaxPool2d pool{2};
  dl::nn::Dense fc1, fc2, fc3;

  explicit LeNet(int64_t c1 = 16, int64_t c2 = 32, bool batch_norm = true)
      : conv1(1, c1, 5, {.padding = {2, 2}}, /*bias=*/!batch_norm),  // the batch norm has the bias
        conv2(c1, c2, 5, {}, /*bias=*/!batch_norm),
        fc1(c2 * 5 * 5, 120),
        fc2(120, 84),
        fc3(84, 10) {
    register_module("conv1", &LeNet::conv1);
    if (batch_norm) {
      bn1.emplace(c1);
      register_module_accessor("bn1", [](Module& self) -> Module& { return *static_cast<LeNet&>(self).bn1; });
    }
    register_module("conv2", &LeNet::conv2);
    if (batch_norm) {
      bn2.emplace(c2);
      register_module_accessor("bn2", [](Module& self) -> Module& { return *static_cast<LeNet&>(self).bn2; });
    }
    register_module("fc1", &LeNet::fc1);
    register_module("fc2", &LeNet::fc2);
    register_module("fc3", &LeNet::fc3);
  }

  // x: (batch, 1, 28, 28) images in [0, 1] -> (batch, 10) logits. One definition for arrays and
  // symbols (--compiled); with or without batch norm is a compile-time choice on symbols, because
  // it changes the graph's type.
  template <bool BatchNorm, class X>
  auto forward_as(const X& x) {
    using dl::operator-, dl::operator/;  // symbols live in dl::graph: ADL alone does not find dl's operators
    auto h1 = pool(dl::relu(normalize<BatchNorm>(bn1, conv1((x - kFashionMean) / kFashionStd))));  // relu fused into the pooling's input pass
    auto h2 = pool(dl::relu(normalize<BatchNorm>(bn2, conv2(h1))));
    auto h3 = dl::relu(fc1(flatten(h2)));
    return fc3(dl::relu(fc2(h3)));
  }
  template <class X>
  auto forward(const X& x) { return bn1 ? forward_as<true>(x) : forward_as<false>(x); }
  template <class X>
  auto operator()(const X& x) { return forward(x); }

  // --compiled: the forward of this configuration as a callable of fixed structure.
  template <class F>
  void with_static_forward(F&& f) {
    if (bn1) f([this](const auto& x) { return forward_as<true>(x); });
    else f([this](const auto& x) { return forward_as<false>(x); });
  }

 private:
  dl::nn::Flatten flatten;  // (N, c2, 5, 5) -> (N, c2*25): a view

  template <bool BatchNorm, class H>
  static auto normalize(std::optional<dl::nn::BatchNorm2d>& bn, const H& h) {
    if constexpr (BatchNorm) return (*bn)(h);
    else return h;
  }
};


// A CIFAR-style ResNet (He et al. 2016), depth 6n + 2 (ResNet-20 by default):
//   conv 3x3 (w) - bn - relu                                  (N, 1, 28, 28) -> (N, w, 28, 28)
//   layer1: n basic blocks, w channels                                       -> (N, w, 28, 28)
//   layer2: n basic blocks, 2w channels, the first with stride 2             -> (N, 2w, 14, 14)
//   layer3: n basic blocks, 4w channels, the first with stride 2             -> (N, 4w, 7, 7)
//   global average pool - fc 4w-10
// Shortcuts are identities, or 1x1 conv + batch norm projections where a block changes the shape.
class ResNet : public dl::nn::Module {
 public:
  dl::nn::Conv2d conv1;
  dl::nn::BatchNorm2d bn1;
  dl::nn::ModuleList<dl::nn::BasicBlock> layer1, layer2, layer3;
  dl::nn::GlobalAvgPool2d pool;
  dl::nn::Dense fc;

  // depth = 6 * blocks_per_stage + 2; `width` is the first stage's channels (doubled per stage).
  explicit ResNet(int depth = 20, int64_t width = 16, int64_t classes = 10)
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

  // x: (batch, 1, 28, 28) images in [0, 1] -> (batch, 10) logits (eager; --compiled: below).
  template <class X>
  auto forward(const X& x) {
    dl::NDArray<float> h = dl::relu(bn1(conv1((x - kFashionMean) / kFashionStd)));
    for (auto* stage : {&layer1, &layer2, &layer3})
      for (auto& block : *stage) h = block(h);
    h = pool(h);
    return fc(h.reshape({h.shape(0), -1}));
  }
  template <class X>
  auto operator()(const X& x) { return forward(x); }

  // --compiled (train_resnet): the whole network as ONE graph,
  // training step and evaluation. The residual blocks are a graph::chain and BasicBlock names its
  // input once (graph::let), so the graph's type is that of one block whatever the depth
  // (ResNet-20: ~30 s of compiler CPU, 1.2 GB).
  template <class F>
  void with_static_forward(F&& f) {
    chain_.clear();
    for (auto* stage : {&layer1, &layer2, &layer3})
      for (auto& block : *stage) chain_.push_back(&block);
    f([this](const auto& x) {
      using dl::operator-, dl::operator/;  // symbols live in dl::graph: ADL alone does not find dl's operators
      auto h = dl::relu(bn1(conv1((x - kFashionMean) / kFashionStd)));
      auto out = dl::graph::chain(h, chain_, [](dl::nn::BasicBlock* block, const auto& in) { return (*block)(in); });
      return fc(dl::graph::flatten(pool(out)));
    });
  }

 private:
  std::vector<dl::nn::BasicBlock*> chain_;  // with_static_forward: every block, in order
};

}  // namespace examples
