// The CNN modules: nn::Conv2d (conv.hpp), MaxPool2d / AvgPool2d / GlobalAvgPool2d (pool.hpp),
// BatchNorm2d (batch_norm.hpp) and BasicBlock (residual.hpp). Forward equals the functional op
// with the module's parameters; names follow PyTorch; batch-norm buffers live in state_dict and
// train vs eval mode picks batch vs running statistics; a residual block has the right shape,
// the right shortcut, and gradients reach every parameter.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "dl/autograd/engine.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/nn/activation.hpp"
#include "dl/nn/batch_norm.hpp"
#include "dl/nn/conv.hpp"
#include "dl/nn/flatten.hpp"
#include "dl/nn/init.hpp"
#include "dl/nn/dense.hpp"
#include "dl/nn/pool.hpp"
#include "dl/nn/residual.hpp"
#include "dl/nn/sequential.hpp"
#include "dl/ops/loss.hpp"
#include "dl/ops/reduce.hpp"

using namespace dl;

namespace {
std::vector<std::string> names_of(const nn::NamedArrays& arrays) {
  std::vector<std::string> out;
  for (auto& [name, a] : arrays) out.push_back(name);
  return out;
}
double max_abs(const NDArray<float>& a) {
  double m = 0;
  for (float v : a.to_vector()) m = std::max(m, static_cast<double>(std::abs(v)));
  return m;
}
void check_close(const std::vector<float>& got, const std::vector<float>& want, double tol = 1e-5) {
  REQUIRE(got.size() == want.size());
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) bad += std::abs(got[i] - want[i]) > tol * (1 + std::abs(want[i]));
  CHECK(bad == 0);
}
// Per-channel mean and (biased) variance of an (N, C, H, W) array.
void channel_stats(const NDArray<float>& a, std::vector<double>& mean, std::vector<double>& var) {
  auto v = a.contiguous().to_vector();
  int64_t N = a.shape(0), C = a.shape(1), S = a.shape(2) * a.shape(3);
  mean.assign(static_cast<size_t>(C), 0.0);
  var.assign(static_cast<size_t>(C), 0.0);
  for (int64_t c = 0; c < C; ++c) {
    double s = 0, s2 = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < S; ++i) {
        double x = v[static_cast<size_t>((n * C + c) * S + i)];
        s += x;
        s2 += x * x;
      }
    double m = s / static_cast<double>(N * S);
    mean[static_cast<size_t>(c)] = m;
    var[static_cast<size_t>(c)] = s2 / static_cast<double>(N * S) - m * m;
  }
}
}  // namespace

TEST_CASE("Conv2d: parameters, names and PyTorch's default initialisation") {
  Generator gen(1);
  nn::Conv2d conv(3, 8, 5, {.padding = {2, 2}}, true, gen);
  CHECK(conv.weight.shape() == Shape{8, 3, 5, 5});
  CHECK(conv.bias.shape() == Shape{8});
  CHECK(names_of(conv.named_parameters()) == std::vector<std::string>{"weight", "bias"});
  CHECK(conv.named_buffers().empty());
  double bound = 1.0 / std::sqrt(3.0 * 25.0);  // fan_in = C * kh * kw
  CHECK(max_abs(conv.weight) <= bound);
  CHECK(max_abs(conv.weight) > 0.8 * bound);  // 600 draws: the largest is near the bound
  CHECK(max_abs(conv.bias) <= bound);
  CHECK(max_abs(conv.bias) > 0);

  Generator g1(5), g2(5);
  nn::Conv2d a(2, 4, 3, 1, 1, true, g1), b(2, 4, 3, 1, 1, true, g2);
  CHECK(a.weight.to_vector() == b.weight.to_vector());

  nn::Conv2d nobias(4, 6, 1, 2, 0, false);
  CHECK_FALSE(nobias.has_bias());
  CHECK(nobias.named_parameters().size() == 1);
  CHECK(nobias.options().stride == std::array<int64_t, 2>{2, 2});

  nn::Conv2d empty_options(2, 3, 3, {}, false);  // {} is Conv2dOptions, not stride 0
  CHECK(empty_options.options().stride == std::array<int64_t, 2>{1, 1});
  CHECK_FALSE(empty_options.has_bias());

  nn::Conv2d grouped(4, 8, {3, 1}, {.groups = 2});
  CHECK(grouped.weight.shape() == Shape{8, 2, 3, 1});
  CHECK(grouped.kernel_size() == std::array<int64_t, 2>{3, 1});
}

