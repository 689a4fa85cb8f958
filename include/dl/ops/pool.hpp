// 2-D pooling over NCHW arrays with PyTorch's semantics (floor output sizes, padding at most half
// the kernel): max_pool2d (keeps the argmax of every window for backward), avg_pool2d (padding
// counted in the divisor or not) and global_avg_pool2d (N, C, H, W) -> (N, C, 1, 1). Kernels are
// backend/cpu/pool.hpp; the window checks are shared with conv2d. Arrays on a CUDA device run
// on cuDNN (backend/cuda/cudnn_pool_norm.hpp; global_avg_pool2d is a mean over (H, W) there).
//
//   auto y = dl::max_pool2d(x, {2, 2});                  // stride defaults to the kernel
//   auto z = dl::avg_pool2d(x, {3, 3}, {1, 1}, {1, 1});  // same-size output, padding counted
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "dl/autograd/record.hpp"
#include "dl/backend/cpu/pool.hpp"
#include "dl/backend/cuda/cudnn_pool_norm.hpp"
#include "dl/backend/cuda/pool.hpp"
#include "dl/ops/conv.hpp"
#include "dl/ops/elementwise.hpp"
#include "dl/ops/reduce.hpp"

namespace dl {

namespace detail {
// Checks the input and the window; returns the geometry over (N*C) planes.
template <class T>
cpu::Pool2dGeometry pool2d_geometry(const char* op, const NDArray<T>& x, const std::array<int64_t, 2>& kernel,
                                    const std::array<int64_t, 2>& stride, const std::array<int64_t, 2>& padding) {
  x.require_defined(op);
  cuda::pool_norm_on_gpu(x.device(), op);  // CPU, or CUDA with cuDNN
  check<ShapeError>(x.rank() == 4, op, ": expected a 4-D input (N, C, H, W), got ", x.shape());
  auto out = window_output_size(op, x.shape(2), x.shape(3), kernel, stride, padding, {1, 1}, false);
  // PyTorch's rule; it also guarantees every window holds at least one real element.
  check<ValueError>(padding[0] <= kernel[0] / 2 && padding[1] <= kernel[1] / 2, op, ": padding ",
                    pair_string(padding), " must be at most half the kernel ", pair_string(kernel));
  return {x.shape(0) * x.shape(1), x.shape(2), x.shape(3), out[0], out[1],
          kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1]};
}

#if defined(DL_CUDA_ENABLED) && defined(DL_HAVE_CUDNN)
// The GPU branch of max_pool2d / avg_pool2d. Max: dl's own kernels with saved int32 argmax indices
// (backend/cuda/pool.hpp: the CPU's tie rule, a gather backward several times faster than cuDNN's
// deterministic one). Average: cuDNN forward, and a cuDNN backward from the saved x and y.
template <class T>
NDArray<T> pool2d_gpu(const NDArray<T>& x, const cpu::Pool2dGeometry& geo, cuda::PoolMode mode, const char* op) {
  NDArray<T> xc = x.contiguous().detach();
  if (mode == cuda::PoolMode::max) {
    const Device d = x.device();
    NDArray<T> out(Shape{x.shape(0), x.shape(1), geo.out_h, geo.out_w}, d);
    NDArray<int32_t> argmax(out.shape(), d);
    cuda::max_pool2d_forward(xc.data(), out.data(), argmax.data(), geo, d.index);
    autograd::record_op<T>(op, {x}, out, [argmax, geo, in_shape = x.shape(), d](const NDArray<T>& g) {
      NDArray<T> dx(in_shape, d);
      NDArray<T> gy = g.contiguous();
      cuda::max_pool2d_backward(gy.data(), argmax.data(), dx.data(), geo, d.index);
      return std::vector<NDArray<T>>{dx};
    });
    return out;
  }
  NDArray<T> out = cuda::pool2d_forward(xc, geo, mode);
  autograd::record_op<T>(op, {x}, out, [xc, y = out.detach(), geo, mode](const NDArray<T>& g) {
    return std::vector<NDArray<T>>{cuda::pool2d_backward(xc, y, g.contiguous(), geo, mode)};
  });
  return out;
}
#endif
}  // namespace detail

template <ArrayLike X>
NDArray<value_type_t<X>> max_pool2d(const X& input, const std::array<int64_t, 2>& kernel,
                                    const std::array<int64_t, 2>& stride, const std::array<int64_t, 2>& padding = {0, 0}) {
  using T = value_type_t<X>;
  static_assert(FloatingPoint<T>, "max_pool2d: needs a float or double array");
  NDArray<T> x = eval(input);
  auto geo = detail::pool2d_geometry("max_pool2d", x, kernel, stride, padding);
#if defined(DL_CUDA_ENABLED) && defined(DL_HAVE_CUDNN)
  if (x.device().is_cuda()) return detail::pool2d_gpu(x, geo, cuda::PoolMode::max, "max_pool2d");
#endif
  NDArray<T> out(Shape{x.shape(0), x.shape(1), geo.out_h, geo.out_w});
  NDArray<int64_t> argmax(out.shape());
  NDArray<T> xc = x.contiguous();
  if (out.numel() > 0) cpu::max_pool2d_forward(xc.data(), out.data(), argmax.data(), geo);
  Shape in_shape = x.shape();
  autograd::record_op<T>("max_pool2d", {x}, out, [argmax, geo, in_shape](const NDArray<T>& g) {
    NDArray<T> dx(in_shape);
    NDArray<T> gy = g.contiguous();
    if (dx.numel() > 0) cpu::max_pool2d_backward(gy.numel() ? gy.data() : nullptr, argmax.data(), dx.data(), geo);
    return std::vector<NDArray<T>>{dx};
  });
  return out;
}

