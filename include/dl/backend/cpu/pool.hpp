// CPU kernels for 2-D max and average pooling over contiguous (planes, H, W) arrays, where a
// plane is one (image, channel) pair. Planes are independent, so every kernel runs in parallel
// over planes and the backward scatters need no atomics. Max pooling records, per output element,
// the flat index ih * W + iw of its maximum inside the plane (NaN wins, like PyTorch).
// Shapes are checked by ops/pool.hpp.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "dl/core/parallel.hpp"

namespace dl::cpu {

struct Pool2dGeometry {
  int64_t planes = 0, in_h = 0, in_w = 0, out_h = 0, out_w = 0;
  int64_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
};

namespace detail {
// The general window rule for output (oh, ow) of one plane: the first NaN wins, else the first maximum.
template <class T>
inline void max_pool_window(const T* xp, const Pool2dGeometry& g, int64_t oh, int64_t ow, T& out, int64_t& out_i) {
  const int64_t H = g.in_h, W = g.in_w;
  int64_t h0 = std::max<int64_t>(oh * g.stride_h - g.pad_h, 0), h1 = std::min(oh * g.stride_h - g.pad_h + g.kernel_h, H);
  int64_t w0 = std::max<int64_t>(ow * g.stride_w - g.pad_w, 0), w1 = std::min(ow * g.stride_w - g.pad_w + g.kernel_w, W);
  T best = -std::numeric_limits<T>::infinity();
  int64_t best_i = h0 * W + w0;  // every window holds at least one element (padding <= kernel / 2)
  for (int64_t ih = h0; ih < h1; ++ih)
    for (int64_t iw = w0; iw < w1; ++iw) {
      T v = xp[ih * W + iw];
      if (v > best || std::isnan(v)) {
        best = v;
        best_i = ih * W + iw;
        if (std::isnan(v)) { ih = h1; break; }
      }
    }
  out = best;
  out_i = best_i;
}
}  // namespace detail

template <class T>
void max_pool2d_forward(const T* x, T* y, int64_t* argmax, const Pool2dGeometry& g) {
  const int64_t H = g.in_h, W = g.in_w, OH = g.out_h, OW = g.out_w;
  if (g.kernel_h == 2 && g.kernel_w == 2 && g.stride_h == 2 && g.stride_w == 2 && g.pad_h == 0 && g.pad_w == 0) {
    // The common 2x2 / stride 2 window without branches (on random data half of them would be
    // mispredicted: 2.7x slower); a row that holds a NaN is redone with the general rule.
    parallel_for(0, g.planes, 4, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const T* xp = x + p * H * W;
        T* yp = y + p * OH * OW;
        int64_t* ap = argmax + p * OH * OW;
        for (int64_t oh = 0; oh < OH; ++oh) {
          const T *r0 = xp + 2 * oh * W, *r1 = r0 + W;
          T* yr = yp + oh * OW;
          int64_t* ar = ap + oh * OW;
          int nan = 0;
          for (int64_t ow = 0; ow < OW; ++ow) {
            const T a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
            // Comparison results as integers and std::max (vmaxss): GCC keeps this branch-free.
            int64_t k = static_cast<int64_t>(b > a);
            T m = std::max(a, b);
            int64_t gt = static_cast<int64_t>(c > m);
            k += gt * (W - k);
            m = std::max(m, c);
            gt = static_cast<int64_t>(d > m);
            k += gt * (W + 1 - k);
            m = std::max(m, d);
            yr[ow] = m;
            ar[ow] = 2 * oh * W + 2 * ow + k;
            nan |= (a != a) | (b != b) | (c != c) | (d != d);
          }
          if (nan)
            for (int64_t ow = 0; ow < OW; ++ow) detail::max_pool_window(xp, g, oh, ow, yr[ow], ar[ow]);
        }
      }
    });
    return;
  }
  parallel_for(0, g.planes, 4, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow)
          detail::max_pool_window(x + p * H * W, g, oh, ow, y[(p * OH + oh) * OW + ow], argmax[(p * OH + oh) * OW + ow]);
  });
}

