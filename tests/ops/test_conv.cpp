// conv2d: forward against a naive reference loop over a grid of configurations (and random ones),
// gradients through the gradcheck op table and against a reference loop for each input-gradient
// path of backend/cpu/conv.hpp, the direct float kernel (stride 1, and strided on the image's
// phases) against the im2col path (in double) for each shape class it takes, the pooled column
// buffer, and every error path.
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

namespace {
// Direct definition of the gradients for an output gradient gy: dx[n, c, ih, iw] and dw[o, c', ki, kj]
// collect gy[n, o, i, j] * (w or x) over every (i, j, ki, kj) whose tap reads x[n, c, ih, iw].
void reference_conv_grads(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& gy,
                          const cpu::Conv2dGeometry& g, std::vector<double>& dx, std::vector<double>& dw) {
  const int64_t Cg = g.in_per_group(), Og = g.out_per_group();
  dx.assign(static_cast<size_t>(g.batch * g.in_channels * g.in_h * g.in_w), 0.0);
  dw.assign(static_cast<size_t>(g.out_channels * Cg * g.kernel_h * g.kernel_w), 0.0);
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t oc = 0; oc < g.out_channels; ++oc)
      for (int64_t i = 0; i < g.out_h; ++i)
        for (int64_t j = 0; j < g.out_w; ++j) {
          const double gv = gy[static_cast<size_t>(((n * g.out_channels + oc) * g.out_h + i) * g.out_w + j)];
          for (int64_t cc = 0; cc < Cg; ++cc)
            for (int64_t ki = 0; ki < g.kernel_h; ++ki)
              for (int64_t kj = 0; kj < g.kernel_w; ++kj) {
                int64_t ih = i * g.stride_h - g.pad_h + ki * g.dilation_h, iw = j * g.stride_w - g.pad_w + kj * g.dilation_w;
                if (ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) continue;
                auto xi = static_cast<size_t>(((n * g.in_channels + oc / Og * Cg + cc) * g.in_h + ih) * g.in_w + iw);
                auto wi = static_cast<size_t>(((oc * Cg + cc) * g.kernel_h + ki) * g.kernel_w + kj);
                dx[xi] += gv * w[wi];
                dw[wi] += gv * x[xi];
              }
        }
}

enum class GradInputPath { by_conv, col2im, pointwise };
GradInputPath grad_input_path(const cpu::Conv2dGeometry& g) {
  if (g.is_pointwise()) return GradInputPath::pointwise;
  return cpu::detail::use_input_grad_by_conv<double>(g) ? GradInputPath::by_conv : GradInputPath::col2im;
}

cpu::Conv2dGeometry geometry(int64_t n, int64_t c, int64_t h, int64_t w, int64_t o, int64_t kh, int64_t kw, int64_t sh,
                             int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups) {
  return {n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, groups,
          out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)};
}

// conv2d_backward's dx and dw (double) against the reference, and, where the input gradient is a
// convolution of gy (stride 1, padding <= d(k-1)), conv2d_input_grad_by_conv's dx too whichever
// path conv2d_backward takes.
void check_backward(const cpu::Conv2dGeometry& g, Generator& gen) {
  auto x = randn<double>({g.batch, g.in_channels, g.in_h, g.in_w}, 0, 1, gen);
  auto w = randn<double>({g.out_channels, g.in_per_group(), g.kernel_h, g.kernel_w}, 0, 1, gen);
  auto gy = randn<double>({g.batch, g.out_channels, g.out_h, g.out_w}, 0, 1, gen);
  std::vector<double> rdx, rdw;
  reference_conv_grads(x.to_vector(), w.to_vector(), gy.to_vector(), g, rdx, rdw);
  std::vector<double> dx(rdx.size(), 7.0), dw(rdw.size(), 7.0);  // garbage: must be overwritten
  cpu::conv2d_backward(x.data(), w.data(), gy.data(), dx.data(), dw.data(), static_cast<double*>(nullptr), g);
  auto worst = [](const std::vector<double>& a, const std::vector<double>& b) {
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
    return m;
  };
  CHECK(worst(dx, rdx) <= 1e-10);
  CHECK(worst(dw, rdw) <= 1e-10);
  if (cpu::detail::input_grad_is_conv(g)) {
    std::vector<double> dx2(rdx.size(), 7.0);
    cpu::conv2d_input_grad_by_conv(w.data(), gy.data(), dx2.data(), g);
    CHECK(worst(dx2, rdx) <= 1e-10);
  }
}
}  // namespace

