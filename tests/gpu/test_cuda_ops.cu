// GPU operators beyond elementwise and matmul: sum and mean over axes, softmax / log_softmax,
// cross_entropy (forward, backward, label checks), each against the CPU at the suite's per-dtype
// tolerances, float64 gradcheck on the GPU, and a small classifier trained on both devices.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "gpu_support.hpp"

// Narrow headers, not dl/dl.hpp: graph/exec.hpp does not compile under nvcc 13 yet (docs/gpu.md).
#include "dl/autograd/engine.hpp"
#include "dl/autograd/gradcheck.hpp"
#include "dl/backend/cuda/cuda.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/ops/elementwise.hpp"
#include "dl/ops/loss.hpp"
#include "dl/ops/matmul.hpp"
#include "dl/ops/reduce.hpp"
#include "dl/ops/softmax.hpp"
#include "dl/nn/dense.hpp"
#include "dl/nn/module.hpp"
#include "dl/optim/adam.hpp"
#include "dl/optim/sgd.hpp"

using dl::NDArray;
using dl::Shape;
using dl_gpu_test::check_close;
using dl_gpu_test::grad_through;
using dl_gpu_test::kGpu;
using dl_gpu_test::max_rel_error;
using dl_gpu_test::tolerance;

TEST_CASE_TEMPLATE("cuda sum and mean over axes match the CPU, and so do their gradients", T, float, double) {
  dl::Generator gen(21);
  auto x = dl::randn<T>({4, 5, 70}, 0.0, 1.0, gen);
  auto w = dl::randn<T>({4, 5, 70}, 0.0, 1.0, gen);
  const std::vector<std::vector<int>> axes_list{{0}, {1}, {2}, {0, 2}, {0, 1}, {-1}, {}};
  for (const auto& axes : axes_list) {
    for (bool keep : {false, true}) {
      const std::string what = "axes " + std::to_string(axes.size()) + (axes.empty() ? "" : " first " + std::to_string(axes[0])) +
                               (keep ? " keepdims" : "");
      check_close(dl::sum(x.cuda(), axes, keep), dl::sum(x, axes, keep), "sum " + what);
      check_close(dl::mean(x.cuda(), axes, keep), dl::mean(x, axes, keep), "mean " + what);
    }
  }
  check_close(dl::sum(x.cuda()), dl::sum(x), "sum of everything");
  check_close(dl::mean(x.cuda().transpose(0, 2), 1), dl::mean(x.transpose(0, 2), 1), "mean of a transposed view");
  // Gradients: d/dx sum(mean(x, 1) * v) through the GPU and through the CPU.
  auto v = dl::randn<T>({4, 70}, 0.0, 1.0, gen);
  auto g_gpu = grad_through(x, true, [&](const NDArray<T>& in) {
    return dl::sum(NDArray<T>(dl::mean(in, 1) * v.cuda()));
  });
  auto g_cpu = grad_through(x, false, [&](const NDArray<T>& in) { return dl::sum(NDArray<T>(dl::mean(in, 1) * v)); });
  CHECK(max_rel_error(g_gpu, g_cpu) <= tolerance<T>());
  auto g2 = [&](bool gpu) {
    return grad_through(x, gpu, [&](const NDArray<T>& in) {
      NDArray<T> s = dl::sum(NDArray<T>(in * (gpu ? w.cuda() : w)), {0, 2});  // (5)
      return dl::sum(NDArray<T>(s * s));
    });
  };
  CHECK(max_rel_error(g2(true), g2(false)) <= tolerance<T>() * 10);
  // max, min, prod and the other reductions have no GPU kernels yet: a clear error, not a crash.
  CHECK_THROWS_WITH_AS(dl::max(x.cuda(), 1), doctest::Contains("cuda"), dl::DeviceError);
}