// Stride defaults to the kernel (non-overlapping windows).
template <ArrayLike X>
NDArray<value_type_t<X>> max_pool2d(const X& input, const std::array<int64_t, 2>& kernel) {
  return max_pool2d(input, kernel, kernel, {0, 0});
}

template <ArrayLike X>
NDArray<value_type_t<X>> avg_pool2d(const X& input, const std::array<int64_t, 2>& kernel,
                                    const std::array<int64_t, 2>& stride, const std::array<int64_t, 2>& padding = {0, 0},
                                    bool count_include_pad = true) {
  using T = value_type_t<X>;
  static_assert(FloatingPoint<T>, "avg_pool2d: needs a float or double array");
  NDArray<T> x = eval(input);
  auto geo = detail::pool2d_geometry("avg_pool2d", x, kernel, stride, padding);
#if defined(DL_CUDA_ENABLED) && defined(DL_HAVE_CUDNN)
  if (x.device().is_cuda())
    return detail::pool2d_gpu(
        x, geo, count_include_pad ? cuda::PoolMode::avg_include_pad : cuda::PoolMode::avg_exclude_pad, "avg_pool2d");
#endif
  NDArray<T> out(Shape{x.shape(0), x.shape(1), geo.out_h, geo.out_w});
  NDArray<T> xc = x.contiguous();
  if (out.numel() > 0) cpu::avg_pool2d_forward(xc.data(), out.data(), geo, count_include_pad);
  Shape in_shape = x.shape();
  autograd::record_op<T>("avg_pool2d", {x}, out, [geo, in_shape, count_include_pad](const NDArray<T>& g) {
    NDArray<T> dx(in_shape);
    NDArray<T> gy = g.contiguous();
    if (dx.numel() > 0) cpu::avg_pool2d_backward(gy.numel() ? gy.data() : nullptr, dx.data(), geo, count_include_pad);
    return std::vector<NDArray<T>>{dx};
  });
  return out;
}

template <ArrayLike X>
NDArray<value_type_t<X>> avg_pool2d(const X& input, const std::array<int64_t, 2>& kernel) {
  return avg_pool2d(input, kernel, kernel, {0, 0}, true);
}

// Mean over each (H, W) plane: (N, C, H, W) -> (N, C, 1, 1).
template <ArrayLike X>
NDArray<value_type_t<X>> global_avg_pool2d(const X& input) {
  using T = value_type_t<X>;
  static_assert(FloatingPoint<T>, "global_avg_pool2d: needs a float or double array");
  NDArray<T> x = eval(input);
  x.require_defined("global_avg_pool2d");
#if defined(DL_CUDA_ENABLED)
  const bool gpu = x.device().is_cuda();  // mean's CUDA kernels: no cuDNN needed
#else
  const bool gpu = false;
#endif
  if (!gpu) require_cpu(x.device(), "global_avg_pool2d");
  check<ShapeError>(x.rank() == 4, "global_avg_pool2d: expected a 4-D input (N, C, H, W), got ", x.shape());
  const int64_t planes = x.shape(0) * x.shape(1), hw = x.shape(2) * x.shape(3);
  check<ShapeError>(hw > 0 || planes == 0, "global_avg_pool2d: input ", x.shape(), " has an empty (H, W) plane");
  if (gpu) return dl::mean(x, std::vector<int>{2, 3}, true);  // recorded as mean: the same gradient, g / (H * W)
  NDArray<T> out(Shape{x.shape(0), x.shape(1), 1, 1});
  NDArray<T> xc = x.contiguous();
  if (planes > 0) {
    const T* xp = xc.data();
    T* yp = out.data();
    parallel_for(0, planes, 16, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        double s = 0;  // double accumulation: planes can be large
        for (int64_t i = 0; i < hw; ++i) s += xp[p * hw + i];
        yp[p] = static_cast<T>(s / static_cast<double>(hw));
      }
    });
  }
  Shape in_shape = x.shape();
  autograd::record_op<T>("global_avg_pool2d", {x}, out, [in_shape, planes, hw](const NDArray<T>& g) {
    NDArray<T> dx(in_shape);
    NDArray<T> gy = g.contiguous();
    if (planes > 0 && hw > 0) {
      const T* gp = gy.data();
      T* dp = dx.data();
      parallel_for(0, planes, 16, [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) std::fill(dp + p * hw, dp + (p + 1) * hw, gp[p] / static_cast<T>(hw));
      });
    }
    return std::vector<NDArray<T>>{dx};
  });
  return out;
}

}  // namespace dl
