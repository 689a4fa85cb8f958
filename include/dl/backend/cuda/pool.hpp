// Max pooling on the GPU with saved argmax indices, the device twin of backend/cpu/pool.hpp's
// max_pool2d_forward / backward (same window rule: the first NaN wins, else the first maximum, so
// ties pick the same element as the CPU).
//
//   forward:  one thread per output (plane, oh, ow): the window's maximum and its index in the
//             plane (int32: a plane has fewer than 2^31 elements);
//   backward: one thread per input element gathers dy from the outputs whose window covers it and
//             whose argmax is this element, in output order: no atomics, the same bits every run.
//
// This replaced cuDNN's max pooling, whose deterministic backward kernel took 3.1 ms of ResNet-18's
// step (ncu, H200, batch 128) where PyTorch's index-based one takes 1.1 ms. ops/pool.hpp calls it.
#pragma once
#include <cstdint>
#include <limits>

#include "dl/backend/cpu/pool.hpp"  // Pool2dGeometry
#include "dl/backend/cuda/elementwise.hpp"  // grid_size, kThreads
#include "dl/backend/cuda/runtime.hpp"

namespace dl::cuda {

#if defined(DL_CUDA_ENABLED)

namespace detail {

template <class T>
__global__ void max_pool_forward_kernel(const T* x, T* y, int32_t* argmax, cpu::Pool2dGeometry g, int64_t n) {
  const int64_t H = g.in_h, W = g.in_w;
  for (int64_t o = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; o < n;
       o += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ow = o % g.out_w, oh = (o / g.out_w) % g.out_h, plane = o / (g.out_w * g.out_h);
    const T* xp = x + plane * H * W;
    const int64_t hs = oh * g.stride_h - g.pad_h, ws = ow * g.stride_w - g.pad_w;
    const int64_t h0 = hs > 0 ? hs : 0, h1 = hs + g.kernel_h < H ? hs + g.kernel_h : H;
    const int64_t w0 = ws > 0 ? ws : 0, w1 = ws + g.kernel_w < W ? ws + g.kernel_w : W;
    T best = -std::numeric_limits<T>::infinity();
    int64_t best_i = h0 * W + w0;  // every window holds at least one element (padding <= kernel / 2)
    bool nan = false;
    for (int64_t ih = h0; ih < h1 && !nan; ++ih)
      for (int64_t iw = w0; iw < w1; ++iw) {
        const T v = xp[ih * W + iw];
        if (v > best || v != v) {
          best = v;
          best_i = ih * W + iw;
          if (v != v) {
            nan = true;
            break;
          }
        }
      }
    y[o] = best;
    argmax[o] = static_cast<int32_t>(best_i);
  }
}

template <class T>
__global__ void max_pool_backward_kernel(const T* dy, const int32_t* argmax, T* dx, cpu::Pool2dGeometry g, int64_t n) {
  const int64_t H = g.in_h, W = g.in_w;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t w = i % W, h = (i / W) % H, plane = i / (H * W);
    // Outputs whose window covers row h: oh * stride - pad <= h < oh * stride - pad + kernel.
    const int64_t hp = h + g.pad_h, wp = w + g.pad_w;
    const int64_t oh0 = hp >= g.kernel_h ? (hp - g.kernel_h) / g.stride_h + 1 : 0;
    const int64_t oh1 = hp / g.stride_h + 1 < g.out_h ? hp / g.stride_h + 1 : g.out_h;
    const int64_t ow0 = wp >= g.kernel_w ? (wp - g.kernel_w) / g.stride_w + 1 : 0;
    const int64_t ow1 = wp / g.stride_w + 1 < g.out_w ? wp / g.stride_w + 1 : g.out_w;
    const int64_t base = plane * g.out_h * g.out_w;
    const int32_t me = static_cast<int32_t>(h * W + w);
    T sum = T(0);
    for (int64_t oh = oh0; oh < oh1; ++oh)
      for (int64_t ow = ow0; ow < ow1; ++ow) {
        const int64_t o = base + oh * g.out_w + ow;
        if (argmax[o] == me) sum += dy[o];
      }
    dx[i] = sum;
  }
}

}  // namespace detail

// y (planes x out_h x out_w) and argmax from a contiguous x (planes x in_h x in_w) on device `dev`.
template <class T>
void max_pool2d_forward(const T* x, T* y, int32_t* argmax, const cpu::Pool2dGeometry& g, int dev) {
  const int64_t n = g.planes * g.out_h * g.out_w;
  if (n == 0) return;
  DeviceGuard guard(dev);
  detail::max_pool_forward_kernel<T><<<grid_size(dev, n, kThreads), kThreads, 0, compute_stream(dev)>>>(x, y, argmax, g, n);
  check_launch("cuda max_pool2d forward kernel");
}

// dx (planes x in_h x in_w, every element written) from a contiguous dy and the forward's argmax.
template <class T>
void max_pool2d_backward(const T* dy, const int32_t* argmax, T* dx, const cpu::Pool2dGeometry& g, int dev) {
  const int64_t n = g.planes * g.in_h * g.in_w;
  if (n == 0) return;
  DeviceGuard guard(dev);
  detail::max_pool_backward_kernel<T>
      <<<grid_size(dev, n, kThreads), kThreads, 0, compute_stream(dev)>>>(dy, argmax, dx, g, n);
  check_launch("cuda max_pool2d backward kernel");
}

#endif  // DL_CUDA_ENABLED

}  // namespace dl::cuda
