// conv2d: forward against a naive reference loop over a grid of configurations (and random ones),
// gradients through the gradcheck op table, the pooled column buffer, and every error path.
#include <cmath>
#include <vector>

#include "dl/ops/conv.hpp"
#include "support/op_table.hpp"

using namespace dl;
using dl::testing::GradcheckCase;
using V = std::vector<NDArray<double>>;

namespace {

struct Config {
  const char* name;
  int64_t n, c, h, w, o, kh, kw;
  Conv2dOptions opt;
  bool bias = true;
};

int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) { return (in + 2 * p - d * (k - 1) - 1) / s + 1; }

// Direct definition: y[n,o,i,j] = b[o] + sum_{c in group, ki, kj} x[n, c, i*s - p + ki*d, j*s - p + kj*d] w[o, c', ki, kj].
template <class T>
std::vector<double> reference_conv(const NDArray<T>& x, const NDArray<T>& w, const NDArray<T>& b, const Conv2dOptions& o) {
  int64_t N = x.shape(0), C = x.shape(1), H = x.shape(2), W = x.shape(3), O = w.shape(0), KH = w.shape(2), KW = w.shape(3);
  int64_t G = o.groups, Cg = C / G, Og = O / G;
  int64_t OH = out_size(H, KH, o.stride[0], o.padding[0], o.dilation[0]);
  int64_t OW = out_size(W, KW, o.stride[1], o.padding[1], o.dilation[1]);
  std::vector<double> y;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oc = 0; oc < O; ++oc)
      for (int64_t i = 0; i < OH; ++i)
        for (int64_t j = 0; j < OW; ++j) {
          double s = b.defined() ? static_cast<double>(b.at({oc})) : 0.0;
          int64_t grp = oc / Og;
          for (int64_t cc = 0; cc < Cg; ++cc)
            for (int64_t ki = 0; ki < KH; ++ki)
              for (int64_t kj = 0; kj < KW; ++kj) {
                int64_t ih = i * o.stride[0] - o.padding[0] + ki * o.dilation[0];
                int64_t iw = j * o.stride[1] - o.padding[1] + kj * o.dilation[1];
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                s += static_cast<double>(x.at({n, grp * Cg + cc, ih, iw})) * static_cast<double>(w.at({oc, cc, ki, kj}));
              }
          y.push_back(s);
        }
  return y;
}

template <class T>
void check_config(const Config& cfg, double tol) {
  INFO(cfg.name);
  Generator gen(11);
  auto x = randn<T>({cfg.n, cfg.c, cfg.h, cfg.w}, 0, 1, gen);
  auto w = randn<T>({cfg.o, cfg.c / cfg.opt.groups, cfg.kh, cfg.kw}, 0, 1, gen);
  NDArray<T> b = cfg.bias ? randn<T>({cfg.o}, 0, 1, gen) : NDArray<T>();
  auto y = conv2d(x, w, b, cfg.opt);
  Shape expect{cfg.n, cfg.o, out_size(cfg.h, cfg.kh, cfg.opt.stride[0], cfg.opt.padding[0], cfg.opt.dilation[0]),
               out_size(cfg.w, cfg.kw, cfg.opt.stride[1], cfg.opt.padding[1], cfg.opt.dilation[1])};
  REQUIRE(y.shape() == expect);
  auto ref = reference_conv(x, w, b, cfg.opt);
  auto got = y.to_vector();
  REQUIRE(got.size() == ref.size());
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::abs(static_cast<double>(got[i]) - ref[i]));
  CHECK(worst <= tol);
}

