// Tests for ops/loss.hpp: cross_entropy, nll, mse and binary_cross_entropy_with_logits against
// naive reference loops (double) over random shapes, labels and reductions; stability for logits
// of +-1e4; label smoothing against the textbook -sum(q * log p); cross_entropy == nll(log_softmax);
// the closed-form gradient; every error path; and the gradcheck table for every loss.
#include <cmath>
#include <random>
#include <vector>

#include "dl/ops/loss.hpp"
#include "dl/ops/softmax.hpp"
#include "support/op_table.hpp"

using namespace dl;
using dl::testing::GradcheckCase;
using V = std::vector<NDArray<double>>;

namespace {

template <class Label = int64_t>
NDArray<Label> random_labels(const Shape& shape, int64_t classes, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<Label> v(static_cast<size_t>(shape.numel()));
  for (auto& l : v) l = static_cast<Label>(rng() % static_cast<unsigned>(classes));
  return from_vector(v, shape);
}

template <class T>
std::vector<double> as_double(const NDArray<T>& a) {
  std::vector<double> out;
  for (T v : a.to_vector()) out.push_back(static_cast<double>(v));
  return out;
}

// Reference per-row cross entropy for (N, C) logits: -sum_c q_c * log p_c with the smoothed target q.
std::vector<double> reference_ce(const std::vector<double>& x, const std::vector<int64_t>& y, int64_t C, double s) {
  std::vector<double> out;
  for (size_t r = 0; r < y.size(); ++r) {
    const double* row = x.data() + r * static_cast<size_t>(C);
    double m = -INFINITY, sum = 0;
    for (int64_t c = 0; c < C; ++c) m = std::max(m, row[c]);
    for (int64_t c = 0; c < C; ++c) sum += std::exp(row[c] - m);
    double loss = 0;
    for (int64_t c = 0; c < C; ++c) {
      double q = (c == y[r] ? 1.0 - s : 0.0) + s / static_cast<double>(C);
      loss -= q * (row[c] - m - std::log(sum));
    }
    out.push_back(loss);
  }
  return out;
}

double reduce(const std::vector<double>& v, Reduction r) {
  double s = 0;
  for (double x : v) s += x;
  return r == Reduction::mean ? s / static_cast<double>(v.size()) : s;
}

template <class T>
void check_loss(const NDArray<T>& got, const std::vector<double>& per_row, Reduction r, double tol) {
  if (r == Reduction::none) {
    auto g = as_double(got);
    REQUIRE(g.size() == per_row.size());
    for (size_t i = 0; i < g.size(); ++i) CHECK(g[i] == doctest::Approx(per_row[i]).epsilon(tol));
  } else {
    CHECK(got.rank() == 0);
    CHECK(static_cast<double>(got.item()) == doctest::Approx(reduce(per_row, r)).epsilon(tol));
  }
}

template <class T>
std::vector<int64_t> labels_i64(const NDArray<T>& l) {
  std::vector<int64_t> out;
  for (T v : l.to_vector()) out.push_back(static_cast<int64_t>(v));
  return out;
}

const Reduction kReductions[] = {Reduction::none, Reduction::mean, Reduction::sum};

}  // namespace

TEST_CASE_TEMPLATE("cross_entropy matches the reference (random shapes, labels, smoothing)", T, float, double) {
  std::mt19937 rng(3);
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  for (int trial = 0; trial < 30; ++trial) {
    int64_t N = 1 + rng() % 9, C = 1 + rng() % 12;
    double s = trial % 3 == 0 ? 0.0 : (rng() % 90) / 100.0;
    Generator gen(static_cast<uint64_t>(trial));
    NDArray<T> x = randn<T>({N, C}, 0.0, 4.0, gen);
    Reduction r = kReductions[trial % 3];
    INFO("N ", N, " C ", C, " smoothing ", s);
    auto want = [&](const auto& labels) { return reference_ce(as_double(x), labels_i64(labels), C, s); };
    if (trial % 2) {
      auto y = random_labels<int32_t>({N}, C, static_cast<unsigned>(trial));
      check_loss(cross_entropy(x, y, s, r), want(y), r, tol);
    } else {
      auto y = random_labels<int64_t>({N}, C, static_cast<unsigned>(trial));
      check_loss(cross_entropy(x, y, s, r), want(y), r, tol);
    }
  }
}

