// nn::init: fan computation (2-D and conv weights), bounds and spread of each initialiser,
// reproducibility for a seed, in-place filling of views, and argument errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "dl/autograd/engine.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/nn/init.hpp"

using namespace dl;
namespace init = dl::nn::init;

namespace {
struct Moments {
  double mean = 0, stddev = 0, max_abs = 0;
};
Moments moments(const NDArray<float>& a) {
  auto v = a.to_vector();
  Moments m;
  for (float x : v) m.mean += x;
  m.mean /= static_cast<double>(v.size());
  for (float x : v) {
    m.stddev += (x - m.mean) * (x - m.mean);
    m.max_abs = std::max(m.max_abs, static_cast<double>(std::abs(x)));
  }
  m.stddev = std::sqrt(m.stddev / static_cast<double>(v.size()));
  return m;
}
}  // namespace

TEST_CASE("init: fan in and fan out") {
  CHECK(init::fan_in_and_fan_out(Shape{3, 5}) == std::pair<int64_t, int64_t>{5, 3});
  CHECK(init::fan_in_and_fan_out(Shape{8, 4, 3, 3}) == std::pair<int64_t, int64_t>{36, 72});
  CHECK(init::fan_in_and_fan_out(Shape{6, 2, 5}) == std::pair<int64_t, int64_t>{10, 30});
  CHECK_THROWS_WITH_AS(init::fan_in_and_fan_out(Shape{7}, "xavier_uniform"),
                       doctest::Contains("xavier_uniform: fan in and fan out need a weight of rank >= 2, got shape (7,)"),
                       ShapeError);
  NDArray<float> v(Shape{7});
  CHECK_THROWS_WITH_AS(init::kaiming_normal(v), doctest::Contains("kaiming_normal: fan in and fan out"), ShapeError);
  NDArray<float> empty(Shape{0, 4});
  CHECK_THROWS_WITH_AS(init::kaiming_uniform(empty, 0.0, init::FanMode::fan_out),
                       doctest::Contains("kaiming_uniform: fan is zero"), ShapeError);
}

TEST_CASE("init: bounds and spread match the formulas") {
  const int64_t out = 256, in = 384;
  NDArray<float> w(Shape{out, in});
  Generator gen(1);
  const double n = static_cast<double>(out * in);
  const double tol = 4.0 / std::sqrt(2.0 * n);  // relative error of a standard deviation estimate, ~4 sigma

  SUBCASE("xavier_uniform") {
    init::xavier_uniform(w, 2.0, gen);
    double bound = 2.0 * std::sqrt(6.0 / (in + out));
    auto m = moments(w);
    CHECK(m.max_abs <= bound);
    CHECK(m.max_abs > 0.99 * bound);
    CHECK(std::abs(m.stddev / (bound / std::sqrt(3.0)) - 1) < tol);
  }
  SUBCASE("xavier_normal") {
    init::xavier_normal(w, 1.0, gen);
    auto m = moments(w);
    CHECK(std::abs(m.stddev / std::sqrt(2.0 / (in + out)) - 1) < tol);
    CHECK(std::abs(m.mean) < 4 * m.stddev / std::sqrt(n));
  }
  SUBCASE("kaiming_uniform, relu and leaky relu") {
    init::kaiming_uniform(w, 0.0, init::FanMode::fan_in, gen);
    double bound = std::sqrt(3.0) * std::sqrt(2.0) / std::sqrt(static_cast<double>(in));
    CHECK(moments(w).max_abs <= bound);
    CHECK(moments(w).max_abs > 0.99 * bound);
    init::kaiming_uniform(w, std::sqrt(5.0), init::FanMode::fan_in, gen);  // PyTorch Linear: 1/sqrt(fan_in)
    CHECK(moments(w).max_abs <= 1.0 / std::sqrt(static_cast<double>(in)));
    CHECK(moments(w).max_abs > 0.99 / std::sqrt(static_cast<double>(in)));
  }
  SUBCASE("kaiming_normal fan_in and fan_out") {
    init::kaiming_normal(w, 0.0, init::FanMode::fan_in, gen);
    CHECK(std::abs(moments(w).stddev / std::sqrt(2.0 / in) - 1) < tol);
    init::kaiming_normal(w, 0.0, init::FanMode::fan_out, gen);
    CHECK(std::abs(moments(w).stddev / std::sqrt(2.0 / out) - 1) < tol);
  }
  SUBCASE("conv weight uses the receptive field") {
    NDArray<float> c(Shape{64, 32, 5, 5});
    init::kaiming_normal(c, 0.0, init::FanMode::fan_in, gen);
    double nc = static_cast<double>(c.numel());
    CHECK(std::abs(moments(c).stddev / std::sqrt(2.0 / (32 * 25)) - 1) < 4.0 / std::sqrt(2.0 * nc));
  }
  SUBCASE("uniform, normal, constant, zeros") {
    init::uniform(w, -0.5, 1.5, gen);
    auto m = moments(w);
    CHECK(std::abs(m.mean - 0.5) < 0.01);
    auto v = w.to_vector();
    CHECK(*std::min_element(v.begin(), v.end()) >= -0.5f);
    CHECK(*std::max_element(v.begin(), v.end()) < 1.5f);
    init::normal(w, 3.0, 0.25, gen);
    m = moments(w);
    CHECK(std::abs(m.mean - 3.0) < 0.01);
    CHECK(std::abs(m.stddev / 0.25 - 1) < tol);
    init::constant(w, 1.25);
    auto c = w.to_vector();
    CHECK(std::count(c.begin(), c.end(), 1.25f) == static_cast<long>(c.size()));
    init::zeros(w);
    auto z = w.to_vector();
    CHECK(std::count(z.begin(), z.end(), 0.0f) == static_cast<long>(z.size()));
  }
}

