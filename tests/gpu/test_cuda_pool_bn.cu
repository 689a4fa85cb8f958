// Pooling and batch norm on the GPU (cuDNN, backend/cuda/cudnn_pool_norm.hpp) against the CPU:
// max/avg pooling forward and backward over several windows (square, padded, non-square,
// count_include_pad both ways), global_avg_pool2d, batch norm training (output, gradients of x,
// gamma and beta, running statistics over 3 steps) and eval (forward and backward), device errors,
// and float64 gradchecks on the GPU.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "gpu_support.hpp"

// Narrow headers, not dl/dl.hpp: graph/exec.hpp does not compile under nvcc 13 yet (docs/gpu.md).
#include "dl/autograd/engine.hpp"
#include "dl/autograd/gradcheck.hpp"
#include "dl/backend/cuda/cuda.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/ops/batch_norm.hpp"
#include "dl/ops/elementwise.hpp"
#include "dl/ops/pool.hpp"
#include "dl/ops/reduce.hpp"

using dl::NDArray;
using dl::Shape;
using dl_gpu_test::check_close;
using dl_gpu_test::grad_through;
using dl_gpu_test::kGpu;
using dl_gpu_test::max_rel_error;
using dl_gpu_test::tolerance;

namespace {

struct Window {
  Shape shape;
  std::array<int64_t, 2> kernel, stride, padding;
  std::string name() const {
    auto p = [](const std::array<int64_t, 2>& a) { return std::to_string(a[0]) + "x" + std::to_string(a[1]); };
    return shape.to_string() + " kernel " + p(kernel) + " stride " + p(stride) + " padding " + p(padding);
  }
};

const std::vector<Window>& windows() {
  static const std::vector<Window> w{
      {Shape{2, 3, 8, 8}, {2, 2}, {2, 2}, {0, 0}},    // the common 2x2 / stride 2
      {Shape{2, 3, 9, 9}, {3, 3}, {2, 2}, {1, 1}},    // 3x3 / stride 2 / padding 1 (ResNet's stem)
      {Shape{1, 2, 7, 10}, {3, 2}, {2, 1}, {1, 0}},   // non-square kernel, stride and padding
      {Shape{2, 2, 5, 11}, {2, 4}, {1, 3}, {1, 2}},   // non-square input, padding on both sides
      {Shape{1, 1, 6, 6}, {6, 6}, {1, 1}, {0, 0}},    // one window per plane
  };
  return w;
}

// Results of one batch_norm step on one device, brought to the CPU.
template <class T>
struct BnStep {
  NDArray<T> y, dx, dgamma, dbeta;
};

// One batch_norm forward + backward of sum(y * w) with leaves x, gamma, beta on the CPU; the op
// runs on the GPU when `gpu` (running statistics rm, rv must then be on the GPU, and are updated there).
template <class T>
BnStep<T> bn_step(const NDArray<T>& x0, const NDArray<T>& gamma0, const NDArray<T>& beta0, NDArray<T> rm,
                  NDArray<T> rv, bool training, const NDArray<T>& w, bool gpu) {
  NDArray<T> x = x0.clone(), gamma = gamma0.defined() ? gamma0.clone() : NDArray<T>(),
             beta = beta0.defined() ? beta0.clone() : NDArray<T>();
  x.attach_grad();
  if (gamma.defined()) gamma.attach_grad();
  if (beta.defined()) beta.attach_grad();
  BnStep<T> r;
  {
    dl::autograd::record rec;
    auto on = [&](const NDArray<T>& a) { return a.defined() && gpu ? a.cuda() : a; };
    NDArray<T> y = dl::batch_norm(on(x), on(gamma), on(beta), rm, rv, training);
    NDArray<T> loss = dl::sum(NDArray<T>(y * on(w)));
    (gpu ? loss.cpu() : loss).backward();
    r.y = y.cpu().clone();
  }
  r.dx = x.grad().clone();
  if (gamma.defined()) r.dgamma = gamma.grad().clone();
  if (beta.defined()) r.dbeta = beta.grad().clone();
  return r;
}

// Distinct values, at least 0.05 apart: max pooling has no ties, so finite differences are exact.
NDArray<double> distinct_values(const Shape& shape) {
  NDArray<double> x(shape);
  const int64_t n = x.numel();  // i -> 37 i mod n is a permutation when gcd(37, n) = 1
  for (int64_t i = 0; i < n; ++i) x.data()[i] = static_cast<double>((i * 37) % n) * 0.05 - 1.0;
  return x;
}

}  // namespace

