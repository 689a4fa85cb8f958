// CPU reduction kernels over any set of axes of a strided input. The plan splits the input's
// dims into kept dims (one output element each) and reduced dims; the generic kernel walks the
// reduced sub-space of every output element, in parallel over outputs, or over chunks of the
// reduced space when there are fewer outputs than threads (partials merged in a fixed order, so
// results depend only on the thread count). sum_reduce adds a row-accumulating path for the
// common "reduce the leading dims, keep the contiguous inner dim" case (bias gradients).
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "dl/core/parallel.hpp"
#include "dl/core/shape.hpp"

namespace dl::cpu {

struct ReducePlan {
  int nkept = 0, nred = 0;
  std::array<int64_t, kMaxRank> kept_dims{}, kept_strides{}, red_dims{}, red_strides{};
  int64_t outputs = 1, reduced = 1;

  // mask[d] = true for the dims to reduce.
  ReducePlan(const Shape& shape, const Strides& strides, const std::array<bool, kMaxRank>& mask) {
    for (int d = 0; d < shape.rank(); ++d) {
      if (mask[static_cast<size_t>(d)]) {
        red_dims[static_cast<size_t>(nred)] = shape[d];
        red_strides[static_cast<size_t>(nred++)] = strides[d];
        reduced *= shape[d];
      } else {
        kept_dims[static_cast<size_t>(nkept)] = shape[d];
        kept_strides[static_cast<size_t>(nkept++)] = strides[d];
        outputs *= shape[d];
      }
    }
  }
  int64_t kept_offset(int64_t o) const {
    int64_t off = 0;
    for (int d = nkept - 1; d >= 0; --d) {
      off += (o % kept_dims[static_cast<size_t>(d)]) * kept_strides[static_cast<size_t>(d)];
      o /= kept_dims[static_cast<size_t>(d)];
    }
    return off;
  }
};

// acc = comb(acc, value, flat_reduced_index) over reduced indices [r0, r1) starting at base.
template <class T, class Acc, class Comb>
Acc reduce_range(const T* base, const ReducePlan& p, int64_t r0, int64_t r1, Acc acc, Comb& comb) {
  if (p.nred == 0) return r0 < r1 ? comb(acc, *base, 0) : acc;
  std::array<int64_t, kMaxRank> idx{};
  int64_t rest = r0, off = 0;
  for (int d = p.nred - 1; d >= 0; --d) {
    idx[static_cast<size_t>(d)] = rest % p.red_dims[static_cast<size_t>(d)];
    rest /= p.red_dims[static_cast<size_t>(d)];
    off += idx[static_cast<size_t>(d)] * p.red_strides[static_cast<size_t>(d)];
  }
  const int last = p.nred - 1;
  const int64_t inner = p.red_dims[static_cast<size_t>(last)], s = p.red_strides[static_cast<size_t>(last)];
  for (int64_t r = r0; r < r1;) {
    int64_t j0 = idx[static_cast<size_t>(last)], j1 = std::min(inner, j0 + (r1 - r));
    const T* ptr = base + off - j0 * s;
    for (int64_t j = j0; j < j1; ++j) acc = comb(acc, ptr[j * s], r + (j - j0));
    r += j1 - j0;
    off -= j0 * s;
    idx[static_cast<size_t>(last)] = 0;
    for (int d = last - 1; d >= 0; --d) {
      off += p.red_strides[static_cast<size_t>(d)];
      if (++idx[static_cast<size_t>(d)] < p.red_dims[static_cast<size_t>(d)]) break;
      off -= idx[static_cast<size_t>(d)] * p.red_strides[static_cast<size_t>(d)];
      idx[static_cast<size_t>(d)] = 0;
    }
  }
  return acc;
}

// out[o] = fold of comb over the reduced sub-space of output o; merge(a, b) combines partials.
template <class T, class Acc, class Comb, class Merge>
void reduce(const T* base, const ReducePlan& p, Acc* out, Acc init, Comb comb, Merge merge) {
  const int threads = num_threads();
  if (p.outputs >= threads || p.reduced < 4 * 32768) {
    int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(p.reduced, 1));
    parallel_for(0, p.outputs, grain, [&](int64_t o0, int64_t o1) {
      for (int64_t o = o0; o < o1; ++o) out[o] = reduce_range(base + p.kept_offset(o), p, 0, p.reduced, init, comb);
    });
    return;
  }
  // Few outputs, long reductions: split each output's reduced range into per-thread partials.
  for (int64_t o = 0; o < p.outputs; ++o) {
    std::vector<Acc> partial(static_cast<size_t>(threads), init);
    const T* b = base + p.kept_offset(o);
    int64_t chunk = (p.reduced + threads - 1) / threads;
    parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        int64_t r0 = t * chunk, r1 = std::min(p.reduced, r0 + chunk);
        if (r0 < r1) partial[static_cast<size_t>(t)] = reduce_range(b, p, r0, r1, init, comb);
      }
    });
    Acc acc = init;
    for (const Acc& v : partial) acc = merge(acc, v);
    out[o] = acc;
  }
}

// Sum over the masked axes into out (contiguous, the kept dims in order).
template <class T>
void sum_reduce(const T* base, const Shape& shape, const Strides& strides, const std::array<bool, kMaxRank>& mask, T* out) {
  ReducePlan p(shape, strides, mask);
  // Row path: the last dim is kept and contiguous, so whole rows add into the output vectorised.
  int last = shape.rank() - 1;
  if (last >= 0 && !mask[static_cast<size_t>(last)] && strides[last] == 1 && shape[last] >= 16 && p.nred > 0) {
    const int64_t width = shape[last], outer = p.outputs / width;
    ReducePlan rows = p;  // the kept dims without the last one, to locate each output row
    rows.nkept = p.nkept - 1;
    rows.outputs = outer;
    parallel_for(0, outer * width, 4096, [&](int64_t b, int64_t e) {
      for (int64_t pos = b; pos < e;) {
        int64_t o = pos / width, c0 = pos % width, c1 = std::min(width, c0 + (e - pos));
        T* dst = out + o * width;
        std::fill(dst + c0, dst + c1, T(0));
        const T* src = base + rows.kept_offset(o);
        for (int64_t r = 0; r < p.reduced; ++r) {
          int64_t off = 0, rest = r;
          for (int d = p.nred - 1; d >= 0; --d) {
            off += (rest % p.red_dims[static_cast<size_t>(d)]) * p.red_strides[static_cast<size_t>(d)];
            rest /= p.red_dims[static_cast<size_t>(d)];
          }
          const T* row = src + off;
#pragma GCC ivdep
          for (int64_t c = c0; c < c1; ++c) dst[c] += row[c];
        }
        pos += c1 - c0;
      }
    });
    return;
  }
  reduce(base, p, out, T(0), [](T acc, T v, int64_t) { return static_cast<T>(acc + v); },
         [](T a, T b) { return static_cast<T>(a + b); });
}

}  // namespace dl::cpu
