// softmax and log_softmax along any axis, numerically stable (the row maximum is subtracted
// before exp, so logits of +-1e4 give exact probabilities, not NaN). The input is materialised
// and made contiguous; the kernel (backend/cpu/softmax.hpp) then walks the chosen axis in place,
// so the output has the input's shape and a contiguous layout for every axis. A line of only -inf
// has no distribution and gives NaN (as in PyTorch).
//
//   auto p  = dl::softmax(logits);          // (N, C): each row sums to 1
//   auto lp = dl::log_softmax(x, 1);        // (N, C, H, W): over the channel axis
//
// Gradients (from the saved output y): softmax dx = y * (g - sum(g * y)); log_softmax
// dx = g - exp(y) * sum(g), sums along the axis. The backward is one kernel call, not recorded
// itself (no second-order gradients through softmax).
#pragma once
#include <vector>

#include "dl/autograd/record.hpp"
#include "dl/backend/cpu/softmax.hpp"
#include "dl/backend/cuda/softmax.hpp"
#include "dl/ops/elementwise.hpp"

namespace dl {

namespace detail {

// Splits `shape` around `axis` into (outer, cols, inner); a rank-0 array is one line of one element.
inline cpu::SoftmaxLayout softmax_layout(const Shape& shape, int axis) {
  cpu::SoftmaxLayout l;
  if (shape.rank() == 0) return l;
  for (int d = 0; d < axis; ++d) l.outer *= shape[d];
  l.cols = shape[axis];
  for (int d = axis + 1; d < shape.rank(); ++d) l.inner *= shape[d];
  return l;
}

// The kernels for the array's device: backend/cpu or backend/cuda (same layouts and formulas).
template <bool Log, class T>
void softmax_forward_on(const Device& d, const T* x, T* y, const cpu::SoftmaxLayout& l) {
#if defined(DL_CUDA_ENABLED)
  if (d.is_cuda()) return cuda::softmax_forward<Log>(x, y, l, d.index);
#endif
  (void)d;
  cpu::softmax_forward<Log>(x, y, l);
}
template <bool Log, class T>
void softmax_backward_on(const Device& d, const T* y, const T* g, T* dx, const cpu::SoftmaxLayout& l) {
#if defined(DL_CUDA_ENABLED)
  if (d.is_cuda()) return cuda::softmax_backward<Log>(y, g, dx, l, d.index);
#endif
  (void)d;
  cpu::softmax_backward<Log>(y, g, dx, l);
}

template <bool Log, class T>
NDArray<T> softmax_impl(const NDArray<T>& input, int axis, const char* op) {
  input.require_defined(op);
  if constexpr (!cuda::kernel_type<T>) require_cpu(input.device(), op);
  int ax = normalize_axis(axis, input.rank(), op);
  // contiguous() is a recorded copy when needed, so the gradient reaches a strided input.
  NDArray<T> x = input.contiguous();
  cpu::SoftmaxLayout layout = softmax_layout(x.shape(), ax);
  NDArray<T> out(x.shape(), x.device());
  if (out.numel() > 0) softmax_forward_on<Log>(x.device(), x.data(), out.data(), layout);
  autograd::record_op<T>(op, {x}, out, [y = out.detach(), layout](const NDArray<T>& g) {
    NDArray<T> gc = g.contiguous();
    NDArray<T> dx(y.shape(), y.device());
    if (dx.numel() > 0) softmax_backward_on<Log>(y.device(), y.data(), gc.data(), dx.data(), layout);
    return std::vector<NDArray<T>>{dx};
  });
  return out;
}

}  // namespace detail

// exp(x - max) / sum(exp(x - max)) along `axis` (negative counts from the end).
template <ArrayLike A>
NDArray<value_type_t<A>> softmax(const A& x, int axis = -1) {
  using T = value_type_t<A>;
  static_assert(FloatingPoint<T>, "softmax: needs a float or double array");
  return detail::softmax_impl<false, T>(eval(x), axis, "softmax");
}

// x - max - log(sum(exp(x - max))) along `axis`: the log of softmax without its underflow.
template <ArrayLike A>
NDArray<value_type_t<A>> log_softmax(const A& x, int axis = -1) {
  using T = value_type_t<A>;
  static_assert(FloatingPoint<T>, "log_softmax: needs a float or double array");
  return detail::softmax_impl<true, T>(eval(x), axis, "log_softmax");
}

}  // namespace dl
