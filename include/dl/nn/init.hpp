// Parameter initialisers (dl::nn::init), filling an existing array in place from a Generator
// (the global one by default), so a fixed seed reproduces the same weights on any thread count.
// Fan-in and fan-out follow PyTorch: for a weight of shape (out, in) fan_in = in, fan_out = out;
// for a convolution weight (O, I, kh, kw) both are multiplied by the receptive field kh * kw.
//
//   xavier_uniform   U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out))      (Glorot & Bengio 2010)
//   xavier_normal    N(0, s),  s = gain * sqrt(2 / (fan_in + fan_out))
//   kaiming_uniform  U(-b, b), b = sqrt(3) * g / sqrt(fan), g = sqrt(2 / (1 + a^2))  (He et al. 2015)
//   kaiming_normal   N(0, s),  s = g / sqrt(fan); fan = fan_in (default) or fan_out
//
//   dl::Generator gen(0);
//   dl::nn::init::kaiming_normal(conv_weight, 0.0, dl::nn::init::FanMode::fan_out, gen);
#pragma once
#include <cmath>
#include <cstdint>
#include <utility>

#include "dl/autograd/record.hpp"
#include "dl/core/rng.hpp"
#include "dl/expr/assign.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/ops/elementwise.hpp"  // the tape accumulates gradients with operator+

namespace dl::nn::init {

enum class FanMode { fan_in, fan_out };

// (fan_in, fan_out) of a weight of rank >= 2.
inline std::pair<int64_t, int64_t> fan_in_and_fan_out(const Shape& shape, const char* op = "init") {
  check<ShapeError>(shape.rank() >= 2, op, ": fan in and fan out need a weight of rank >= 2, got shape ", shape);
  int64_t receptive = 1;
  for (int i = 2; i < shape.rank(); ++i) receptive *= shape[i];
  return {shape[1] * receptive, shape[0] * receptive};
}

namespace detail {
// Writes `values` (same shape) into `a` without recording: parameters usually track gradients.
template <class T>
void fill_from(NDArray<T>& a, const NDArray<T>& values) {
  autograd::pause no_tape;
  NDArray<T> dst = a.detach();
  dst.assign(values);
}
template <class T>
void require_float(NDArray<T>& a, const char* op) {
  static_assert(FloatingPoint<T>, "init: needs a float or double array");
  a.require_defined(op);
  require_cpu(a.device(), op);
}
inline int64_t nonzero_fan(int64_t fan, const Shape& shape, const char* op) {
  check<ShapeError>(fan > 0, op, ": fan is zero for a weight of shape ", shape);
  return fan;
}
}  // namespace detail

template <class T>
void uniform(NDArray<T>& a, double low = 0.0, double high = 1.0, Generator& gen = default_generator()) {
  detail::require_float(a, "uniform");
  check<ValueError>(low <= high, "uniform: low ", low, " is above high ", high);
  detail::fill_from(a, rand<T>(a.shape(), low, high, gen));
}

template <class T>
void normal(NDArray<T>& a, double mean = 0.0, double stddev = 1.0, Generator& gen = default_generator()) {
  detail::require_float(a, "normal");
  check<ValueError>(stddev >= 0, "normal: stddev must be non-negative, got ", stddev);
  detail::fill_from(a, randn<T>(a.shape(), mean, stddev, gen));
}

template <class T>
void constant(NDArray<T>& a, double value) {
  detail::require_float(a, "constant");
  autograd::pause no_tape;
  NDArray<T> dst = a.detach();
  dst.assign(static_cast<T>(value));
}

template <class T>
void zeros(NDArray<T>& a) { constant(a, 0.0); }

template <class T>
void xavier_uniform(NDArray<T>& a, double gain = 1.0, Generator& gen = default_generator()) {
  detail::require_float(a, "xavier_uniform");
  auto [fan_in, fan_out] = fan_in_and_fan_out(a.shape(), "xavier_uniform");
  double bound = gain * std::sqrt(6.0 / static_cast<double>(detail::nonzero_fan(fan_in + fan_out, a.shape(), "xavier_uniform")));
  uniform(a, -bound, bound, gen);
}

template <class T>
void xavier_normal(NDArray<T>& a, double gain = 1.0, Generator& gen = default_generator()) {
  detail::require_float(a, "xavier_normal");
  auto [fan_in, fan_out] = fan_in_and_fan_out(a.shape(), "xavier_normal");
  double stddev = gain * std::sqrt(2.0 / static_cast<double>(detail::nonzero_fan(fan_in + fan_out, a.shape(), "xavier_normal")));
  normal(a, 0.0, stddev, gen);
}

// `negative_slope` is the leaky-ReLU slope after this layer (0 for ReLU): gain sqrt(2 / (1 + a^2)).
template <class T>
void kaiming_uniform(NDArray<T>& a, double negative_slope = 0.0, FanMode mode = FanMode::fan_in,
                     Generator& gen = default_generator()) {
  detail::require_float(a, "kaiming_uniform");
  auto [fan_in, fan_out] = fan_in_and_fan_out(a.shape(), "kaiming_uniform");
  int64_t fan = detail::nonzero_fan(mode == FanMode::fan_in ? fan_in : fan_out, a.shape(), "kaiming_uniform");
  double gain = std::sqrt(2.0 / (1.0 + negative_slope * negative_slope));
  double bound = std::sqrt(3.0) * gain / std::sqrt(static_cast<double>(fan));
  uniform(a, -bound, bound, gen);
}

template <class T>
void kaiming_normal(NDArray<T>& a, double negative_slope = 0.0, FanMode mode = FanMode::fan_in,
                    Generator& gen = default_generator()) {
  detail::require_float(a, "kaiming_normal");
  auto [fan_in, fan_out] = fan_in_and_fan_out(a.shape(), "kaiming_normal");
  int64_t fan = detail::nonzero_fan(mode == FanMode::fan_in ? fan_in : fan_out, a.shape(), "kaiming_normal");
  double gain = std::sqrt(2.0 / (1.0 + negative_slope * negative_slope));
  normal(a, 0.0, gain / std::sqrt(static_cast<double>(fan)), gen);
}

}  // namespace dl::nn::init
