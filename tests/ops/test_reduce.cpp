// Tests for ops/reduce.hpp: every reduction against a naive reference loop over random shapes
// (rank 1-4), axis sets, keepdims and non-contiguous inputs; integer arrays; ties, NaN, empty
// inputs, error messages; the long-reduction (per-thread partials) path; gradchecks.
#include "dl/ops/reduce.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "support/op_table.hpp"

using namespace dl;
using dl::testing::GradcheckCase;
using V = std::vector<NDArray<double>>;

namespace {

// For every output element (row-major over the kept axes), the input values it reduces, in
// row-major order of the reduced axes.
std::vector<std::vector<double>> groups(const NDArray<double>& x, const std::vector<bool>& mask) {
  const Shape& s = x.shape();
  int64_t outputs = 1;
  for (int d = 0; d < s.rank(); ++d)
    if (!mask[static_cast<size_t>(d)]) outputs *= s[d];
  std::vector<std::vector<double>> out(static_cast<size_t>(outputs));
  auto v = x.to_vector();
  std::vector<int64_t> idx(static_cast<size_t>(s.rank()), 0);
  for (size_t i = 0; i < v.size(); ++i) {
    int64_t o = 0;
    for (int d = 0; d < s.rank(); ++d)
      if (!mask[static_cast<size_t>(d)]) o = o * s[d] + idx[static_cast<size_t>(d)];
    out[static_cast<size_t>(o)].push_back(v[i]);
    for (int d = s.rank() - 1; d >= 0; --d) {
      if (++idx[static_cast<size_t>(d)] < s[d]) break;
      idx[static_cast<size_t>(d)] = 0;
    }
  }
  return out;
}

Shape reduced_shape(const Shape& s, const std::vector<bool>& mask, bool keepdims) {
  std::vector<int64_t> d;
  for (int i = 0; i < s.rank(); ++i) {
    if (!mask[static_cast<size_t>(i)]) d.push_back(s[i]);
    else if (keepdims) d.push_back(1);
  }
  return Shape(d);
}

double ref_sum(const std::vector<double>& g) { double s = 0; for (double v : g) s += v; return s; }
double ref_mean(const std::vector<double>& g) { return ref_sum(g) / static_cast<double>(g.size()); }
double ref_max(const std::vector<double>& g) { return *std::max_element(g.begin(), g.end()); }
double ref_min(const std::vector<double>& g) { return *std::min_element(g.begin(), g.end()); }
double ref_prod(const std::vector<double>& g) { double p = 1; for (double v : g) p *= v; return p; }
double ref_var(const std::vector<double>& g, int ddof) {
  double m = ref_mean(g), s = 0;
  for (double v : g) s += (v - m) * (v - m);
  return s / static_cast<double>(static_cast<int64_t>(g.size()) - ddof);
}
double ref_lse(const std::vector<double>& g) {
  double m = ref_max(g), s = 0;
  for (double v : g) s += std::exp(v - m);
  return m + std::log(s);
}
int64_t ref_argmax(const std::vector<double>& g) { return std::max_element(g.begin(), g.end()) - g.begin(); }
int64_t ref_argmin(const std::vector<double>& g) { return std::min_element(g.begin(), g.end()) - g.begin(); }

void check_close(const NDArray<double>& got, const std::vector<double>& want, double tol = 1e-10) {
  auto v = got.to_vector();
  REQUIRE(v.size() == want.size());
  for (size_t i = 0; i < v.size(); ++i) {
    INFO("element ", i, ": got ", v[i], " want ", want[i]);
    CHECK(std::abs(v[i] - want[i]) <= tol * (1 + std::abs(want[i])));
  }
}

struct RandomCase {
  NDArray<double> x;
  std::vector<int> axes;  // as passed (may be negative)
  std::vector<bool> mask;
  bool keepdims;
};

RandomCase random_case(std::mt19937& rng, bool positive) {
  int rank = std::uniform_int_distribution<int>(1, 4)(rng);
  std::vector<int64_t> dims;
  for (int i = 0; i < rank; ++i) dims.push_back(std::uniform_int_distribution<int64_t>(1, 5)(rng));
  RandomCase c;
  c.x = positive ? rand<double>(Shape(dims), 0.5, 1.5) : randn<double>(Shape(dims));
  // Every other case reads a transposed (non-contiguous) view.
  if (rng() % 2) c.x = c.x.transpose();
  c.mask.assign(static_cast<size_t>(rank), false);
  for (int d = 0; d < rank; ++d) {
    if (rng() % 2) {
      c.mask[static_cast<size_t>(d)] = true;
      c.axes.push_back(rng() % 2 ? d : d - rank);
    }
  }
  std::shuffle(c.axes.begin(), c.axes.end(), rng);
  c.keepdims = rng() % 2;
  return c;
}

}  // namespace