TEST_CASE("conv2d backward: each input-gradient path against the reference") {
  Generator gen(77);
  struct Case {
    const char* name;
    cpu::Conv2dGeometry g;
    GradInputPath path;
  };
  const std::vector<Case> cases = {
      {"3x3 pad 1 (ResNet)", geometry(3, 4, 7, 7, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1), GradInputPath::by_conv},
      {"3x3 pad 1, odd rectangle, one image", geometry(1, 3, 5, 9, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1), GradInputPath::by_conv},
      {"5x5 pad 2 (LeNet conv1)", geometry(2, 1, 9, 8, 3, 5, 5, 1, 1, 2, 2, 1, 1, 1), GradInputPath::by_conv},
      {"3x5 pad (1, 2)", geometry(2, 2, 6, 7, 3, 3, 5, 1, 1, 1, 2, 1, 1, 1), GradInputPath::by_conv},
      {"same with groups 2", geometry(2, 4, 6, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2), GradInputPath::by_conv},
      {"same depthwise", geometry(2, 3, 5, 5, 3, 3, 3, 1, 1, 1, 1, 1, 1, 3), GradInputPath::by_conv},
      {"same with dilation 2", geometry(2, 2, 9, 8, 3, 3, 3, 1, 1, 2, 2, 2, 2, 1), GradInputPath::by_conv},
      {"2x2 pad 1 (larger output)", geometry(2, 2, 6, 6, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1), GradInputPath::by_conv},
      {"3x3 pad (1, 0), large plane", geometry(2, 2, 20, 20, 3, 3, 3, 1, 1, 1, 0, 1, 1, 1), GradInputPath::by_conv},
      {"padding > d(k-1)", geometry(1, 2, 4, 5, 3, 2, 2, 1, 1, 2, 3, 1, 1, 1), GradInputPath::col2im},
      {"5x5 unpadded (LeNet conv2)", geometry(2, 3, 14, 14, 4, 5, 5, 1, 1, 0, 0, 1, 1, 1), GradInputPath::col2im},
      {"3x3 unpadded, small plane", geometry(2, 2, 5, 6, 3, 3, 3, 1, 1, 0, 0, 1, 1, 1), GradInputPath::col2im},
      {"3x3 stride 2 pad 1", geometry(3, 3, 7, 8, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1), GradInputPath::col2im},
      {"stride (1, 2)", geometry(2, 2, 6, 7, 3, 3, 3, 1, 2, 1, 1, 1, 1, 1), GradInputPath::col2im},
      {"1x1 stride 2", geometry(2, 3, 7, 6, 4, 1, 1, 2, 2, 0, 0, 1, 1, 1), GradInputPath::col2im},
      {"1x1 pointwise", geometry(2, 3, 4, 5, 4, 1, 1, 1, 1, 0, 0, 1, 1, 1), GradInputPath::pointwise},
      {"1x1 pad 1 (output larger than input)", geometry(1, 2, 3, 4, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1), GradInputPath::col2im},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    CHECK(grad_input_path(c.g) == c.path);
    check_backward(c.g, gen);
  }
}

TEST_CASE("conv2d backward on random configurations, every path") {
  Generator gen(4242);
  int counts[3] = {0, 0, 0};
  for (int trial = 0; trial < 120; ++trial) {
    auto pick = [&](int64_t lo, int64_t hi) {
      return lo + static_cast<int64_t>(philox_uniform(gen.reserve(1), 0) * static_cast<double>(hi - lo + 1));
    };
    const int64_t groups = pick(1, 3), kh = pick(1, 5), kw = pick(1, 5), dh = pick(1, 2), dw = pick(1, 2);
    // Half the trials stride 1 with padding up to the kernel's reach, where dx may be a convolution.
    const bool unit = pick(0, 1) == 1;
    const int64_t sh = unit ? 1 : pick(1, 3), sw = unit ? 1 : pick(1, 3);
    const int64_t ph = unit ? pick(0, dh * (kh - 1)) : pick(0, 2), pw = unit ? pick(0, dw * (kw - 1)) : pick(0, 2);
    const int64_t h = pick(1, 12), w = pick(1, 12);
    if (dh * (kh - 1) + 1 > h + 2 * ph || dw * (kw - 1) + 1 > w + 2 * pw) continue;
    auto g = geometry(pick(1, 4), groups * pick(1, 3), h, w, groups * pick(1, 3), kh, kw, sh, sw, ph, pw, dh, dw, groups);
    CAPTURE(trial);
    ++counts[static_cast<int>(grad_input_path(g))];
    check_backward(g, gen);
  }
  CHECK(counts[static_cast<int>(GradInputPath::by_conv)] >= 10);
  CHECK(counts[static_cast<int>(GradInputPath::col2im)] >= 10);
}

