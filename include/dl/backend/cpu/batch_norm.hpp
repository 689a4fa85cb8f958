// CPU kernels for batch normalisation over a contiguous (N, C, S) array (S = H*W, or 1 for a
// 2-D input): per-channel statistics, the affine apply, and the fused backward. Channels are
// independent, so every kernel runs in parallel over channels. Sums are taken around a shift (the
// channel's first value, then its mean) in blocks of 256 summed in T by Eigen's vectorised
// reduction (16 lanes of 16 terms for float), and the block sums go to double: vectorised (a
// plain double accumulator is not, without -ffast-math) with double-like accuracy for any N*S.
// Shapes and arguments are checked by ops/batch_norm.hpp.
#pragma once
#include <Eigen/Core>
#include <algorithm>
#include <cstdint>

#include "dl/core/parallel.hpp"

namespace dl::cpu {

struct BatchNormGeometry {
  int64_t batch = 0, channels = 0, spatial = 1;  // (N, C, S)
  int64_t per_channel() const { return batch * spatial; }
};

namespace detail {
constexpr int64_t kBnBlock = 256;  // terms per block summed in T (Eigen's packet lanes: 16 each)

template <class T>
using ConstVec = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// Adds sum(p[i] - shift) and sum((p[i] - shift)^2) over i < n to s1 and s2.
template <class T>
void shifted_sums(const T* p, int64_t n, T shift, double& s1, double& s2) {
  for (int64_t i = 0; i < n; i += kBnBlock) {
    auto d = ConstVec<T>(p + i, std::min(kBnBlock, n - i)) - shift;
    s1 += static_cast<double>(d.sum());
    s2 += static_cast<double>(d.square().sum());
  }
}

// Adds sum(g[i]) and sum(g[i] * (x[i] - shift)) over i < n to sg and sgx.
template <class T>
void gradient_sums(const T* x, const T* g, int64_t n, T shift, double& sg, double& sgx) {
  for (int64_t i = 0; i < n; i += kBnBlock) {
    const int64_t m = std::min(kBnBlock, n - i);
    auto gv = ConstVec<T>(g + i, m);
    sg += static_cast<double>(gv.sum());
    sgx += static_cast<double>((gv * (ConstVec<T>(x + i, m) - shift)).sum());
  }
}
}  // namespace detail

// mean[c] and the biased variance var[c] over the N*S values of channel c. One pass around the
// channel's first value (close enough to the mean to avoid cancellation), then, only when the mean
// is far from it, a second pass around the mean:
//   var = sum((x - k)^2) / M - (sum(x - k) / M)^2
template <class T>
void batch_norm_stats(const T* x, const BatchNormGeometry& g, double* mean, double* var) {
  const int64_t C = g.channels, S = g.spatial;
  const double M = static_cast<double>(g.per_channel());
  parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      auto pass = [&](T shift, double& d1, double& d2) {
        d1 = 0;
        d2 = 0;
        for (int64_t n = 0; n < g.batch; ++n) detail::shifted_sums(x + (n * C + c) * S, S, shift, d1, d2);
      };
      T shift = g.per_channel() > 0 ? x[c * S] : T(0);
      double s1, s2;
      pass(shift, s1, s2);
      double d = s1 / M;  // mean - shift
      if (d * d > 1e-2 * (s2 / M)) {  // the shift was far from the mean: repeat around the mean
        shift = static_cast<T>(static_cast<double>(shift) + d);
        pass(shift, s1, s2);
        d = s1 / M;
      }
      mean[c] = static_cast<double>(shift) + d;
      var[c] = std::max(0.0, s2 / M - d * d);
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
      // Sums around the mean rounded to T, corrected for the rounding:
      //   sum(g * (x - mean)) = sum(g * (x - shift)) + (shift - mean) * sum(g)
      const T shift = static_cast<T>(mean[c]);
      double sum_g = 0, sum_gx = 0;
      for (int64_t n = 0; n < g.batch; ++n)
        detail::gradient_sums(x + (n * C + c) * S, gy + (n * C + c) * S, S, shift, sum_g, sum_gx);
      sum_gx = (sum_gx + (static_cast<double>(shift) - mean[c]) * sum_g) * invstd[c];
      if (dgamma) dgamma[c] = static_cast<T>(sum_gx);
      if (dbeta) dbeta[c] = static_cast<T>(sum_g);
      if (!dx) continue;
      // dx = k * (gy - mg - (x - mean) * invstd * mx) = a * gy + b * x + e, in T (vectorises).
      const double k = gamma[c] * invstd[c];
      const double mg = training ? sum_g / M : 0.0, mx = training ? sum_gx / M : 0.0;
      const T a = static_cast<T>(k), b = static_cast<T>(-k * invstd[c] * mx),
              e = static_cast<T>(k * (mean[c] * invstd[c] * mx - mg));
      for (int64_t n = 0; n < g.batch; ++n) {
        const T *p = x + (n * C + c) * S, *q = gy + (n * C + c) * S;
        T* d = dx + (n * C + c) * S;
        for (int64_t i = 0; i < S; ++i) d[i] = a * q[i] + b * p[i] + e;
      }
    }
  });
}

}  // namespace dl::cpu