TEST_CASE_TEMPLATE("cross_entropy is stable for logits of 1e4", T, float, double) {
  NDArray<T> x = tensor<T>({{T(1e4), T(0), T(-1e4)}, {T(1e4), T(0), T(-1e4)}, {T(1e4), T(0), T(-1e4)},
                            {T(-1e4), T(-1e4), T(-1e4)}, {T(1e4), T(1e4), T(1e4)}});
  auto y = tensor<int64_t>({0, 1, 2, 1, 2});
  auto loss = cross_entropy(x, y, 0.0, Reduction::none).to_vector();
  for (T v : loss) CHECK(std::isfinite(static_cast<double>(v)));
  // Reference computed stably in double: logsumexp(x) - x[label].
  CHECK(loss[0] == T(0));
  CHECK(loss[1] == T(1e4));
  CHECK(loss[2] == T(2e4));
  CHECK(static_cast<double>(loss[3]) == doctest::Approx(std::log(3.0)).epsilon(1e-6));
  CHECK(static_cast<double>(loss[4]) == doctest::Approx(std::log(3.0)).epsilon(1e-6));
  auto with_smoothing = cross_entropy(x, y, 0.3, Reduction::none);
  auto want = reference_ce(as_double(x), labels_i64(y), 3, 0.3);
  check_loss(with_smoothing, want, Reduction::none, 1e-6);
  // The gradient is finite too: softmax is exactly one-hot for row 0, so its gradient vanishes.
  NDArray<T> xi = x.clone();
  xi.attach_grad();
  NDArray<T> l;
  {
    autograd::record rec;
    l = cross_entropy(xi, y);
  }
  l.backward();
  auto g = xi.grad().to_vector();
  for (T v : g) CHECK(std::isfinite(static_cast<double>(v)));
  CHECK(g[0] == T(0));
  CHECK(static_cast<double>(g[3]) == doctest::Approx(1.0 / 5));      // row 1: softmax (1, 0, 0), label 1
  CHECK(static_cast<double>(g[4]) == doctest::Approx(-1.0 / 5));
}

TEST_CASE("cross_entropy: label smoothing against the hand formula") {
  // logits (1, 2, 3), label 0, s = 0.3: q = (0.8, 0.1, 0.1); loss = -sum q_c log softmax_c.
  auto x = tensor<double>({{1.0, 2.0, 3.0}});
  auto y = tensor<int64_t>({0});
  double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  double want = -(0.8 * std::log(std::exp(1.0) / z) + 0.1 * std::log(std::exp(2.0) / z) + 0.1 * std::log(std::exp(3.0) / z));
  CHECK(cross_entropy(x, y, 0.3).item() == doctest::Approx(want).epsilon(1e-14));
  // Smoothing with equal logits changes nothing: every target gives log C.
  CHECK(cross_entropy(zeros<double>({2, 4}), tensor<int64_t>({1, 3}), 0.5).item() == doctest::Approx(std::log(4.0)));
}

TEST_CASE("cross_entropy: gradient is (softmax - smoothed onehot) / N") {
  const int64_t N = 4, C = 5;
  const double s = 0.2;
  auto x = randn<float>({N, C});
  auto y = random_labels<int32_t>({N}, C, 11);
  NDArray<float> xi = x.clone();
  xi.attach_grad();
  NDArray<float> loss;
  {
    autograd::record rec;
    loss = cross_entropy(xi, y, s);
  }
  loss.backward();
  auto p = softmax(x.cast<double>()).to_vector();
  auto g = xi.grad().to_vector();
  auto yv = y.to_vector();
  for (int64_t r = 0; r < N; ++r)
    for (int64_t c = 0; c < C; ++c) {
      size_t k = static_cast<size_t>(r * C + c);
      double q = (c == yv[static_cast<size_t>(r)] ? 1 - s : 0.0) + s / C;
      CHECK(g[k] == doctest::Approx((p[k] - q) / N).epsilon(1e-5).scale(1.0));
    }
}

