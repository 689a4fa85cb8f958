// nn::Conv2d: a 2-D convolution layer over NCHW arrays; forward is dl::conv2d with the module's
// weight (O, C/groups, kh, kw) and bias (O,), like PyTorch's Conv2d, so state_dicts map one to one.
// Default initialisation is PyTorch's: weight ~ kaiming_uniform(a = sqrt(5)), i.e.
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = C/groups * kh * kw, and bias ~ the same range.
//
//   dl::nn::Conv2d conv(1, 6, 5, {.padding = {2, 2}});   // weight (6, 1, 5, 5), bias (6,)
//   dl::nn::Conv2d down(16, 32, 3, /*stride=*/2, /*padding=*/1, /*bias=*/false);
//   auto y = conv(x);                                   // x (N, 1, 28, 28) -> (N, 6, 28, 28)
#pragma once
#include <array>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <type_traits>

#include "dl/graph/sym.hpp"
#include "dl/nn/init.hpp"
#include "dl/nn/module.hpp"
#include "dl/ops/conv.hpp"

namespace dl::nn {

class Conv2d : public Module {
 public:
  NDArray<float> weight;  // (out_channels, in_channels / groups, kernel_h, kernel_w)
  NDArray<float> bias;    // (out_channels,); undefined when constructed with bias = false

  // Options by const reference, not by value: GCC 12.2 at -O2 with AVX-512 (-march=native on this
  // project's CPUs) miscompiles building a by-value Conv2dOptions argument (SLP vectorizer: `{}`
  // arrived with padding (1, 0)); tests/nn/test_conv_modules.cpp checks the options round trip.
  Conv2d(int64_t in_channels, int64_t out_channels, std::array<int64_t, 2> kernel, const Conv2dOptions& options = {},
         bool bias = true, Generator& gen = default_generator())
      : in_(in_channels), out_(out_channels), kernel_(kernel), options_(options) {
    check<ValueError>(in_channels > 0 && out_channels > 0, "Conv2d: in_channels and out_channels must be positive, got (",
                      in_channels, ", ", out_channels, ")");
    check<ValueError>(kernel[0] > 0 && kernel[1] > 0, "Conv2d: kernel size must be positive, got ",
                      detail::pair_string(kernel));
    check<ValueError>(options.stride[0] > 0 && options.stride[1] > 0, "Conv2d: stride must be positive, got ",
                      detail::pair_string(options.stride));
    check<ValueError>(options.padding[0] >= 0 && options.padding[1] >= 0, "Conv2d: padding must be non-negative, got ",
                      detail::pair_string(options.padding));
    check<ValueError>(options.dilation[0] >= 1 && options.dilation[1] >= 1, "Conv2d: dilation must be at least 1, got ",
                      detail::pair_string(options.dilation));
    const int64_t groups = options.groups;
    check<ValueError>(groups >= 1, "Conv2d: groups must be positive, got ", groups);
    check<ValueError>(in_channels % groups == 0 && out_channels % groups == 0, "Conv2d: in_channels ", in_channels,
                      " and out_channels ", out_channels, " must both be divisible by groups ", groups);
    weight = NDArray<float>(Shape{out_channels, in_channels / groups, kernel[0], kernel[1]});
    init::kaiming_uniform(weight, std::sqrt(5.0), init::FanMode::fan_in, gen);
    register_parameter("weight", &Conv2d::weight);
    if (bias) {
      this->bias = NDArray<float>(Shape{out_channels});
      double bound = 1.0 / std::sqrt(static_cast<double>(in_channels / groups * kernel[0] * kernel[1]));
      init::uniform(this->bias, -bound, bound, gen);
      register_parameter("bias", &Conv2d::bias);
    }
  }
  // A square kernel.
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, const Conv2dOptions& options = {},
         bool bias = true, Generator& gen = default_generator())
      : Conv2d(in_channels, out_channels, {kernel, kernel}, options, bias, gen) {}
  // A square kernel with the same stride and padding on both axes. (A template so that a braced
  // `{}` in the fourth place can only mean Conv2dOptions, never stride 0.)
  template <std::integral Stride>
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, Stride stride, int64_t padding = 0,
         bool bias = true, Generator& gen = default_generator())
      : Conv2d(in_channels, out_channels, {kernel, kernel},
               Conv2dOptions{.stride = {static_cast<int64_t>(stride), static_cast<int64_t>(stride)}, .padding = {padding, padding}}, bias, gen) {}

  int64_t in_channels() const { return in_; }
  int64_t out_channels() const { return out_; }
  std::array<int64_t, 2> kernel_size() const { return kernel_; }
  const Conv2dOptions& options() const { return options_; }
  bool has_bias() const { return bias.defined(); }

  // x (N, in_channels, H, W), an NDArray or elementwise expression of float -> (N, out_channels, OH, OW).
  template <class X>
  auto forward(const X& x) {
    static_assert(ArrayLike<X>, "Conv2d: input must be an NDArray or an elementwise expression");
    static_assert(std::is_same_v<value_type_t<X>, float>, "Conv2d: input must be float, like the parameters");
    if constexpr (graph::is_symbolic_v<X>) {
      return dl::conv2d(x, weight, bias, options_);  // a node of the compiled graph
    } else {
    NDArray<float> a = dl::eval(x);
    a.require_defined("Conv2d");
    check<ShapeError>(a.rank() == 4 && a.shape(1) == in_, "Conv2d: input of shape ", a.shape(),
                      " must be (N, ", in_, ", H, W) (in_channels ", in_, ")");
    return conv2d(a, weight, bias, options_);
    }
  }
  template <class X>
  auto operator()(const X& x) { return forward(x); }

 private:
  int64_t in_, out_;
  std::array<int64_t, 2> kernel_;
  Conv2dOptions options_;
};

}  // namespace dl::nn
