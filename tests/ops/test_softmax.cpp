// Tests for ops/softmax.hpp: softmax and log_softmax against a naive reference loop over random
// shapes and axes (float and double), stability for logits of +-1e4, strided and expression
// inputs, edge shapes, errors, and the gradcheck table (including non-contiguous inputs).
#include <cmath>
#include <random>
#include <vector>

#include "dl/ops/softmax.hpp"
#include "support/op_table.hpp"

using namespace dl;
using dl::testing::GradcheckCase;
using V = std::vector<NDArray<double>>;

namespace {

// Naive reference in double: softmax (or log_softmax) of `x` (contiguous values of `shape`) along `axis`.
std::vector<double> reference(const std::vector<double>& x, const Shape& shape, int axis, bool log) {
  int64_t outer = 1, cols = shape.rank() ? shape[axis] : 1, inner = 1;
  for (int d = 0; d < axis; ++d) outer *= shape[d];
  for (int d = axis + 1; d < shape.rank(); ++d) inner *= shape[d];
  std::vector<double> y(x.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t c) { return static_cast<size_t>((o * cols + c) * inner + i); };
      double m = -INFINITY;
      for (int64_t c = 0; c < cols; ++c) m = std::max(m, x[at(c)]);
      double s = 0;
      for (int64_t c = 0; c < cols; ++c) s += std::exp(x[at(c)] - m);
      for (int64_t c = 0; c < cols; ++c) y[at(c)] = log ? x[at(c)] - m - std::log(s) : std::exp(x[at(c)] - m) / s;
    }
  return y;
}

template <class T>
std::vector<double> as_double(const NDArray<T>& a) {
  std::vector<double> out;
  for (T v : a.to_vector()) out.push_back(static_cast<double>(v));
  return out;
}

template <class T>
void check_close(const NDArray<T>& got, const std::vector<double>& want, double tol) {
  auto g = as_double(got);
  REQUIRE(g.size() == want.size());
  for (size_t i = 0; i < g.size(); ++i) {
    INFO("element ", i);
    CHECK(g[i] == doctest::Approx(want[i]).epsilon(tol).scale(1.0));
  }
}

}  // namespace

TEST_CASE_TEMPLATE("softmax and log_softmax match the reference over random shapes and axes", T, float, double) {
  std::mt19937 rng(7);
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  for (int trial = 0; trial < 40; ++trial) {
    int rank = 1 + static_cast<int>(rng() % 4);
    std::vector<int64_t> dims;
    for (int d = 0; d < rank; ++d) dims.push_back(1 + static_cast<int64_t>(rng() % 6));
    if (trial % 10 == 0) dims.back() = 70;  // more than one 64-line block on the strided path
    Shape shape(dims);
    int axis = static_cast<int>(rng() % static_cast<unsigned>(rank)) - (trial % 2 ? rank : 0);  // also negative
    Generator gen(static_cast<uint64_t>(trial));
    NDArray<T> x = randn<T>(shape, 0.0, 3.0, gen);
    auto xv = as_double(x);
    int ax = axis < 0 ? axis + rank : axis;
    INFO("shape ", shape, " axis ", axis);
    check_close(softmax(x, axis), reference(xv, shape, ax, false), tol);
    check_close(log_softmax(x, axis), reference(xv, shape, ax, true), tol);
    CHECK(softmax(x, axis).shape() == shape);
  }
}

TEST_CASE("softmax: rows sum to one along the chosen axis") {
  auto x = randn<double>({2, 3, 4});
  auto y = softmax(x, 1);
  for (int64_t o = 0; o < 2; ++o)
    for (int64_t i = 0; i < 4; ++i) {
      double s = 0;
      for (int64_t c = 0; c < 3; ++c) s += y.at({o, c, i});
      CHECK(s == doctest::Approx(1.0).epsilon(1e-14));
    }
}

