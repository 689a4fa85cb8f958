// The CPU executor: one generic loop that runs any fused expression. The output is walked in
// collapsed rows (expr/evaluator.hpp's LoopLayout), split into equal chunks across the thread
// pool; a row whose operands all have inner stride 1 runs the vectorisable Unit loop.
//
// Large outputs (>= kStreamingStoreBytes) are written with non-temporal (streaming) stores: the
// Unit loop fills a small L1-resident tile, which is then streamed to memory. A normal store
// first reads the destination line into the cache (write-allocate), so a memory-bound
// `y = f(a, b, c)` moves 20 bytes per float instead of 16; streaming also leaves the cache to the
// inputs. Below the threshold the output is likely read again soon, so it stays in the cache.
#pragma once
#include <array>
#include <cstdint>
#include <cstring>

#include "dl/core/parallel.hpp"
#include "dl/expr/evaluator.hpp"

#if defined(__SSE2__)
#include <immintrin.h>
#define DL_HAVE_STREAMING_STORES 1
#endif

namespace dl::expr {

// Elements per thread below which a loop stays serial (thread start-up costs ~ a few us).
inline constexpr int64_t kElementwiseGrain = 32768;
// Output size from which stores bypass the cache (about the last-level cache of a server CPU).
inline constexpr int64_t kStreamingStoreBytes = int64_t{32} << 20;

namespace detail {
// Bytes of one streaming tile: small enough to stay in L1 next to the operands' lines.
inline constexpr int64_t kStreamTileBytes = 2048;

// Copies `bytes` (a multiple of 64) from the 64-byte-aligned src to the 64-byte-aligned dst with
// non-temporal stores.
inline void stream_copy(void* dst, const void* src, int64_t bytes) {
#if defined(__AVX512F__)
  auto* d = static_cast<__m512i*>(dst);
  const auto* s = static_cast<const __m512i*>(src);
  for (int64_t i = 0; i < bytes / 64; ++i) _mm512_stream_si512(d + i, _mm512_load_si512(s + i));
#elif defined(__AVX__)
  auto* d = static_cast<__m256i*>(dst);
  const auto* s = static_cast<const __m256i*>(src);
  for (int64_t i = 0; i < bytes / 32; ++i) _mm256_stream_si256(d + i, _mm256_load_si256(s + i));
#elif defined(DL_HAVE_STREAMING_STORES)
  auto* d = static_cast<__m128i*>(dst);
  const auto* s = static_cast<const __m128i*>(src);
  for (int64_t i = 0; i < bytes / 16; ++i) _mm_stream_si128(d + i, _mm_load_si128(s + i));
#else
  std::memcpy(dst, src, static_cast<size_t>(bytes));
#endif
}
// Orders this thread's streaming stores before whatever the thread does next (they are weakly
// ordered); called once per chunk, before the parallel region's barrier publishes the result.
inline void stream_fence() {
#if defined(DL_HAVE_STREAMING_STORES)
  _mm_sfence();
#endif
}
}  // namespace detail

// Runs kernel.run<Unit>(j0, j1) over every row segment of the layout. The kernel is copied per
// chunk; set_row(idx) positions it at the row with outer index idx[0 .. rank-2].
template <class Kernel>
void run_loop(const LoopLayout& L, const Kernel& proto) {
  const int64_t inner = L.inner();
  const int64_t total = L.rows() * inner;
  if (total == 0) return;
  const bool unit = proto.unit();
  parallel_for(0, total, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    Kernel k = proto;
    std::array<int64_t, kMaxRank> idx{};
    int64_t row = begin / inner, j = begin % inner;
    for (int d = L.rank - 2; d >= 0; --d) {
      idx[static_cast<size_t>(d)] = row % L.dims[static_cast<size_t>(d)];
      row /= L.dims[static_cast<size_t>(d)];
    }
    for (int64_t pos = begin; pos < end;) {
      int64_t j1 = std::min(inner, j + (end - pos));
      k.set_row(idx.data());
      if (unit) k.template run<true>(j, j1);
      else k.template run<false>(j, j1);
      pos += j1 - j;
      j = 0;
      for (int d = L.rank - 2; d >= 0; --d) {
        if (++idx[static_cast<size_t>(d)] < L.dims[static_cast<size_t>(d)]) break;
        idx[static_cast<size_t>(d)] = 0;
      }
    }
    if constexpr (requires { k.streams(); }) {
      if (k.streams()) detail::stream_fence();
    }
  });
}

// dst[i] = e[i] for every element of dst (e already checked to broadcast to dst's shape).
template <class T, class E>
struct AssignKernel {
  T* base;
  T* row = nullptr;
  Strides st;
  int rank;
  Evaluator<E> ev;
  bool stream = false;  // non-temporal stores for the Unit loop (large contiguous outputs)

  void set_row(const int64_t* idx) {
    int64_t off = 0;
    for (int d = 0; d + 1 < rank; ++d) off += idx[d] * st[d];
    row = base + off;
    ev.set_row(idx);
  }
  bool unit() const { return st[rank - 1] == 1 && ev.unit(); }
  bool streams() const { return stream; }