TEST_CASE_TEMPLATE("cuda softmax and log_softmax match the CPU along any axis, forward and backward", T, float, double) {
  dl::Generator gen(22);
  struct Case { Shape shape; int axis; };
  for (const Case& c : {Case{{6, 37}, -1}, Case{{3, 5, 4, 4}, 1}, Case{{2, 1000}, 1}, Case{{5, 3}, 0}, Case{{0, 4}, 1}}) {
    auto x = dl::randn<T>(c.shape, 0.0, 3.0, gen);
    const std::string what = c.shape.to_string() + " axis " + std::to_string(c.axis);
    check_close(dl::softmax(x.cuda(), c.axis), dl::softmax(x, c.axis), "softmax " + what);
    check_close(dl::log_softmax(x.cuda(), c.axis), dl::log_softmax(x, c.axis), "log_softmax " + what);
    auto w = dl::randn<T>(c.shape, 0.0, 1.0, gen);
    auto soft = [&](bool gpu) {
      return grad_through(x, gpu, [&](const NDArray<T>& in) {
        return dl::sum(NDArray<T>(dl::softmax(in, c.axis) * (gpu ? w.cuda() : w)));
      });
    };
    auto logsoft = [&](bool gpu) {
      return grad_through(x, gpu, [&](const NDArray<T>& in) {
        return dl::sum(NDArray<T>(dl::log_softmax(in, c.axis) * (gpu ? w.cuda() : w)));
      });
    };
    INFO(what);
    CHECK(max_rel_error(soft(true), soft(false)) <= tolerance<T>());
    CHECK(max_rel_error(logsoft(true), logsoft(false)) <= tolerance<T>());
  }
  // Large logits: the row maximum is subtracted on the device too (no inf, no NaN).
  auto big = dl::full<T>({2, 3}, T(0));
  big.at({0, 0}) = T(1e4);
  big.at({1, 2}) = T(-1e4);
  check_close(dl::softmax(big.cuda()), dl::softmax(big), "softmax of +-1e4");
}

TEST_CASE_TEMPLATE("cuda cross_entropy matches the CPU: reductions, smoothing, int32/int64 labels, (N, C, H, W)", T, float,
                   double) {
  dl::Generator gen(23);
  auto logits = dl::randn<T>({64, 10}, 0.0, 2.0, gen);
  auto wide = dl::randn<T>({8, 1000}, 0.0, 2.0, gen);
  NDArray<int64_t> labels(Shape{64});
  NDArray<int32_t> labels32(Shape{64});
  NDArray<int64_t> wide_labels(Shape{8});
  for (int64_t i = 0; i < 64; ++i) {
    labels.at({i}) = (i * 7) % 10;
    labels32.at({i}) = static_cast<int32_t>((i * 3) % 10);
  }
  for (int64_t i = 0; i < 8; ++i) wide_labels.at({i}) = (i * 131) % 1000;
  for (dl::Reduction red : {dl::Reduction::none, dl::Reduction::mean, dl::Reduction::sum}) {
    for (double s : {0.0, 0.1}) {
      const std::string what = "reduction " + std::to_string(static_cast<int>(red)) + " smoothing " + std::to_string(s);
      check_close(dl::cross_entropy(logits.cuda(), labels.cuda(), s, red), dl::cross_entropy(logits, labels, s, red),
                  "int64 " + what);
      check_close(dl::cross_entropy(logits.cuda(), labels32.cuda(), s, red), dl::cross_entropy(logits, labels32, s, red),
                  "int32 " + what);
      check_close(dl::cross_entropy(wide.cuda(), wide_labels.cuda(), s, red), dl::cross_entropy(wide, wide_labels, s, red),
                  "1000 classes " + what);
      auto grad = [&](bool gpu) {
        return grad_through(logits, gpu, [&](const NDArray<T>& in) {
          NDArray<T> l = dl::cross_entropy(in, gpu ? labels.cuda() : labels, s, red);
          return red == dl::Reduction::none ? dl::sum(l) : l;
        });
      };
      INFO(what);
      CHECK(max_rel_error(grad(true), grad(false)) <= tolerance<T>());
    }
  }
  // (N, C, H, W) logits with (N, H, W) labels.
  auto maps = dl::randn<T>({2, 4, 3, 5}, 0.0, 1.0, gen);
  NDArray<int64_t> map_labels(Shape{2, 3, 5});
  for (int64_t i = 0; i < map_labels.numel(); ++i) map_labels.data()[i] = i % 4;
  check_close(dl::cross_entropy(maps.cuda(), map_labels.cuda(), 0.0, dl::Reduction::none),
              dl::cross_entropy(maps, map_labels, 0.0, dl::Reduction::none), "(N, C, H, W) per pixel");
  auto gm = [&](bool gpu) {
    return grad_through(maps, gpu, [&](const NDArray<T>& in) { return dl::cross_entropy(in, gpu ? map_labels.cuda() : map_labels); });
  };
  CHECK(max_rel_error(gm(true), gm(false)) <= tolerance<T>());
}

