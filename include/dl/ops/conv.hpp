// conv2d: 2-D cross-correlation over NCHW arrays (PyTorch's conv2d semantics) with stride,
// zero padding, dilation and groups (groups == C is a depthwise convolution), and its gradient for
// the input, the weight and the bias. The shape contract lives here; the arithmetic is
// backend/cpu/conv.hpp (im2col + GEMM) or, for CUDA arrays in an nvcc build with cuDNN,
// backend/cuda/cudnn.hpp (the bias is then a broadcast add on the device, its gradient a sum of dy
// over (N, H, W)). Also the sliding-window shape checks shared with pooling.
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
#include "dl/backend/cuda/cudnn.hpp"
#include "dl/backend/cuda/reduce.hpp"
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

// The device conv2d runs on: the CPU, or (nvcc builds with cuDNN) the one CUDA device that holds
// the input, the weight and the bias.
template <class T>
Device conv2d_device(const NDArray<T>& x, const NDArray<T>& w, const NDArray<T>& bias) {
  const bool has_bias = bias.defined();
  if (x.device().is_cpu() && w.device().is_cpu() && (!has_bias || bias.device().is_cpu())) return Device::cpu();
#if defined(DL_CUDA_ENABLED) && defined(DL_HAVE_CUDNN)
  check<DeviceError>(x.device() == w.device() && (!has_bias || bias.device() == x.device()), "conv2d: input on ",
                     x.device(), ", weight on ", w.device(), has_bias ? ", bias on " + bias.device().to_string() : "",
                     "; all must be on one device (move them with .to())");
  return x.device();
#elif defined(DL_CUDA_ENABLED)
  const Device d = x.device().is_cuda() ? x.device() : w.device().is_cuda() ? w.device() : bias.device();
  fail<DeviceError>("conv2d: array on ", d, " needs cuDNN, which this build lacks (meson looks for libcudnn next to "
                    "nvcc and then defines DL_HAVE_CUDNN)");
#else
  require_cpu(x.device(), "conv2d");
  require_cpu(w.device(), "conv2d");
  if (has_bias) require_cpu(bias.device(), "conv2d");
  return Device::cpu();
#endif
}