// GCC 12.2 at -O2 with AVX-512 once delivered `{}` to a by-value Conv2dOptions parameter with
// padding (1, 0) (an SLP-vectorizer miscompile); the constructors take the options by reference.
TEST_CASE("Conv2d: the options given are the options kept") {
  auto same = [](const Conv2dOptions& a, const Conv2dOptions& b) {
    return a.stride == b.stride && a.padding == b.padding && a.dilation == b.dilation && a.groups == b.groups;
  };
  CHECK(same(nn::Conv2d(2, 4, 3).options(), Conv2dOptions{}));
  CHECK(same(nn::Conv2d(2, 4, 3, {}, false).options(), Conv2dOptions{}));
  CHECK(same(nn::Conv2d(2, 4, 3, {.stride = {2, 2}}).options(), Conv2dOptions{.stride = {2, 2}}));
  CHECK(same(nn::Conv2d(2, 4, 3, {.padding = {2, 1}}).options(), Conv2dOptions{.padding = {2, 1}}));
  CHECK(same(nn::Conv2d(2, 4, 3, {.groups = 2}).options(), Conv2dOptions{.groups = 2}));
  CHECK(same(nn::Conv2d(2, 4, 3, 2, 1).options(), Conv2dOptions{.stride = {2, 2}, .padding = {1, 1}}));
  CHECK(nn::Conv2d(2, 4, 3).options().padding == std::array<int64_t, 2>{0, 0});
  CHECK(nn::Conv2d(2, 4, 5, {.padding = {2, 2}}).forward(ones<float>({1, 2, 6, 6})).shape() == Shape{1, 4, 6, 6});
  CHECK(nn::Conv2d(2, 4, 5, {}, false).forward(ones<float>({1, 2, 14, 14})).shape() == Shape{1, 4, 10, 10});
}

TEST_CASE("Conv2d: forward is conv2d with the module's weight, bias and options") {
  Generator gen(2);
  struct Case {
    int64_t in, out, kernel, stride, padding;
    bool bias;
    int64_t groups;
  };
  for (Case k : {Case{1, 6, 5, 1, 2, true, 1}, Case{6, 16, 5, 1, 0, true, 1}, Case{4, 8, 3, 2, 1, false, 1},
                 Case{4, 4, 3, 1, 1, true, 4}, Case{3, 5, 1, 2, 0, false, 1}}) {
    CAPTURE(k.in);
    CAPTURE(k.kernel);
    Conv2dOptions o{.stride = {k.stride, k.stride}, .padding = {k.padding, k.padding}, .groups = k.groups};
    nn::Conv2d conv(k.in, k.out, k.kernel, o, k.bias, gen);
    auto x = randn<float>({3, k.in, 11, 9}, 0.0, 1.0, gen);
    auto y = conv(x);
    auto want = conv2d(x, conv.weight, conv.bias, o);
    CHECK(y.shape() == want.shape());
    check_close(y.to_vector(), want.to_vector());
    // An expression input is materialised first.
    check_close(conv(x * 2.0f).to_vector(), conv2d(NDArray<float>(x * 2.0f), conv.weight, conv.bias, o).to_vector());
  }
}

TEST_CASE("Conv2d: gradients reach the weight, the bias and the input") {
  Generator gen(3);
  nn::Conv2d conv(2, 3, 3, 1, 1, true, gen);
  auto x = randn<float>({2, 2, 5, 5}, 0.0, 1.0, gen);
  x.attach_grad();
  NDArray<float> loss;
  {
    autograd::record rec;
    loss = sum(conv(x) * conv(x));
  }
  loss.backward();
  CHECK(max_abs(conv.weight.grad()) > 0);
  CHECK(max_abs(conv.bias.grad()) > 0);
  CHECK(max_abs(x.grad()) > 0);
}