TEST_CASE_TEMPLATE("cuda max_pool2d and avg_pool2d match the CPU, forward and backward", T, float, double) {
  dl::Generator gen(31);
  for (const Window& c : windows()) {
    auto x = dl::randn<T>(c.shape, 0.0, 1.0, gen);
    const std::string what = c.name();
    INFO(what);
    // Forward.
    check_close(dl::max_pool2d(x.cuda(), c.kernel, c.stride, c.padding), dl::max_pool2d(x, c.kernel, c.stride, c.padding),
                "max_pool2d " + what);
    for (bool include : {true, false})
      check_close(dl::avg_pool2d(x.cuda(), c.kernel, c.stride, c.padding, include),
                  dl::avg_pool2d(x, c.kernel, c.stride, c.padding, include),
                  "avg_pool2d count_include_pad " + std::to_string(include) + " " + what);
    // Backward: d/dx sum(pool(x) * w), random data (no ties).
    const NDArray<T> ref = dl::max_pool2d(x, c.kernel, c.stride, c.padding);
    auto w = dl::randn<T>(ref.shape(), 0.0, 1.0, gen);
    auto maxg = [&](bool gpu) {
      return grad_through(x, gpu, [&](const NDArray<T>& in) {
        return dl::sum(NDArray<T>(dl::max_pool2d(in, c.kernel, c.stride, c.padding) * (gpu ? w.cuda() : w)));
      });
    };
    {
      const double err = max_rel_error(maxg(true), maxg(false));
      INFO("max_pool2d gradient: max relative error " << err);
      CHECK(err <= tolerance<T>());
    }
    for (bool include : {true, false}) {
      auto avgg = [&](bool gpu) {
        return grad_through(x, gpu, [&](const NDArray<T>& in) {
          return dl::sum(NDArray<T>(dl::avg_pool2d(in, c.kernel, c.stride, c.padding, include) * (gpu ? w.cuda() : w)));
        });
      };
      const double err = max_rel_error(avgg(true), avgg(false));
      INFO("avg_pool2d gradient, count_include_pad " << include << ": max relative error " << err);
      CHECK(err <= tolerance<T>());
    }
  }
  // The short forms (stride = kernel, padding counted), a strided input, and a NaN (it wins, as on the CPU).
  auto x = dl::randn<T>({2, 4, 6, 6}, 0.0, 1.0, gen);
  check_close(dl::max_pool2d(x.cuda(), {2, 2}), dl::max_pool2d(x, {2, 2}), "max_pool2d(x, {2, 2})");
  check_close(dl::avg_pool2d(x.cuda(), {3, 3}), dl::avg_pool2d(x, {3, 3}), "avg_pool2d(x, {3, 3})");
  check_close(dl::max_pool2d(x.cuda().transpose(2, 3), {3, 3}, {1, 1}, {1, 1}),
              dl::max_pool2d(x.transpose(2, 3), {3, 3}, {1, 1}, {1, 1}), "max_pool2d of a transposed view");
  x.at({0, 1, 2, 3}) = std::numeric_limits<T>::quiet_NaN();
  check_close(dl::max_pool2d(x.cuda(), {2, 2}), dl::max_pool2d(x, {2, 2}), "max_pool2d with a NaN");
}