TEST_CASE("cuda cross_entropy: bad labels and mixed devices are clear errors") {
  auto logits = dl::randn<float>({4, 3}).cuda();
  NDArray<int64_t> labels(Shape{4});
  for (int64_t i = 0; i < 4; ++i) labels.at({i}) = i % 3;
  labels.at({2}) = 3;
  CHECK_THROWS_WITH_AS(dl::cross_entropy(logits, labels.cuda()), doctest::Contains("label 3 at row 2 is out of range for 3 classes"),
                       dl::ValueError);
  labels.at({2}) = 1;
  CHECK_THROWS_WITH_AS(dl::cross_entropy(logits, labels), doctest::Contains("but labels on cpu"), dl::DeviceError);
  CHECK_THROWS_WITH_AS(dl::nll(logits, labels.cuda()), doctest::Contains("cuda"), dl::DeviceError);
}

TEST_CASE("cuda gradcheck (float64): softmax, log_softmax, mean and cross_entropy on the GPU") {
  NDArray<int64_t> labels(Shape{3});
  for (int64_t i = 0; i < 3; ++i) labels.at({i}) = (2 * i + 1) % 5;
  auto r = dl::autograd::gradcheck(
      [&](std::vector<NDArray<double>>& in) {
        auto x = in[0].cuda();
        NDArray<double> a = dl::softmax(x, 1) * in[1].cuda();
        NDArray<double> b = dl::log_softmax(x, 0) * 0.5;
        NDArray<double> c = dl::mean(NDArray<double>(a + b), 1);
        return NDArray<double>(c + dl::cross_entropy(x, labels.cuda(), 0.1)).cpu();
      },
      {dl::randn<double>({3, 5}), dl::randn<double>({3, 5})});
  INFO(r.message);
  CHECK(r.ok);
}

TEST_CASE("a classifier trains on the GPU as on the CPU: matmul, bias + relu, cross_entropy, SGD") {
  dl::Generator gen(24);
  const int64_t batch = 128, in = 20, hidden = 64, classes = 5;
  auto x = dl::randn<float>({batch, in}, 0.0, 1.0, gen);
  NDArray<int64_t> y(Shape{batch});
  for (int64_t i = 0; i < batch; ++i) y.at({i}) = (x.at({i, 0}) > 0 ? 1 : 0) + (x.at({i, 1}) > 0 ? 2 : 0) + (i % 7 == 0 ? 1 : 0);
  auto w1 = dl::randn<float>({hidden, in}, 0.0, 0.3, gen), b1 = dl::zeros<float>({hidden});
  auto w2 = dl::randn<float>({classes, hidden}, 0.0, 0.3, gen), b2 = dl::zeros<float>({classes});
  auto train = [&](dl::Device d) {
    std::vector<NDArray<float>> p{w1.to(d), b1.to(d), w2.to(d), b2.to(d)};
    for (auto& t : p) t.attach_grad();
    NDArray<float> xd = x.to(d);
    NDArray<int64_t> yd = y.to(d);
    std::vector<float> losses;
    for (int step = 0; step < 30; ++step) {
      NDArray<float> loss;
      {
        dl::autograd::record rec;
        NDArray<float> h = dl::relu(dl::matmul(xd, p[0].transpose()) + p[1]);
        NDArray<float> out = dl::matmul(h, p[2].transpose()) + p[3];
        loss = dl::cross_entropy(out, yd);
        loss.backward();
      }
      losses.push_back(loss.item());
      dl::autograd::pause no_tape;
      for (auto& t : p) t -= t.grad() * 0.5f;
    }
    return losses;
  };
  auto on_gpu = train(kGpu), on_cpu = train(dl::Device::cpu());
  REQUIRE(on_gpu.size() == on_cpu.size());
  for (size_t i = 0; i < on_gpu.size(); ++i) {
    INFO("step " << i << ": gpu " << on_gpu[i] << ", cpu " << on_cpu[i]);
    CHECK(std::abs(on_gpu[i] - on_cpu[i]) <= 1e-4f * std::max(1.0f, std::abs(on_cpu[i])));
  }
  CHECK(on_gpu.back() < 0.7f * on_gpu.front());  // it learns
}