TEST_CASE("reductions match reference loops over random shapes and axis sets") {
  std::mt19937 rng(7);
  manual_seed(7);
  for (int iter = 0; iter < 60; ++iter) {
    RandomCase c = random_case(rng, false);
    CAPTURE(c.x.shape());
    CAPTURE(c.keepdims);
    auto g = groups(c.x, c.mask);
    Shape want_shape = reduced_shape(c.x.shape(), c.mask, c.keepdims);
    auto expect = [&](const NDArray<double>& got, double (*f)(const std::vector<double>&)) {
      CHECK(got.shape() == want_shape);
      std::vector<double> want;
      for (const auto& grp : g) want.push_back(f(grp));
      check_close(got, want);
    };
    expect(sum(c.x, c.axes, c.keepdims), ref_sum);
    bool any_empty = c.x.numel() == 0;
    if (!any_empty) {
      expect(mean(c.x, c.axes, c.keepdims), ref_mean);
      expect(max(c.x, c.axes, c.keepdims), ref_max);
      expect(min(c.x, c.axes, c.keepdims), ref_min);
      expect(logsumexp(c.x, c.axes, c.keepdims), ref_lse);
      expect(var(c.x, c.axes, c.keepdims), [](const std::vector<double>& v) { return ref_var(v, 0); });
      if (g[0].size() > 1)
        expect(var(c.x, c.axes, c.keepdims, 1), [](const std::vector<double>& v) { return ref_var(v, 1); });
    }
  }
  for (int iter = 0; iter < 20; ++iter) {
    RandomCase c = random_case(rng, true);
    auto g = groups(c.x, c.mask);
    std::vector<double> want;
    for (const auto& grp : g) want.push_back(ref_prod(grp));
    NDArray<double> got = prod(c.x, c.axes, c.keepdims);
    CHECK(got.shape() == reduced_shape(c.x.shape(), c.mask, c.keepdims));
    check_close(got, want);
  }
}

TEST_CASE("single-axis reductions and argmax/argmin match reference loops") {
  std::mt19937 rng(11);
  manual_seed(11);
  for (int iter = 0; iter < 40; ++iter) {
    RandomCase c = random_case(rng, false);
    int rank = c.x.rank();
    int axis = static_cast<int>(rng() % static_cast<unsigned>(rank));
    int passed = rng() % 2 ? axis : axis - rank;
    std::vector<bool> mask(static_cast<size_t>(rank), false);
    mask[static_cast<size_t>(axis)] = true;
    auto g = groups(c.x, mask);
    CAPTURE(c.x.shape());
    CAPTURE(passed);
    std::vector<double> want_sum, want_max;
    std::vector<int64_t> want_argmax, want_argmin;
    for (const auto& grp : g) {
      want_sum.push_back(ref_sum(grp));
      want_max.push_back(ref_max(grp));
      want_argmax.push_back(ref_argmax(grp));
      want_argmin.push_back(ref_argmin(grp));
    }
    check_close(sum(c.x, passed, c.keepdims), want_sum);
    check_close(max(c.x, passed, c.keepdims), want_max);
    NDArray<int64_t> am = argmax(c.x, passed, c.keepdims), an = argmin(c.x, passed, c.keepdims);
    CHECK(am.shape() == reduced_shape(c.x.shape(), mask, c.keepdims));
    CHECK(am.to_vector() == want_argmax);
    CHECK(an.to_vector() == want_argmin);
  }
}

