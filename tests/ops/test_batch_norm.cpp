// batch_norm: forward in training and eval mode against reference loops, the running-statistics
// update (unbiased variance, not taped), gradients through the gradcheck op table, and errors.
#include <cmath>
#include <vector>

#include "dl/ops/batch_norm.hpp"
#include "support/op_table.hpp"

using namespace dl;
using dl::testing::GradcheckCase;
using V = std::vector<NDArray<double>>;

namespace {
// Per-channel mean and biased variance of x viewed as (N, C, S).
void reference_stats(const NDArray<double>& x, std::vector<double>& mean, std::vector<double>& var) {
  int64_t N = x.shape(0), C = x.shape(1), S = x.numel() / (N * C);
  auto v = x.contiguous().to_vector();
  mean.assign(static_cast<size_t>(C), 0);
  var.assign(static_cast<size_t>(C), 0);
  for (int64_t c = 0; c < C; ++c) {
    double s = 0, q = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < S; ++i) s += v[static_cast<size_t>((n * C + c) * S + i)];
    double m = s / static_cast<double>(N * S);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < S; ++i) q += std::pow(v[static_cast<size_t>((n * C + c) * S + i)] - m, 2);
    mean[static_cast<size_t>(c)] = m;
    var[static_cast<size_t>(c)] = q / static_cast<double>(N * S);
  }
}

std::vector<double> reference_bn(const NDArray<double>& x, const std::vector<double>& mean, const std::vector<double>& var,
                                 const NDArray<double>& gamma, const NDArray<double>& beta, double eps) {
  int64_t N = x.shape(0), C = x.shape(1), S = x.numel() / (N * C);
  auto v = x.contiguous().to_vector();
  std::vector<double> y(v.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < S; ++i) {
        auto k = static_cast<size_t>((n * C + c) * S + i), cc = static_cast<size_t>(c);
        y[k] = (v[k] - mean[cc]) / std::sqrt(var[cc] + eps) * gamma.at({c}) + beta.at({c});
      }
  return y;
}
}  // namespace

TEST_CASE("batch_norm training: batch statistics and running-statistics update") {
  for (const auto& shape : {Shape{4, 3, 5, 2}, Shape{6, 5}, Shape{2, 2, 3}}) {
    CAPTURE(shape);
    Generator gen(4);
    auto x = randn<double>(shape, 2.0, 3.0, gen);
    int64_t C = shape[1];
    auto gamma = randn<double>({C}, 0, 1, gen), beta = randn<double>({C}, 0, 1, gen);
    auto rm = randn<double>({C}, 0, 1, gen), rv = rand<double>({C}, 0.5, 2.0, gen);
    auto rm0 = rm.to_vector(), rv0 = rv.to_vector();
    auto y = batch_norm(x, gamma, beta, rm, rv, true, 0.2, 1e-5);
    std::vector<double> mean, var;
    reference_stats(x, mean, var);
    auto ref = reference_bn(x, mean, var, gamma, beta, 1e-5);
    auto got = y.to_vector();
    for (size_t i = 0; i < ref.size(); ++i) CHECK(got[i] == doctest::Approx(ref[i]).epsilon(1e-10));
    double m = static_cast<double>(x.numel() / C);
    for (int64_t c = 0; c < C; ++c) {
      auto cc = static_cast<size_t>(c);
      CHECK(rm.at({c}) == doctest::Approx(0.8 * rm0[cc] + 0.2 * mean[cc]).epsilon(1e-12));
      CHECK(rv.at({c}) == doctest::Approx(0.8 * rv0[cc] + 0.2 * var[cc] * m / (m - 1)).epsilon(1e-12));
    }
  }
}

TEST_CASE("batch_norm eval uses the running statistics and leaves them alone") {
  Generator gen(8);
  auto x = randn<double>({3, 4, 2, 2}, 0, 1, gen);
  auto gamma = randn<double>({4}, 0, 1, gen), beta = randn<double>({4}, 0, 1, gen);
  auto rm = randn<double>({4}, 0, 1, gen), rv = rand<double>({4}, 0.5, 2.0, gen);
  auto rm0 = rm.to_vector(), rv0 = rv.to_vector();
  auto y = batch_norm(x, gamma, beta, rm, rv, false);
  auto ref = reference_bn(x, rm0, rv0, gamma, beta, 1e-5);
  auto got = y.to_vector();
  for (size_t i = 0; i < ref.size(); ++i) CHECK(got[i] == doctest::Approx(ref[i]).epsilon(1e-10));
  CHECK(rm.to_vector() == rm0);
  CHECK(rv.to_vector() == rv0);
}

TEST_CASE("batch_norm without affine parameters or running statistics; float") {
  auto x = randn<float>({8, 3, 4, 4}, 5.0, 2.0);
  auto y = batch_norm(x, NDArray<float>(), NDArray<float>(), NDArray<float>(), NDArray<float>(), true);
  auto v = y.to_vector();
  for (int64_t c = 0; c < 3; ++c) {  // each channel is normalised: mean 0, variance ~1
    double s = 0, q = 0;
    for (int64_t n = 0; n < 8; ++n)
      for (int64_t i = 0; i < 16; ++i) {
        double e = v[static_cast<size_t>((n * 3 + c) * 16 + i)];
        s += e;
        q += e * e;
      }
    CHECK(s / 128 == doctest::Approx(0).epsilon(1e-4));
    CHECK(q / 128 == doctest::Approx(1).epsilon(1e-3));
  }
}

