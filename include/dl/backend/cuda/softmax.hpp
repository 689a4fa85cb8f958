// Softmax, log_softmax and cross entropy on the GPU: the device twins of backend/cpu/softmax.hpp,
// with the same layouts and formulas. One warp per line (a line is the `cols` elements along the
// softmax axis, `inner` apart); the lanes stride over the line and combine their partial maxima
// and sums with a fixed xor-shuffle tree, so a result does not depend on scheduling.
//
//   logits (1024, 10), axis 1:  lines = 1024, cols = 10, inner = 1; warp w handles row w
//   x (8, 5, 4, 4), axis 1:     lines = 8 * 16, cols = 5, inner = 16
//
// ops/softmax.hpp and ops/loss.hpp call these for arrays on a CUDA device.
#pragma once
#include <cstdint>
#include <limits>

#include "dl/backend/cpu/softmax.hpp"  // SoftmaxLayout
#include "dl/backend/cuda/elementwise.hpp"  // grid_size, kThreads
#include "dl/backend/cuda/runtime.hpp"

namespace dl::cuda {

#if defined(DL_CUDA_ENABLED)

namespace detail {

template <class T>
__device__ inline T warp_sum(T v) {
  for (int w = 16; w > 0; w /= 2) v += __shfl_xor_sync(0xffffffffu, v, w);
  return v;
}
template <class T>
__device__ inline T warp_max(T v) {
  for (int w = 16; w > 0; w /= 2) {
    const T o = __shfl_xor_sync(0xffffffffu, v, w);
    v = o > v ? o : v;
  }
  return v;
}

// Offset of line `line`'s first element in a contiguous (outer, cols, inner) array.
__device__ inline int64_t line_offset(int64_t line, int64_t cols, int64_t inner) {
  return (line / inner) * cols * inner + line % inner;
}

// Grid-stride over lines, one warp each: calls body(line, lane).
#define DL_CUDA_FOR_EACH_LINE(lines, line, lane)                                                          \
  const int lane = static_cast<int>(threadIdx.x % 32);                                                   \
  const int64_t warps_in_grid = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);                     \
  for (int64_t line = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; line < (lines); \
       line += warps_in_grid)

template <bool Log, class T>
__global__ void softmax_forward_kernel(const T* x, T* y, int64_t lines, int64_t cols, int64_t inner) {
  DL_CUDA_FOR_EACH_LINE(lines, line, lane) {
    const int64_t off = line_offset(line, cols, inner);
    const T* xr = x + off;
    T* yr = y + off;
    T m = -std::numeric_limits<T>::infinity();
    for (int64_t c = lane; c < cols; c += 32) m = xr[c * inner] > m ? xr[c * inner] : m;
    m = warp_max(m);
    T s = 0;
    for (int64_t c = lane; c < cols; c += 32) {
      const T e = std::exp(xr[c * inner] - m);
      if constexpr (!Log) yr[c * inner] = e;
      s += e;
    }
    s = warp_sum(s);
    if constexpr (Log) {
      const T ls = std::log(s);
      for (int64_t c = lane; c < cols; c += 32) yr[c * inner] = (xr[c * inner] - m) - ls;
    } else {
      const T inv = T(1) / s;
      for (int64_t c = lane; c < cols; c += 32) yr[c * inner] *= inv;
    }
  }
}

template <bool Log, class T>
__global__ void softmax_backward_kernel(const T* y, const T* g, T* dx, int64_t lines, int64_t cols, int64_t inner) {
  DL_CUDA_FOR_EACH_LINE(lines, line, lane) {
    const int64_t off = line_offset(line, cols, inner);
    const T *yr = y + off, *gr = g + off;
    T* dr = dx + off;
    T s = 0;
    for (int64_t c = lane; c < cols; c += 32) s += Log ? gr[c * inner] : gr[c * inner] * yr[c * inner];
    s = warp_sum(s);
    for (int64_t c = lane; c < cols; c += 32)
      dr[c * inner] = Log ? gr[c * inner] - std::exp(yr[c * inner]) * s : yr[c * inner] * (gr[c * inner] - s);
  }
}

template <class T, class Label>
__global__ void cross_entropy_forward_kernel(const T* x, const Label* labels, int64_t rows, int64_t cols, T keep,
                                             T spread, T* loss, T* row_max, T* log_sum) {
  DL_CUDA_FOR_EACH_LINE(rows, r, lane) {
    const T* xr = x + r * cols;
    T m = -std::numeric_limits<T>::infinity();
    for (int64_t c = lane; c < cols; c += 32) m = xr[c] > m ? xr[c] : m;
    m = warp_max(m);
    T s = 0, shifted = 0;
    for (int64_t c = lane; c < cols; c += 32) {
      const T d = xr[c] - m;
      s += std::exp(d);
      shifted += d;
    }
    s = warp_sum(s);
    shifted = warp_sum(shifted);
    if (lane == 0) {
      const T ls = std::log(s);
      loss[r] = keep * (m - xr[static_cast<int64_t>(labels[r])]) - spread * shifted + ls;
      row_max[r] = m;
      log_sum[r] = ls;
    }
  }
}

template <class T, class Label>
__global__ void cross_entropy_backward_kernel(const T* x, const Label* labels, const T* row_max, const T* log_sum,
                                              const T* g, int64_t g_stride, T scale, int64_t rows, int64_t cols,
                                              T keep, T spread, T* dx) {
  DL_CUDA_FOR_EACH_LINE(rows, r, lane) {
    const T* xr = x + r * cols;
    const T m = row_max[r], ls = log_sum[r], gr = g[r * g_stride] * scale;
    const int64_t label = static_cast<int64_t>(labels[r]);
    T* dr = dx + r * cols;
    for (int64_t c = lane; c < cols; c += 32) {
      T v = gr * (std::exp((xr[c] - m) - ls) - spread);
      if (c == label) v -= gr * keep;
      dr[c] = v;
    }
  }
}

#undef DL_CUDA_FOR_EACH_LINE

inline unsigned line_blocks(int dev, int64_t lines) { return grid_size(dev, lines * 32, kThreads); }

}  // namespace detail

