// The CPU executor: one generic loop that runs any fused expression. The output is walked in
// collapsed rows (expr/evaluator.hpp's LoopLayout), split into equal chunks across the thread
// pool; a row whose operands all have inner stride 1 runs the vectorisable Unit loop.
#pragma once
#include <array>
#include <cstdint>

#include "dl/core/parallel.hpp"
#include "dl/expr/evaluator.hpp"

namespace dl::expr {

// Elements per thread below which a loop stays serial (thread start-up costs ~ a few us).
inline constexpr int64_t kElementwiseGrain = 32768;

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

  void set_row(const int64_t* idx) {
    int64_t off = 0;
    for (int d = 0; d + 1 < rank; ++d) off += idx[d] * st[d];
    row = base + off;
    ev.set_row(idx);
  }
  bool unit() const { return st[rank - 1] == 1 && ev.unit(); }
  template <bool Unit>
  void run(int64_t j0, int64_t j1) {
    if constexpr (Unit) {
      T* out = row;
      // Operands alias the output only at the same element (assign.hpp copies otherwise).
#pragma GCC ivdep
      for (int64_t j = j0; j < j1; ++j) out[j] = ev.template at<true>(j);
    } else {
      const int64_t s = st[rank - 1];
      for (int64_t j = j0; j < j1; ++j) row[j * s] = ev.template at<false>(j);
    }
  }
};

template <class T, class E>
void run_assign(NDArray<T>& dst, const E& e) {
  require_cpu(dst.device(), "elementwise");
  std::vector<Strides> operands{dst.strides()};
  for_each_leaf(e, [&](const auto& leaf) {
    require_cpu(leaf.device(), "elementwise");
    operands.push_back(broadcast_strides(leaf.shape(), leaf.strides(), dst.shape()));
  });
  LoopLayout L = make_layout(dst.shape(), operands);
  AssignKernel<T, E> k{dst.numel() ? dst.data() : nullptr, nullptr, L.collapse(dst.strides()), L.rank, Evaluator<E>(e, L)};
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
  std::vector<Strides> operands{contiguous, broadcast_strides(gout.shape(), gout.strides(), shape)};
  for_each_leaf(e, [&](const auto& leaf) { operands.push_back(broadcast_strides(leaf.shape(), leaf.strides(), shape)); });
  LoopLayout L = make_layout(shape, operands);
  BackwardKernel<T, E> k{Evaluator<E>(e, L), Evaluator<NDArray<T>>(gout, L), grads, L.collapse(contiguous), L.rank};
  run_loop(L, k);
}

}  // namespace dl::expr
