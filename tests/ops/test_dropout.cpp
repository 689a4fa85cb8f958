// dl::dropout: argument checks, identity cases, the Philox mask (thread-count independent),
// keep-fraction statistics, and the gradient (gradcheck with a fixed generator state).
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "dl/autograd/engine.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/ops/dropout.hpp"
#include "support/op_table.hpp"

using namespace dl;

TEST_CASE("dropout: bad probabilities are ValueErrors") {
  auto x = ones<float>({4});
  for (double p : {-0.1, 1.0, 1.5, std::numeric_limits<double>::quiet_NaN()})
    CHECK_THROWS_WITH_AS(dropout(x, p, true), doctest::Contains("dropout: probability p must be in [0, 1)"), ValueError);
  CHECK_THROWS_WITH_AS(dropout(x, 1.0, false), doctest::Contains("dropout: probability"), ValueError);
  CHECK_THROWS_WITH_AS(dropout(NDArray<float>(), 0.5, true), doctest::Contains("dropout: the array is undefined"),
                       ValueError);
}

TEST_CASE("dropout: identity (the same handle) in eval mode and for p = 0") {
  auto x = randn<float>({3, 5});
  Generator gen(3);
  auto before = gen.state();
  auto y = dropout(x, 0.5, false, gen);
  CHECK(y.storage() == x.storage());
  auto z = dropout(x, 0.0, true, gen);
  CHECK(z.storage() == x.storage());
  CHECK(gen.state() == before);  // no numbers drawn
}

TEST_CASE("dropout: mask is philox_uniform(state, i) >= p, scaled by 1/(1-p)") {
  for (uint64_t seed : {1u, 2u, 99u}) {
    for (double p : {0.1, 0.5, 0.9}) {
      Generator gen(seed);
      auto x = randn<float>({7, 13}, 0.0, 1.0, gen);
      PhiloxState s = gen.state();
      auto y = dropout(x, p, true, gen);
      CHECK(gen.state().offset == s.offset + (91 + 3) / 4);  // 91 numbers reserved
      auto xv = x.to_vector(), yv = y.to_vector();
      float scale = static_cast<float>(1.0 / (1.0 - p));
      int bad = 0;
      for (size_t i = 0; i < xv.size(); ++i) {
        float expect = philox_uniform(s, i) >= p ? xv[i] * scale : 0.0f;
        bad += yv[i] != expect;
      }
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("dropout: non-contiguous and expression inputs use row-major element order") {
  Generator g1(5), g2(5);
  auto base = randn<float>({4, 6});
  auto t = base.transpose();  // (6, 4), non-contiguous
  auto a = dropout(t, 0.4, true, g1);
  auto b = dropout(t.clone(), 0.4, true, g2);
  CHECK(a.to_vector() == b.to_vector());
  Generator g3(5), g4(5);
  auto c = dropout(base * 2.0f, 0.4, true, g3);
  auto d = dropout(NDArray<float>(base * 2.0f), 0.4, true, g4);
  CHECK(c.to_vector() == d.to_vector());
}

TEST_CASE("dropout: the result does not depend on the thread count") {
  int saved = num_threads();
  auto x = ones<float>({300000});
  set_num_threads(1);
  Generator g1(11);
  auto a = dropout(x, 0.3, true, g1).to_vector();
  set_num_threads(2);
  Generator g2(11);
  auto b = dropout(x, 0.3, true, g2).to_vector();
  set_num_threads(saved);
  CHECK(a == b);
}

TEST_CASE("dropout: keep fraction is about 1 - p and the mean is preserved") {
  const int64_t n = 400000;
  auto x = ones<float>({n});
  for (double p : {0.2, 0.5, 0.8}) {
    Generator gen(2024);
    auto y = dropout(x, p, true, gen).to_vector();
    double kept = 0, sum = 0;
    for (float v : y) {
      kept += v != 0.0f;
      sum += v;
    }
    double frac = kept / static_cast<double>(n);
    double sd = std::sqrt(p * (1 - p) / static_cast<double>(n));
    INFO("p = ", p, " keep fraction ", frac);
    CHECK(std::abs(frac - (1 - p)) < 6 * sd);
    CHECK(std::abs(sum / static_cast<double>(n) - 1.0) < 6 * sd / (1 - p));
  }
}

TEST_CASE("dropout: successive calls draw different masks") {
  Generator gen(8);
  auto x = ones<float>({256});
  auto a = dropout(x, 0.5, true, gen).to_vector();
  auto b = dropout(x, 0.5, true, gen).to_vector();
  CHECK(a != b);
}

TEST_CASE("dropout: backward goes through the same mask and scale") {
  Generator gen(21);
  auto x = randn<float>({5, 8}, 0.0, 1.0, gen);
  x.attach_grad();
  NDArray<float> y;
  {
    autograd::record rec;
    y = dropout(x, 0.25, true, gen);
  }
  auto head = randn<float>({5, 8}, 0.0, 1.0, gen);
  y.backward(head);
  auto xv = x.to_vector(), yv = y.to_vector(), hv = head.to_vector(), gv = x.grad().to_vector();
  int bad = 0;
  for (size_t i = 0; i < xv.size(); ++i) {
    bool kept = yv[i] != 0.0f;
    float expect = kept ? hv[i] / 0.75f : 0.0f;
    bad += std::abs(gv[i] - expect) > 1e-6f;
  }
  CHECK(bad == 0);
}

TEST_CASE("gradcheck: dropout") {
  using V = std::vector<NDArray<double>>;
  // A fresh generator with the same seed on every call: gradcheck re-runs the function for each
  // finite difference and needs the same mask every time.
  std::vector<dl::testing::GradcheckCase> cases = {
      {"dropout p=0.3", [] { return V{randn<double>({4, 5})}; },
       [](V& x) { Generator g(77); return dropout(x[0], 0.3, true, g); }},
      {"dropout of expression", [] { return V{randn<double>({3, 4})}; },
       [](V& x) { Generator g(78); return NDArray<double>(dropout(tanh(x[0]), 0.5, true, g) * 2.0); }},
      {"dropout non-contiguous", [] { return V{dl::testing::non_contiguous(randn<double>({3, 4}))}; },
       [](V& x) { Generator g(79); return dropout(x[0], 0.6, true, g); }},
  };
  dl::testing::run_gradcheck_table(cases);
}