const std::vector<Config>& grid() {
  static const std::vector<Config> g = {
      {"3x3 stride 1 pad 1", 2, 3, 6, 6, 4, 3, 3, {{1, 1}, {1, 1}, {1, 1}, 1}},
      {"stride larger than kernel", 2, 2, 9, 8, 3, 2, 2, {{3, 3}, {0, 0}, {1, 1}, 1}},
      {"padding >= kernel", 1, 2, 4, 5, 3, 2, 2, {{1, 1}, {2, 3}, {1, 1}, 1}},
      {"1x1 pointwise (no im2col)", 3, 5, 4, 6, 7, 1, 1, {}},
      {"1x1 pointwise without bias", 2, 4, 3, 3, 2, 1, 1, {}, false},
      {"1x1 stride 2", 2, 3, 7, 6, 4, 1, 1, {{2, 2}, {0, 0}, {1, 1}, 1}},
      {"1x1 padded", 1, 3, 3, 4, 2, 1, 1, {{1, 1}, {1, 1}, {1, 1}, 1}},
      {"non-square kernel and input", 2, 3, 7, 5, 4, 3, 2, {{1, 2}, {1, 0}, {1, 1}, 1}},
      {"dilation", 2, 2, 9, 10, 3, 3, 3, {{1, 1}, {2, 1}, {2, 3}, 1}},
      {"dilation with stride", 1, 2, 11, 9, 2, 2, 3, {{2, 3}, {1, 2}, {3, 2}, 1}},
      {"groups 2", 2, 4, 6, 5, 6, 3, 3, {{1, 1}, {1, 1}, {1, 1}, 2}},
      {"groups 3 strided no bias", 3, 6, 7, 7, 3, 3, 2, {{2, 1}, {0, 1}, {1, 1}, 3}, false},
      {"depthwise", 2, 3, 6, 6, 3, 3, 3, {{1, 1}, {1, 1}, {1, 1}, 3}},
      {"depthwise multiplier 2", 2, 3, 5, 6, 6, 3, 3, {{2, 2}, {1, 1}, {1, 1}, 3}},
      {"kernel equals padded input", 2, 2, 3, 3, 2, 5, 5, {{1, 1}, {1, 1}, {1, 1}, 1}},
      {"batch larger than threads", 7, 3, 5, 5, 2, 3, 3, {{1, 1}, {1, 1}, {1, 1}, 1}},
  };
  return g;
}

}  // namespace

TEST_CASE("conv2d forward matches the reference loop (double)") {
  for (const auto& cfg : grid()) check_config<double>(cfg, 1e-10);
}

TEST_CASE("conv2d forward matches the reference loop (float)") {
  for (const auto& cfg : grid()) check_config<float>(cfg, 2e-4);
}

TEST_CASE("conv2d forward on random configurations") {
  Generator gen(2024);
  int tested = 0;
  for (int trial = 0; trial < 40; ++trial) {
    auto pick = [&](int64_t lo, int64_t hi) {
      return lo + static_cast<int64_t>(philox_uniform(gen.reserve(1), 0) * static_cast<double>(hi - lo + 1));
    };
    Config c{"random", pick(1, 3), 0, pick(1, 9), pick(1, 9), 0, pick(1, 4), pick(1, 4), {}, pick(0, 1) == 1};
    int64_t groups = pick(1, 3);
    c.c = groups * pick(1, 3);
    c.o = groups * pick(1, 3);
    c.opt = {{pick(1, 3), pick(1, 3)}, {pick(0, 2), pick(0, 2)}, {pick(1, 2), pick(1, 2)}, groups};
    // Keep only legal shapes: the dilated kernel must fit the padded input.
    if (c.opt.dilation[0] * (c.kh - 1) + 1 > c.h + 2 * c.opt.padding[0] ||
        c.opt.dilation[1] * (c.kw - 1) + 1 > c.w + 2 * c.opt.padding[1])
      continue;
    CAPTURE(trial);
    check_config<double>(c, 1e-10);
    ++tested;
  }
  CHECK(tested >= 20);
}

TEST_CASE("conv2d reads non-contiguous inputs and weights") {
  Generator gen(3);
  auto x = randn<double>({2, 3, 5, 4}, 0, 1, gen);
  auto w = randn<double>({4, 3, 3, 2}, 0, 1, gen);
  auto xt = x.transpose(2, 3).clone().transpose(2, 3);  // same values, transposed strides
  auto wt = w.transpose(0, 1).clone().transpose(0, 1);
  REQUIRE_FALSE(xt.is_contiguous());
  Conv2dOptions opt{{1, 2}, {1, 1}, {1, 1}, 1};
  auto a = conv2d(x, w, {}, opt).to_vector(), b = conv2d(xt, wt, {}, opt).to_vector();
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-12));
}

TEST_CASE("conv2d with an empty batch gives an empty output") {
  auto y = conv2d(zeros<float>({0, 2, 5, 5}), ones<float>({3, 2, 3, 3}), ones<float>({3}));
  CHECK(y.shape() == Shape{0, 3, 3, 3});
}