TEST_CASE("full reductions give 0-d results; argmax gives the flat index") {
  auto x = tensor<double>({{1, -2, 3}, {7, 0.5, -9}});
  CHECK(sum(x).shape() == Shape{});
  CHECK(sum(x).item() == doctest::Approx(0.5));
  CHECK(mean(x).item() == doctest::Approx(0.5 / 6));
  CHECK(max(x).item() == 7);
  CHECK(min(x).item() == -9);
  CHECK(prod(x).item() == doctest::Approx(1 * -2 * 3 * 7 * 0.5 * -9));
  NDArray<int64_t> am = argmax(x), an = argmin(x);
  CHECK(am.shape() == Shape{});
  CHECK(am.item() == 3);
  CHECK(an.item() == 5);
  // On a transposed view the flat index follows the view's logical (row-major) order.
  CHECK(argmax(x.transpose()).item() == 1);
  CHECK(argmin(x.transpose()).item() == 5);
  // An expression is evaluated first.
  CHECK(sum(x * 2.0).item() == doctest::Approx(1.0));
  // A 0-d input reduces to itself.
  NDArray<double> s = sum(x);
  CHECK(sum(s).item() == doctest::Approx(0.5));
  CHECK(max(s).item() == doctest::Approx(0.5));
}

TEST_CASE("keepdims shapes, braced axis lists and the empty axis set") {
  auto x = randn<double>({2, 3, 4});
  CHECK(sum(x, 1).shape() == Shape{2, 4});
  CHECK(sum(x, 1, true).shape() == Shape{2, 1, 4});
  CHECK(sum(x, {0, 2}).shape() == Shape{3});
  CHECK(sum(x, {0, -1}, true).shape() == Shape{1, 3, 1});
  CHECK(max(x, {2, 0, 1}, true).shape() == Shape{1, 1, 1});
  CHECK(var(x, {0, 1, 2}, false, 1).shape() == Shape{});
  CHECK(argmax(x, -1, true).shape() == Shape{2, 3, 1});
  // {} reduces nothing (NumPy's axis=()): the same values back.
  NDArray<double> same = sum(x, {});
  CHECK(same.shape() == x.shape());
  CHECK(allclose(same, x));
  CHECK(allclose(sum(x, {0}), sum(x, 0)));
}

TEST_CASE("integer reductions keep the element type") {
  auto x = from_vector<int64_t>({3, -1, 4, 1, -5, 9, 2, 6}, Shape{2, 4});
  NDArray<int64_t> s = sum(x);
  CHECK(s.item() == 19);
  CHECK(sum(x, 0).to_vector() == std::vector<int64_t>{-2, 8, 6, 7});
  CHECK(max(x, 1).to_vector() == std::vector<int64_t>{4, 9});
  CHECK(min(x).item() == -5);
  CHECK(prod(x, 1).to_vector() == std::vector<int64_t>{-12, -540});
  CHECK(argmax(x).item() == 5);
  CHECK(argmin(x, 1).to_vector() == std::vector<int64_t>{1, 0});
  auto y = from_vector<int32_t>({5, 5, 2}, Shape{3});
  CHECK(argmax(y).item() == 0);  // tie: the first
  CHECK(sum(y).item() == 12);
}