TEST_CASE("Conv2d: errors name the module and the values") {
  CHECK_THROWS_WITH_AS(nn::Conv2d(0, 3, 3), doctest::Contains("Conv2d: in_channels and out_channels must be positive, got (0, 3)"),
                       ValueError);
  CHECK_THROWS_WITH_AS(nn::Conv2d(3, 3, 0), doctest::Contains("Conv2d: kernel size must be positive, got (0, 0)"),
                       ValueError);
  CHECK_THROWS_WITH_AS(nn::Conv2d(3, 3, 3, 0), doctest::Contains("Conv2d: stride must be positive, got (0, 0)"), ValueError);
  CHECK_THROWS_WITH_AS(nn::Conv2d(3, 3, 3, 1, -1), doctest::Contains("Conv2d: padding must be non-negative"), ValueError);
  CHECK_THROWS_WITH_AS(nn::Conv2d(3, 4, 3, {.groups = 2}), doctest::Contains("must both be divisible by groups 2"),
                       ValueError);
  nn::Conv2d conv(3, 4, 3);
  CHECK_THROWS_WITH_AS(conv(ones<float>({2, 2, 8, 8})),
                       doctest::Contains("Conv2d: input of shape (2, 2, 8, 8) must be (N, 3, H, W)"), ShapeError);
  CHECK_THROWS_WITH_AS(conv(ones<float>({3, 8, 8})), doctest::Contains("Conv2d: input of shape (3, 8, 8)"), ShapeError);
  CHECK_THROWS_WITH_AS(conv(ones<float>({1, 3, 2, 2})), doctest::Contains("conv2d: kernel (3, 3)"), ShapeError);
}

TEST_CASE("MaxPool2d, AvgPool2d, GlobalAvgPool2d: forward is the functional op") {
  Generator gen(4);
  auto x = randn<float>({2, 3, 9, 8}, 0.0, 1.0, gen);
  nn::MaxPool2d max2(2);
  CHECK(max2.stride() == std::array<int64_t, 2>{2, 2});
  CHECK(max2(x).shape() == Shape{2, 3, 4, 4});
  CHECK(max2(x).to_vector() == max_pool2d(x, {2, 2}).to_vector());
  nn::MaxPool2d max3(3, 2, 1);
  CHECK(max3(x).to_vector() == max_pool2d(x, {3, 3}, {2, 2}, {1, 1}).to_vector());
  nn::AvgPool2d avg(3, 1, 1, false);
  CHECK(avg(x).shape() == x.shape());
  check_close(avg(x).to_vector(), avg_pool2d(x, {3, 3}, {1, 1}, {1, 1}, false).to_vector());
  nn::AvgPool2d avg2(std::array<int64_t, 2>{2, 3});  // ({2, 3}) alone would also read as (kernel 2, stride 3)
  check_close(avg2(x).to_vector(), avg_pool2d(x, {2, 3}).to_vector());
  nn::GlobalAvgPool2d gap;
  CHECK(gap(x).shape() == Shape{2, 3, 1, 1});
  check_close(gap(x).to_vector(), global_avg_pool2d(x).to_vector());
  CHECK(max2.named_parameters().empty());

  CHECK_THROWS_WITH_AS(nn::MaxPool2d(0), doctest::Contains("MaxPool2d: kernel size must be positive, got (0, 0)"), ValueError);
  CHECK_THROWS_WITH_AS(nn::AvgPool2d(2, 0), doctest::Contains("AvgPool2d: stride must be positive, got (0, 0)"), ValueError);
  CHECK_THROWS_WITH_AS(nn::MaxPool2d(2, 2, 2), doctest::Contains("MaxPool2d: padding (2, 2) must be non-negative and at most half the kernel (2, 2)"),
                       ValueError);
  CHECK_THROWS_WITH_AS(max2(ones<float>({3, 8, 8})), doctest::Contains("max_pool2d: expected a 4-D input"), ShapeError);
}

TEST_CASE("BatchNorm2d: parameters, buffers and state_dict") {
  nn::BatchNorm2d bn(4, 0.2, 1e-3);
  CHECK(names_of(bn.named_parameters()) == std::vector<std::string>{"weight", "bias"});
  CHECK(names_of(bn.named_buffers()) == std::vector<std::string>{"running_mean", "running_var"});
  CHECK(bn.weight.to_vector() == std::vector<float>(4, 1.0f));
  CHECK(bn.bias.to_vector() == std::vector<float>(4, 0.0f));
  CHECK(bn.running_mean.to_vector() == std::vector<float>(4, 0.0f));
  CHECK(bn.running_var.to_vector() == std::vector<float>(4, 1.0f));
  CHECK(bn.momentum() == 0.2);
  CHECK(bn.eps() == 1e-3);
  auto state = bn.state_dict();
  CHECK(state.size() == 4);
  CHECK(state.count("running_mean") == 1);
  CHECK(state.count("running_var") == 1);
  // Buffers are not trained: an optimiser over named_parameters() never sees them.
  for (auto& [name, p] : bn.named_parameters()) CHECK(name.find("running") == std::string::npos);

  // Round trip: a second module loads the first's running statistics.
  Generator gen(6);
  auto x = randn<float>({8, 4, 3, 3}, 2.0, 3.0, gen);
  bn(x);
  nn::BatchNorm2d other(4);
  other.load_state_dict(bn.state_dict());
  CHECK(other.running_mean.to_vector() == bn.running_mean.to_vector());
  CHECK(other.running_var.to_vector() == bn.running_var.to_vector());

  CHECK_THROWS_WITH_AS(nn::BatchNorm2d(0), doctest::Contains("BatchNorm2d: channels must be positive, got 0"), ValueError);
  CHECK_THROWS_WITH_AS(nn::BatchNorm2d(3, 1.5), doctest::Contains("BatchNorm2d: momentum must be in [0, 1], got 1.5"),
                       ValueError);
  CHECK_THROWS_WITH_AS(bn(ones<float>({2, 3, 4, 4})),
                       doctest::Contains("BatchNorm2d: input of shape (2, 3, 4, 4) must be (N, 4, H, W)"), ShapeError);
  CHECK_THROWS_WITH_AS(bn(ones<float>({2, 4})), doctest::Contains("BatchNorm2d: input of shape (2, 4)"), ShapeError);
}