TEST_CASE_TEMPLATE("cuda global_avg_pool2d matches the CPU, forward and backward", T, float, double) {
  dl::Generator gen(32);
  auto x = dl::randn<T>({3, 5, 7, 9}, 0.0, 1.0, gen);
  NDArray<T> y = dl::global_avg_pool2d(x.cuda());
  CHECK(y.shape() == Shape{3, 5, 1, 1});
  check_close(y, dl::global_avg_pool2d(x), "global_avg_pool2d");
  auto w = dl::randn<T>({3, 5, 1, 1}, 0.0, 1.0, gen);
  auto g = [&](bool gpu) {
    return grad_through(x, gpu, [&](const NDArray<T>& in) {
      return dl::sum(NDArray<T>(dl::global_avg_pool2d(in) * (gpu ? w.cuda() : w)));
    });
  };
  const double err = max_rel_error(g(true), g(false));
  INFO("global_avg_pool2d gradient: max relative error " << err);
  CHECK(err <= tolerance<T>());
}

TEST_CASE_TEMPLATE("cuda batch_norm training matches the CPU: output, gradients, running statistics over 3 steps", T,
                   float, double) {
  dl::Generator gen(33);
  struct Case {
    Shape shape;
    bool affine;
  };
  for (const Case& c : {Case{{8, 4, 5, 5}, true}, Case{{16, 3}, true}, Case{{4, 6, 3, 2, 2}, false}, Case{{2, 5, 1, 1}, true}}) {
    const int64_t C = c.shape[1];
    auto gamma = c.affine ? dl::randn<T>({C}, 1.0, 0.3, gen) : NDArray<T>();
    auto beta = c.affine ? dl::randn<T>({C}, 0.0, 0.5, gen) : NDArray<T>();
    auto rm_cpu = dl::randn<T>({C}, 0.0, 0.1, gen);
    auto rv_cpu = dl::full<T>(Shape{C}, T(1));
    NDArray<T> rm_gpu = rm_cpu.cuda(), rv_gpu = rv_cpu.cuda();
    for (int step = 0; step < 3; ++step) {
      // Per-channel offsets and scales, so the statistics differ from channel to channel.
      auto x = dl::randn<T>(c.shape, 0.5 * step, 1.0 + step, gen);
      auto w = dl::randn<T>(c.shape, 0.0, 1.0, gen);
      const std::string what = c.shape.to_string() + (c.affine ? " affine" : " no affine") + " step " + std::to_string(step);
      INFO(what);
      BnStep<T> cpu = bn_step(x, gamma, beta, rm_cpu, rv_cpu, true, w, false);
      BnStep<T> gpu = bn_step(x, gamma, beta, rm_gpu, rv_gpu, true, w, true);
      auto close = [&](const NDArray<T>& got, const NDArray<T>& want, const char* name) {
        const double err = max_rel_error(got, want);
        INFO(name << ": max relative error " << err);
        CHECK(err <= tolerance<T>() * 10);
      };
      close(gpu.y, cpu.y, "y");
      close(gpu.dx, cpu.dx, "dx");
      if (c.affine) {
        close(gpu.dgamma, cpu.dgamma, "dgamma");
        close(gpu.dbeta, cpu.dbeta, "dbeta");
      }
      close(rm_gpu.cpu(), rm_cpu, "running_mean");
      close(rv_gpu.cpu(), rv_cpu, "running_var");
    }
    // Eval mode with the statistics of the 3 steps: forward and backward.
    auto x = dl::randn<T>(c.shape, 0.3, 2.0, gen);
    auto w = dl::randn<T>(c.shape, 0.0, 1.0, gen);
    INFO(c.shape.to_string() << " eval");
    BnStep<T> cpu = bn_step(x, gamma, beta, rm_cpu, rv_cpu, false, w, false);
    BnStep<T> gpu = bn_step(x, gamma, beta, rm_gpu, rv_gpu, false, w, true);
    CHECK(max_rel_error(gpu.y, cpu.y) <= tolerance<T>() * 10);
    CHECK(max_rel_error(gpu.dx, cpu.dx) <= tolerance<T>() * 10);
    if (c.affine) {
      CHECK(max_rel_error(gpu.dgamma, cpu.dgamma) <= tolerance<T>() * 10);
      CHECK(max_rel_error(gpu.dbeta, cpu.dbeta) <= tolerance<T>() * 10);
    }
  }
  // No running statistics in training: the batch statistics alone.
  auto x = dl::randn<T>({6, 3, 4, 4}, 1.0, 2.0, gen);
  check_close(dl::batch_norm(x.cuda(), NDArray<T>(), NDArray<T>(), NDArray<T>(), NDArray<T>(), true),
              dl::batch_norm(x, NDArray<T>(), NDArray<T>(), NDArray<T>(), NDArray<T>(), true), "no running statistics");
  // Momentum and eps other than the defaults.
  auto rm = dl::zeros<T>({3}), rv = dl::full<T>(Shape{3}, T(2));
  NDArray<T> rmg = rm.cuda(), rvg = rv.cuda();
  check_close(dl::batch_norm(x.cuda(), NDArray<T>(), NDArray<T>(), rmg, rvg, true, 0.7, 1e-3),
              dl::batch_norm(x, NDArray<T>(), NDArray<T>(), rm, rv, true, 0.7, 1e-3), "momentum 0.7, eps 1e-3");
  check_close(rmg, rm, "running_mean, momentum 0.7");
  check_close(rvg, rv, "running_var, momentum 0.7");
  // Running statistics as strided views (interleaved in one buffer): updated in place all the same,
  // then used by eval mode.
  auto buf = dl::full<T>(Shape{6}, T(0.5));
  NDArray<T> bufg = buf.cuda();
  check_close(dl::batch_norm(x.cuda(), NDArray<T>(), NDArray<T>(), bufg.slice(0, 0, 6, 2), bufg.slice(0, 1, 6, 2), true),
              dl::batch_norm(x, NDArray<T>(), NDArray<T>(), buf.slice(0, 0, 6, 2), buf.slice(0, 1, 6, 2), true),
              "training, strided running statistics");
  check_close(bufg, buf, "strided running statistics after one step");
  check_close(dl::batch_norm(x.cuda(), NDArray<T>(), NDArray<T>(), bufg.slice(0, 0, 6, 2), bufg.slice(0, 1, 6, 2), false),
              dl::batch_norm(x, NDArray<T>(), NDArray<T>(), buf.slice(0, 0, 6, 2), buf.slice(0, 1, 6, 2), false),
              "eval, strided running statistics");
}