TEST_CASE_TEMPLATE("softmax is stable for huge logits", T, float, double) {
  // Each row would overflow or underflow a naive exp: +-1e4, all equal and huge, mixed signs.
  NDArray<T> x = tensor<T>({{T(1e4), T(0), T(-1e4)}, {T(1e4), T(1e4), T(1e4)}, {T(-1e4), T(-1e4) + T(1), T(-1e4)},
                            {T(5e3), T(-5e3), T(5e3)}});
  auto y = softmax(x).to_vector();
  auto ly = log_softmax(x).to_vector();
  for (size_t i = 0; i < y.size(); ++i) {
    CHECK(std::isfinite(static_cast<double>(y[i])));
    CHECK(std::isfinite(static_cast<double>(ly[i])));
  }
  CHECK(y[0] == T(1));
  CHECK(y[2] == T(0));
  CHECK(ly[0] == T(0));
  CHECK(ly[1] == doctest::Approx(-1e4));
  CHECK(ly[2] == doctest::Approx(-2e4));
  for (int k = 3; k < 6; ++k) CHECK(static_cast<double>(y[static_cast<size_t>(k)]) == doctest::Approx(1.0 / 3));
  CHECK(static_cast<double>(ly[3]) == doctest::Approx(-std::log(3.0)).epsilon(1e-6));
  double e = std::exp(1.0);
  CHECK(static_cast<double>(y[7]) == doctest::Approx(e / (e + 2)).epsilon(1e-6));
  CHECK(static_cast<double>(ly[7]) == doctest::Approx(1.0 - std::log(e + 2)).epsilon(1e-5));
  CHECK(static_cast<double>(y[9]) == doctest::Approx(0.5));
  CHECK(y[10] == T(0));
  CHECK(static_cast<double>(ly[10]) == doctest::Approx(-1e4 - std::log(2.0)).epsilon(1e-6));
}

TEST_CASE("softmax: strided and expression inputs") {
  auto base = randn<double>({4, 5});
  auto t = base.transpose();  // (5, 4), non-contiguous
  REQUIRE(!t.is_contiguous());
  auto want = softmax(t.clone(), 0).to_vector();
  auto got = softmax(t, 0);
  CHECK(got.is_contiguous());
  CHECK(got.to_vector() == want);
  auto s = base.slice(1, 0, 5, 2);  // columns 0, 2, 4
  CHECK(log_softmax(s).to_vector() == log_softmax(s.clone()).to_vector());
  auto e = softmax(base * 2.0 + 1.0, 1).to_vector();  // an expression is evaluated first
  auto r = reference(NDArray<double>(base * 2.0 + 1.0).to_vector(), base.shape(), 1, false);
  for (size_t i = 0; i < e.size(); ++i) CHECK(e[i] == doctest::Approx(r[i]).epsilon(1e-14));
}

TEST_CASE("softmax: edge shapes") {
  auto scalar = full<double>(Shape{}, 3.5);
  CHECK(softmax(scalar).item() == 1.0);
  CHECK(log_softmax(scalar).item() == 0.0);
  CHECK(softmax(zeros<double>({0, 5})).shape() == Shape{0, 5});
  CHECK(log_softmax(zeros<double>({3, 0}), 1).shape() == Shape{3, 0});
  CHECK(softmax(zeros<float>({4, 1})).to_vector() == std::vector<float>(4, 1.0f));
  // A row of only -inf has no distribution: NaN, as in PyTorch (not a crash, not a silent 0).
  auto ninf = full<double>({1, 3}, -INFINITY);
  for (double v : softmax(ninf).to_vector()) CHECK(std::isnan(v));
}

TEST_CASE("softmax: results do not depend on the thread count") {
  auto x = randn<float>({300, 200});
  int saved = num_threads();
  for (int axis : {0, 1}) {
    set_num_threads(1);
    auto a = softmax(x, axis).to_vector();
    auto la = log_softmax(x, axis).to_vector();
    set_num_threads(2);
    auto b = softmax(x, axis).to_vector();
    auto lb = log_softmax(x, axis).to_vector();
    CHECK(a == b);
    CHECK(la == lb);
    auto want = reference(NDArray<double>(x.cast<double>()).to_vector(), x.shape(), axis, false);
    for (size_t i = 0; i < a.size(); i += 97) CHECK(a[i] == doctest::Approx(want[i]).epsilon(1e-5).scale(1.0));
  }
  set_num_threads(saved);
}