TEST_CASE("BatchNorm2d: training uses batch statistics and updates the running ones; eval uses the running ones") {
  Generator gen(7);
  const double momentum = 0.1, eps = 1e-5;
  nn::BatchNorm2d bn(3, momentum, eps);
  nn::init::uniform(bn.weight, 0.5, 2.0, gen);
  nn::init::uniform(bn.bias, -1.0, 1.0, gen);
  auto x = randn<float>({6, 3, 5, 4}, 1.5, 2.0, gen);
  std::vector<double> mean, var;
  channel_stats(x, mean, var);

  CHECK(bn.is_training());
  auto y = bn(x);
  auto w = bn.weight.to_vector(), b = bn.bias.to_vector();
  std::vector<double> ymean, yvar;
  channel_stats(y, ymean, yvar);
  const double M = 6 * 5 * 4;
  auto rm = bn.running_mean.to_vector(), rv = bn.running_var.to_vector();
  for (size_t c = 0; c < 3; ++c) {
    CHECK(ymean[c] == doctest::Approx(b[c]).epsilon(1e-4));                               // beta
    CHECK(yvar[c] == doctest::Approx(w[c] * w[c] * var[c] / (var[c] + eps)).epsilon(1e-3));  // gamma^2
    CHECK(rm[c] == doctest::Approx(momentum * mean[c]).epsilon(1e-4));
    CHECK(rv[c] == doctest::Approx((1 - momentum) + momentum * var[c] * M / (M - 1)).epsilon(1e-4));
  }

  // Eval mode: y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta; buffers unchanged.
  bn.eval();
  CHECK_FALSE(bn.is_training());
  auto x2 = randn<float>({2, 3, 4, 4}, 0.0, 1.0, gen);
  auto z = bn(x2);
  CHECK(bn.running_mean.to_vector() == rm);
  CHECK(bn.running_var.to_vector() == rv);
  auto xv = x2.to_vector(), zv = z.to_vector();
  int bad = 0;
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t i = 0; i < 16; ++i) {
        size_t k = static_cast<size_t>((n * 3 + c) * 16 + i);
        double want = (xv[k] - rm[c]) / std::sqrt(rv[c] + eps) * w[c] + b[c];
        bad += std::abs(zv[k] - want) > 1e-4 * (1 + std::abs(want));
      }
  CHECK(bad == 0);

  // Back to training: batch statistics again (the output is normalised per channel).
  bn.train();
  std::vector<double> m2, v2;
  channel_stats(bn(x2), m2, v2);
  for (size_t c = 0; c < 3; ++c) CHECK(m2[c] == doctest::Approx(b[c]).epsilon(1e-4));
  CHECK(bn.running_mean.to_vector() != rm);
}

TEST_CASE("BatchNorm2d: gradients reach gamma, beta and the input") {
  Generator gen(8);
  nn::BatchNorm2d bn(2);
  auto x = randn<float>({4, 2, 3, 3}, 0.0, 1.0, gen);
  x.attach_grad();
  auto h = randn<float>({4, 2, 3, 3}, 0.0, 1.0, gen);
  NDArray<float> loss;
  {
    autograd::record rec;
    loss = sum(bn(x) * h);
  }
  loss.backward();
  CHECK(max_abs(bn.weight.grad()) > 0);
  CHECK(max_abs(bn.bias.grad()) > 0);
  CHECK(max_abs(x.grad()) > 0);
}

