// graph/compile.hpp and nn::Module::train/eval: a compiled graph follows its modules' mode. Dropout
// and batch norm fix their mode when the graph is traced, so a plan traced in one mode must not
// serve calls made after the model switched (that would apply dropout, or batch statistics, at test
// time without a word).
#include <doctest/doctest.h>

#include <vector>

#include "dl/dl.hpp"
#include "dl/graph/compile.hpp"

using namespace dl;

namespace {

NDArray<float> random_input(const Shape& shape, uint64_t seed) {
  Generator gen(seed);
  return randn<float>(shape, 0.0, 1.0, gen);
}

void check_same(const NDArray<float>& a, const NDArray<float>& b) {
  REQUIRE(a.shape() == b.shape());
  auto va = a.to_vector(), vb = b.to_vector();
  for (size_t i = 0; i < va.size(); ++i) CHECK(va[i] == doctest::Approx(vb[i]).epsilon(1e-5));
}

struct ConvBn : nn::Module {
  nn::Conv2d conv;
  nn::BatchNorm2d bn;
  static Conv2dOptions padded() {
    Conv2dOptions o;
    o.padding = {1, 1};
    return o;
  }
  explicit ConvBn(Generator& gen) : conv(3, 4, 3, padded(), true, gen), bn(4) {
    register_module("conv", &ConvBn::conv);
    register_module("bn", &ConvBn::bn);
  }
  template <class X> auto forward(const X& x) { return bn(conv(x)); }
};

}  // namespace

TEST_CASE("compile: switching a model to eval re-traces the graph (dropout becomes the identity)") {
  Generator gen(3), drop_gen(4);
  nn::Sequential net{nn::Dense(8, 16, true, gen), nn::ReLU(), nn::Dropout(0.5, drop_gen), nn::Dense(16, 4, true, gen)};
  auto f = graph::compile([&](auto x) { return net(x); });
  auto x = random_input(Shape{5, 8}, 11);
  NDArray<float> in_training = f.forward(x).clone();  // traced in training mode: dropout active
  net.eval();
  NDArray<float> eager = net(x);
  check_same(f.forward(x), eager);
  bool differs = false;  // and the training-mode result really was different
  auto vt = in_training.to_vector(), ve = eager.to_vector();
  for (size_t i = 0; i < vt.size(); ++i) differs = differs || vt[i] != ve[i];
  CHECK(differs);
  net.train();  // and back: dropout again (a fresh mask, so only the zeros' pattern is checked)
  NDArray<float> again = f.forward(x).clone();
  CHECK(again.shape() == eager.shape());
}

TEST_CASE("compile: batch norm uses running statistics after eval(), batch statistics after train()") {
  Generator gen(7);
  ConvBn net(gen);
  auto x = random_input(Shape{2, 3, 5, 5}, 12);
  auto f = graph::compile([&](auto a) { return net.forward(a); });
  (void)f.forward(x);  // training mode: batch statistics, running statistics updated once
  net.eval();
  NDArray<float> eager_eval = net.forward(x);
  check_same(f.forward(x), eager_eval);
  net.train();
  NDArray<float> compiled_train = f.forward(x).clone();
  NDArray<float> eager_train = net.forward(x);
  check_same(compiled_train, eager_train);
}

TEST_CASE("compile: calling train() on a model already in training mode keeps the plan") {
  Generator gen(5);
  nn::Sequential net{nn::Dense(4, 3, true, gen)};
  auto f = graph::compile([&](auto x) { return net(x); });
  auto x = random_input(Shape{2, 4}, 1);
  const float* first = f.forward(x).data();
  const uint64_t before = nn::mode_generation();
  net.train();
  CHECK(nn::mode_generation() == before);
  CHECK(f.forward(x).data() == first);  // same plan, same memory
}
