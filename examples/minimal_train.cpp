// The README's smallest training program, kept compiling by the build.
#include <dl/dl.hpp>
#include <dl/nn/dense.hpp>
#include <dl/nn/module.hpp>
#include <dl/optim/sgd.hpp>
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
  for (int epoch = 0; epoch < 3; ++epoch) {
    for (const auto& batch : loader) {
      NDArray<float> loss;
      {
        autograd::record rec;                           // tape on
        loss = cross_entropy(net(batch.x), batch.y);
      }
      loss.backward();                                  // gradients into every parameter's grad()
      opt.step();                                       // one fused pass per parameter
    }
  }
}