TEST_CASE("softmax: errors") {
  auto x = randn<double>({2, 3});
  CHECK_THROWS_WITH_AS(softmax(x, 2), doctest::Contains("softmax: axis 2 is out of range for rank 2"), dl::ValueError);
  CHECK_THROWS_WITH_AS(log_softmax(x, -3), doctest::Contains("log_softmax: axis -3 is out of range for rank 2"),
                       dl::ValueError);
  CHECK_THROWS_WITH_AS(softmax(NDArray<float>()), doctest::Contains("softmax: the array is undefined"), dl::ValueError);
}

TEST_CASE("softmax: backward matches the closed form") {
  // float, against y * (g - sum(g * y)) and g - exp(ly) * sum(g) computed in double.
  auto x = randn<float>({3, 4});
  auto head = randn<float>({3, 4});
  for (bool log : {false, true}) {
    NDArray<float> xi = x.clone();
    xi.attach_grad();
    NDArray<float> y;
    {
      autograd::record rec;
      y = log ? log_softmax(xi) : softmax(xi);
    }
    y.backward(head);
    auto yv = y.to_vector(), hv = head.to_vector(), gv = xi.grad().to_vector();
    for (int r = 0; r < 3; ++r) {
      double s = 0;
      for (int c = 0; c < 4; ++c) s += log ? hv[r * 4 + c] : static_cast<double>(hv[r * 4 + c]) * yv[r * 4 + c];
      for (int c = 0; c < 4; ++c) {
        size_t k = static_cast<size_t>(r * 4 + c);
        double want = log ? hv[k] - std::exp(static_cast<double>(yv[k])) * s : yv[k] * (hv[k] - s);
        CHECK(gv[k] == doctest::Approx(want).epsilon(1e-5).scale(1.0));
      }
    }
  }
}

TEST_CASE("gradcheck: softmax op table") {
  auto one = [](Shape s) { return V{randn<double>(s)}; };
  std::vector<GradcheckCase> cases = {
      {"softmax last axis", [=] { return one({3, 5}); }, [](V& x) { return softmax(x[0]); }},
      {"softmax axis 0", [=] { return one({4, 3}); }, [](V& x) { return softmax(x[0], 0); }},
      {"softmax middle axis", [=] { return one({2, 3, 4}); }, [](V& x) { return softmax(x[0], 1); }},
      {"softmax rank 1", [=] { return one({6}); }, [](V& x) { return softmax(x[0]); }},
      {"softmax non-contiguous", [=] { return V{dl::testing::non_contiguous(randn<double>({3, 4}))}; },
       [](V& x) { return softmax(x[0], -1); }},
      {"softmax of transpose", [=] { return one({4, 3}); }, [](V& x) { return softmax(x[0].transpose()); }},
      {"softmax of broadcast expression", [=] { return V{randn<double>({3, 4}), randn<double>({4})}; },
       [](V& x) { return softmax(x[0] + x[1], 0); }},
      {"softmax large logits", [=] { return V{randn<double>({3, 4}, 0.0, 20.0)}; }, [](V& x) { return softmax(x[0]); }},
      {"log_softmax last axis", [=] { return one({3, 5}); }, [](V& x) { return log_softmax(x[0]); }},
      {"log_softmax axis 0", [=] { return one({4, 3}); }, [](V& x) { return log_softmax(x[0], 0); }},
      {"log_softmax middle axis", [=] { return one({2, 3, 4}); }, [](V& x) { return log_softmax(x[0], -2); }},
      {"log_softmax non-contiguous", [=] { return V{dl::testing::non_contiguous(randn<double>({3, 4}))}; },
       [](V& x) { return log_softmax(x[0]); }},
      {"log_softmax sliced", [=] { return one({3, 8}); }, [](V& x) { return log_softmax(x[0].slice(1, 1, 8, 2)); }},
      {"log_softmax then elementwise", [=] { return one({2, 5}); },
       [](V& x) { return NDArray<double>(exp(log_softmax(x[0])) * x[0]); }},
  };
  dl::testing::run_gradcheck_table(cases);
}