TEST_CASE("batch_norm does not record the running statistics") {
  auto x = randn<double>({4, 2});
  auto rm = zeros<double>({2}), rv = ones<double>({2});
  rm.attach_grad();
  x.attach_grad();
  {
    autograd::record rec;
    auto y = batch_norm(x, NDArray<double>(), NDArray<double>(), rm, rv, true);
    y.backward(ones_like(y.detach()));
  }
  CHECK(rm.grad().to_vector() == std::vector<double>{0, 0});
  CHECK(rm.to_vector() != std::vector<double>{0, 0});
}

TEST_CASE("batch_norm gradients: op table") {
  std::vector<GradcheckCase> cases = {
      {"train 4-D", [] { return V{randn<double>({3, 2, 2, 3}), randn<double>({2}), randn<double>({2})}; },
       [](V& x) { return batch_norm(x[0], x[1], x[2], NDArray<double>(), NDArray<double>(), true); }},
      {"train 2-D with running stats", [] { return V{randn<double>({5, 3}), randn<double>({3}), randn<double>({3})}; },
       [](V& x) { return batch_norm(x[0], x[1], x[2], zeros<double>({3}), ones<double>({3}), true, 0.1, 1e-3); }},
      {"train non-contiguous", [] { return V{dl::testing::non_contiguous(randn<double>({2, 3, 2, 2})), randn<double>({3}), randn<double>({3})}; },
       [](V& x) { return batch_norm(x[0], x[1], x[2], NDArray<double>(), NDArray<double>(), true); }},
      {"train no affine", [] { return V{randn<double>({4, 2, 3})}; },
       [](V& x) { return batch_norm(x[0], NDArray<double>(), NDArray<double>(), NDArray<double>(), NDArray<double>(), true); }},
      {"eval", [] { return V{randn<double>({2, 3, 2, 2}), randn<double>({3}), randn<double>({3})}; },
       [](V& x) { return batch_norm(x[0], x[1], x[2], tensor<double>({0.5, -1.0, 0.2}), tensor<double>({1.5, 0.7, 2.0}), false); }},
      {"train of an expression", [] { return V{randn<double>({3, 2, 2}), randn<double>({2}), randn<double>({2})}; },
       [](V& x) { return batch_norm(tanh(x[0]), x[1], x[2], NDArray<double>(), NDArray<double>(), true); }},
  };
  dl::testing::run_gradcheck_table(cases);
}

TEST_CASE("batch_norm errors") {
  auto x = zeros<float>({2, 3, 2, 2});
  auto c3 = ones<float>({3});
  NDArray<float> none;
  CHECK_THROWS_WITH_AS(batch_norm(x, ones<float>({2}), c3, c3, c3, true), doctest::Contains("batch_norm: gamma has shape (2,), expected (3,)"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(batch_norm(x, c3, ones<float>({3, 1}), c3, c3, true), doctest::Contains("batch_norm: beta has shape (3, 1), expected (3,)"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(batch_norm(x, c3, c3, ones<float>({4}), c3, true), doctest::Contains("batch_norm: running_mean has shape (4,), expected (3,)"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(batch_norm(x, c3, c3, c3, ones<float>({1}), false), doctest::Contains("batch_norm: running_var has shape (1,), expected (3,)"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(batch_norm(x, c3, c3, c3, none, true), doctest::Contains("both be given or both be undefined"), dl::ValueError);
  CHECK_THROWS_WITH_AS(batch_norm(x, c3, c3, none, none, false), doctest::Contains("batch_norm: eval mode needs running_mean and running_var"), dl::ValueError);
  CHECK_THROWS_WITH_AS(batch_norm(zeros<float>({5}), none, none, none, none, true), doctest::Contains("batch_norm: expected an (N, C) or (N, C, H, W) input, got (5,)"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(batch_norm(zeros<float>({1, 3}), c3, c3, c3, c3, true), doctest::Contains("batch_norm: training needs more than one value per channel, got input (1, 3)"), dl::ValueError);
  CHECK_THROWS_WITH_AS(batch_norm(x, c3, c3, c3, c3, true, 1.5), doctest::Contains("batch_norm: momentum must be in [0, 1], got 1.5"), dl::ValueError);
  CHECK_THROWS_WITH_AS(batch_norm(x, c3, c3, c3, c3, true, 0.1, -1.0), doctest::Contains("batch_norm: eps must be non-negative, got -1"), dl::ValueError);
  CHECK_THROWS_WITH_AS(batch_norm(x, c3, c3, c3, full<float>({3}, -1.0f), false), doctest::Contains("batch_norm: running_var[0] + eps"), dl::ValueError);
}