// y = softmax(x) or log_softmax(x) along the layout's axis; x and y contiguous on device `dev`.
template <bool Log, class T>
void softmax_forward(const T* x, T* y, const cpu::SoftmaxLayout& l, int dev) {
  const int64_t lines = l.outer * l.inner;
  if (lines == 0 || l.cols == 0) return;
  DeviceGuard guard(dev);
  detail::softmax_forward_kernel<Log, T>
      <<<detail::line_blocks(dev, lines), kThreads, 0, compute_stream(dev)>>>(x, y, lines, l.cols, l.inner);
  check_launch("cuda softmax forward kernel");
}

// dx from the saved output y and the output gradient g (formulas in backend/cpu/softmax.hpp).
template <bool Log, class T>
void softmax_backward(const T* y, const T* g, T* dx, const cpu::SoftmaxLayout& l, int dev) {
  const int64_t lines = l.outer * l.inner;
  if (lines == 0 || l.cols == 0) return;
  DeviceGuard guard(dev);
  detail::softmax_backward_kernel<Log, T>
      <<<detail::line_blocks(dev, lines), kThreads, 0, compute_stream(dev)>>>(y, g, dx, lines, l.cols, l.inner);
  check_launch("cuda softmax backward kernel");
}

// Per-row loss, row maximum and log-sum of exp (labels already checked to lie in [0, cols)).
template <class T, class Label>
void cross_entropy_forward(const T* x, const Label* labels, int64_t rows, int64_t cols, T smoothing, T* loss,
                           T* row_max, T* log_sum, int dev) {
  if (rows == 0) return;
  DeviceGuard guard(dev);
  const T keep = T(1) - smoothing, spread = smoothing / static_cast<T>(cols);
  detail::cross_entropy_forward_kernel<T, Label><<<detail::line_blocks(dev, rows), kThreads, 0, compute_stream(dev)>>>(
      x, labels, rows, cols, keep, spread, loss, row_max, log_sum);
  check_launch("cuda cross_entropy forward kernel");
}

template <class T, class Label>
void cross_entropy_backward(const T* x, const Label* labels, const T* row_max, const T* log_sum, const T* g,
                            int64_t g_stride, T scale, int64_t rows, int64_t cols, T smoothing, T* dx, int dev) {
  if (rows == 0) return;
  DeviceGuard guard(dev);
  const T keep = T(1) - smoothing, spread = smoothing / static_cast<T>(cols);
  detail::cross_entropy_backward_kernel<T, Label>
      <<<detail::line_blocks(dev, rows), kThreads, 0, compute_stream(dev)>>>(x, labels, row_max, log_sum, g, g_stride,
                                                                            scale, rows, cols, keep, spread, dx);
  check_launch("cuda cross_entropy backward kernel");
}

#endif  // DL_CUDA_ENABLED

}  // namespace dl::cuda
