// nn::Dense: parameter shapes and names, PyTorch's default initialisation, forward against a
// reference loop (2-D, batched 3-D and 1-D inputs), gradients against the closed forms, errors.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "dl/autograd/engine.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/nn/dense.hpp"

using namespace dl;

namespace {
// y[r][o] = sum_i x[r][i] * w[o][i] + b[o], over rows r of x flattened to (rows, in).
std::vector<double> reference(const NDArray<float>& x, const nn::Dense& fc) {
  auto xv = x.to_vector(), wv = fc.weight.to_vector();
  std::vector<float> bv = fc.has_bias() ? fc.bias.to_vector() : std::vector<float>();
  int64_t in = fc.in_features(), out = fc.out_features(), rows = x.numel() / in;
  std::vector<double> y(static_cast<size_t>(rows * out));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = bv.empty() ? 0.0 : bv[o];
      for (int64_t i = 0; i < in; ++i) s += static_cast<double>(xv[r * in + i]) * wv[o * in + i];
      y[r * out + o] = s;
    }
  return y;
}
void check_close(const std::vector<float>& got, const std::vector<double>& want, double tol = 1e-5) {
  REQUIRE(got.size() == want.size());
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) bad += std::abs(got[i] - want[i]) > tol * (1 + std::abs(want[i]));
  CHECK(bad == 0);
}
}  // namespace

TEST_CASE("dense: parameters, names and default initialisation") {
  Generator gen(1);
  nn::Dense fc(20, 7, true, gen);
  CHECK(fc.weight.shape() == Shape{7, 20});
  CHECK(fc.bias.shape() == Shape{7});
  auto named = fc.named_parameters();
  REQUIRE(named.size() == 2);
  CHECK(named[0].first == "weight");
  CHECK(named[1].first == "bias");
  double bound = 1.0 / std::sqrt(20.0);
  double max_w = 0, max_b = 0;
  for (float w : fc.weight.to_vector()) max_w = std::max(max_w, static_cast<double>(std::abs(w)));
  for (float b : fc.bias.to_vector()) max_b = std::max(max_b, static_cast<double>(std::abs(b)));
  CHECK(max_w <= bound);
  CHECK(max_w > 0.8 * bound);  // 140 draws: the largest is near the bound
  CHECK(max_b <= bound);
  CHECK(max_b > 0);

  Generator g1(5), g2(5);
  nn::Linear a(6, 3, true, g1), b(6, 3, true, g2);  // Linear is Dense
  CHECK(a.weight.to_vector() == b.weight.to_vector());
  CHECK(a.bias.to_vector() == b.bias.to_vector());

  nn::Dense nobias(4, 2, false);
  CHECK_FALSE(nobias.has_bias());
  CHECK(nobias.named_parameters().size() == 1);
}

TEST_CASE("dense: forward matches a reference loop") {
  Generator gen(2);
  for (bool bias : {true, false}) {
    nn::Dense fc(5, 3, bias, gen);
    auto x2 = randn<float>({4, 5}, 0.0, 1.0, gen);
    auto y2 = fc(x2);
    CHECK(y2.shape() == Shape{4, 3});
    check_close(y2.to_vector(), reference(x2, fc));

    auto x3 = randn<float>({2, 3, 5}, 0.0, 1.0, gen);
    auto y3 = fc(x3);
    CHECK(y3.shape() == Shape{2, 3, 3});
    check_close(y3.to_vector(), reference(x3, fc));

    auto x1 = randn<float>({5}, 0.0, 1.0, gen);
    auto y1 = fc(x1);
    CHECK(y1.shape() == Shape{3});
    check_close(y1.to_vector(), reference(x1, fc));

    // Non-contiguous input and an expression input.
    auto xt = randn<float>({5, 4}, 0.0, 1.0, gen).transpose();
    check_close(fc(xt).to_vector(), reference(xt.clone(), fc));
    auto ye = fc(x2 * 2.0f);
    check_close(ye.to_vector(), reference(NDArray<float>(x2 * 2.0f), fc));
  }
}

TEST_CASE("dense: gradients are dW = H^T X, db = column sums of H, dX = H W") {
  Generator gen(3);
  nn::Dense fc(4, 3, true, gen);
  auto x = randn<float>({6, 4}, 0.0, 1.0, gen);
  x.attach_grad();
  NDArray<float> y;
  {
    autograd::record rec;
    y = fc(x);
  }
  auto h = randn<float>({6, 3}, 0.0, 1.0, gen);
  y.backward(h);
  auto xv = x.to_vector(), hv = h.to_vector(), wv = fc.weight.to_vector();
  std::vector<double> dw(12, 0.0), db(3, 0.0), dx(24, 0.0);
  for (int r = 0; r < 6; ++r)
    for (int o = 0; o < 3; ++o) {
      db[o] += hv[r * 3 + o];
      for (int i = 0; i < 4; ++i) {
        dw[o * 4 + i] += hv[r * 3 + o] * xv[r * 4 + i];
        dx[r * 4 + i] += hv[r * 3 + o] * wv[o * 4 + i];
      }
    }
  check_close(fc.weight.grad().to_vector(), dw);
  check_close(fc.bias.grad().to_vector(), db);
  check_close(x.grad().to_vector(), dx);
}

TEST_CASE("dense: errors") {
  CHECK_THROWS_WITH_AS(nn::Dense(0, 3), doctest::Contains("dense: in_features and out_features must be positive, got (0, 3)"),
                       ValueError);
  CHECK_THROWS_WITH_AS(nn::Dense(3, -1), doctest::Contains("must be positive"), ValueError);
  nn::Dense fc(4, 2);
  CHECK_THROWS_WITH_AS(fc(ones<float>({3, 5})),
                       doctest::Contains("dense: input of shape (3, 5) must have last dimension 4 (in_features)"), ShapeError);
  CHECK_THROWS_WITH_AS(fc(ones<float>(Shape{})), doctest::Contains("dense: input of shape ()"), ShapeError);
  CHECK_THROWS_WITH_AS(fc(NDArray<float>()), doctest::Contains("dense: the array is undefined"), ValueError);
}