  // The vectorised loop: out[j] = e[j] for j in [j0, j1).
  void unit_loop(T* out, int64_t j0, int64_t j1) {
    // Operands alias the output only at the same element (assign.hpp copies otherwise).
#pragma GCC ivdep
    for (int64_t j = j0; j < j1; ++j) out[j] = ev.template at<true>(j);
  }

  template <bool Unit>
  void run(int64_t j0, int64_t j1) {
    if constexpr (Unit) {
      constexpr int64_t kTile = detail::kStreamTileBytes / static_cast<int64_t>(sizeof(T));
      if constexpr (detail::kStreamTileBytes % sizeof(T) == 0) {
        if (stream && j1 - j0 >= 2 * kTile) {
          // Normal stores up to a 64-byte boundary, then whole tiles computed in L1 and streamed.
          int64_t head = static_cast<int64_t>((64 - reinterpret_cast<uintptr_t>(row + j0) % 64) % 64);
          if (head % static_cast<int64_t>(sizeof(T)) == 0) {
            int64_t j = j0 + head / static_cast<int64_t>(sizeof(T));
            unit_loop(row, j0, j);
            alignas(64) T tile[kTile];
            for (; j + kTile <= j1; j += kTile) {
              for (int64_t t = 0; t < kTile; ++t) tile[t] = ev.template at<true>(j + t);
              detail::stream_copy(row + j, tile, detail::kStreamTileBytes);
            }
            unit_loop(row, j, j1);
            return;
          }
        }
      }
      unit_loop(row, j0, j1);
    } else {
      const int64_t s = st[rank - 1];
      for (int64_t j = j0; j < j1; ++j) row[j * s] = ev.template at<false>(j);
    }
  }
};

// Strides of the output and of every leaf broadcast to `shape`: the layout's inputs. A fixed-size
// array (no allocation: this runs once per eager elementwise op).
template <int Extra, class E>
std::array<Strides, leaf_count<E>::value + Extra> leaf_strides(const E& e, const Shape& shape) {
  std::array<Strides, leaf_count<E>::value + Extra> out{};
  size_t i = Extra;
  for_each_leaf(e, [&](const auto& leaf) {
    require_cpu(leaf.device(), "elementwise");
    out[i++] = broadcast_strides(leaf.shape(), leaf.strides(), shape);
  });
  return out;
}

template <class T, class E>
void run_assign(NDArray<T>& dst, const E& e) {
  require_cpu(dst.device(), "elementwise");
  const int64_t n = dst.numel();
  if (n == 0) return;
  auto operands = leaf_strides<1>(e, dst.shape());
  operands[0] = dst.strides();
  LoopLayout L = make_layout(dst.shape(), operands.data(), static_cast<int>(operands.size()));
  AssignKernel<T, E> k{dst.data(), nullptr, L.collapse(dst.strides()), L.rank, Evaluator<E>(e, L)};
#ifdef DL_HAVE_STREAMING_STORES
  k.stream = n * static_cast<int64_t>(sizeof(T)) >= kStreamingStoreBytes && L.inner() >= 4 * kElementwiseGrain;
#endif
  run_loop(L, k);
}

// Backward of a fused expression: for every element, recompute the forward values and send
// gout[i] * d(e)/d(leaf) into grads[leaf][i]. grads are contiguous arrays of the output shape
// (null for leaves that need no gradient).
template <class T, class E>
struct BackwardKernel {
  static constexpr int kLeaves = leaf_count<E>::value;
  Evaluator<E> ev;
  Evaluator<NDArray<T>> gout;
  std::array<T*, kLeaves> grads;
  Strides st;  // strides of the contiguous gradient buffers in the layout
  int rank;
  int64_t row_off = 0;

  void set_row(const int64_t* idx) {
    ev.set_row(idx);
    gout.set_row(idx);
    row_off = 0;
    for (int d = 0; d + 1 < rank; ++d) row_off += idx[d] * st[d];
  }
  bool unit() const { return ev.unit() && gout.unit(); }
  template <bool Unit>
  void run(int64_t j0, int64_t j1) {
    std::array<T*, kLeaves> g;
    for (int l = 0; l < kLeaves; ++l) g[l] = grads[l] ? grads[l] + row_off : nullptr;
    for (int64_t j = j0; j < j1; ++j) {
      auto c = ev.template cache<Unit>(j);
      ev.template backprop<0>(c, gout.template at<Unit>(j), g.data(), j);
    }
  }
};

template <class T, class E>
void run_backward(const E& e, const Shape& shape, const NDArray<T>& gout, const std::array<T*, leaf_count<E>::value>& grads) {
  Strides contiguous = contiguous_strides(shape);
  auto operands = leaf_strides<2>(e, shape);
  operands[0] = contiguous;
  operands[1] = broadcast_strides(gout.shape(), gout.strides(), shape);
  LoopLayout L = make_layout(shape, operands.data(), static_cast<int>(operands.size()));
  BackwardKernel<T, E> k{Evaluator<E>(e, L), Evaluator<NDArray<T>>(gout, L), grads, L.collapse(contiguous), L.rank};
  run_loop(L, k);
}

}  // namespace dl::expr

#undef DL_HAVE_STREAMING_STORES