TEST_CASE("cross_entropy equals nll(log_softmax(x)) in value and gradient") {
  for (Reduction r : kReductions) {
    for (Shape shape : {Shape{6, 4}, Shape{2, 3, 5}, Shape{2, 4, 2, 3}}) {
      INFO("shape ", shape, " reduction ", static_cast<int>(r));
      auto x0 = randn<double>(shape);
      std::vector<int64_t> label_dims = shape.vec();
      label_dims.erase(label_dims.begin() + 1);
      auto y = random_labels(Shape(label_dims), shape[1], 5);
      NDArray<double> a = x0.clone(), b = x0.clone();
      a.attach_grad();
      b.attach_grad();
      NDArray<double> la, lb;
      {
        autograd::record rec;
        la = cross_entropy(a, y, 0.0, r);
        lb = nll(log_softmax(b, 1), y, r);
      }
      REQUIRE(la.shape() == lb.shape());
      if (r == Reduction::none) CHECK(la.shape() == Shape(label_dims));
      auto va = la.to_vector(), vb = lb.to_vector();
      for (size_t i = 0; i < va.size(); ++i) CHECK(va[i] == doctest::Approx(vb[i]).epsilon(1e-12));
      auto head = randn<double>(la.shape());
      la.backward(head);
      lb.backward(head);
      auto ga = a.grad().to_vector(), gb = b.grad().to_vector();
      for (size_t i = 0; i < ga.size(); ++i) CHECK(ga[i] == doctest::Approx(gb[i]).epsilon(1e-12).scale(1.0));
    }
  }
}

TEST_CASE("cross_entropy and nll: spatial dims against the reference") {
  // (N, C, d) logits: the loss of sample (n, i) uses logits[n, :, i].
  const int64_t N = 3, C = 4, D = 5;
  auto x = randn<double>({N, C, D});
  auto y = random_labels({N, D}, C, 9);
  std::vector<double> rows;  // (N * D, C), row-major over (n, i)
  std::vector<int64_t> ys;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < D; ++i) {
      for (int64_t c = 0; c < C; ++c) rows.push_back(x.at({n, c, i}));
      ys.push_back(y.at({n, i}));
    }
  auto want = reference_ce(rows, ys, C, 0.1);
  for (Reduction r : kReductions) check_loss(cross_entropy(x, y, 0.1, r), want, r, 1e-12);
  auto lp = log_softmax(x, 1);
  auto per = nll(lp, y, Reduction::none);
  CHECK(per.shape() == Shape{N, D});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < D; ++i) CHECK(per.at({n, i}) == -lp.at({n, y.at({n, i}), i}));
}

TEST_CASE("nll matches the reference") {
  auto lp = randn<double>({7, 3});
  auto y = random_labels<int32_t>({7}, 3, 2);
  std::vector<double> want;
  for (int64_t r = 0; r < 7; ++r) want.push_back(-lp.at({r, y.at({r})}));
  for (Reduction r : kReductions) check_loss(nll(lp, y, r), want, r, 1e-15);
  CHECK(nll(lp.transpose().clone().transpose(), y, Reduction::sum).item() == doctest::Approx(reduce(want, Reduction::sum)));
}

TEST_CASE_TEMPLATE("mse matches the reference", T, float, double) {
  auto p = randn<T>({4, 5}), t = randn<T>({4, 5});
  auto pv = as_double(p), tv = as_double(t);
  std::vector<double> want;
  for (size_t i = 0; i < pv.size(); ++i) want.push_back((pv[i] - tv[i]) * (pv[i] - tv[i]));
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-14;
  for (Reduction r : kReductions) check_loss(mse(p, t, r), want, r, tol);
  // Strided operands give the same result as their contiguous copies.
  auto pt = p.transpose(), tt = t.transpose();
  CHECK(mse(pt, tt).item() == mse(pt.clone(), tt.clone()).item());
  CHECK(mse(pt, tt, Reduction::none).shape() == Shape{5, 4});
}

