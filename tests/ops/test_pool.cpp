// max_pool2d, avg_pool2d and global_avg_pool2d: forward against naive reference loops over a grid
// of windows, gradients through the gradcheck op table, and the error paths.
#include <cmath>
#include <limits>
#include <vector>

#include "dl/ops/pool.hpp"
#include "support/op_table.hpp"

using namespace dl;
using dl::testing::GradcheckCase;
using V = std::vector<NDArray<double>>;
using Pair = std::array<int64_t, 2>;

namespace {

struct Window {
  Pair kernel, stride, padding;
};

// kind 0: max, 1: avg counting padding, 2: avg over real elements only.
std::vector<double> reference_pool(const NDArray<double>& x, const Window& win, int kind) {
  int64_t N = x.shape(0), C = x.shape(1), H = x.shape(2), W = x.shape(3);
  int64_t OH = (H + 2 * win.padding[0] - win.kernel[0]) / win.stride[0] + 1;
  int64_t OW = (W + 2 * win.padding[1] - win.kernel[1]) / win.stride[1] + 1;
  std::vector<double> y;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < OH; ++i)
        for (int64_t j = 0; j < OW; ++j) {
          double best = -std::numeric_limits<double>::infinity(), sum = 0;
          int64_t count = 0;
          for (int64_t ki = 0; ki < win.kernel[0]; ++ki)
            for (int64_t kj = 0; kj < win.kernel[1]; ++kj) {
              int64_t ih = i * win.stride[0] - win.padding[0] + ki, iw = j * win.stride[1] - win.padding[1] + kj;
              if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
              double v = x.at({n, c, ih, iw});
              best = std::max(best, v);
              sum += v;
              ++count;
            }
          if (kind == 0) y.push_back(best);
          else if (kind == 1) y.push_back(sum / static_cast<double>(win.kernel[0] * win.kernel[1]));
          else y.push_back(sum / static_cast<double>(count));
        }
  return y;
}

const std::vector<Window> windows = {
    {{2, 2}, {2, 2}, {0, 0}}, {{3, 3}, {1, 1}, {1, 1}}, {{3, 2}, {2, 1}, {1, 0}}, {{2, 3}, {3, 4}, {1, 1}},
    {{1, 1}, {2, 2}, {0, 0}}, {{5, 5}, {2, 3}, {2, 2}}, {{4, 2}, {1, 2}, {2, 1}},
};

void check_close(const std::vector<double>& got, const std::vector<double>& ref) {
  REQUIRE(got.size() == ref.size());
  for (size_t i = 0; i < ref.size(); ++i) CHECK(got[i] == doctest::Approx(ref[i]).epsilon(1e-12));
}

}  // namespace

TEST_CASE("pooling forward matches reference loops") {
  Generator gen(9);
  for (const auto& shape : {Shape{2, 3, 7, 6}, Shape{1, 2, 5, 9}, Shape{3, 1, 8, 8}}) {
    auto x = randn<double>(shape, 0, 1, gen);
    for (const auto& w : windows) {
      CAPTURE(shape);
      CAPTURE(w.kernel[0]);
      CAPTURE(w.stride[1]);
      check_close(max_pool2d(x, w.kernel, w.stride, w.padding).to_vector(), reference_pool(x, w, 0));
      check_close(avg_pool2d(x, w.kernel, w.stride, w.padding, true).to_vector(), reference_pool(x, w, 1));
      check_close(avg_pool2d(x, w.kernel, w.stride, w.padding, false).to_vector(), reference_pool(x, w, 2));
    }
  }
}

TEST_CASE("pooling defaults, float and non-contiguous inputs") {
  auto x = randn<double>({2, 2, 6, 4});
  CHECK(max_pool2d(x, {2, 2}).shape() == Shape{2, 2, 3, 2});
  check_close(max_pool2d(x, {2, 2}).to_vector(), reference_pool(x, {{2, 2}, {2, 2}, {0, 0}}, 0));
  check_close(avg_pool2d(x, {3, 2}).to_vector(), reference_pool(x, {{3, 2}, {3, 2}, {0, 0}}, 1));
  auto xt = dl::testing::non_contiguous(x);
  check_close(max_pool2d(xt, {3, 3}, {1, 1}, {1, 1}).to_vector(), reference_pool(x, {{3, 3}, {1, 1}, {1, 1}}, 0));
  auto xf = x.cast<float>();
  auto yf = avg_pool2d(xf, {2, 2}, {1, 1}, {1, 1}, false).to_vector();
  auto ref = reference_pool(x, {{2, 2}, {1, 1}, {1, 1}}, 2);
  REQUIRE(yf.size() == ref.size());
  for (size_t i = 0; i < ref.size(); ++i) CHECK(yf[i] == doctest::Approx(ref[i]).epsilon(1e-5));
}

