// The README's compiled variant of minimal_train.cpp: the same Net, trained through
// graph::compile (one static graph: fused loops, a memory plan, no allocation after the first
// step). Kept compiling by the build; run it to see the plan report.
#include <dl/dl.hpp>
#include <dl/nn/dense.hpp>
#include <dl/nn/module.hpp>
#include <dl/optim/sgd.hpp>
#include <iostream>
using namespace dl;

struct Net : nn::Module {
  nn::Dense fc1{784, 256}, fc2{256, 10};
  Net() { register_module("fc1", &Net::fc1); register_module("fc2", &Net::fc2); }
  template <class X> auto forward(const X& x) { return fc2(relu(fc1(flatten(x)))); }
  template <class X> auto operator()(const X& x) { return forward(x); }
};

int main() {
  auto train = data::load_mnist(data::kFashionMnistDir, data::Split::train);
  data::DataLoader loader(data::TensorDataset(train.images, train.labels), {.batch_size = 128, .seed = 0});
  Net net;
  optim::SGD opt(net.named_parameters(), /*lr=*/0.05, /*momentum=*/0.9);
  auto step = graph::compile([&](auto x, auto y) { return cross_entropy(net(x), y); });
  for (int epoch = 0; epoch < 3; ++epoch) {
    double sum = 0;
    int64_t steps = 0;
    for (const auto& batch : loader) {
      sum += step.forward_backward(batch.x, batch.y).item();   // forward + backward, gradients into grad()
      ++steps;
      opt.step();
    }
    std::cout << "epoch " << epoch + 1 << " mean loss " << sum / static_cast<double>(steps) << "\n";
  }
  std::cout << step.plan_report();   // buffers, bytes planned vs unplanned, fused kernels
}
