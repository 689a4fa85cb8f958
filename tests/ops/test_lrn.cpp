// local_response_norm: forward against a reference loop (odd and even window sizes, windows
// wider than the channel count), gradients through the gradcheck op table, and errors.
#include <cmath>
#include <vector>

#include "dl/ops/lrn.hpp"
#include "support/op_table.hpp"

using namespace dl;
using dl::testing::GradcheckCase;
using V = std::vector<NDArray<double>>;

namespace {
// PyTorch: pad size/2 channels before and (size-1)/2 after, average x^2 over `size` channels.
std::vector<double> reference_lrn(const NDArray<double>& x, int64_t size, double alpha, double beta, double k) {
  int64_t N = x.shape(0), C = x.shape(1), S = x.numel() / (N * C);
  auto v = x.contiguous().to_vector();
  std::vector<double> y(v.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < S; ++i) {
        double s = 0;
        for (int64_t j = c - size / 2; j <= c + (size - 1) / 2; ++j)
          if (j >= 0 && j < C) s += std::pow(v[static_cast<size_t>((n * C + j) * S + i)], 2);
        auto idx = static_cast<size_t>((n * C + c) * S + i);
        y[idx] = v[idx] / std::pow(k + alpha / static_cast<double>(size) * s, beta);
      }
  return y;
}
}  // namespace

TEST_CASE("local_response_norm forward matches the reference") {
  Generator gen(6);
  for (int64_t size : {1, 2, 3, 4, 5, 9}) {
    for (const auto& shape : {Shape{2, 6, 3, 4}, Shape{1, 3, 5}, Shape{2, 4, 2, 1, 3}}) {
      CAPTURE(size);
      CAPTURE(shape);
      auto x = randn<double>(shape, 0, 2, gen);
      auto got = local_response_norm(x, size, 0.3, 0.75, 1.5).to_vector();
      auto ref = reference_lrn(x, size, 0.3, 0.75, 1.5);
      for (size_t i = 0; i < ref.size(); ++i) CHECK(got[i] == doctest::Approx(ref[i]).epsilon(1e-12));
    }
  }
  // AlexNet defaults, float.
  auto xd = randn<double>({2, 8, 3, 3}, 0, 10, gen);
  auto got = local_response_norm(xd.cast<float>(), 5).to_vector();
  auto ref = reference_lrn(xd, 5, 1e-4, 0.75, 2.0);
  for (size_t i = 0; i < ref.size(); ++i) CHECK(got[i] == doctest::Approx(ref[i]).epsilon(1e-5));
}

TEST_CASE("local_response_norm gradients: op table") {
  std::vector<GradcheckCase> cases = {
      {"size 3", [] { return V{randn<double>({2, 4, 2, 2})}; }, [](V& x) { return local_response_norm(x[0], 3, 0.5, 0.75, 1.0); }},
      {"size 4 (asymmetric window)", [] { return V{randn<double>({1, 5, 3})}; },
       [](V& x) { return local_response_norm(x[0], 4, 0.8, 0.6, 1.2); }},
      {"window wider than channels", [] { return V{randn<double>({2, 3, 2, 2})}; },
       [](V& x) { return local_response_norm(x[0], 7, 1.0, 1.5, 2.0); }},
      {"non-contiguous", [] { return V{dl::testing::non_contiguous(randn<double>({2, 3, 2, 3}))}; },
       [](V& x) { return local_response_norm(x[0], 2, 0.4, 0.75, 1.0); }},
  };
  dl::testing::run_gradcheck_table(cases);
}

TEST_CASE("local_response_norm errors") {
  auto x = zeros<float>({1, 3, 2, 2});
  CHECK_THROWS_WITH_AS(local_response_norm(x, 0), doctest::Contains("local_response_norm: size must be positive, got 0"), dl::ValueError);
  CHECK_THROWS_WITH_AS(local_response_norm(x, 3, -1.0), doctest::Contains("local_response_norm: alpha must be non-negative, got -1"), dl::ValueError);
  CHECK_THROWS_WITH_AS(local_response_norm(x, 3, 1e-4, 0.75, 0.0), doctest::Contains("local_response_norm: k must be positive, got 0"), dl::ValueError);
  CHECK_THROWS_WITH_AS(local_response_norm(x, 3, 1e-4, NAN), doctest::Contains("local_response_norm: beta must be finite"), dl::ValueError);
  CHECK_THROWS_WITH_AS(local_response_norm(zeros<float>({3, 4}), 3), doctest::Contains("local_response_norm: expected an input (N, C, ...) of rank >= 3, got (3, 4)"), dl::ShapeError);
}