namespace {
// float conv2d_forward / conv2d_backward (the direct kernel where it applies) against the
// same values in double, which always take the im2col path.
void check_float_against_double(const cpu::Conv2dGeometry& g, Generator& gen) {
  auto x = randn<float>({g.batch, g.in_channels, g.in_h, g.in_w}, 0, 1, gen);
  auto w = randn<float>({g.out_channels, g.in_per_group(), g.kernel_h, g.kernel_w}, 0, 1, gen);
  auto b = randn<float>({g.out_channels}, 0, 1, gen);
  auto gy = randn<float>({g.batch, g.out_channels, g.out_h, g.out_w}, 0, 1, gen);
  auto xd = x.cast<double>(), wd = w.cast<double>(), bd = b.cast<double>(), gyd = gy.cast<double>();
  auto close = [](const std::vector<float>& got, const std::vector<double>& ref) {
    double scale = 1, worst = 0;
    for (double r : ref) scale = std::max(scale, std::abs(r));
    for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::abs(static_cast<double>(got[i]) - ref[i]));
    return worst <= 2e-5 * scale;
  };
  std::vector<float> y(static_cast<size_t>(g.batch * g.out_channels * g.out_plane()), 7.0f);
  std::vector<double> yd(y.size());
  cpu::conv2d_forward(x.data(), w.data(), b.data(), y.data(), g);
  cpu::conv2d_forward(xd.data(), wd.data(), bd.data(), yd.data(), g);
  CHECK(close(y, yd));
  std::vector<float> dx(static_cast<size_t>(g.batch * g.in_channels * g.in_plane()), 7.0f), dw(static_cast<size_t>(w.numel()), 7.0f),
      db(static_cast<size_t>(g.out_channels), 7.0f);
  std::vector<double> dxd(dx.size()), dwd(dw.size()), dbd(db.size());
  cpu::conv2d_backward(x.data(), w.data(), gy.data(), dx.data(), dw.data(), db.data(), g);
  cpu::conv2d_backward(xd.data(), wd.data(), gyd.data(), dxd.data(), dwd.data(), dbd.data(), g);
  CHECK(close(dx, dxd));
  CHECK(close(dw, dwd));
  CHECK(close(db, dbd));
}
}  // namespace

namespace {
// Winograd on or off for a scope (cpu::set_conv_winograd), the setting restored after: the tests of
// the direct kernels turn it off, since 3x3 stride-1 shapes with >= 32 channels would go to it.
struct WinogradSetting {
  bool saved = cpu::conv_winograd();
  explicit WinogradSetting(bool on) { cpu::set_conv_winograd(on); }
  ~WinogradSetting() { cpu::set_conv_winograd(saved); }
  WinogradSetting(const WinogradSetting&) = delete;
  WinogradSetting& operator=(const WinogradSetting&) = delete;
};
}  // namespace