TEST_CASE("ties: argmax/argmin and the max/min gradient pick the first extremum") {
  auto x = tensor<double>({{2, 5, 5}, {1, 1, 0}});
  CHECK(argmax(x, 1).to_vector() == std::vector<int64_t>{1, 0});
  CHECK(argmin(x, 1).to_vector() == std::vector<int64_t>{0, 2});
  x.attach_grad();
  {
    autograd::record rec;
    NDArray<double> m = max(x, 1);
    m.backward(tensor<double>({10, 20}));
  }
  CHECK(x.grad().to_vector() == std::vector<double>{0, 10, 0, 20, 0, 0});
  {
    autograd::record rec;
    NDArray<double> m = min(x);
    m.backward();
  }
  CHECK(x.grad().to_vector() == std::vector<double>{0, 0, 0, 0, 0, 1});
}

TEST_CASE("NaN propagates through max/min and argmax points at it") {
  double nan = std::numeric_limits<double>::quiet_NaN();
  auto x = tensor<double>({{1, nan, 3}, {4, 5, 6}});
  auto m = max(x, 1).to_vector();
  CHECK(std::isnan(m[0]));
  CHECK(m[1] == 6);
  CHECK(std::isnan(min(x).item()));
  CHECK(argmax(x, 1).to_vector() == std::vector<int64_t>{1, 2});
  CHECK(argmin(x).item() == 1);
}

TEST_CASE("prod gradient with zeros") {
  auto x = tensor<double>({{2, 0, 3}, {0, 4, 0}, {1, 2, 5}});
  x.attach_grad();
  {
    autograd::record rec;
    NDArray<double> p = prod(x, 1);
    CHECK(p.to_vector() == std::vector<double>{0, 0, 10});
    p.backward(tensor<double>({1, 1, 1}));
  }
  // one zero: only the zero gets the product of the others; two zeros: nothing.
  CHECK(x.grad().to_vector() == std::vector<double>{0, 6, 0, 0, 0, 0, 10, 5, 2});
}

TEST_CASE("logsumexp is stable and handles infinities and empty reductions") {
  auto big = tensor<double>({1000, 1000});
  CHECK(logsumexp(big).item() == doctest::Approx(1000 + std::log(2.0)));
  auto small = tensor<double>({-1000, -1000});
  CHECK(logsumexp(small).item() == doctest::Approx(-1000 + std::log(2.0)));
  double inf = std::numeric_limits<double>::infinity();
  CHECK(logsumexp(tensor<double>({-inf, -inf})).item() == -inf);
  CHECK(logsumexp(tensor<double>({1, inf})).item() == inf);
  CHECK(logsumexp(tensor<double>({-inf, 0})).item() == doctest::Approx(0.0));
  CHECK(logsumexp(zeros<double>({0})).item() == -inf);
  // float keeps precision without overflow too
  auto f = from_vector<float>({88.0f, 89.0f, 90.0f}, Shape{3});
  CHECK(std::isfinite(logsumexp(f).item()));
  CHECK(logsumexp(f).item() == doctest::Approx(90.0 + std::log(1 + std::exp(-1.0) + std::exp(-2.0))));
}

TEST_CASE("empty inputs: sum is 0, mean/max/argmax raise") {
  auto e = zeros<double>({3, 0});
  CHECK(sum(e).item() == 0);
  NDArray<double> rows = sum(e, 1);
  CHECK(rows.shape() == Shape{3});
  CHECK(rows.to_vector() == std::vector<double>{0, 0, 0});
  CHECK(sum(e, 0).shape() == Shape{0});
  CHECK(prod(e, 1).to_vector() == std::vector<double>{1, 1, 1});
  // Reducing a non-empty axis of an empty array is fine: the result is empty.
  CHECK(max(e, 0).shape() == Shape{0});
  CHECK_THROWS_WITH_AS(mean(e), doctest::Contains("mean: cannot reduce over zero elements"), dl::ValueError);
  CHECK_THROWS_WITH_AS(max(e, 1), doctest::Contains("max: cannot reduce over zero elements"), dl::ValueError);
  CHECK_THROWS_WITH_AS(min(e), doctest::Contains("min: cannot reduce over zero elements"), dl::ValueError);
  CHECK_THROWS_WITH_AS(argmax(e), doctest::Contains("argmax: cannot reduce over zero elements"), dl::ValueError);
  CHECK_THROWS_WITH_AS(argmin(e, 1), doctest::Contains("argmin: cannot reduce"), dl::ValueError);
  CHECK_THROWS_WITH_AS(var(e, 1), doctest::Contains("var: cannot reduce"), dl::ValueError);
  auto ei = zeros<int64_t>({0});
  CHECK(sum(ei).item() == 0);
}