TEST_CASE("conv2d gradients: op table") {
  std::vector<GradcheckCase> cases = {
      {"3x3 pad 1 with bias", [] { return V{randn<double>({2, 2, 4, 4}), randn<double>({3, 2, 3, 3}), randn<double>({3})}; },
       [](V& x) { return conv2d(x[0], x[1], x[2], {{1, 1}, {1, 1}, {1, 1}, 1}); }},
      {"stride 2 pad (0, 1), non-square", [] { return V{randn<double>({1, 2, 5, 4}), randn<double>({2, 2, 3, 2}), randn<double>({2})}; },
       [](V& x) { return conv2d(x[0], x[1], x[2], {{2, 2}, {0, 1}, {1, 1}, 1}); }},
      {"dilation 2 no bias", [] { return V{randn<double>({1, 2, 6, 5}), randn<double>({2, 2, 2, 2})}; },
       [](V& x) { return conv2d(x[0], x[1], {}, {{1, 1}, {1, 0}, {2, 2}, 1}); }},
      {"groups 2", [] { return V{randn<double>({2, 4, 4, 3}), randn<double>({2, 2, 2, 2}), randn<double>({2})}; },
       [](V& x) { return conv2d(x[0], x[1], x[2], {{1, 1}, {1, 1}, {1, 1}, 2}); }},
      {"depthwise", [] { return V{randn<double>({2, 3, 4, 4}), randn<double>({3, 1, 3, 3}), randn<double>({3})}; },
       [](V& x) { return conv2d(x[0], x[1], x[2], {{1, 1}, {1, 1}, {1, 1}, 3}); }},
      {"1x1 pointwise", [] { return V{randn<double>({3, 3, 2, 3}), randn<double>({2, 3, 1, 1}), randn<double>({2})}; },
       [](V& x) { return conv2d(x[0], x[1], x[2]); }},
      {"stride larger than kernel", [] { return V{randn<double>({1, 1, 7, 7}), randn<double>({2, 1, 2, 2})}; },
       [](V& x) { return conv2d(x[0], x[1], {}, {{3, 3}, {0, 0}, {1, 1}, 1}); }},
      {"non-contiguous input and weight",
       [] { return V{dl::testing::non_contiguous(randn<double>({2, 2, 3, 4})), randn<double>({2, 2, 2, 2}).transpose(2, 3)}; },
       [](V& x) { return conv2d(x[0], x[1], {}, {{1, 1}, {1, 1}, {1, 1}, 1}); }},
      {"batch spread over threads", [] { return V{randn<double>({5, 1, 3, 3}), randn<double>({2, 1, 2, 2}), randn<double>({2})}; },
       [](V& x) { return conv2d(x[0], x[1], x[2]); }},
      {"conv of an expression", [] { return V{randn<double>({1, 2, 3, 3}), randn<double>({1, 2, 2, 2})}; },
       [](V& x) { return conv2d(tanh(x[0]) * 2.0, x[1]); }},
  };
  dl::testing::run_gradcheck_table(cases);
}

TEST_CASE("conv2d backward computes only the gradients that are needed") {
  Generator gen(5);
  auto x = randn<double>({2, 2, 5, 5}, 0, 1, gen), w = randn<double>({3, 2, 3, 3}, 0, 1, gen), b = randn<double>({3}, 0, 1, gen);
  auto head = randn<double>({2, 3, 5, 5}, 0, 1, gen);
  Conv2dOptions opt{{1, 1}, {1, 1}, {1, 1}, 1};
  x.attach_grad();
  w.attach_grad();
  b.attach_grad();
  {
    autograd::record rec;
    conv2d(x, w, b, opt).backward(head);
  }
  auto gx = x.grad().to_vector(), gw = w.grad().to_vector(), gb = b.grad().to_vector();
  // Only the input: the weight is a constant.
  auto x2 = x.detach().clone();
  x2.attach_grad();
  {
    autograd::record rec;
    conv2d(x2, w.detach(), b.detach(), opt).backward(head);
  }
  auto gx2 = x2.grad().to_vector();
  for (size_t i = 0; i < gx.size(); ++i) CHECK(gx2[i] == doctest::Approx(gx[i]).epsilon(1e-12));
  // Only the weight.
  auto w2 = w.detach().clone();
  w2.attach_grad();
  {
    autograd::record rec;
    conv2d(x.detach(), w2, {}, opt).backward(head);
  }
  auto gw2 = w2.grad().to_vector();
  for (size_t i = 0; i < gw.size(); ++i) CHECK(gw2[i] == doctest::Approx(gw[i]).epsilon(1e-12));
  // The bias gradient is the head summed over batch and space.
  auto hv = head.to_vector();
  for (int64_t o = 0; o < 3; ++o) {
    double s = 0;
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t i = 0; i < 25; ++i) s += hv[static_cast<size_t>((n * 3 + o) * 25 + i)];
    CHECK(gb[static_cast<size_t>(o)] == doctest::Approx(s).epsilon(1e-12));
  }
}

