// Training is reproducible: the same seed and thread count give bit-identical losses (shuffling,
// initialisation and dropout all come from counter-based generators).
#include <doctest/doctest.h>

#include "dl/dl.hpp"

using namespace dl;

namespace {
struct Net : nn::Module {
  nn::Dense fc1{20, 32}, fc2{32, 4};
  nn::Dropout drop{0.3};
  Net() {
    register_module("fc1", &Net::fc1);
    register_module("fc2", &Net::fc2);
    register_module("drop", &Net::drop);
  }
  template <class X> auto forward(const X& x) { return fc2(drop(relu(fc1(x)))); }
  template <class X> auto operator()(const X& x) { return forward(x); }
};

std::vector<float> train_losses(uint64_t seed, int threads) {
  set_num_threads(threads);
  manual_seed(seed);
  auto x = randn<float>({200, 20});
  auto y = NDArray<int64_t>(Shape{200});
  for (int64_t i = 0; i < 200; ++i) y.at({i}) = i % 4;
  Net net;
  optim::SGD opt(net.named_parameters(), 0.1, 0.9);
  data::DataLoader loader(data::TensorDataset(x, y), {.batch_size = 32, .shuffle = true, .seed = seed});
  std::vector<float> losses;
  for (int epoch = 0; epoch < 3; ++epoch) {
    for (const auto& b : loader) {
      NDArray<float> loss;
      {
        autograd::record rec;
        loss = cross_entropy(net(b.x), b.y);
      }
      loss.backward();
      opt.step();
      losses.push_back(loss.item());
    }
  }
  set_num_threads(2);
  return losses;
}
}  // namespace

TEST_CASE("training: same seed and thread count give identical losses") {
  auto a = train_losses(7, 2), b = train_losses(7, 2);
  REQUIRE(a.size() == 21);
  CHECK(a == b);
  CHECK(a.back() < a.front());  // and it learns
  auto c = train_losses(8, 2);
  CHECK(a != c);  // a different seed is a different run
  auto d = train_losses(7, 1), e = train_losses(7, 1);
  CHECK(d == e);
}
