// CPU reduction kernels over any set of axes of a strided input. The plan splits the input's
// dims into kept dims (one output element each) and reduced dims; the generic kernel walks the
// reduced sub-space of every output element, in parallel over outputs, or over chunks of the
// reduced space when there are fewer outputs than threads (partials merged in a fixed order, so
// results depend only on the thread count). sum_reduce adds a row-accumulating path for the
// common "reduce the leading dims, keep the contiguous inner dim" case (bias gradients);
// arg_reduce (max/min with the position of the first extremum), prod_reduce (product of the
// non-zero elements plus a zero count, for prod's gradient) and scatter_reduced (the inverse
// placement used by the max/min gradient) build on the same plan.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <type_traits>
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
  // Offset of flat index r (row-major over the reduced dims) inside one output's sub-space.
  int64_t red_offset(int64_t r) const {
    int64_t off = 0;
    for (int d = nred - 1; d >= 0; --d) {
      off += (r % red_dims[static_cast<size_t>(d)]) * red_strides[static_cast<size_t>(d)];
      r /= red_dims[static_cast<size_t>(d)];
    }
    return off;
  }
};

// acc = comb(acc, value, flat_reduced_index) over reduced indices [r0, r1) starting at base.
template <class T, class Acc, class Comb>
Acc reduce_range(const T* base, const ReducePlan& p, int64_t r0, int64_t r1, Acc acc, Comb& comb) {
  // An empty range must return before the index split below (a reduced dim may be 0).
  if (r0 >= r1) return acc;
  if (p.nred == 0) return comb(acc, *base, 0);
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

// A running extremum: its value and the flat reduced index where it was first seen (-1: none).
template <class T>
struct ArgAcc {
  T value{};
  int64_t index = -1;
};

// True when v should replace the current extremum a. NaN wins over numbers (NaN propagates, as
// in NumPy), and equal values never replace, so the first extremum in row-major order is kept.
template <bool Max, class T>
bool arg_better(T v, T a) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(a)) return false;
    if (std::isnan(v)) return true;
  }
  return Max ? v > a : v < a;
}

// values[o] = max (Max) or min over the masked axes; indices[o] = flat index of its first
// occurrence within the reduced sub-space (row-major over the reduced axes). Outputs with an
// empty reduced sub-space get index -1; callers reject that case before calling.
template <bool Max, class T>
void arg_reduce(const T* base, const Shape& shape, const Strides& strides, const std::array<bool, kMaxRank>& mask,
                T* values, int64_t* indices) {
  ReducePlan p(shape, strides, mask);
  std::vector<ArgAcc<T>> acc(static_cast<size_t>(p.outputs));
  auto comb = [](ArgAcc<T> a, T v, int64_t r) {
    if (a.index < 0 || arg_better<Max>(v, a.value)) return ArgAcc<T>{v, r};
    return a;
  };
  // Partials arrive in index order, so keeping `a` on ties keeps the first occurrence.
  auto merge = [](ArgAcc<T> a, ArgAcc<T> b) {
    if (b.index >= 0 && (a.index < 0 || arg_better<Max>(b.value, a.value))) return b;
    return a;
  };
  reduce(base, p, acc.data(), ArgAcc<T>{}, comb, merge);
  for (int64_t o = 0; o < p.outputs; ++o) {
    values[o] = acc[static_cast<size_t>(o)].value;
    indices[o] = acc[static_cast<size_t>(o)].index;
  }
}

// A product split into the product of the non-zero factors and the number of zero factors:
// the true product is 0 when zeros > 0, and prod's gradient needs both parts.
template <class T>
struct ProdAcc {
  T nonzero_product = T(1);
  int64_t zeros = 0;
};

template <class T>
void prod_reduce(const T* base, const Shape& shape, const Strides& strides, const std::array<bool, kMaxRank>& mask,
                 T* nonzero_product, int64_t* zeros) {
  ReducePlan p(shape, strides, mask);
  std::vector<ProdAcc<T>> acc(static_cast<size_t>(p.outputs));
  reduce(base, p, acc.data(), ProdAcc<T>{},
         [](ProdAcc<T> a, T v, int64_t) {
           if (v == T(0)) ++a.zeros;
           else a.nonzero_product = static_cast<T>(a.nonzero_product * v);
           return a;
         },
         [](ProdAcc<T> a, ProdAcc<T> b) {
           return ProdAcc<T>{static_cast<T>(a.nonzero_product * b.nonzero_product), a.zeros + b.zeros};
         });
  for (int64_t o = 0; o < p.outputs; ++o) {
    nonzero_product[o] = acc[static_cast<size_t>(o)].nonzero_product;
    zeros[o] = acc[static_cast<size_t>(o)].zeros;
  }
}

// The inverse of arg_reduce's placement: out (contiguous, of `shape`, zero-filled by the caller)
// gets out[position of indices[o]] = values[o] for every output o. Each output owns a disjoint
// sub-space, so the writes never collide.
template <class T>
void scatter_reduced(const T* values, const int64_t* indices, const Shape& shape,
                     const std::array<bool, kMaxRank>& mask, T* out) {
  ReducePlan p(shape, contiguous_strides(shape), mask);
  parallel_for(0, p.outputs, 16384, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o)
      if (indices[o] >= 0) out[p.kept_offset(o) + p.red_offset(indices[o])] = values[o];
  });
}

}  // namespace dl::cpu