TEST_CASE("BasicBlock: identity shortcut keeps the shape; stride 2 or new channels project") {
  Generator gen(9);
  nn::BasicBlock same(8, 8, 1, gen);
  CHECK_FALSE(same.has_projection());
  CHECK(names_of(same.named_parameters()) ==
        std::vector<std::string>{"conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight", "bn2.bias"});
  CHECK(same.conv1.weight.shape() == Shape{8, 8, 3, 3});
  CHECK_FALSE(same.conv1.has_bias());
  auto x = randn<float>({2, 8, 7, 7}, 0.0, 1.0, gen);
  auto y = same(x);
  CHECK(y.shape() == Shape{2, 8, 7, 7});
  for (float v : y.to_vector()) REQUIRE(v >= 0.0f);  // ends in relu

  nn::BasicBlock down(8, 16, 2, gen);
  CHECK(down.has_projection());
  CHECK(down(x).shape() == Shape{2, 16, 4, 4});
  auto names = names_of(down.named_parameters());
  CHECK(std::set<std::string>(names.begin(), names.end()).count("shortcut.0.weight") == 1);
  CHECK(down.shortcut->get<0>().weight.shape() == Shape{16, 8, 1, 1});
  auto buffers = names_of(down.named_buffers());
  CHECK(buffers == std::vector<std::string>{"bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var",
                                            "shortcut.1.running_mean", "shortcut.1.running_var"});
  CHECK(down.state_dict().size() == names.size() + buffers.size());

  nn::BasicBlock widen(8, 12, 1, gen);  // channels change at stride 1: projection too
  CHECK(widen.has_projection());
  CHECK(widen(x).shape() == Shape{2, 12, 7, 7});

  // A copy reaches its own shortcut: clone, perturb the original, the copy is unchanged.
  auto copy = nn::clone(down);
  auto before = copy.shortcut->get<0>().weight.to_vector();
  nn::init::constant(down.shortcut->get<0>().weight, 0.5);
  CHECK(copy.state_dict().at("shortcut.0.weight").to_vector() == before);

  CHECK_THROWS_WITH_AS(nn::BasicBlock(8, 8, 0), doctest::Contains("BasicBlock: stride must be positive, got 0"), ValueError);
}

TEST_CASE("BasicBlock: every parameter gets a non-zero gradient, through both paths") {
  Generator gen(10);
  for (int64_t stride : {1, 2}) {
    CAPTURE(stride);
    nn::BasicBlock block(4, stride == 1 ? 4 : 8, stride, gen);
    auto x = randn<float>({3, 4, 6, 6}, 0.0, 1.0, gen);
    x.attach_grad();
    NDArray<float> loss;
    {
      autograd::record rec;
      auto y = block(x);
      loss = sum(y * randn<float>(y.shape(), 0.0, 1.0, gen));
    }
    loss.backward();
    for (auto& [name, p] : block.named_parameters()) {
      CAPTURE(name);
      CHECK(max_abs(p.grad()) > 0);
    }
    CHECK(max_abs(x.grad()) > 0);
  }
}

TEST_CASE("a small CNN of these modules trains: the loss falls") {
  Generator gen(11);
  nn::Sequential net{nn::Conv2d(1, 4, 3, 1, 1, false, gen), nn::BatchNorm2d(4), nn::ReLU(), nn::MaxPool2d(2),
                     nn::BasicBlock(4, 8, 2, gen), nn::GlobalAvgPool2d(), nn::Flatten(), nn::Dense(8, 2, true, gen)};
  // Class 1 images are brighter in the left half.
  auto x = randn<float>({16, 1, 8, 8}, 0.0, 1.0, gen);
  std::vector<int64_t> labels(16);
  auto xv = x.to_vector();
  for (int64_t n = 0; n < 16; ++n) {
    labels[static_cast<size_t>(n)] = n % 2;
    if (n % 2)
      for (int64_t r = 0; r < 8; ++r)
        for (int64_t c = 0; c < 4; ++c) xv[static_cast<size_t>(n * 64 + r * 8 + c)] += 2.0f;
  }
  x = from_vector(xv, x.shape());
  auto y = from_vector(labels);
  auto params = net.parameters();
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    NDArray<float> loss;
    {
      autograd::record rec;
      loss = cross_entropy(net(x), y);
    }
    loss.backward();
    autograd::pause no_tape;
    for (auto& p : params) {
      NDArray<float> d = p.detach();
      d.assign(d - 0.1f * p.grad());
    }
    (step == 0 ? first : last) = loss.item();
  }
  CHECK(last < 0.5 * first);
}