TEST_CASE_TEMPLATE("binary_cross_entropy_with_logits matches the reference and is stable", T, float, double) {
  auto x = randn<T>({3, 4}, 0.0, 3.0);
  auto t = rand<T>({3, 4});
  auto xv = as_double(x), tv = as_double(t);
  std::vector<double> want;
  for (size_t i = 0; i < xv.size(); ++i) {  // the textbook form; fine for |x| < 20
    double sig = 1.0 / (1.0 + std::exp(-xv[i]));
    want.push_back(-(tv[i] * std::log(sig) + (1 - tv[i]) * std::log(1 - sig)));
  }
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  for (Reduction r : kReductions) check_loss(binary_cross_entropy_with_logits(x, t, r), want, r, tol);
  // Huge logits: the textbook form gives inf or NaN here, the stable one the exact value.
  auto big = tensor<T>({T(1e4), T(-1e4), T(1e4), T(-1e4), T(0)});
  auto tgt = tensor<T>({T(1), T(1), T(0), T(0), T(1)});
  auto l = binary_cross_entropy_with_logits(big, tgt, Reduction::none).to_vector();
  CHECK(l[0] == T(0));
  CHECK(l[1] == T(1e4));
  CHECK(l[2] == T(1e4));
  CHECK(l[3] == T(0));
  CHECK(static_cast<double>(l[4]) == doctest::Approx(std::log(2.0)));
  // Gradient sigmoid(x) - t, exact at x = 0 (no kink from max(x, 0) and |x|).
  NDArray<T> xi = big.clone();
  xi.attach_grad();
  NDArray<T> loss;
  {
    autograd::record rec;
    loss = binary_cross_entropy_with_logits(xi, tgt, Reduction::sum);
  }
  loss.backward();
  auto g = xi.grad().to_vector();
  CHECK(g[0] == T(0));
  CHECK(g[1] == T(-1));
  CHECK(g[2] == T(1));
  CHECK(g[3] == T(0));
  CHECK(static_cast<double>(g[4]) == doctest::Approx(-0.5));
}

TEST_CASE("losses: empty batches and deterministic sums") {
  auto x = zeros<double>({0, 3});
  auto y = NDArray<int64_t>(Shape{0});
  CHECK(std::isnan(cross_entropy(x, y).item()));  // mean of nothing, as in PyTorch
  CHECK(cross_entropy(x, y, 0.0, Reduction::sum).item() == 0.0);
  CHECK(cross_entropy(x, y, 0.0, Reduction::none).shape() == Shape{0});
  CHECK(std::isnan(mse(zeros<float>({0}), zeros<float>({0})).item()));
  // The mean over many rows does not depend on the thread count.
  auto big = randn<float>({20000, 3});
  auto labels = random_labels({20000}, 3, 1);
  int saved = num_threads();
  set_num_threads(1);
  float one = cross_entropy(big, labels).item();
  float m1 = mse(big, big * 0.5f).item();
  set_num_threads(2);
  float two = cross_entropy(big, labels).item();
  float m2 = mse(big, big * 0.5f).item();
  set_num_threads(saved);
  CHECK(one == two);
  CHECK(m1 == m2);
  double ref = reduce(reference_ce(as_double(big), labels_i64(labels), 3, 0.0), Reduction::mean);
  CHECK(static_cast<double>(one) == doctest::Approx(ref).epsilon(1e-6));
}

