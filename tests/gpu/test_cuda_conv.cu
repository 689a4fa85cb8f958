// dl::conv2d on CUDA arrays (cuDNN forward, backward data, backward filter; bias add and bias
// gradient on the device) against the CPU's conv2d over many geometries, for float and double:
// the output, and the gradients of sum(conv2d(x, w, b) * v) for x, w and b. Plus a float64
// gradcheck on the GPU and the device/shape errors. Needs cuDNN (DL_HAVE_CUDNN); otherwise only
// the "needs cuDNN" error is checked.
#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "gpu_support.hpp"

// Narrow headers, not dl/dl.hpp: graph/exec.hpp does not compile under nvcc 13 yet (docs/gpu.md).
#include "dl/autograd/engine.hpp"
#include "dl/autograd/gradcheck.hpp"
#include "dl/backend/cuda/cuda.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/ops/conv.hpp"
#include "dl/ops/elementwise.hpp"
#include "dl/ops/reduce.hpp"

using dl::NDArray;
using dl::Shape;
using dl_gpu_test::check_close;
using dl_gpu_test::kGpu;
using dl_gpu_test::max_rel_error;
using dl_gpu_test::tolerance;

namespace {

std::string pair_text(const std::array<int64_t, 2>& p) { return "(" + std::to_string(p[0]) + ", " + std::to_string(p[1]) + ")"; }

struct ConvCase {
  Shape x, w;
  dl::Conv2dOptions o;
  bool bias;
  std::string describe() const {
    return "x " + x.to_string() + " w " + w.to_string() + " stride " + pair_text(o.stride) + " padding " +
           pair_text(o.padding) + " dilation " + pair_text(o.dilation) + " groups " + std::to_string(o.groups) +
           (bias ? " with bias" : " without bias");
  }
};

// 3x3 pad 1, stride 2, 1x1, dilation 2, groups 2, depthwise (and channel multiplier 2),
// non-square images and kernels, with and without bias, batch 1, 2, 3 and 8.
std::vector<ConvCase> conv_cases() {
  return {
      {{2, 3, 9, 9}, {4, 3, 3, 3}, {.padding = {1, 1}}, true},
      {{8, 4, 11, 11}, {6, 4, 3, 3}, {.stride = {2, 2}, .padding = {1, 1}}, true},
      {{8, 6, 7, 7}, {5, 6, 1, 1}, {}, false},
      {{1, 6, 7, 7}, {5, 6, 1, 1}, {.stride = {2, 2}}, true},
      {{2, 3, 12, 12}, {4, 3, 3, 3}, {.padding = {2, 2}, .dilation = {2, 2}}, true},
      {{1, 4, 8, 10}, {6, 2, 3, 3}, {.stride = {2, 1}, .padding = {1, 2}, .groups = 2}, true},
      {{8, 6, 9, 9}, {6, 1, 3, 3}, {.padding = {1, 1}, .groups = 6}, true},
      {{2, 3, 8, 8}, {6, 1, 3, 3}, {.stride = {2, 2}, .padding = {1, 1}, .groups = 3}, false},
      {{1, 3, 7, 13}, {5, 3, 2, 4}, {.stride = {1, 2}, .padding = {1, 0}}, false},
      {{3, 2, 10, 9}, {4, 2, 3, 2}, {.padding = {2, 1}, .dilation = {2, 3}}, true},
  };
}

// y = conv2d(x, w, b) and the gradients of sum(y * v) for x, w and b (b undefined: no bias). The
// leaves live on the CPU; on_gpu moves them to the device inside the recorded scope, so the
// gradients come home through to()'s backward (as grad_through in test_cuda_ops.cu).
template <class T>
struct ConvGrads {
  NDArray<T> y, dx, dw, db;
};
template <class T>
ConvGrads<T> conv_grads(const NDArray<T>& x0, const NDArray<T>& w0, const NDArray<T>& b0, const NDArray<T>& v,
                        const dl::Conv2dOptions& o, bool on_gpu) {
  NDArray<T> x = x0.clone(), w = w0.clone(), b = b0.defined() ? b0.clone() : NDArray<T>();
  x.attach_grad();
  w.attach_grad();
  if (b.defined()) b.attach_grad();
  auto on_device = [on_gpu](const NDArray<T>& a) { return on_gpu ? a.cuda() : a; };
  ConvGrads<T> r;
  {
    dl::autograd::record rec;
    NDArray<T> y = dl::conv2d(on_device(x), on_device(w), b.defined() ? on_device(b) : NDArray<T>(), o);
    r.y = y.detach();
    NDArray<T> loss = dl::sum(NDArray<T>(y * on_device(v)));
    (on_gpu ? loss.cpu() : loss).backward();
  }
  r.dx = x.grad().clone();
  r.dw = w.grad().clone();
  if (b.defined()) r.db = b.grad().clone();
  return r;
}

// The message of the exception f throws ("" if none).
template <class F>
std::string message_of(F f) {
  try {
    f();
  } catch (const dl::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

#if defined(DL_HAVE_CUDNN)

TEST_CASE_TEMPLATE("cuda conv2d matches the CPU: forward, input, weight and bias gradients", T, float, double) {
  dl::cuda::set_allow_tf32(false);
  dl::Generator gen(31);
  // Float: the CPU and cuDNN add the C/groups*kh*kw (forward, dx) or N*OH*OW (dw, db) products in
  // different orders; the gradients sum more terms, so they get 10x the forward's tolerance.
  const double grad_tol = tolerance<T>() * 10;
  for (const ConvCase& c : conv_cases()) {
    const std::string what = c.describe();
    INFO(what);
    auto x = dl::randn<T>(c.x, 0.0, 1.0, gen), w = dl::randn<T>(c.w, 0.0, 1.0, gen);
    NDArray<T> b = c.bias ? dl::randn<T>({c.w[0]}, 0.0, 1.0, gen) : NDArray<T>();
    NDArray<T> want = dl::conv2d(x, w, b, c.o);
    for (int repeat = 0; repeat < 2; ++repeat)  // the second call takes the cached algorithms
      check_close(dl::conv2d(x.cuda(), w.cuda(), c.bias ? b.cuda() : NDArray<T>(), c.o), want,
                  "forward (call " + std::to_string(repeat + 1) + ") " + what);
    auto v = dl::randn<T>(want.shape(), 0.0, 1.0, gen);
    for (int repeat = 0; repeat < 2; ++repeat) {
      ConvGrads<T> g = conv_grads(x, w, b, v, c.o, true), cpu = conv_grads(x, w, b, v, c.o, false);
      check_close(g.y, cpu.y, "forward under record " + what);
      REQUIRE(g.dx.device().is_cpu());
      const double ex = max_rel_error(g.dx, cpu.dx), ew = max_rel_error(g.dw, cpu.dw);
      INFO("call " << repeat + 1 << ": dx max relative error " << ex << ", dw max relative error " << ew);
      CHECK(ex <= grad_tol);
      CHECK(ew <= grad_tol);
      if (c.bias) {
        const double eb = max_rel_error(g.db, cpu.db);
        INFO("dbias max relative error " << eb);
        CHECK(eb <= grad_tol);
      }
    }
  }
}

TEST_CASE_TEMPLATE("cuda conv2d: strided input, weight-only gradient, empty batch", T, float, double) {
  dl::cuda::set_allow_tf32(false);
  dl::Generator gen(32);
  const dl::Conv2dOptions o{.stride = {2, 1}, .padding = {1, 1}};
  auto x = dl::randn<T>({2, 3, 9, 7}, 0.0, 1.0, gen), w = dl::randn<T>({4, 3, 3, 3}, 0.0, 1.0, gen);
  auto b = dl::randn<T>({4}, 0.0, 1.0, gen);
  // A transposed (non-contiguous) device input is made contiguous first.
  check_close(dl::conv2d(x.cuda().transpose(2, 3), w.cuda(), b.cuda(), o), dl::conv2d(x.transpose(2, 3), w, b, o),
              "forward of a transposed input");
  // Only the weight and bias track gradients (a first layer): dx is not computed.
  auto v = dl::randn<T>({2, 4, 5, 7}, 0.0, 1.0, gen);
  auto weight_grads = [&](bool gpu) {
    NDArray<T> wl = w.clone(), bl = b.clone();
    wl.attach_grad();
    bl.attach_grad();
    {
      dl::autograd::record rec;
      NDArray<T> y = dl::conv2d(gpu ? x.cuda() : x, gpu ? wl.cuda() : wl, gpu ? bl.cuda() : bl, o);
      NDArray<T> loss = dl::sum(NDArray<T>(y * (gpu ? v.cuda() : v)));
      (gpu ? loss.cpu() : loss).backward();
    }
    return std::vector<NDArray<T>>{wl.grad().clone(), bl.grad().clone()};
  };
  auto g = weight_grads(true), c = weight_grads(false);
  INFO("dw error " << max_rel_error(g[0], c[0]) << ", dbias error " << max_rel_error(g[1], c[1]));
  CHECK(max_rel_error(g[0], c[0]) <= tolerance<T>() * 10);
  CHECK(max_rel_error(g[1], c[1]) <= tolerance<T>() * 10);
  // An empty batch gives an empty output on the device.
  NDArray<T> empty = dl::conv2d(dl::zeros<T>({0, 3, 9, 7}).cuda(), w.cuda(), b.cuda(), o);
  CHECK(empty.shape() == Shape{0, 4, 5, 7});
  CHECK(empty.device() == kGpu);
}

TEST_CASE("cuda conv2d: TF32 opt-in stays close to exact float32") {
  dl::Generator gen(33);
  auto x = dl::randn<float>({4, 8, 10, 10}, 0.0, 1.0, gen), w = dl::randn<float>({8, 8, 3, 3}, 0.0, 1.0, gen);
  const dl::Conv2dOptions o{.padding = {1, 1}};
  NDArray<float> want = dl::conv2d(x, w, NDArray<float>(), o);
  dl::cuda::set_allow_tf32(true);
  NDArray<float> got = dl::conv2d(x.cuda(), w.cuda(), NDArray<float>(), o);
  dl::cuda::set_allow_tf32(false);
  const double err = max_rel_error(got.cpu(), want);
  INFO("TF32 max relative error " << err);  // 72 products with 10-bit mantissas
  CHECK(err <= 5e-2);
  check_close(dl::conv2d(x.cuda(), w.cuda(), NDArray<float>(), o), want, "exact again after the TF32 opt-out");
}

TEST_CASE("cuda gradcheck (float64): conv2d on the GPU with bias, stride, padding, dilation and groups") {
  struct Case { Shape x, w; dl::Conv2dOptions o; };
  for (const Case& c : {Case{{2, 4, 5, 5}, {4, 2, 3, 3}, {.stride = {2, 2}, .padding = {1, 1}, .groups = 2}},
                        Case{{1, 2, 6, 5}, {3, 2, 2, 3}, {.stride = {1, 2}, .padding = {1, 2}, .dilation = {2, 1}}}}) {
    auto r = dl::autograd::gradcheck(
        [&](std::vector<NDArray<double>>& in) {
          return dl::conv2d(in[0].cuda(), in[1].cuda(), in[2].cuda(), c.o).cpu();
        },
        {dl::randn<double>(c.x), dl::randn<double>(c.w), dl::randn<double>({c.w[0]})});
    INFO("x " << c.x.to_string() << " w " << c.w.to_string() << ": " << r.message);
    CHECK(r.ok);
  }
}

TEST_CASE("cuda conv2d: mixed devices are a DeviceError, shape errors read as on the CPU") {
  auto x = dl::randn<float>({1, 4, 6, 6}), w = dl::randn<float>({2, 4, 3, 3}), b = dl::randn<float>({2});
  CHECK_THROWS_WITH_AS(dl::conv2d(x.cuda(), w), doctest::Contains("all must be on one device"), dl::DeviceError);
  CHECK_THROWS_WITH_AS(dl::conv2d(x, w.cuda()), doctest::Contains("weight on cuda:0"), dl::DeviceError);
  CHECK_THROWS_WITH_AS(dl::conv2d(x.cuda(), w.cuda(), b), doctest::Contains("bias on cpu"), dl::DeviceError);
  // Every shape and argument check runs before the device branch: the same message on both devices.
  auto bad_w = dl::randn<float>({2, 3, 3, 3});
  const std::string cpu_msg = message_of([&] { (void)dl::conv2d(x, bad_w); });
  const std::string gpu_msg = message_of([&] { (void)dl::conv2d(x.cuda(), bad_w.cuda()); });
  INFO("cpu: " << cpu_msg << "\ngpu: " << gpu_msg);
  CHECK(cpu_msg.find("input channels per group") != std::string::npos);
  CHECK(gpu_msg == cpu_msg);
  const dl::Conv2dOptions zero_stride{.stride = {0, 1}};
  CHECK(message_of([&] { (void)dl::conv2d(x.cuda(), w.cuda(), NDArray<float>(), zero_stride); }) ==
        message_of([&] { (void)dl::conv2d(x, w, NDArray<float>(), zero_stride); }));
  CHECK_THROWS_WITH_AS(dl::conv2d(x.cuda(), w.cuda(), dl::randn<float>({3}).cuda()), doctest::Contains("bias has shape"),
                       dl::ShapeError);
}

#else  // no cuDNN in this build

TEST_CASE("cuda conv2d without cuDNN is a clear DeviceError") {
  auto x = dl::randn<float>({1, 4, 6, 6}).cuda(), w = dl::randn<float>({2, 4, 3, 3}).cuda();
  CHECK_THROWS_WITH_AS(dl::conv2d(x, w), doctest::Contains("needs cuDNN"), dl::DeviceError);
}

#endif