namespace {
struct TwoLayer : dl::nn::Module {
  dl::nn::Dense fc1, fc2;
  explicit TwoLayer(dl::Generator& gen) : fc1(12, 16, true, gen), fc2(16, 3, true, gen) {
    register_module("fc1", &TwoLayer::fc1);
    register_module("fc2", &TwoLayer::fc2);
  }
  template <class X> auto forward(const X& x) { return fc2(dl::relu(fc1(x))); }
};
}  // namespace

TEST_CASE("nn::Module::to(gpu) and optim::SGD on the GPU: the CPU's parameters after 5 steps") {
  struct Opt { double momentum; bool nesterov; double wd; };
  for (const Opt& o : {Opt{0.0, false, 0.0}, Opt{0.9, false, 1e-3}, Opt{0.9, true, 0.0}}) {
    dl::Generator g1(5), g2(5), data(6);
    TwoLayer cpu_net(g1), gpu_net(g2);
    gpu_net.to(kGpu);
    for (auto& [name, p] : gpu_net.named_parameters()) {
      INFO(name);
      CHECK(p.device() == kGpu);
      CHECK(p.tracks_grad());
    }
    auto x = dl::randn<float>({32, 12}, 0.0, 1.0, data);
    NDArray<int64_t> y(Shape{32});
    for (int64_t i = 0; i < 32; ++i) y.at({i}) = i % 3;
    dl::optim::SGD cpu_opt(cpu_net.named_parameters(), 0.1, o.momentum, o.nesterov, o.wd);
    dl::optim::SGD gpu_opt(gpu_net.named_parameters(), 0.1, o.momentum, o.nesterov, o.wd);
    auto xg = x.cuda();
    auto yg = y.cuda();
    for (int step = 0; step < 5; ++step) {
      {
        dl::autograd::record rec;
        dl::cross_entropy(cpu_net.forward(x), y).backward();
        dl::cross_entropy(gpu_net.forward(xg), yg).backward();
      }
      cpu_opt.step();
      gpu_opt.step();
    }
    auto want = cpu_net.named_parameters(), got = gpu_net.named_parameters();
    for (size_t i = 0; i < want.size(); ++i) {
      INFO(want[i].first << " momentum " << o.momentum << " nesterov " << o.nesterov << " wd " << o.wd);
      check_close(got[i].second.detach(), want[i].second.detach(), want[i].first);
    }
    CHECK(gpu_opt.state_dict().tensors.size() == (o.momentum > 0 ? 4u : 0u));
  }
  // Optimizers without a GPU update refuse device parameters when they are made, not mid-training.
  dl::Generator g(7);
  TwoLayer net(g);
  net.to(kGpu);
  CHECK_THROWS_WITH_AS(dl::optim::Adam(net.named_parameters(), 1e-3), doctest::Contains("cuda"), dl::DeviceError);
}