TEST_CASE("cuda pooling and batch_norm: the CPU's argument checks, and mixed devices are clear errors") {
  auto x = dl::randn<float>({2, 3, 6, 6}).cuda();
  CHECK_THROWS_WITH_AS(dl::max_pool2d(x, {2, 2}, {2, 2}, {2, 2}), doctest::Contains("must be at most half the kernel"),
                       dl::ValueError);
  CHECK_THROWS_WITH_AS(dl::avg_pool2d(dl::randn<float>({3, 6, 6}).cuda(), {2, 2}), doctest::Contains("4-D input"),
                       dl::ShapeError);
  auto gamma = dl::ones<float>({3});
  CHECK_THROWS_WITH_AS(dl::batch_norm(x, gamma, NDArray<float>(), NDArray<float>(), NDArray<float>(), true),
                       doctest::Contains("gamma is on cpu"), dl::DeviceError);
  CHECK_THROWS_WITH_AS(dl::batch_norm(x, gamma.cuda(), NDArray<float>(), NDArray<float>(), NDArray<float>(), false),
                       doctest::Contains("eval mode needs running_mean"), dl::ValueError);
  CHECK_THROWS_WITH_AS(dl::batch_norm(x, dl::ones<float>({4}).cuda(), NDArray<float>(), NDArray<float>(),
                                      NDArray<float>(), true),
                       doctest::Contains("expected (3,)"), dl::ShapeError);
  auto rv = dl::full<float>(Shape{3}, -1.0f).cuda();
  CHECK_THROWS_WITH_AS(dl::batch_norm(x, NDArray<float>(), NDArray<float>(), dl::zeros<float>({3}).cuda(), rv, false),
                       doctest::Contains("is not positive"), dl::ValueError);
}