TEST_CASE("conv2d direct kernel (float) against the im2col path, each shape class") {
  WinogradSetting direct_only(false);
  Generator gen(99);
  struct Case {
    const char* name;
    cpu::Conv2dGeometry g;
    bool direct, direct_weight_grad;  // with AVX-512; without it neither is taken
  };
  const std::vector<Case> cases = {
      {"ResNet stage 1: 3x3 pad 1, 16 channels, 28x28", geometry(3, 16, 28, 28, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1), true, true},
      {"ResNet stage 2: 32 channels, 14x14", geometry(2, 32, 14, 14, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1), true, true},
      {"ResNet stage 3: 7x7 (weight gradient by channel vectors)", geometry(2, 64, 7, 7, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1), true, false},
      {"LeNet conv1: one input channel, 5x5 pad 2", geometry(3, 1, 28, 28, 16, 5, 5, 1, 1, 2, 2, 1, 1, 1), true, true},
      {"output channels not a multiple of 8", geometry(2, 3, 12, 17, 13, 3, 3, 1, 1, 1, 1, 1, 1, 1), true, true},
      {"one output channel, odd sizes", geometry(5, 2, 11, 13, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1), true, true},
      {"groups 2, 5 channels each side", geometry(2, 10, 16, 16, 10, 3, 3, 1, 1, 1, 1, 1, 1, 2), true, true},
      {"depthwise", geometry(2, 8, 16, 16, 8, 3, 3, 1, 1, 1, 1, 1, 1, 8), true, true},
      {"dilation 2, padding 2", geometry(2, 3, 20, 18, 9, 3, 3, 1, 1, 2, 2, 2, 2, 1), true, true},
      {"rectangular 3x5, padding (1, 2)", geometry(2, 4, 15, 19, 6, 3, 5, 1, 1, 1, 2, 1, 1, 1), true, true},
      {"padding beyond the kernel's reach", geometry(2, 2, 12, 12, 3, 3, 3, 1, 1, 3, 2, 1, 1, 1), true, true},
      {"unpadded 3x3 on a large plane", geometry(2, 3, 40, 40, 5, 3, 3, 1, 1, 0, 0, 1, 1, 1), true, true},
      {"tiny plane: one 16-wide block", geometry(3, 5, 3, 3, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1), true, false},
      {"grid more than twice the output (im2col)", geometry(2, 3, 7, 7, 4, 5, 5, 1, 1, 0, 0, 1, 1, 1), false, false},
      {"batch over many chunks", geometry(9, 4, 16, 16, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1), true, true},
      {"LeNet conv2: 5x5 unpadded 14x14 (dx by a direct conv of gy)", geometry(2, 16, 14, 14, 32, 5, 5, 1, 1, 0, 0, 1, 1, 1), true, true},
      {"stride 2 on phases, small plane (weight gradient by im2col)", geometry(2, 4, 16, 16, 8, 3, 3, 2, 2, 1, 1, 1, 1, 1), true, false},
      {"ResNet downsampling: 3x3 stride 2, 16 -> 32, 28x28", geometry(3, 16, 28, 28, 32, 3, 3, 2, 2, 1, 1, 1, 1, 1), true, true},
      {"ResNet downsampling: 3x3 stride 2, 32 -> 64, 14x14", geometry(2, 32, 14, 14, 64, 3, 3, 2, 2, 1, 1, 1, 1, 1), true, false},
      {"stride 2, unpadded, odd sizes, batch 5", geometry(5, 3, 23, 19, 10, 3, 3, 2, 2, 0, 0, 1, 1, 1), true, false},
      {"stride 2, image width over 32 (two column blocks)", geometry(2, 2, 20, 45, 3, 3, 3, 2, 2, 1, 1, 1, 1, 1), true, true},
      {"stride (2, 1), padding (0, 2)", geometry(3, 3, 21, 17, 5, 3, 5, 2, 1, 0, 2, 1, 1, 1), true, true},
      {"stride (1, 3), 4x4 kernel", geometry(2, 3, 18, 31, 4, 4, 4, 1, 3, 1, 1, 1, 1, 1), true, true},
      {"stride 2, dilation 2: one phase read", geometry(2, 4, 24, 24, 6, 3, 3, 2, 2, 2, 2, 2, 2, 1), true, true},
      {"stride 3, 5x5 pad 2, groups 2", geometry(3, 6, 31, 29, 4, 5, 5, 3, 3, 2, 2, 1, 1, 2), true, true},
      {"stride 2, one image", geometry(1, 5, 33, 33, 7, 3, 3, 2, 2, 1, 1, 1, 1, 1), true, true},
      {"stride 5: beyond the phase split (im2col)", geometry(2, 3, 30, 30, 4, 3, 3, 5, 5, 1, 1, 1, 1, 1), false, false},
      {"1x1 stride 2 (im2col)", geometry(2, 8, 16, 16, 8, 1, 1, 2, 2, 0, 0, 1, 1, 1), false, false},
      {"1x1 pointwise (no im2col)", geometry(2, 8, 16, 16, 8, 1, 1, 1, 1, 0, 0, 1, 1, 1), false, false},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    CHECK(cpu::detail::use_direct_conv<float>(c.g) == (cpu::detail::kDirectConv && c.direct));
    CHECK(cpu::detail::use_direct_weight_grad<float>(c.g) == (cpu::detail::kDirectConv && c.direct_weight_grad));
    CHECK_FALSE(cpu::detail::use_direct_conv<double>(c.g));
    // dx as a convolution of gy: on the direct kernel for float wherever that applies to it.
    if (cpu::detail::input_grad_is_conv(c.g) && cpu::detail::use_direct_conv<float>(cpu::detail::input_grad_geometry(c.g)))
      CHECK(cpu::detail::use_input_grad_by_conv<float>(c.g));
    check_float_against_double(c.g, gen);
  }
}

