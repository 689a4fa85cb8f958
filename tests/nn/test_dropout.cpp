// nn::Dropout: active in training mode only, same masks as dl::dropout with the same generator,
// follows train()/eval() of its parent, and rejects bad probabilities.
#include <doctest/doctest.h>

#include "dl/ndarray/creation.hpp"
#include "dl/nn/dense.hpp"
#include "dl/nn/dropout.hpp"
#include "dl/nn/sequential.hpp"

using namespace dl;

TEST_CASE("Dropout module: training vs eval") {
  Generator gen(12), ref(12);
  nn::Dropout drop(0.4, gen);
  CHECK(drop.p() == 0.4);
  auto x = randn<float>({6, 9});
  auto y = drop(x);
  CHECK(y.storage() != x.storage());
  CHECK(y.to_vector() == dropout(x, 0.4, true, ref).to_vector());
  int zeros = 0;
  for (float v : y.to_vector()) zeros += v == 0.0f;
  CHECK(zeros > 0);
  CHECK(zeros < 54);
  drop.eval();
  auto z = drop(x);
  CHECK(z.storage() == x.storage());
  drop.train();
  CHECK(drop(x).storage() != x.storage());
}

TEST_CASE("Dropout module: the global generator by default, parent mode propagates") {
  manual_seed(31);
  nn::Dropout a(0.5);
  auto x = ones<float>({64});
  auto y1 = a(x).to_vector();
  manual_seed(31);
  auto y2 = a(x).to_vector();
  CHECK(y1 == y2);

  nn::Sequential net{nn::Dense(4, 4), nn::Dropout(0.9)};
  auto in = ones<float>({2, 4});
  net.eval();
  auto e1 = net(in).to_vector(), e2 = net(in).to_vector();
  CHECK(e1 == e2);  // deterministic in eval mode
  CHECK(e1 == net.get<0>()(in).to_vector());
  net.train();
  CHECK_FALSE(net(in).to_vector() == e1);
}

TEST_CASE("Dropout module: bad probabilities") {
  CHECK_THROWS_WITH_AS(nn::Dropout(1.0), doctest::Contains("dropout: probability p must be in [0, 1), got 1"), ValueError);
  CHECK_THROWS_WITH_AS(nn::Dropout(-0.5), doctest::Contains("dropout: probability"), ValueError);
}
