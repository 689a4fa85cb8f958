// nn::Sequential: child names, forward equals the manual chain, typed access, copy/move safety,
// train/eval propagation, gradients through the chain.
#include <doctest/doctest.h>

#include <optional>

#include "dl/autograd/engine.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/nn/activation.hpp"
#include "dl/nn/dense.hpp"
#include "dl/nn/dropout.hpp"
#include "dl/nn/flatten.hpp"
#include "dl/nn/sequential.hpp"

using namespace dl;

namespace {
std::vector<std::string> names(const nn::NamedArrays& v) {
  std::vector<std::string> out;
  for (auto& [n, a] : v) out.push_back(n);
  return out;
}
}  // namespace

TEST_CASE("sequential: names, forward and typed access") {
  Generator gen(1);
  nn::Sequential net{nn::Flatten(), nn::Dense(6, 5, true, gen), nn::Tanh(), nn::Dense(5, 2, false, gen)};
  static_assert(decltype(net)::size() == 4);
  CHECK(names(net.named_parameters()) == std::vector<std::string>{"1.weight", "1.bias", "3.weight"});
  auto children = net.named_children();
  REQUIRE(children.size() == 4);
  CHECK(children[2].first == "2");
  CHECK(children[1].second == &net.get<1>());
  auto x = randn<float>({3, 2, 3});
  auto y = net(x);
  CHECK(y.shape() == Shape{3, 2});
  auto manual = net.get<3>()(nn::Tanh()(net.get<1>()(x.reshape({3, 6}))));
  CHECK(y.to_vector() == manual.to_vector());
  net.get<1>().weight.assign(0.0f);
  net.get<1>().bias.assign(0.0f);
  for (float v : net(x).to_vector()) CHECK(v == 0.0f);
}

TEST_CASE("sequential: default construction and nesting") {
  nn::Sequential<nn::ReLU, nn::Tanh> acts;
  CHECK(acts(tensor<float>({-1.0f, 1.0f})).to_vector() == std::vector<float>{0.0f, static_cast<float>(std::tanh(1.0f))});
  nn::Sequential inner{nn::Dense(3, 3), nn::ReLU()};
  nn::Sequential outer{inner, nn::Dense(3, 1)};
  CHECK(names(outer.named_parameters()) == std::vector<std::string>{"0.0.weight", "0.0.bias", "1.weight", "1.bias"});
  outer.eval();
  CHECK_FALSE(outer.get<0>().get<0>().is_training());
  CHECK(inner.is_training());  // the copy inside `outer` is its own module
}

TEST_CASE("sequential: copies and moves resolve against themselves") {
  std::optional<nn::Sequential<nn::Dense, nn::ReLU, nn::Dense>> original(std::in_place, nn::Dense(2, 3), nn::ReLU(),
                                                                         nn::Dense(3, 1));
  auto copy = *original;
  auto w = original->get<2>().weight.to_vector();
  original.reset();
  auto params = copy.named_parameters();
  REQUIRE(params.size() == 4);
  CHECK(params[2].first == "2.weight");
  CHECK(params[2].second.storage() == copy.get<2>().weight.storage());
  CHECK(params[2].second.to_vector() == w);

  auto moved = std::move(copy);
  CHECK(moved.named_parameters()[0].second.storage() == moved.get<0>().weight.storage());
  auto independent = nn::clone(moved);
  CHECK(independent.named_parameters()[0].second.storage() != moved.get<0>().weight.storage());
  CHECK(independent.named_parameters()[0].second.to_vector() == moved.get<0>().weight.to_vector());
}

TEST_CASE("sequential: gradients reach every layer") {
  Generator gen(2);
  nn::Sequential net{nn::Dense(4, 8, true, gen), nn::GELU(), nn::Dropout(0.0), nn::Dense(8, 1, true, gen)};
  auto x = randn<float>({5, 4}, 0.0, 1.0, gen);
  NDArray<float> y;
  {
    autograd::record rec;
    y = net(x);
  }
  y.backward(ones<float>({5, 1}));
  for (auto& [name, p] : net.named_parameters()) {
    double s = 0;
    for (float g : p.grad().to_vector()) s += std::abs(g);
    CHECK_MESSAGE(s > 0, name);
  }
  // The last bias gradient is the number of rows.
  CHECK(net.get<3>().bias.grad().item() == doctest::Approx(5.0));
}