namespace {
// A shape and whether a kernel-choice predicate takes it (with AVX-512; without, nothing is taken):
// the choice is checked for float and double, then the float result against the double path.
struct KernelCase {
  const char* name;
  cpu::Conv2dGeometry g;
  bool taken;
};
template <class Uses>
void check_kernel_cases(const std::vector<KernelCase>& cases, Uses uses, Generator& gen) {
  for (const auto& c : cases) {
    INFO(std::string(c.name));
    CHECK(uses(c.g, float{}) == (cpu::detail::kDirectConv && c.taken));
    CHECK_FALSE(uses(c.g, double{}));
    check_float_against_double(c.g, gen);
  }
}
}  // namespace

TEST_CASE("conv2d weight gradient with output channels along the vectors (float) against double") {
  // cpu::detail::channel_conv_weight_grad, >= 8 output channels per group: stride 1 without
  // dilation, kernel width 3 or 5 and >= 8 kernel rows (channels x kernel height); strides 2-4 with
  // >= 8 taps (one pointer per tap on the phase planes). Its edges: odd output widths (with < 32
  // channels a zero gy column in a column pair; >= 32: one column per step), channel counts off 16 and 32
  // (the 2- and 4-vector tiles, masked rows), kernel rows or taps off the tile's (repeated pointers
  // whose sums are dropped), groups, bands of output rows.
  WinogradSetting direct_only(false);
  Generator gen(2024);
  const std::vector<KernelCase> cases = {
      {"ResNet stage 1: 16 channels, 28x28 (bands of 4 rows)", geometry(3, 16, 28, 28, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1), true},
      {"ResNet stage 3: 64 channels, 7x7 (odd width)", geometry(2, 64, 7, 7, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1), true},
      {"48 output channels: a 4-vector and a 2-vector tile", geometry(2, 5, 9, 11, 48, 3, 3, 1, 1, 1, 1, 1, 1, 1), true},
      {"13 output channels, 9 kernel rows (masked channels, a repeated row)", geometry(2, 3, 12, 17, 13, 3, 3, 1, 1, 1, 1, 1, 1, 1), true},
      {"5x5, 40 output channels, unpadded, odd width", geometry(2, 6, 14, 13, 40, 5, 5, 1, 1, 0, 0, 1, 1, 1), true},
      {"5x3 kernel (width 3), padding (2, 0)", geometry(3, 4, 10, 10, 20, 5, 3, 1, 1, 2, 0, 1, 1, 1), true},
      {"groups 2, 12 output channels each", geometry(2, 16, 10, 9, 24, 3, 3, 1, 1, 1, 1, 1, 1, 2), true},
      {"batch over many chunks, one-column output", geometry(9, 4, 6, 3, 8, 3, 3, 1, 1, 1, 0, 1, 1, 1), true},
      {"one input channel (3 kernel rows): the older kernel", geometry(2, 1, 28, 28, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1), false},
      {"7 output channels: the older kernel", geometry(2, 4, 12, 12, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1), false},
      {"kernel width 4: the older kernel", geometry(2, 4, 12, 12, 16, 3, 4, 1, 1, 1, 1, 1, 1, 1), false},
      {"dilation 2: the older kernel", geometry(2, 4, 12, 12, 16, 3, 3, 1, 1, 2, 2, 2, 2, 1), false},
      {"ResNet downsampling 16 -> 32, stride 2", geometry(2, 16, 28, 28, 32, 3, 3, 2, 2, 1, 1, 1, 1, 1), true},
      {"ResNet downsampling 32 -> 64, stride 2, 7x7 out", geometry(2, 32, 14, 14, 64, 3, 3, 2, 2, 1, 1, 1, 1, 1), true},
      {"stride (2, 1), 5x3, odd width, 40 channels", geometry(3, 3, 15, 13, 40, 5, 3, 2, 1, 2, 1, 1, 1, 1), true},
      {"stride 3, 5x5 pad 2, groups 2 of 9 channels", geometry(2, 6, 31, 29, 18, 5, 5, 3, 3, 2, 2, 1, 1, 2), true},
      {"stride 2, dilation 2, 33 channels", geometry(2, 4, 24, 24, 33, 3, 3, 2, 2, 2, 2, 2, 2, 1), true},
      {"stride 2, 2x2 kernel with one input channel (4 taps): the older kernel", geometry(2, 1, 16, 16, 16, 2, 2, 2, 2, 0, 0, 1, 1, 1), false},
  };
  check_kernel_cases(
      cases, [](const cpu::Conv2dGeometry& g, auto t) { return cpu::detail::use_channel_weight_grad<decltype(t)>(g); },
      gen);
}

