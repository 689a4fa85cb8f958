// train_mlp: a multi-layer perceptron on Fashion-MNIST (Debian package dataset-fashion-mnist).
//
//   build-release/examples/train_mlp                       # 784-256-128-10, SGD momentum, 10 epochs
//   build-release/examples/train_mlp --hidden 512,256 --optimizer adam --lr 1e-3 --log run.csv --plot run.png
//   mpirun -np 2 build-release/examples/train_mlp --dist    # data-parallel over 2 MPI ranks
//   build-release/examples/train_mlp --compiled            # the same model as a compiled static graph
#include <sstream>
#include <vector>

#include "common/trainer.hpp"
#include "dl/nn/dense.hpp"
#include "dl/nn/dropout.hpp"
#include "dl/nn/flatten.hpp"
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

  // x: (batch, 1, 28, 28) images in [0, 1] -> (batch, 10) logits. One definition for arrays
  // (eager, any depth: a loop over the layers) and symbols (--compiled: the graph's type fixes the
  // depth, so the hidden layers are unrolled at compile time, `Hidden` of them).
  template <int Hidden = -1, class X>
  auto forward(const X& x) {
    using dl::operator-, dl::operator/;  // symbols live in dl::graph: ADL alone does not find dl's operators
    auto in = flatten((x - kMean) / kStd);  // one pass, then a view
    if constexpr (dl::graph::is_symbolic_v<X>) {
      static_assert(Hidden >= 0, "Mlp: a symbolic forward needs the number of hidden layers (forward<Hidden>)");
      return unroll<0, Hidden>(in);
    } else {
      dl::NDArray<float> h = in;
      for (size_t i = 0; i + 1 < layers.size(); ++i) h = hidden_layer(i, h);
      return layers[layers.size() - 1](h);
    }
  }
  template <class X>
  auto operator()(const X& x) { return forward(x); }

  // --compiled: the depths --hidden may give, as compile-time variants (each is one graph type).
  static constexpr int kMaxCompiledHidden = 3;
  template <class F>
  void with_static_forward(F&& f) {
    const int hidden = static_cast<int>(layers.size()) - 1;
    switch (hidden) {
      case 1: return f([this](const auto& x) { return forward<1>(x); });
      case 2: return f([this](const auto& x) { return forward<2>(x); });
      case 3: return f([this](const auto& x) { return forward<3>(x); });
      default:
        dl::fail<dl::ValueError>("--compiled: the compiled MLP has 1 to ", kMaxCompiledHidden,
                                 " hidden layers, got ", hidden, " (--hidden); train it without --compiled");
    }
  }

 private:
  dl::nn::Flatten flatten;  // (N, 1, 28, 28) -> (N, 784): a view

  template <class H>
  auto hidden_layer(size_t i, const H& h) { return dropout(dl::relu(layers[i](h))); }
  template <int I, int Hidden, class H>
  auto unroll(const H& h) {
    if constexpr (I == Hidden) return layers[I](h);  // the output layer
    else return unroll<I + 1, Hidden>(hidden_layer(I, h));
  }
};

int main(int argc, char** argv) {
  CLI::App app{"Train an MLP on Fashion-MNIST with dl", "train_mlp"};
  examples::TrainConfig config;
  std::string hidden = "256,128";
  double dropout = 0.0;
  examples::add_common_flags(app, config);
  app.add_option("--hidden", hidden, "hidden layer sizes, comma-separated")->capture_default_str();
  app.add_option("--dropout", dropout, "dropout after each hidden layer")->check(examples::kFraction)->capture_default_str();
  app.add_option("--limit-test", config.limit_test, "evaluate on the first N test samples only (quick runs)")
      ->check(examples::kNonNegative);
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