TEST_CASE("bad axes and arguments raise ValueError naming the op") {
  auto x = randn<double>({2, 3});
  CHECK_THROWS_WITH_AS(sum(x, 2), doctest::Contains("sum: axis 2 is out of range for rank 2"), dl::ValueError);
  CHECK_THROWS_WITH_AS(mean(x, -3), doctest::Contains("mean: axis -3 is out of range"), dl::ValueError);
  CHECK_THROWS_WITH_AS(max(x, {0, 0}), doctest::Contains("max: axis 0 is repeated"), dl::ValueError);
  CHECK_THROWS_WITH_AS(min(x, {1, -1}), doctest::Contains("min: axis -1 is repeated"), dl::ValueError);
  CHECK_THROWS_WITH_AS(prod(x, {0, 5}), doctest::Contains("prod: axis 5 is out of range"), dl::ValueError);
  CHECK_THROWS_WITH_AS(logsumexp(x, 7), doctest::Contains("logsumexp: axis 7"), dl::ValueError);
  CHECK_THROWS_WITH_AS(argmax(x, 2), doctest::Contains("argmax: axis 2 is out of range"), dl::ValueError);
  CHECK_THROWS_WITH_AS(var(x, {1}, false, -1), doctest::Contains("var: ddof must be non-negative"), dl::ValueError);
  CHECK_THROWS_WITH_AS(var(x, 0, false, 2), doctest::Contains("var: ddof 2 leaves no degrees of freedom"), dl::ValueError);
  NDArray<double> s = sum(x);
  CHECK_THROWS_WITH_AS(sum(s, 0), doctest::Contains("sum: axis 0 is out of range for rank 0"), dl::ValueError);
  CHECK_THROWS_WITH_AS(sum(NDArray<double>()), doctest::Contains("sum: the array is undefined"), dl::ValueError);
}

TEST_CASE("long reductions split into per-thread partials stay exact and deterministic") {
  int saved = num_threads();
  const int64_t n = 300000;  // above the kernel's 4 * 32768 split threshold
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = static_cast<double>(i % 7) - 3.0;
  v[10] = 50;
  v[200000] = 50;  // a tie in a later chunk: the first must win
  v[150000] = -80;
  v[290000] = -80;
  auto x = from_vector(v);
  for (int threads : {1, 2, 3, 4}) {
    set_num_threads(threads);
    CAPTURE(threads);
    double want = 0;
    for (double a : v) want += a;
    double s1 = sum(x).item(), s2 = sum(x).item();
    CHECK(s1 == s2);
    CHECK(s1 == doctest::Approx(want).epsilon(1e-12));
    CHECK(max(x).item() == 50);
    CHECK(argmax(x).item() == 10);
    CHECK(argmin(x).item() == 150000);
    CHECK(mean(x).item() == doctest::Approx(want / n));
    CHECK(logsumexp(x).item() == doctest::Approx(50 + std::log(2.0)));
    // a (2, n/2) reshape reduced over the long axis: fewer outputs than threads for 3 and 4
    auto y = x.reshape({2, n / 2});
    CHECK(argmax(y, 1).to_vector() == std::vector<int64_t>{10, 200000 - n / 2});
  }
  set_num_threads(saved);
}

TEST_CASE("float reductions") {
  auto x = rand<float>({5, 7}, -1.0, 1.0);
  NDArray<float> s = sum(x, 1);
  auto xv = x.to_vector();
  for (int i = 0; i < 5; ++i) {
    double want = 0;
    for (int j = 0; j < 7; ++j) want += xv[static_cast<size_t>(i * 7 + j)];
    CHECK(s.at({i}) == doctest::Approx(want).epsilon(1e-5));
  }
  CHECK(var(x).item() >= 0.0f);
  CHECK(mean(x, {0, 1}).item() == doctest::Approx(sum(x).item() / 35).epsilon(1e-5));
}