TEST_CASE("conv2d forward with output channels along the vectors (float) against double") {
  // cpu::detail::channel_conv_forward: direct-conv shapes with output channels per group in 64s, or
  // in 32s where the padded grid wastes >= 20 %.
  // Its edges: planes not a multiple of the 6- or 12-position tile, planes over 16 (several
  // transposed blocks), strides (phase offsets), groups, 96 and 128 channels (tiles of 64 and 32).
  WinogradSetting direct_only(false);
  Generator gen(77);
  const std::vector<KernelCase> cases = {
      {"ResNet stage 3: 64 channels, 7x7 (dx too: 64 -> 64)", geometry(2, 64, 7, 7, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1), true},
      {"ResNet downsampling: 32 -> 64, stride 2, 14x14", geometry(2, 32, 14, 14, 64, 3, 3, 2, 2, 1, 1, 1, 1, 1), true},
      {"128 channels, 5x5 plane (2 channel blocks, one tile and a part)", geometry(3, 8, 5, 5, 128, 3, 3, 1, 1, 1, 1, 1, 1, 1), true},
      {"groups 2 of 64, 4x6 plane, 5x3 kernel", geometry(2, 6, 4, 6, 128, 5, 3, 1, 1, 2, 1, 1, 1, 2), true},
      {"one output position: im2col (the grid is 16x the output)", geometry(2, 3, 3, 3, 64, 3, 3, 1, 1, 0, 0, 1, 1, 1), false},
      {"48 channels: the grid kernel", geometry(2, 8, 7, 7, 48, 3, 3, 1, 1, 1, 1, 1, 1, 1), false},
      {"64 channels on 28x28", geometry(1, 4, 28, 28, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1), true},
      {"32 channels, 9x11 (2-vector tiles of 12 positions)", geometry(2, 5, 9, 11, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1), true},
      {"96 channels, LeNet's unpadded 5x5 on 14x14", geometry(2, 6, 14, 14, 96, 5, 5, 1, 1, 0, 0, 1, 1, 1), true},
      {"32 channels on 14x14 (the grid wastes 14 %): the grid kernel", geometry(2, 32, 14, 14, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1), false},
      {"16 channels: the grid kernel", geometry(2, 8, 7, 7, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1), false},
  };
  check_kernel_cases(
      cases, [](const cpu::Conv2dGeometry& g, auto t) { return cpu::detail::use_channel_forward<decltype(t)>(g); }, gen);
}

