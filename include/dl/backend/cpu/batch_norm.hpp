// CPU kernels for batch normalisation over a contiguous (N, C, S) array (S = H*W, or 1 for a
// 2-D input): per-channel statistics (two passes, double accumulators), the affine apply, and the
// fused backward. Channels are independent, so every kernel runs in parallel over channels.
// Shapes and arguments are checked by ops/batch_norm.hpp.
#pragma once
#include <cstdint>

#include "dl/core/parallel.hpp"

namespace dl::cpu {

struct BatchNormGeometry {
  int64_t batch = 0, channels = 0, spatial = 1;  // (N, C, S)
  int64_t per_channel() const { return batch * spatial; }
};

// mean[c] and the biased variance var[c] over the N*S values of channel c.
template <class T>
void batch_norm_stats(const T* x, const BatchNormGeometry& g, double* mean, double* var) {
  const int64_t C = g.channels, S = g.spatial;
  parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double s = 0;
      for (int64_t n = 0; n < g.batch; ++n) {
        const T* p = x + (n * C + c) * S;
        for (int64_t i = 0; i < S; ++i) s += p[i];
      }
      double m = s / static_cast<double>(g.per_channel());
      double q = 0;  // second pass around the mean: no cancellation for large means
      for (int64_t n = 0; n < g.batch; ++n) {
        const T* p = x + (n * C + c) * S;
        for (int64_t i = 0; i < S; ++i) q += (p[i] - m) * (p[i] - m);
      }
      mean[c] = m;
      var[c] = q / static_cast<double>(g.per_channel());
    }
  });
}

// y = x * scale[c] + shift[c].
template <class T>
void batch_norm_apply(const T* x, T* y, const BatchNormGeometry& g, const double* scale, const double* shift) {
  const int64_t C = g.channels, S = g.spatial;
  parallel_for(0, g.batch * C, 4, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T a = static_cast<T>(scale[r % C]), b = static_cast<T>(shift[r % C]);
      const T* p = x + r * S;
      T* q = y + r * S;
      for (int64_t i = 0; i < S; ++i) q[i] = p[i] * a + b;
    }
  });
}

// With xhat = (x - mean) * invstd: dgamma = sum(gy * xhat), dbeta = sum(gy), and
//   training: dx = gamma * invstd * (gy - sum(gy) / M - xhat * sum(gy * xhat) / M)
//   eval:     dx = gamma * invstd * gy      (the statistics are constants)
// dx, dgamma, dbeta may each be null.
template <class T>
void batch_norm_backward(const T* x, const T* gy, const BatchNormGeometry& g, const double* mean, const double* invstd,
                         const double* gamma, bool training, T* dx, T* dgamma, T* dbeta) {
  const int64_t C = g.channels, S = g.spatial;
  const double M = static_cast<double>(g.per_channel());
  parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double sum_g = 0, sum_gx = 0;
      for (int64_t n = 0; n < g.batch; ++n) {
        const T *p = x + (n * C + c) * S, *q = gy + (n * C + c) * S;
        for (int64_t i = 0; i < S; ++i) {
          sum_g += q[i];
          sum_gx += q[i] * (p[i] - mean[c]);
        }
      }
      sum_gx *= invstd[c];
      if (dgamma) dgamma[c] = static_cast<T>(sum_gx);
      if (dbeta) dbeta[c] = static_cast<T>(sum_g);
      if (!dx) continue;
      const double k = gamma[c] * invstd[c];
      const double mg = training ? sum_g / M : 0.0, mx = training ? sum_gx / M : 0.0;
      for (int64_t n = 0; n < g.batch; ++n) {
        const T *p = x + (n * C + c) * S, *q = gy + (n * C + c) * S;
        T* d = dx + (n * C + c) * S;
        for (int64_t i = 0; i < S; ++i) {
          double xhat = (p[i] - mean[c]) * invstd[c];
          d[i] = static_cast<T>(k * (q[i] - mg - xhat * mx));
        }
      }
    }
  });
}

}  // namespace dl::cpu