// The kernels for the device: backend/cpu, or cuDNN plus a broadcast bias add / a sum over (N, H, W)
// for the bias gradient. Undefined b, dx, dw, db mean "no bias" / "not needed".
template <class T>
void conv2d_forward_on(const Device& d, const NDArray<T>& x, const NDArray<T>& w, const NDArray<T>& b, NDArray<T>& y,
                       const cpu::Conv2dGeometry& geo) {
  if (y.numel() == 0) return;
#if defined(DL_CUDA_ENABLED) && defined(DL_HAVE_CUDNN)
  if (d.is_cuda()) {
    if (x.numel() == 0 || w.numel() == 0)  // no input channels (or an empty image under padding)
      cuda::zero_bytes(y.data(), d.index, static_cast<size_t>(y.numel()) * sizeof(T));
    else
      cuda::conv2d_forward(x.data(), w.data(), y.data(), geo, d.index);
    if (b.defined()) y += b.reshape(Shape{geo.out_channels, 1, 1});  // detached operands: nothing recorded
    return;
  }
#endif
  (void)d;
  cpu::conv2d_forward(x.data(), w.data(), b.defined() ? b.data() : nullptr, y.data(), geo);
}
template <class T>
void conv2d_backward_on(const Device& d, const NDArray<T>& x, const NDArray<T>& w, const NDArray<T>& gy,
                        NDArray<T>& dx, NDArray<T>& dw, NDArray<T>& db, const cpu::Conv2dGeometry& geo) {
  const bool want_x = dx.defined() && dx.numel() > 0, want_w = dw.defined() && dw.numel() > 0,
             want_b = db.defined() && db.numel() > 0;
#if defined(DL_CUDA_ENABLED) && defined(DL_HAVE_CUDNN)
  if (d.is_cuda()) {
    const int dev = d.index;
    const bool empty = gy.numel() == 0 || x.numel() == 0 || w.numel() == 0;  // every gradient is zero
    auto zero = [dev](NDArray<T>& a) { cuda::zero_bytes(a.data(), dev, static_cast<size_t>(a.numel()) * sizeof(T)); };
    if (want_x) empty ? zero(dx) : cuda::conv2d_backward_data(w.data(), gy.data(), dx.data(), geo, dev);
    if (want_w) empty ? zero(dw) : cuda::conv2d_backward_filter(x.data(), gy.data(), dw.data(), geo, dev);
    if (want_b) {
      if (gy.numel() == 0) {
        zero(db);
      } else {
        std::array<bool, kMaxRank> over_nhw{};  // dbias[o] = sum of dy[:, o, :, :]
        over_nhw[0] = over_nhw[2] = over_nhw[3] = true;
        cuda::sum_reduce(gy.data(), gy.shape(), gy.strides(), over_nhw, db.data(), dev);
      }
    }
    return;
  }
#endif
  (void)d;
  cpu::conv2d_backward(x.data(), w.data(), gy.numel() ? gy.data() : nullptr, want_x ? dx.data() : nullptr,
                       want_w ? dw.data() : nullptr, want_b ? db.data() : nullptr, geo);
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
  const Device device = detail::conv2d_device(x, w, bias);
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
    check<ShapeError>(bias.rank() == 1 && bias.shape(0) == O, "conv2d: bias has shape ", bias.shape(), ", expected (",
                      O, ",)");
  }
  auto out_hw = detail::window_output_size("conv2d", x.shape(2), x.shape(3), {w.shape(2), w.shape(3)}, options.stride,
                                           options.padding, options.dilation, true);
  cpu::Conv2dGeometry geo{x.shape(0), C, x.shape(2), x.shape(3), O, w.shape(2), w.shape(3),
                          options.stride[0], options.stride[1], options.padding[0], options.padding[1],
                          options.dilation[0], options.dilation[1], groups, out_hw[0], out_hw[1]};
  NDArray<T> out(Shape{geo.batch, O, geo.out_h, geo.out_w}, device);
  NDArray<T> xc = x.contiguous().detach(), wc = w.contiguous().detach(), bc;
  if (has_bias) bc = bias.contiguous().detach();
  detail::conv2d_forward_on(device, xc, wc, bc, out, geo);

  std::vector<NDArray<T>> inputs{x, w};
  if (has_bias) inputs.push_back(bias);
  bool need_x = x.tracks_grad(), need_w = w.tracks_grad(), need_b = has_bias && bias.tracks_grad();
  autograd::record_op<T>("conv2d", inputs, out, [xc, wc, geo, has_bias, need_x, need_w, need_b,
                                                  device](const NDArray<T>& g) {
    NDArray<T> gy = g.contiguous();
    NDArray<T> dx = need_x ? NDArray<T>(xc.shape(), device) : NDArray<T>();
    NDArray<T> dw = need_w ? NDArray<T>(wc.shape(), device) : NDArray<T>();
    NDArray<T> db = need_b ? NDArray<T>(Shape{geo.out_channels}, device) : NDArray<T>();
    detail::conv2d_backward_on(device, xc, wc, gy, dx, dw, db, geo);
    std::vector<NDArray<T>> grads{dx, dw};
    if (has_bias) grads.push_back(db);
    return grads;
  });
  return out;
}

#if defined(DL_CUDA_ENABLED) && defined(DL_HAVE_CUDNN)
namespace cuda {
// The explicit cuDNN forward without bias or autograd: y = conv2d(x, w) for arrays on one CUDA device.
template <class T>
NDArray<T> conv2d_forward(const NDArray<T>& input, const NDArray<T>& weight, const Conv2dOptions& o = {}) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "cudnn conv2d: needs float or double");
  check<DeviceError>(input.device().is_cuda() && input.device() == weight.device(), "cudnn conv2d: input on ",
                     input.device(), " and weight on ", weight.device(), "; both must be on one CUDA device");
  check<ShapeError>(input.rank() == 4 && weight.rank() == 4, "cudnn conv2d: expected 4-D input and weight, got ",
                    input.shape(), " and ", weight.shape());
  check<ShapeError>(o.groups >= 1 && input.shape(1) == weight.shape(1) * o.groups && weight.shape(0) % o.groups == 0,
                    "cudnn conv2d: input ", input.shape(), " and weight ", weight.shape(), " do not match groups ", o.groups);
  auto hw = dl::detail::window_output_size("cudnn conv2d", input.shape(2), input.shape(3),
                                           {weight.shape(2), weight.shape(3)}, o.stride, o.padding, o.dilation, true);
  NDArray<T> x = input.contiguous(), w = weight.contiguous();
  cpu::Conv2dGeometry geo{x.shape(0), x.shape(1), x.shape(2), x.shape(3), w.shape(0), w.shape(2), w.shape(3),
                          o.stride[0], o.stride[1], o.padding[0], o.padding[1], o.dilation[0], o.dilation[1],
                          o.groups, hw[0], hw[1]};
  NDArray<T> y(Shape{geo.batch, geo.out_channels, hw[0], hw[1]}, x.device());
  dl::detail::conv2d_forward_on(x.device(), x, w, NDArray<T>(), y, geo);
  return y;
}
}  // namespace cuda
#endif

}  // namespace dl