TEST_CASE("cuda gradcheck (float64): max_pool2d, avg_pool2d and batch_norm (training) on the GPU") {
  {
    auto r = dl::autograd::gradcheck(
        [](std::vector<NDArray<double>>& in) {
          return dl::max_pool2d(in[0].cuda(), {3, 3}, {2, 2}, {1, 1}).cpu();
        },
        {distinct_values({2, 2, 5, 5})});
    INFO("max_pool2d: " << r.message);
    CHECK(r.ok);
  }
  for (bool include : {true, false}) {
    auto r = dl::autograd::gradcheck(
        [include](std::vector<NDArray<double>>& in) {
          return dl::avg_pool2d(in[0].cuda(), {3, 2}, {2, 1}, {1, 1}, include).cpu();
        },
        {dl::randn<double>({2, 2, 5, 4})});
    INFO("avg_pool2d count_include_pad " << include << ": " << r.message);
    CHECK(r.ok);
  }
  {
    auto r = dl::autograd::gradcheck(
        [](std::vector<NDArray<double>>& in) {
          return dl::batch_norm(in[0].cuda(), in[1].cuda(), in[2].cuda(), NDArray<double>(), NDArray<double>(), true)
              .cpu();
        },
        {dl::randn<double>({4, 3, 2, 3}, 0.5, 2.0), dl::randn<double>({3}, 1.0, 0.3), dl::randn<double>({3})});
    INFO("batch_norm training: " << r.message);
    CHECK(r.ok);
  }
  {
    auto r = dl::autograd::gradcheck(
        [](std::vector<NDArray<double>>& in) {
          return dl::global_avg_pool2d(in[0].cuda()).cpu();
        },
        {dl::randn<double>({2, 3, 3, 4})});
    INFO("global_avg_pool2d: " << r.message);
    CHECK(r.ok);
  }
}

TEST_CASE_TEMPLATE("cuda max_pool2d: ties and NaN pick the CPU's element, so gradients equal the CPU's", T, float, double) {
  dl::Generator gen(31);
  // Small integers: many equal maxima in each window.
  auto x = dl::rand<T>({3, 4, 9, 11}, 0, 3, gen);
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = std::floor(x.data()[i]);
  x.at({1, 2, 4, 4}) = std::numeric_limits<T>::quiet_NaN();
  struct W { std::array<int64_t, 2> k, s, p; };
  for (const W& w : {W{{3, 3}, {2, 2}, {1, 1}}, W{{2, 2}, {2, 2}, {0, 0}}, W{{3, 2}, {1, 2}, {1, 0}}}) {
    auto v = dl::randn<T>({3, 4, (9 + 2 * w.p[0] - w.k[0]) / w.s[0] + 1, (11 + 2 * w.p[1] - w.k[1]) / w.s[1] + 1}, 0.0, 1.0, gen);
    INFO("kernel " << w.k[0] << "x" << w.k[1] << " stride " << w.s[0] << "x" << w.s[1]);
    check_close(dl::max_pool2d(x.cuda(), w.k, w.s, w.p), dl::max_pool2d(x, w.k, w.s, w.p), "forward with ties");
    auto grad = [&](bool gpu) {
      return grad_through(x, gpu, [&](const NDArray<T>& in) {
        return dl::sum(NDArray<T>(dl::max_pool2d(in, w.k, w.s, w.p) * (gpu ? v.cuda() : v)));
      });
    };
    auto g_gpu = grad(true), g_cpu = grad(false);
    CHECK(max_rel_error(g_gpu, g_cpu) <= tolerance<T>());
  }
}
