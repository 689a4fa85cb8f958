// conv2d: 2-D cross-correlation over NCHW arrays (PyTorch's conv2d semantics) with stride,
// zero padding, dilation and groups (groups == C is a depthwise convolution), and its gradient for
// the input, the weight and the bias. The shape contract lives here; the arithmetic is
// backend/cpu/conv.hpp (im2col + GEMM). Also the sliding-window shape checks shared with pooling.
//
//   auto y = dl::conv2d(x, w, b, {.stride = {2, 2}, .padding = {1, 1}});  // x (N,C,H,W), w (O,C,3,3)
//   // y: (N, O, (H + 2 - 3) / 2 + 1, (W + 2 - 3) / 2 + 1)
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "dl/autograd/record.hpp"
#include "dl/backend/cpu/conv.hpp"
#include "dl/ops/elementwise.hpp"

namespace dl {

struct Conv2dOptions {
  std::array<int64_t, 2> stride{1, 1};
  std::array<int64_t, 2> padding{0, 0};
  std::array<int64_t, 2> dilation{1, 1};
  int64_t groups = 1;
};

namespace detail {
inline std::string pair_string(const std::array<int64_t, 2>& p) {
  return "(" + std::to_string(p[0]) + ", " + std::to_string(p[1]) + ")";
}

// Checks a sliding window over an (H, W) plane and returns the output plane size
// floor((H + 2p - d(k-1) - 1) / s) + 1 per axis. `dilation` is printed only when `show_dilation`.
inline std::array<int64_t, 2> window_output_size(const char* op, int64_t h, int64_t w,
                                                 const std::array<int64_t, 2>& kernel,
                                                 const std::array<int64_t, 2>& stride,
                                                 const std::array<int64_t, 2>& padding,
                                                 const std::array<int64_t, 2>& dilation, bool show_dilation) {
  check<ValueError>(kernel[0] > 0 && kernel[1] > 0, op, ": kernel size must be positive, got ", pair_string(kernel));
  check<ValueError>(stride[0] > 0 && stride[1] > 0, op, ": stride must be positive, got ", pair_string(stride));
  check<ValueError>(padding[0] >= 0 && padding[1] >= 0, op, ": padding must be non-negative, got ", pair_string(padding));
  check<ValueError>(dilation[0] >= 1 && dilation[1] >= 1, op, ": dilation must be at least 1, got ", pair_string(dilation));
  // Bounds that keep every size computation below far from int64 overflow.
  constexpr int64_t kLimit = int64_t{1} << 40;
  check<ValueError>(padding[0] < kLimit && padding[1] < kLimit && kernel[0] < kLimit && kernel[1] < kLimit &&
                        dilation[0] < kLimit / kernel[0] && dilation[1] < kLimit / kernel[1],
                    op, ": kernel ", pair_string(kernel), ", dilation ", pair_string(dilation), " or padding ",
                    pair_string(padding), " is too large");
  std::array<int64_t, 2> padded{h + 2 * padding[0], w + 2 * padding[1]};
  std::array<int64_t, 2> extent{dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1};
  if (extent[0] > padded[0] || extent[1] > padded[1]) {
    if (show_dilation)
      fail<ShapeError>(op, ": kernel ", pair_string(kernel), " with dilation ", pair_string(dilation),
                       " is larger than padded input ", pair_string(padded));
    fail<ShapeError>(op, ": kernel ", pair_string(kernel), " is larger than padded input ", pair_string(padded));
  }
  return {(padded[0] - extent[0]) / stride[0] + 1, (padded[1] - extent[1]) / stride[1] + 1};
}
}  // namespace detail

// x (N, C, H, W), weight (O, C/groups, kh, kw), bias (O) or an undefined NDArray for none.
template <ArrayLike X, ArrayLike Wt>
NDArray<value_type_t<X>> conv2d(const X& input, const Wt& weight,
                                const NDArray<value_type_t<X>>& bias = NDArray<value_type_t<X>>(),
                                const Conv2dOptions& options = {}) {
  using T = value_type_t<X>;
  static_assert(std::is_same_v<T, value_type_t<Wt>>, "conv2d: input and weight have different element types");
  static_assert(FloatingPoint<T>, "conv2d: needs a float or double array");
  NDArray<T> x = eval(input), w = eval(weight);
  x.require_defined("conv2d");
  w.require_defined("conv2d");
  require_cpu(x.device(), "conv2d");
  require_cpu(w.device(), "conv2d");
  check<ShapeError>(x.rank() == 4, "conv2d: expected a 4-D input (N, C, H, W), got ", x.shape());
  check<ShapeError>(w.rank() == 4, "conv2d: expected a 4-D weight (O, C/groups, kh, kw), got ", w.shape());
  const int64_t groups = options.groups;
  check<ValueError>(groups >= 1, "conv2d: groups must be positive, got ", groups);
  const int64_t C = x.shape(1), O = w.shape(0);
  check<ShapeError>(C % groups == 0, "conv2d: input channels ", C, " are not divisible by groups ", groups);
  check<ShapeError>(O % groups == 0, "conv2d: output channels ", O, " are not divisible by groups ", groups);
  check<ShapeError>(w.shape(1) == C / groups, "conv2d: weight ", w.shape(), " expects ", w.shape(1),
                    " input channels per group, but input ", x.shape(), " with groups ", groups, " has ", C / groups);
  const bool has_bias = bias.defined();
  if (has_bias) {
    require_cpu(bias.device(), "conv2d");
    check<ShapeError>(bias.rank() == 1 && bias.shape(0) == O, "conv2d: bias has shape ", bias.shape(), ", expected (",
                      O, ",)");
  }
  auto out_hw = detail::window_output_size("conv2d", x.shape(2), x.shape(3), {w.shape(2), w.shape(3)}, options.stride,
                                           options.padding, options.dilation, true);
  cpu::Conv2dGeometry geo{x.shape(0), C, x.shape(2), x.shape(3), O, w.shape(2), w.shape(3),
                          options.stride[0], options.stride[1], options.padding[0], options.padding[1],
                          options.dilation[0], options.dilation[1], groups, out_hw[0], out_hw[1]};
  NDArray<T> out(Shape{geo.batch, O, geo.out_h, geo.out_w});
  NDArray<T> xc = x.contiguous().detach(), wc = w.contiguous().detach(), bc;
  if (has_bias) bc = bias.contiguous().detach();
  if (out.numel() > 0) cpu::conv2d_forward(xc.data(), wc.data(), has_bias ? bc.data() : nullptr, out.data(), geo);

  std::vector<NDArray<T>> inputs{x, w};
  if (has_bias) inputs.push_back(bias);
  bool need_x = x.tracks_grad(), need_w = w.tracks_grad(), need_b = has_bias && bias.tracks_grad();
  autograd::record_op<T>("conv2d", inputs, out, [xc, wc, geo, has_bias, need_x, need_w, need_b](const NDArray<T>& g) {
    NDArray<T> gy = g.contiguous();
    NDArray<T> dx = need_x ? NDArray<T>(xc.shape()) : NDArray<T>();
    NDArray<T> dw = need_w ? NDArray<T>(wc.shape()) : NDArray<T>();
    NDArray<T> db = need_b ? NDArray<T>(Shape{geo.out_channels}) : NDArray<T>();
    cpu::conv2d_backward(xc.data(), wc.data(), gy.numel() ? gy.data() : nullptr,
                         need_x && dx.numel() ? dx.data() : nullptr, need_w && dw.numel() ? dw.data() : nullptr,
                         need_b && db.numel() ? db.data() : nullptr, geo);
    std::vector<NDArray<T>> grads{dx, dw};
    if (has_bias) grads.push_back(db);
    return grads;
  });
  return out;
}

}  // namespace dl
