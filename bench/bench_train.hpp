// The dl side of the training-step benchmarks (peers_mlp, peers_cnn, peers_dataloader,
// compiled_vs_eager): the MLP 784-256-128-10 they share, synthetic data held in memory, and one
// training step as a user writes it (record the forward pass and the loss, backward(), step()),
// timed whole or with its three parts apart. bench_util.hpp stays free of dl (the libtorch sides
// include it); this header is its dl counterpart.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "bench_util.hpp"
#include "dl/dl.hpp"

namespace dl::bench {

// MLP 784-256-128-10 with ReLU (dl::nn::Dense's default initialisation).
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

// Samples of shape `sample`, standard normal (normal) or uniform in [0, 1), and labels in [0, 10).
// (784): peers_mlp's rows; (1, 28, 28), uniform: peers_cnn's images.
inline Data make_data(int64_t batch, int64_t pool, const dl::Shape& sample, bool normal) {
  Data d;
  dl::Generator gen(1234);
  std::vector<int64_t> dims{batch};
  for (int64_t s : sample) dims.push_back(s);
  const dl::Shape shape(dims);
  int64_t n = std::max<int64_t>(1, pool / batch);
  for (int64_t i = 0; i < n; ++i) {
    d.x.push_back(normal ? dl::randn<float>(shape, 0.0, 1.0, gen) : dl::rand<float>(shape, 0.0, 1.0, gen));
    auto labels = dl::rand<float>({batch}, 0.0, 10.0, gen);
    dl::NDArray<int64_t> y(dl::Shape{batch});
    for (int64_t j = 0; j < batch; ++j) y.data()[j] = std::min<int64_t>(9, static_cast<int64_t>(labels.data()[j]));
    d.y.push_back(y);
  }
  return d;
}

// One training step on the next batch of `data` (cycling through it).
template <class Net, class Optimizer>
void train_step(Net& net, Optimizer& opt, const Data& data, size_t& next) {
  const size_t i = next++ % data.x.size();
  dl::NDArray<float> loss;
  {
    dl::autograd::record rec;
    loss = dl::cross_entropy(net(data.x[i]), data.y[i]);
  }
  loss.backward();
  opt.step();
}

// Forward (with the tape), backward and optimiser step of `steps` training steps timed apart,
// in seconds per step.
struct StepProfile {
  double forward_s = 0, backward_s = 0, update_s = 0;
};
template <class Net, class Optimizer>
StepProfile profile_steps(Net& net, Optimizer& opt, const Data& data, size_t& next, int steps) {
  double fwd = 0, bwd = 0, upd = 0;
  for (int k = 0; k < steps; ++k) {
    const size_t i = next++ % data.x.size();
    dl::NDArray<float> loss;
    double a = now_s();
    {
      dl::autograd::record rec;
      loss = dl::cross_entropy(net(data.x[i]), data.y[i]);
    }
    double b = now_s();
    loss.backward();
    double c = now_s();
    opt.step();
    double d = now_s();
    fwd += b - a;
    bwd += c - b;
    upd += d - c;
  }
  return {fwd / steps, bwd / steps, upd / steps};
}

}  // namespace dl::bench