// dx (planes, H, W) = scatter of gy at the recorded maxima (dx is overwritten).
template <class T>
void max_pool2d_backward(const T* gy, const int64_t* argmax, T* dx, const Pool2dGeometry& g) {
  const int64_t HW = g.in_h * g.in_w, OHW = g.out_h * g.out_w;
  parallel_for(0, g.planes, 4, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      T* dp = dx + p * HW;
      std::fill(dp, dp + HW, T(0));
      for (int64_t i = 0; i < OHW; ++i) dp[argmax[p * OHW + i]] += gy[p * OHW + i];
    }
  });
}

// The divisor of one window: kh*kw when padding counts, else the number of real elements.
inline int64_t avg_pool_divisor(const Pool2dGeometry& g, int64_t oh, int64_t ow, bool count_include_pad) {
  if (count_include_pad) return g.kernel_h * g.kernel_w;
  int64_t h0 = std::max<int64_t>(oh * g.stride_h - g.pad_h, 0), h1 = std::min(oh * g.stride_h - g.pad_h + g.kernel_h, g.in_h);
  int64_t w0 = std::max<int64_t>(ow * g.stride_w - g.pad_w, 0), w1 = std::min(ow * g.stride_w - g.pad_w + g.kernel_w, g.in_w);
  return (h1 - h0) * (w1 - w0);
}

template <class T>
void avg_pool2d_forward(const T* x, T* y, const Pool2dGeometry& g, bool count_include_pad) {
  const int64_t H = g.in_h, W = g.in_w, OH = g.out_h, OW = g.out_w;
  parallel_for(0, g.planes, 4, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const T* xp = x + p * H * W;
      for (int64_t oh = 0; oh < OH; ++oh) {
        int64_t h0 = std::max<int64_t>(oh * g.stride_h - g.pad_h, 0), h1 = std::min(oh * g.stride_h - g.pad_h + g.kernel_h, H);
        for (int64_t ow = 0; ow < OW; ++ow) {
          int64_t w0 = std::max<int64_t>(ow * g.stride_w - g.pad_w, 0), w1 = std::min(ow * g.stride_w - g.pad_w + g.kernel_w, W);
          T s = 0;
          for (int64_t ih = h0; ih < h1; ++ih)
            for (int64_t iw = w0; iw < w1; ++iw) s += xp[ih * W + iw];
          y[(p * OH + oh) * OW + ow] = s / static_cast<T>(avg_pool_divisor(g, oh, ow, count_include_pad));
        }
      }
    }
  });
}

template <class T>
void avg_pool2d_backward(const T* gy, T* dx, const Pool2dGeometry& g, bool count_include_pad) {
  const int64_t H = g.in_h, W = g.in_w, OH = g.out_h, OW = g.out_w;
  parallel_for(0, g.planes, 4, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      T* dp = dx + p * H * W;
      std::fill(dp, dp + H * W, T(0));
      for (int64_t oh = 0; oh < OH; ++oh) {
        int64_t h0 = std::max<int64_t>(oh * g.stride_h - g.pad_h, 0), h1 = std::min(oh * g.stride_h - g.pad_h + g.kernel_h, H);
        for (int64_t ow = 0; ow < OW; ++ow) {
          int64_t w0 = std::max<int64_t>(ow * g.stride_w - g.pad_w, 0), w1 = std::min(ow * g.stride_w - g.pad_w + g.kernel_w, W);
          T v = gy[(p * OH + oh) * OW + ow] / static_cast<T>(avg_pool_divisor(g, oh, ow, count_include_pad));
          for (int64_t ih = h0; ih < h1; ++ih)
            for (int64_t iw = w0; iw < w1; ++iw) dp[ih * W + iw] += v;
        }
      }
    }
  });
}

}  // namespace dl::cpu
