// CPU kernels for local response normalisation across channels over a contiguous (N, C, S) array
// (S = the product of the spatial dims), PyTorch's formula:
//   scale[c] = k + alpha / size * sum(x[c']^2 for c' in [c - size/2, c + (size-1)/2] inside [0, C))
//   y[c]     = x[c] * scale[c]^-beta
// The forward keeps `scale` for the backward. Work runs in parallel over images; the inner loops
// run along the contiguous spatial axis. Arguments are checked by ops/lrn.hpp.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "dl/core/parallel.hpp"

namespace dl::cpu {

struct LrnParams {
  int64_t batch = 0, channels = 0, spatial = 1, size = 1;
  double alpha = 1e-4, beta = 0.75, k = 2.0;
};

template <class T>
void lrn_forward(const T* x, T* y, T* scale, const LrnParams& p) {
  const int64_t C = p.channels, S = p.spatial, before = p.size / 2, after = (p.size - 1) / 2;
  const T a = static_cast<T>(p.alpha / static_cast<double>(p.size)), k = static_cast<T>(p.k), b = static_cast<T>(p.beta);
  parallel_for(0, p.batch, 1, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const T* xn = x + n * C * S;
      for (int64_t c = 0; c < C; ++c) {
        T* sc = scale + (n * C + c) * S;
        std::fill(sc, sc + S, T(0));
        for (int64_t j = std::max<int64_t>(c - before, 0); j <= std::min(c + after, C - 1); ++j)
          for (int64_t i = 0; i < S; ++i) sc[i] += xn[j * S + i] * xn[j * S + i];
        T* yc = y + (n * C + c) * S;
        for (int64_t i = 0; i < S; ++i) {
          sc[i] = k + a * sc[i];
          yc[i] = xn[c * S + i] * std::pow(sc[i], -b);
        }
      }
    }
  });
}

// dx[j] = gy[j] * scale[j]^-beta - 2 alpha beta / size * x[j] * sum(gy[c] * y[c] / scale[c]) over
// the channels c whose window holds j, i.e. c in [j - (size-1)/2, j + size/2]. `work` holds N*C*S.
template <class T>
void lrn_backward(const T* x, const T* y, const T* scale, const T* gy, T* dx, T* work, const LrnParams& p) {
  const int64_t C = p.channels, S = p.spatial, before = p.size / 2, after = (p.size - 1) / 2;
  const T coef = static_cast<T>(2.0 * p.alpha * p.beta / static_cast<double>(p.size)), b = static_cast<T>(p.beta);
  parallel_for(0, p.batch, 1, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t base = n * C * S;
      T* r = work + base;
      for (int64_t i = 0; i < C * S; ++i) r[i] = gy[base + i] * y[base + i] / scale[base + i];
      for (int64_t j = 0; j < C; ++j) {
        T* d = dx + base + j * S;
        const T *xj = x + base + j * S, *gj = gy + base + j * S, *sj = scale + base + j * S;
        for (int64_t i = 0; i < S; ++i) d[i] = gj[i] * std::pow(sj[i], -b);
        for (int64_t c = std::max<int64_t>(j - after, 0); c <= std::min(j + before, C - 1); ++c)
          for (int64_t i = 0; i < S; ++i) d[i] -= coef * xj[i] * r[c * S + i];
      }
    }
  });
}

}  // namespace dl::cpu