TEST_CASE("conv2d reuses pooled column buffers across calls") {
  auto x = randn<float>({4, 8, 12, 12}), w = randn<float>({8, 8, 3, 3});
  x.attach_grad();
  w.attach_grad();
  auto step = [&] {
    autograd::record rec;
    auto y = conv2d(x, w, {}, {{1, 1}, {1, 1}, {1, 1}, 1});
    y.backward(ones_like(y.detach()));
  };
  step();
  step();
  auto before = cpu_allocator().stats().num_system_allocs;
  step();
  CHECK(cpu_allocator().stats().num_system_allocs == before);
}

TEST_CASE("conv2d errors") {
  auto x = zeros<float>({1, 4, 3, 3});
  auto w = zeros<float>({2, 4, 3, 3});
  CHECK_THROWS_WITH_AS(conv2d(x, w, {}, {{0, 1}, {0, 0}, {1, 1}, 1}), doctest::Contains("conv2d: stride must be positive, got (0, 1)"), dl::ValueError);
  CHECK_THROWS_WITH_AS(conv2d(x, w, {}, {{1, -2}, {0, 0}, {1, 1}, 1}), doctest::Contains("conv2d: stride must be positive, got (1, -2)"), dl::ValueError);
  CHECK_THROWS_WITH_AS(conv2d(x, w, {}, {{1, 1}, {-1, 0}, {1, 1}, 1}), doctest::Contains("conv2d: padding must be non-negative, got (-1, 0)"), dl::ValueError);
  CHECK_THROWS_WITH_AS(conv2d(x, w, {}, {{1, 1}, {0, 0}, {1, 0}, 1}), doctest::Contains("conv2d: dilation must be at least 1, got (1, 0)"), dl::ValueError);
  CHECK_THROWS_WITH_AS(conv2d(x, zeros<float>({2, 4, 0, 3})), doctest::Contains("conv2d: kernel size must be positive, got (0, 3)"), dl::ValueError);
  CHECK_THROWS_WITH_AS(conv2d(x, zeros<float>({2, 4, 5, 5})),
                       doctest::Contains("conv2d: kernel (5, 5) with dilation (1, 1) is larger than padded input (3, 3)"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(conv2d(x, w, {}, {{1, 1}, {0, 0}, {2, 1}, 1}),
                       doctest::Contains("conv2d: kernel (3, 3) with dilation (2, 1) is larger than padded input (3, 3)"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(conv2d(x, zeros<float>({2, 1, 1, 1}), {}, {{1, 1}, {0, 0}, {1, 1}, 3}),
                       doctest::Contains("conv2d: input channels 4 are not divisible by groups 3"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(conv2d(x, zeros<float>({3, 2, 1, 1}), {}, {{1, 1}, {0, 0}, {1, 1}, 2}),
                       doctest::Contains("conv2d: output channels 3 are not divisible by groups 2"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(conv2d(x, zeros<float>({2, 4, 1, 1}), {}, {{1, 1}, {0, 0}, {1, 1}, 2}),
                       doctest::Contains("input channels per group, but input (1, 4, 3, 3) with groups 2 has 2"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(conv2d(x, zeros<float>({2, 3, 1, 1})), doctest::Contains("conv2d: weight (2, 3, 1, 1) expects 3"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(conv2d(x, w, {}, {{1, 1}, {0, 0}, {1, 1}, 0}), doctest::Contains("conv2d: groups must be positive, got 0"), dl::ValueError);
  CHECK_THROWS_WITH_AS(conv2d(zeros<float>({4, 3, 3}), w), doctest::Contains("conv2d: expected a 4-D input (N, C, H, W), got (4, 3, 3)"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(conv2d(x, zeros<float>({2, 4, 3})), doctest::Contains("conv2d: expected a 4-D weight"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(conv2d(x, w, zeros<float>({3})), doctest::Contains("conv2d: bias has shape (3,), expected (2,)"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(conv2d(x, w, zeros<float>({2, 1})), doctest::Contains("conv2d: bias has shape (2, 1), expected (2,)"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(conv2d(x, w, {}, {{1, 1}, {int64_t{1} << 62, 0}, {1, 1}, 1}), doctest::Contains("is too large"), dl::ValueError);
  CHECK_THROWS_WITH_AS(conv2d(NDArray<float>(), w), doctest::Contains("conv2d: the array is undefined"), dl::ValueError);
}