TEST_CASE("max_pool2d propagates NaN and routes the gradient to the maximum") {
  auto x = tensor<double>({{1, 5}, {3, 2}}).reshape({1, 1, 2, 2});
  x.attach_grad();
  {
    autograd::record rec;
    max_pool2d(x, {2, 2}).backward(full<double>({1, 1, 1, 1}, 4.0));
  }
  CHECK(x.grad().to_vector() == std::vector<double>{0, 4, 0, 0});
  auto n = tensor<double>({{1, NAN}, {3, 2}}).reshape({1, 1, 2, 2});
  CHECK(std::isnan(max_pool2d(n, {2, 2}).item()));
}

TEST_CASE("global_avg_pool2d is the plane mean") {
  auto x = randn<double>({3, 4, 5, 2});
  auto y = global_avg_pool2d(x);
  REQUIRE(y.shape() == Shape{3, 4, 1, 1});
  auto xv = x.to_vector(), yv = y.to_vector();
  for (size_t p = 0; p < 12; ++p) {
    double s = 0;
    for (size_t i = 0; i < 10; ++i) s += xv[p * 10 + i];
    CHECK(yv[p] == doctest::Approx(s / 10).epsilon(1e-12));
  }
}

TEST_CASE("pooling gradients: op table") {
  std::vector<GradcheckCase> cases = {
      {"max 2x2", [] { return V{randn<double>({2, 2, 4, 4})}; }, [](V& x) { return max_pool2d(x[0], {2, 2}); }},
      {"max overlapping padded", [] { return V{randn<double>({1, 2, 5, 4})}; },
       [](V& x) { return max_pool2d(x[0], {3, 3}, {1, 2}, {1, 1}); }},
      {"max non-contiguous", [] { return V{dl::testing::non_contiguous(randn<double>({1, 2, 4, 5}))}; },
       [](V& x) { return max_pool2d(x[0], {2, 3}, {2, 1}, {1, 0}); }},
      {"avg count padding", [] { return V{randn<double>({2, 1, 5, 5})}; },
       [](V& x) { return avg_pool2d(x[0], {3, 3}, {2, 2}, {1, 1}, true); }},
      {"avg real elements only", [] { return V{randn<double>({1, 2, 4, 5})}; },
       [](V& x) { return avg_pool2d(x[0], {3, 2}, {1, 2}, {1, 1}, false); }},
      {"avg non-contiguous", [] { return V{dl::testing::non_contiguous(randn<double>({2, 2, 3, 4}))}; },
       [](V& x) { return avg_pool2d(x[0], {2, 2}); }},
      {"global avg", [] { return V{randn<double>({2, 3, 3, 2})}; }, [](V& x) { return global_avg_pool2d(x[0]); }},
      {"max of an expression", [] { return V{randn<double>({1, 1, 4, 4})}; },
       [](V& x) { return max_pool2d(x[0] * 3.0 + 1.0, {2, 2}, {1, 1}); }},
  };
  dl::testing::run_gradcheck_table(cases);
}

TEST_CASE("pooling errors") {
  auto x = zeros<float>({1, 2, 3, 3});
  CHECK_THROWS_WITH_AS(max_pool2d(x, {2, 2}, {0, 1}), doctest::Contains("max_pool2d: stride must be positive, got (0, 1)"), dl::ValueError);
  CHECK_THROWS_WITH_AS(avg_pool2d(x, {2, 2}, {1, -1}), doctest::Contains("avg_pool2d: stride must be positive, got (1, -1)"), dl::ValueError);
  CHECK_THROWS_WITH_AS(max_pool2d(x, {0, 2}), doctest::Contains("max_pool2d: kernel size must be positive, got (0, 2)"), dl::ValueError);
  CHECK_THROWS_WITH_AS(avg_pool2d(x, {2, 2}, {1, 1}, {-1, 0}), doctest::Contains("avg_pool2d: padding must be non-negative, got (-1, 0)"), dl::ValueError);
  CHECK_THROWS_WITH_AS(max_pool2d(x, {3, 3}, {1, 1}, {2, 1}), doctest::Contains("max_pool2d: padding (2, 1) must be at most half the kernel (3, 3)"), dl::ValueError);
  CHECK_THROWS_WITH_AS(avg_pool2d(x, {2, 2}, {1, 1}, {0, 2}), doctest::Contains("avg_pool2d: padding (0, 2) must be at most half the kernel (2, 2)"), dl::ValueError);
  CHECK_THROWS_WITH_AS(max_pool2d(x, {4, 4}), doctest::Contains("max_pool2d: kernel (4, 4) is larger than padded input (3, 3)"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(avg_pool2d(x, {2, 5}), doctest::Contains("avg_pool2d: kernel (2, 5) is larger than padded input (3, 3)"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(max_pool2d(zeros<float>({2, 3, 3}), {2, 2}), doctest::Contains("max_pool2d: expected a 4-D input (N, C, H, W), got (2, 3, 3)"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(global_avg_pool2d(zeros<float>({2, 3})), doctest::Contains("global_avg_pool2d: expected a 4-D input"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(global_avg_pool2d(zeros<float>({1, 2, 0, 3})), doctest::Contains("global_avg_pool2d: input (1, 2, 0, 3) has an empty (H, W) plane"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(max_pool2d(NDArray<float>(), {2, 2}), doctest::Contains("max_pool2d: the array is undefined"), dl::ValueError);
}
