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

#include "common/trainer.hpp"
#include "dl/nn/batch_norm.hpp"
#include "dl/nn/conv.hpp"
#include "dl/nn/dense.hpp"
#include "dl/nn/flatten.hpp"
#include "dl/nn/init.hpp"
#include "dl/nn/pool.hpp"

// Fashion-MNIST pixel statistics, for normalisation inside the model (fused into the first conv's input).
constexpr float kMean = 0.2860f, kStd = 0.3530f;

class LeNet : public dl::nn::Module {
 public:
  dl::nn::Conv2d conv1, conv2;
  std::optional<dl::nn::BatchNorm2d> bn1, bn2;  // empty without batch norm
  dl::nn::MaxPool2d pool{2};
  dl::nn::Dense fc1, fc2, fc3;

  LeNet(int64_t c1, int64_t c2, bool batch_norm)
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
    auto h1 = pool(dl::relu(normalize<BatchNorm>(bn1, conv1((x - kMean) / kStd))));  // relu fused into the pooling's input pass
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
  dl::nn::Flatten flatten;  // (N, 32, 5, 5) -> (N, 800): a view

  template <bool BatchNorm, class H>
  static auto normalize(std::optional<dl::nn::BatchNorm2d>& bn, const H& h) {
    if constexpr (BatchNorm) return (*bn)(h);
    else return h;
  }
};

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
