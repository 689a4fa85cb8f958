// dropout2d: whole channels are dropped or scaled by 1/(1-p), the mask is Philox draw n*C + c of
// the reserved state (reproducible from the generator state), eval is the identity, gradients use
// the same mask (gradcheck with a fixed generator), and errors.
#include <cmath>
#include <vector>

#include "dl/ops/dropout2d.hpp"
#include "support/op_table.hpp"

using namespace dl;
using dl::testing::GradcheckCase;
using V = std::vector<NDArray<double>>;

TEST_CASE("dropout2d zeroes or scales whole channels by the Philox mask") {
  Generator gen(77);
  auto x = rand<double>({6, 5, 3, 4}, 1.0, 2.0, gen);  // no zeros, so a zero means dropped
  PhiloxState state = gen.state();
  double p = 0.4;
  auto y = dropout2d(x, p, true, gen);
  CHECK(gen.state().offset == state.offset + (30 + 3) / 4);  // N*C numbers reserved
  auto xv = x.to_vector(), yv = y.to_vector();
  for (int64_t plane = 0; plane < 30; ++plane) {
    bool keep = philox_uniform(state, static_cast<uint64_t>(plane)) >= p;
    for (int64_t i = 0; i < 12; ++i) {
      auto k = static_cast<size_t>(plane * 12 + i);
      CHECK(yv[k] == doctest::Approx(keep ? xv[k] / (1 - p) : 0.0).epsilon(1e-12));
    }
  }
  // The same state replays the same mask; the next draw differs.
  Generator replay;
  replay.set_state(state);
  CHECK(dropout2d(x, p, true, replay).to_vector() == yv);
  CHECK(dropout2d(x, p, true, gen).to_vector() != yv);
}

TEST_CASE("dropout2d keeps about 1 - p of the channels and preserves the mean") {
  Generator gen(5);
  auto x = ones<float>({200, 50, 1, 2});
  auto v = dropout2d(x, 0.3, true, gen).to_vector();
  double kept = 0, sum = 0;
  for (size_t i = 0; i < v.size(); i += 2) {
    CHECK(v[i] == v[i + 1]);  // one decision per channel
    kept += v[i] != 0;
    sum += v[i];
  }
  CHECK(kept / 10000 == doctest::Approx(0.7).epsilon(0.03));
  CHECK(sum / 10000 == doctest::Approx(1.0).epsilon(0.05));
}

TEST_CASE("dropout2d eval mode, p = 0 and p = 1") {
  Generator gen(1);
  auto x = randn<float>({2, 3, 2, 2});
  CHECK(dropout2d(x, 0.5, false, gen).to_vector() == x.to_vector());
  CHECK(dropout2d(x, 0.0, true, gen).to_vector() == x.to_vector());
  CHECK(gen.state().offset == 0);  // no draw when nothing is dropped
  for (float v : dropout2d(x, 1.0, true, gen).to_vector()) CHECK(v == 0.0f);
}

TEST_CASE("dropout2d gradients: op table") {
  std::vector<GradcheckCase> cases = {
      {"p 0.5 fixed generator", [] { return V{randn<double>({3, 4, 2, 2})}; },
       [](V& x) { Generator g(123); return dropout2d(x[0], 0.5, true, g); }},
      {"non-contiguous 3-D", [] { return V{dl::testing::non_contiguous(randn<double>({4, 3, 5}))}; },
       [](V& x) { Generator g(9); return dropout2d(x[0], 0.3, true, g); }},
      {"eval", [] { return V{randn<double>({2, 2, 2})}; }, [](V& x) { Generator g(1); return dropout2d(x[0] * 2.0, 0.3, false, g); }},
  };
  dl::testing::run_gradcheck_table(cases);
}

TEST_CASE("dropout2d errors") {
  Generator gen(1);
  auto x = zeros<float>({2, 3, 2, 2});
  CHECK_THROWS_WITH_AS(dropout2d(x, -0.1, true, gen), doctest::Contains("dropout2d: probability p must be in [0, 1], got -0.1"), dl::ValueError);
  CHECK_THROWS_WITH_AS(dropout2d(x, 1.5, true, gen), doctest::Contains("dropout2d: probability p must be in [0, 1], got 1.5"), dl::ValueError);
  CHECK_THROWS_WITH_AS(dropout2d(x, NAN, true, gen), doctest::Contains("dropout2d: probability p must be in [0, 1]"), dl::ValueError);
  CHECK_THROWS_WITH_AS(dropout2d(zeros<float>({2, 3}), 0.5, true, gen), doctest::Contains("dropout2d: expected an input (N, C, ...) of rank >= 3, got (2, 3)"), dl::ShapeError);
}