TEST_CASE("gradcheck: reduction op table") {
  auto nc = [](Shape s) { return V{dl::testing::non_contiguous(randn<double>(s))}; };
  std::vector<GradcheckCase> cases = {
      {"sum all", [] { return V{randn<double>({3, 4})}; }, [](V& x) { return sum(x[0]); }},
      {"sum axis keepdims", [] { return V{randn<double>({3, 4, 2})}; }, [](V& x) { return sum(x[0], 1, true); }},
      {"sum axes non-contiguous", [nc] { return nc({3, 4, 2}); }, [](V& x) { return sum(x[0], {0, -1}); }},
      {"sum of broadcast expression", [] { return V{randn<double>({3, 4}), randn<double>({4})}; },
       [](V& x) { return sum(x[0] * x[1], 0); }},
      {"sum transposed", [] { return V{randn<double>({3, 4})}; }, [](V& x) { return sum(x[0].transpose(), 1); }},
      {"mean all", [] { return V{randn<double>({3, 4})}; }, [](V& x) { return mean(x[0]); }},
      {"mean axes keepdims", [nc] { return nc({2, 3, 4}); }, [](V& x) { return mean(x[0], {0, 2}, true); }},
      {"max axis", [] { return V{randn<double>({4, 5})}; }, [](V& x) { return max(x[0], 1); }},
      {"max all non-contiguous", [nc] { return nc({3, 4}); }, [](V& x) { return max(x[0]); }},
      {"max axes keepdims", [] { return V{randn<double>({2, 3, 4})}; }, [](V& x) { return max(x[0], {0, 2}, true); }},
      {"min axis", [nc] { return nc({4, 5}); }, [](V& x) { return min(x[0], 0); }},
      {"min transposed", [] { return V{randn<double>({3, 4})}; }, [](V& x) { return min(x[0].transpose(), -1, true); }},
      {"prod axis", [] { return V{rand<double>({3, 4}, 0.5, 1.5)}; }, [](V& x) { return prod(x[0], 1); }},
      {"prod all non-contiguous", [] { return V{dl::testing::non_contiguous(rand<double>({3, 3}, -1.5, 1.5))}; },
       [](V& x) { return prod(x[0]); }},
      {"prod with one zero",
       [] { return V{tensor<double>({{1.5, 0.0, -2.0}, {0.5, 2.0, 3.0}})}; }, [](V& x) { return prod(x[0], 1); }},
      {"prod with two zeros", [] { return V{tensor<double>({{0.0, 0.0, -2.0, 1.5}})}; }, [](V& x) { return prod(x[0], 1); }},
      {"var all", [] { return V{randn<double>({3, 4})}; }, [](V& x) { return var(x[0]); }},
      {"var axis ddof 1", [nc] { return nc({4, 3}); }, [](V& x) { return var(x[0], 0, false, 1); }},
      {"var axes keepdims", [] { return V{randn<double>({2, 3, 4})}; }, [](V& x) { return var(x[0], {1, 2}, true); }},
      {"logsumexp all", [] { return V{randn<double>({3, 4})}; }, [](V& x) { return logsumexp(x[0]); }},
      {"logsumexp axis", [nc] { return nc({3, 5}); }, [](V& x) { return logsumexp(x[0], -1); }},
      {"logsumexp large values", [] { return V{randn<double>({2, 3}, 500.0, 3.0)}; },
       [](V& x) { return logsumexp(x[0], {0}, true); }},
      {"chain of reductions", [] { return V{randn<double>({3, 4})}; },
       [](V& x) { return NDArray<double>(sum(x[0], 1) * max(x[0], 1) + mean(x[0], 1)); }},
  };
  dl::testing::run_gradcheck_table(cases);
}