TEST_CASE("init: the same seed gives the same weights, another seed different ones") {
  NDArray<float> a(Shape{16, 9}), b(Shape{16, 9}), c(Shape{16, 9});
  Generator g1(42), g2(42), g3(43);
  init::kaiming_uniform(a, 0.0, init::FanMode::fan_in, g1);
  init::kaiming_uniform(b, 0.0, init::FanMode::fan_in, g2);
  init::kaiming_uniform(c, 0.0, init::FanMode::fan_in, g3);
  CHECK(a.to_vector() == b.to_vector());
  CHECK(a.to_vector() != c.to_vector());
  // The global generator after manual_seed, too.
  manual_seed(5);
  init::xavier_normal(a);
  manual_seed(5);
  init::xavier_normal(b);
  CHECK(a.to_vector() == b.to_vector());
  // Thread count does not matter.
  int saved = num_threads();
  NDArray<double> big1(Shape{300, 300}), big2(Shape{300, 300});
  set_num_threads(1);
  Generator g4(9), g5(9);
  init::normal(big1, 0.0, 1.0, g4);
  set_num_threads(2);
  init::normal(big2, 0.0, 1.0, g5);
  set_num_threads(saved);
  CHECK(big1.to_vector() == big2.to_vector());
}

TEST_CASE("init: fills views in place and parameters while recording") {
  auto a = zeros<float>({4, 6});
  float* data = a.data();
  NDArray<float> t = a.transpose();
  init::constant(t, 2.0);
  CHECK(a.data() == data);
  for (float x : a.to_vector()) CHECK(x == 2.0f);
  NDArray<float> rows = a.slice(0, 0, 4, 2);  // rows 0 and 2
  init::zeros(rows);
  CHECK(a.at({0, 3}) == 0.0f);
  CHECK(a.at({1, 3}) == 2.0f);
  CHECK(a.at({2, 0}) == 0.0f);

  auto w = zeros<float>({3, 3});
  w.attach_grad();
  autograd::record rec;
  Generator gen(3);
  init::xavier_uniform(w, 1.0, gen);
  CHECK(moments(w).max_abs > 0);
  CHECK(w.is_leaf());
}

TEST_CASE("init: argument errors") {
  NDArray<float> w(Shape{2, 2});
  CHECK_THROWS_WITH_AS(init::uniform(w, 1.0, 0.0), doctest::Contains("uniform: low 1 is above high 0"), ValueError);
  CHECK_THROWS_WITH_AS(init::normal(w, 0.0, -1.0), doctest::Contains("normal: stddev must be non-negative"), ValueError);
  NDArray<float> undefined;
  CHECK_THROWS_WITH_AS(init::zeros(undefined), doctest::Contains("constant: the array is undefined"), ValueError);
}