TEST_CASE("losses: errors") {
  auto x = randn<double>({5, 10});
  auto y = tensor<int64_t>({1, 2, 3, 12, 4});
  CHECK_THROWS_WITH_AS(cross_entropy(x, y), doctest::Contains("cross_entropy: label 12 at row 3 is out of range for 10 classes"),
                       dl::ValueError);
  CHECK_THROWS_WITH_AS(cross_entropy(x, tensor<int32_t>({0, -1, 0, 0, 0})),
                       doctest::Contains("cross_entropy: label -1 at row 1 is out of range for 10 classes"), dl::ValueError);
  CHECK_THROWS_WITH_AS(nll(x, y), doctest::Contains("nll: label 12 at row 3 is out of range for 10 classes"), dl::ValueError);
  auto spatial_labels = from_vector<int64_t>({0, 1, 2, 3, 9, 5}, Shape{2, 3});
  CHECK_THROWS_WITH_AS(cross_entropy(randn<double>({2, 4, 3}), spatial_labels),
                       doctest::Contains("cross_entropy: label 9 at index (1, 1) is out of range for 4 classes"),
                       dl::ValueError);
  // Batch size mismatch prints both shapes.
  CHECK_THROWS_WITH_AS(cross_entropy(x, tensor<int64_t>({1, 2, 3})),
                       doctest::Contains("cross_entropy: labels of shape (3,) do not match logits of shape (5, 10)"),
                       dl::ShapeError);
  CHECK_THROWS_WITH_AS(nll(x, tensor<int64_t>({1, 2, 3})),
                       doctest::Contains("nll: labels of shape (3,) do not match log_probs of shape (5, 10)"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(cross_entropy(x, NDArray<int64_t>(zeros<int64_t>({5, 1}))),
                       doctest::Contains("expected labels of shape (5,)"), dl::ShapeError);
  // Wrong rank of the logits.
  CHECK_THROWS_WITH_AS(cross_entropy(randn<double>({10}), tensor<int64_t>({1})),
                       doctest::Contains("cross_entropy: logits must have shape (N, C) or (N, C, d1, ...), got (10,)"),
                       dl::ShapeError);
  CHECK_THROWS_WITH_AS(nll(full<double>(Shape{}, 1.0), tensor<int64_t>({1})),
                       doctest::Contains("nll: log_probs must have shape (N, C)"), dl::ShapeError);
  // label_smoothing outside [0, 1).
  for (double s : {-0.1, 1.0, 1.5, std::nan("")})
    CHECK_THROWS_WITH_AS(cross_entropy(x, y, s), doctest::Contains("cross_entropy: label_smoothing must be in [0, 1)"),
                         dl::ValueError);
  // An enum value outside none/mean/sum.
  auto bad = static_cast<Reduction>(7);
  auto ok_y = tensor<int64_t>({1, 2, 3, 4, 5});
  CHECK_THROWS_WITH_AS(cross_entropy(x, ok_y, 0.0, bad), doctest::Contains("cross_entropy: unknown reduction 7"), dl::ValueError);
  CHECK_THROWS_WITH_AS(nll(x, ok_y, bad), doctest::Contains("nll: unknown reduction 7"), dl::ValueError);
  CHECK_THROWS_WITH_AS(mse(x, x, bad), doctest::Contains("mse: unknown reduction 7"), dl::ValueError);
  CHECK_THROWS_WITH_AS(binary_cross_entropy_with_logits(x, x, bad),
                       doctest::Contains("binary_cross_entropy_with_logits: unknown reduction 7"), dl::ValueError);
  // mse and BCE do not broadcast.
  CHECK_THROWS_WITH_AS(mse(randn<double>({4, 1}), randn<double>({4})),
                       doctest::Contains("mse: pred of shape (4, 1) and target of shape (4,) differ"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(binary_cross_entropy_with_logits(randn<double>({3, 2}), randn<double>({2, 3})),
                       doctest::Contains("binary_cross_entropy_with_logits: logits of shape (3, 2) and targets of shape (2, 3) differ"),
                       dl::ShapeError);
  // Undefined inputs.
  CHECK_THROWS_WITH_AS(cross_entropy(NDArray<float>(), ok_y), doctest::Contains("cross_entropy: the array is undefined"),
                       dl::ValueError);
  CHECK_THROWS_WITH_AS(cross_entropy(x, NDArray<int64_t>()), doctest::Contains("cross_entropy: the array is undefined"),
                       dl::ValueError);
  CHECK_THROWS_WITH_AS(mse(NDArray<double>(), x), doctest::Contains("mse: the array is undefined"), dl::ValueError);
}

TEST_CASE("gradcheck: loss op table") {
  auto y5 = random_labels({5}, 4, 21);
  auto y5_i32 = random_labels<int32_t>({5}, 4, 22);
  auto y_spatial = random_labels({2, 3}, 4, 23);
  auto one = [](Shape s) { return V{randn<double>(s)}; };
  std::vector<GradcheckCase> cases = {
      {"cross_entropy mean", [=] { return one({5, 4}); }, [=](V& x) { return cross_entropy(x[0], y5); }},
      {"cross_entropy sum", [=] { return one({5, 4}); },
       [=](V& x) { return cross_entropy(x[0], y5, 0.0, Reduction::sum); }},
      {"cross_entropy none", [=] { return one({5, 4}); },
       [=](V& x) { return cross_entropy(x[0], y5, 0.0, Reduction::none); }},
      {"cross_entropy smoothing", [=] { return one({5, 4}); },
       [=](V& x) { return cross_entropy(x[0], y5_i32, 0.25, Reduction::mean); }},
      {"cross_entropy smoothing none", [=] { return one({5, 4}); },
       [=](V& x) { return cross_entropy(x[0], y5, 0.4, Reduction::none); }},
      {"cross_entropy transposed logits", [=] { return one({4, 5}); },
       [=](V& x) { return cross_entropy(x[0].transpose(), y5); }},
      {"cross_entropy non-contiguous", [=] { return V{dl::testing::non_contiguous(randn<double>({5, 4}))}; },
       [=](V& x) { return cross_entropy(x[0], y5_i32, 0.1, Reduction::sum); }},
      {"cross_entropy spatial", [=] { return one({2, 4, 3}); },
       [=](V& x) { return cross_entropy(x[0], y_spatial, 0.1); }},
      {"cross_entropy spatial none", [=] { return one({2, 4, 3}); },
       [=](V& x) { return cross_entropy(x[0], y_spatial, 0.0, Reduction::none); }},
      {"cross_entropy large logits", [=] { return V{randn<double>({5, 4}, 0.0, 30.0)}; },
       [=](V& x) { return cross_entropy(x[0], y5); }},
      {"cross_entropy of matmul", [=] { return V{randn<double>({5, 3}), randn<double>({3, 4}), randn<double>({4})}; },
       [=](V& x) { return cross_entropy(matmul(x[0], x[1]) + x[2], y5); }},
      {"nll mean", [=] { return one({5, 4}); }, [=](V& x) { return nll(x[0], y5); }},
      {"nll sum", [=] { return one({5, 4}); }, [=](V& x) { return nll(x[0], y5_i32, Reduction::sum); }},
      {"nll none", [=] { return one({5, 4}); }, [=](V& x) { return nll(x[0], y5, Reduction::none); }},
      {"nll transposed", [=] { return one({4, 5}); }, [=](V& x) { return nll(x[0].transpose(), y5); }},
      {"nll spatial", [=] { return one({2, 4, 3}); }, [=](V& x) { return nll(x[0], y_spatial, Reduction::sum); }},
      {"nll of log_softmax", [=] { return one({5, 4}); }, [=](V& x) { return nll(log_softmax(x[0]), y5); }},
      {"mse mean", [=] { return V{randn<double>({3, 4}), randn<double>({3, 4})}; },
       [](V& x) { return mse(x[0], x[1]); }},
      {"mse sum", [=] { return V{randn<double>({3, 4}), randn<double>({3, 4})}; },
       [](V& x) { return mse(x[0], x[1], Reduction::sum); }},
      {"mse none", [=] { return V{randn<double>({6}), randn<double>({6})}; },
       [](V& x) { return mse(x[0], x[1], Reduction::none); }},
      {"mse non-contiguous", [=] { return V{dl::testing::non_contiguous(randn<double>({3, 4})), randn<double>({4, 3})}; },
       [](V& x) { return mse(x[0], x[1].transpose()); }},
      {"mse broadcast expression", [=] { return V{randn<double>({3, 4}), randn<double>({4})}; },
       [](V& x) { return mse(x[0] * 2.0, x[0] + x[1]); }},
      {"bce mean", [=] { return V{randn<double>({3, 4}, 0.0, 3.0), rand<double>({3, 4})}; },
       [](V& x) { return binary_cross_entropy_with_logits(x[0], x[1]); }},
      {"bce sum", [=] { return V{randn<double>({3, 4}, 0.0, 3.0), rand<double>({3, 4})}; },
       [](V& x) { return binary_cross_entropy_with_logits(x[0], x[1], Reduction::sum); }},
      {"bce none", [=] { return V{randn<double>({7}, 0.0, 10.0), rand<double>({7})}; },
       [](V& x) { return binary_cross_entropy_with_logits(x[0], x[1], Reduction::none); }},
      {"bce non-contiguous", [=] { return V{dl::testing::non_contiguous(randn<double>({3, 4})), rand<double>({4, 3})}; },
       [](V& x) { return binary_cross_entropy_with_logits(x[0], x[1].transpose()); }},
  };
  dl::testing::run_gradcheck_table(cases);
}