TEST_CASE("conv2d Winograd F(4x4, 3x3) forward, input and weight gradients (float) against double") {
  // cpu::detail::winograd_conv_forward and winograd_conv_weight_grad: 3x3, stride 1, no dilation,
  // >= 32 channels per group on each side in 16s; the input gradient of such a convolution is a
  // forward one too (padding 2 - p). Its
  // edges: partial tiles (planes not a multiple of 4), more tiles than one transform block (24),
  // output channels needing the 2- and 1-vector product tiles (48, 96 = 64 + 32), groups, paddings
  // 0 and 2 (dx: 2 and 0), rectangles.
  WinogradSetting on(true);
  Generator gen(4343);
  const std::vector<KernelCase> cases = {
      {"ResNet stage 2: 32 channels, 14x14 (4x4 tiles, 2 partial)", geometry(2, 32, 14, 14, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1), true},
      {"ResNet stage 3: 64 channels, 7x7 (2x2 tiles, 1 of 16 positions used at the corner)", geometry(3, 64, 7, 7, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1), true},
      {"bench/conv's layer shape: 64 channels, 32x32 (64 tiles: 3 blocks)", geometry(2, 64, 32, 32, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1), true},
      {"48 output channels, unpadded 9x11", geometry(2, 32, 9, 11, 48, 3, 3, 1, 1, 0, 0, 1, 1, 1), true},
      {"padding (2, 1), 5x6 input", geometry(2, 32, 5, 6, 32, 3, 3, 1, 1, 2, 1, 1, 1, 1), true},
      {"groups 2 of 32 -> 48, 13x10", geometry(2, 64, 13, 10, 96, 3, 3, 1, 1, 1, 1, 1, 1, 2), true},
      {"96 output channels, 21x22 (36 tiles: a block and a half)", geometry(2, 32, 21, 22, 96, 3, 3, 1, 1, 1, 1, 1, 1, 1), true},
      {"one whole tile: 4x4 output, batch over many chunks", geometry(9, 32, 4, 4, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1), true},
      {"16 channels: the direct kernels", geometry(2, 16, 28, 28, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1), false},
      {"40 input channels (not in 16s)", geometry(2, 40, 8, 8, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1), false},
      {"stride 2", geometry(2, 32, 14, 14, 64, 3, 3, 2, 2, 1, 1, 1, 1, 1), false},
      {"dilation 2", geometry(2, 32, 12, 12, 32, 3, 3, 1, 1, 2, 2, 2, 2, 1), false},
      {"5x5 kernel", geometry(2, 32, 12, 12, 32, 5, 5, 1, 1, 2, 2, 1, 1, 1), false},
      {"3x3 output: no whole tile", geometry(2, 32, 3, 3, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1), false},
  };
  check_kernel_cases(
      cases, [](const cpu::Conv2dGeometry& g, auto t) { return cpu::detail::use_winograd<decltype(t)>(g); }, gen);
  CHECK(cpu::detail::use_winograd<float>(cpu::detail::input_grad_geometry(cases[3].g)) == cpu::detail::kDirectConv);
  WinogradSetting off(false);
  CHECK_FALSE(cpu::detail::use_winograd<float>(cases[0].g));
}

TEST_CASE("conv2d direct kernel (float) on random configurations, stride 1 to 3") {
  WinogradSetting direct_only(false);
  Generator gen(31337);
  int direct = 0, strided = 0;
  for (int trial = 0; trial < 90; ++trial) {
    auto pick = [&](int64_t lo, int64_t hi) {
      return lo + static_cast<int64_t>(philox_uniform(gen.reserve(1), 0) * static_cast<double>(hi - lo + 1));
    };
    const int64_t groups = pick(1, 3), kh = pick(1, 5), kw = pick(1, 5), dh = pick(1, 2), dw = pick(1, 2);
    const int64_t ph = pick(0, dh * (kh - 1) / 2 + 1), pw = pick(0, dw * (kw - 1) / 2 + 1), h = pick(4, 30), w = pick(4, 30);
    if (dh * (kh - 1) + 1 > h + 2 * ph || dw * (kw - 1) + 1 > w + 2 * pw) continue;
    const int64_t sh = trial < 30 ? 1 : pick(1, 3), sw = trial < 30 ? 1 : pick(1, 3);
    auto g = geometry(pick(1, 5), groups * pick(1, 6), h, w, groups * pick(1, 12), kh, kw, sh, sw, ph, pw, dh, dw, groups);
    CAPTURE(trial);
    direct += cpu::detail::use_direct_conv<float>(g);
    strided += cpu::detail::use_direct_conv<float>(g) && (sh > 1 || sw > 1);
    check_float_against_double(g, gen);
  }
  if (cpu::detail::kDirectConv) CHECK(direct >= 15);
  if (cpu::detail::kDirectConv) CHECK(strided >= 10);
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
