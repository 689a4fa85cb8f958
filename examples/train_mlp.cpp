// train_mlp: a multi-layer perceptron on Fashion-MNIST (Debian package dataset-fashion-mnist).
//
//   build-release/examples/train_mlp                       # 784-256-128-10, SGD momentum, 10 epochs
//   build-release/examples/train_mlp --hidden 512,256 --optimizer adam --lr 1e-3 --log run.csv --plot run.png
#include <sstream>
#include <vector>

#include "common/trainer.hpp"
#include "dl/nn/dense.hpp"
#include "dl/nn/dropout.hpp"
#include "dl/nn/module_list.hpp"

// Fashion-MNIST pixel statistics, for normalisation inside the model (fused into the first pass).
constexpr float kMean = 0.2860f, kStd = 0.3530f;

class Mlp : public dl::nn::Module {
 public:
  dl::nn::ModuleList<dl::nn::Dense> layers;
  dl::nn::Dropout dropout;

  Mlp(const std::vector<int64_t>& sizes, double dropout_p) : dropout(dropout_p) {
    for (size_t i = 0; i + 1 < sizes.size(); ++i) layers.emplace_back(sizes[i], sizes[i + 1]);
    register_module("layers", &Mlp::layers);
    register_module("dropout", &Mlp::dropout);
  }

  // x: (batch, 1, 28, 28) images in [0, 1] -> (batch, 10) logits.
  template <class X>
  auto forward(const X& x) {
    dl::NDArray<float> h = (x.reshape({x.shape(0), -1}) - kMean) / kStd;
    for (size_t i = 0; i < layers.size(); ++i) {
      if (i + 1 < layers.size()) h = dropout(dl::relu(layers[i](h)));
      else h = layers[i](h);
    }
    return h;
  }
  template <class X>
  auto operator()(const X& x) { return forward(x); }
};

int main(int argc, char** argv) {
  CLI::App app{"Train an MLP on Fashion-MNIST with dl", "train_mlp"};
  examples::TrainConfig config;
  std::string hidden = "256,128";
  double dropout = 0.0;
  examples::add_common_flags(app, config);
  app.add_option("--hidden", hidden, "hidden layer sizes, comma-separated")->capture_default_str();
  app.add_option("--dropout", dropout, "dropout after each hidden layer")->check(examples::kFraction)->capture_default_str();
  return examples::main_guard(app, argc, argv, [&] {
    std::vector<int64_t> sizes{784};
    std::stringstream ss(hidden);
    for (std::string item; std::getline(ss, item, ',');) {
      char* end = nullptr;
      long v = std::strtol(item.c_str(), &end, 10);
      dl::check<dl::ValueError>(!item.empty() && *end == '\0' && v > 0, "--hidden: expected positive integers like 256,128, got '",
                                hidden, "'");
      sizes.push_back(v);
    }
    sizes.push_back(10);
    dl::manual_seed(config.seed);
    Mlp net(sizes, dropout);
    return examples::run_training("train_mlp", net, config);
  });
}
