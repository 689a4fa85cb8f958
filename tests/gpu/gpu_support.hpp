// Helpers shared by the GPU suite's files: the device, per-dtype tolerances, and the comparison
// of a GPU result with the CPU's.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include "dl/autograd/engine.hpp"
#include "dl/ndarray/ndarray.hpp"

namespace dl_gpu_test {

using dl::Device;
using dl::NDArray;

inline const Device kGpu = Device::cuda(0);

template <class T>
constexpr double tolerance() { return std::is_same_v<T, float> ? 1e-4 : 1e-10; }

// max over elements of |got - want| / max(|want|, 1); shapes must match.
template <class T>
inline double max_rel_error(const NDArray<T>& got, const NDArray<T>& want) {
  REQUIRE(got.shape() == want.shape());
  auto g = got.to_vector(), w = want.to_vector();
  double worst = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    double d = std::abs(static_cast<double>(g[i]) - static_cast<double>(w[i]));
    if (std::isnan(static_cast<double>(g[i])) != std::isnan(static_cast<double>(w[i]))) return INFINITY;
    if (std::isnan(d)) continue;  // both NaN
    worst = std::max(worst, d / std::max(1.0, std::abs(static_cast<double>(w[i]))));
  }
  return worst;
}

template <class T>
inline void check_close(const NDArray<T>& gpu, const NDArray<T>& cpu, const std::string& what) {
  CHECK(gpu.device() == kGpu);
  double err = max_rel_error(gpu.cpu(), cpu);
  INFO(what << ": max relative error " << err);
  CHECK(err <= tolerance<T>());
}

// The gradient that reaches a CPU leaf x when f runs on the device (the leaf is moved inside the
// recorded scope, so to()'s backward brings the gradient home) or on the CPU.
template <class T, class F>
NDArray<T> grad_through(const NDArray<T>& x0, bool on_gpu, F f) {
  NDArray<T> x = x0.clone();
  x.attach_grad();
  {
    dl::autograd::record rec;
    NDArray<T> in = on_gpu ? x.cuda() : x;
    NDArray<T> y = f(in);
    (on_gpu ? y.cpu() : y).backward();
  }
  return x.grad().clone();
}

}  // namespace dl_gpu_test
