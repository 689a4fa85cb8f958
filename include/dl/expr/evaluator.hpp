// Evaluators: an expression bound to an output shape on the CPU. Each leaf knows its strides in
// the executor's collapsed loop layout; at<Unit>(j) gives element j of the current row
// (Unit = every operand has inner stride 1, so the loop vectorises). cache(j) + backprop(...)
// give reverse-mode derivatives of the whole fused expression at one element: the forward values
// stay in registers and the rule table (expr/primitives.hpp) sends the adjoint to each leaf.
#pragma once
#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "dl/expr/expr.hpp"

namespace dl::expr {

// The loop nest after merging dimensions that every operand walks contiguously.
// Operand strides are given per collapsed dim; dims[rank - 1] is the inner loop.
struct LoopLayout {
  int rank = 1;
  std::array<int64_t, kMaxRank> dims{};
  // Original (uncollapsed) shape and the innermost original dim of each collapsed group.
  Shape shape;
  std::array<int, kMaxRank> group_last{};
  int64_t rows() const {
    int64_t r = 1;
    for (int i = 0; i + 1 < rank; ++i) r *= dims[i];
    return r;
  }
  int64_t inner() const { return dims[rank - 1]; }
  // Strides of an operand (broadcast to `shape`) in the collapsed layout.
  Strides collapse(const Strides& full) const {
    Strides s{};
    for (int g = 0; g < rank; ++g) s[g] = group_last[g] >= 0 ? full[group_last[g]] : 0;
    return s;
  }
};

// Broadcast strides of an array viewed as `out` (0 on broadcast and size-1 dims).
inline Strides broadcast_strides(const Shape& in, const Strides& st, const Shape& out) {
  Strides r{};
  int lead = out.rank() - in.rank();
  for (int i = 0; i < out.rank(); ++i) {
    int j = i - lead;
    r[i] = (j < 0 || in[j] == 1) ? 0 : st[j];
  }
  return r;
}

// Merges adjacent dims wherever every operand's strides allow it; drops size-1 dims.
// operands[0 .. count) are the strides of every operand broadcast to `out`. No allocation: this
// runs once per eager elementwise op.
inline LoopLayout make_layout(const Shape& out, const Strides* operands, int count) {
  LoopLayout L;
  L.shape = out;
  std::array<int, kMaxRank> kept{};
  int n_kept = 0;
  for (int d = 0; d < out.rank(); ++d)
    if (out[d] != 1) kept[static_cast<size_t>(n_kept++)] = d;
  if (n_kept == 0) {
    L.rank = 1;
    L.dims[0] = out.rank() == 0 ? 1 : out.numel();
    L.group_last[0] = -1;
    return L;
  }
  // Walk from the innermost kept dim outwards, extending the current group while contiguous.
  std::array<std::pair<int64_t, int>, kMaxRank> groups{};  // (extent, innermost original dim)
  int n_groups = 0;
  int innermost = kept[static_cast<size_t>(n_kept - 1)];
  groups[static_cast<size_t>(n_groups++)] = {out[innermost], innermost};
  for (int k = n_kept - 2; k >= 0; --k) {
    int d = kept[static_cast<size_t>(k)];
    auto& [extent, last] = groups[static_cast<size_t>(n_groups - 1)];
    bool mergeable = true;
    for (int o = 0; o < count; ++o) {
      if (operands[o][d] != operands[o][last] * extent) { mergeable = false; break; }
    }
    if (mergeable) extent *= out[d];
    else groups[static_cast<size_t>(n_groups++)] = {out[d], d};
  }
  L.rank = n_groups;
  for (int g = 0; g < L.rank; ++g) {
    L.dims[g] = groups[static_cast<size_t>(L.rank - 1 - g)].first;
    L.group_last[g] = groups[static_cast<size_t>(L.rank - 1 - g)].second;
  }
  return L;
}
inline LoopLayout make_layout(const Shape& out, const std::vector<Strides>& operands) {
  return make_layout(out, operands.data(), static_cast<int>(operands.size()));
}

template <class E> struct Evaluator;

// The value stored in an evaluator's cache: leaves and scalars cache a bare T, nodes a struct.
template <class C>
auto cache_value(const C& c) {
  if constexpr (std::is_arithmetic_v<C>) return c;
  else return c.v;
}

template <class T>
struct Evaluator<NDArray<T>> {
  using Cache = T;
  const T* base;
  const T* row = nullptr;
  Strides st{};
  int rank = 1;

  Evaluator(const NDArray<T>& a, const LoopLayout& L)
      : base(a.numel() ? a.data() : nullptr),
        st(L.collapse(broadcast_strides(a.shape(), a.strides(), L.shape))), rank(L.rank) {}
  void set_row(const int64_t* idx) {
    int64_t off = 0;
    for (int d = 0; d + 1 < rank; ++d) off += idx[d] * st[d];
    row = base + off;
  }
  int64_t inner_stride() const { return st[rank - 1]; }
  bool unit() const { return inner_stride() == 1; }
  template <bool Unit> T at(int64_t j) const { return Unit ? row[j] : row[j * st[rank - 1]]; }
  template <bool Unit> Cache cache(int64_t j) const { return at<Unit>(j); }
  template <int Leaf> void backprop(const Cache&, T adj, T* const* grads, int64_t pos) const {
    if (grads[Leaf]) grads[Leaf][pos] = adj;
  }
};

template <class T>
struct Evaluator<ScalarExpr<T>> {
  using Cache = T;
  T value;
  Evaluator(const ScalarExpr<T>& s, const LoopLayout&) : value(s.value) {}
  void set_row(const int64_t*) {}
  bool unit() const { return true; }
  template <bool Unit> T at(int64_t) const { return value; }
  template <bool Unit> Cache cache(int64_t) const { return value; }
  template <int Leaf> void backprop(const Cache&, T, T* const*, int64_t) const {}
};

template <class Op, class A>
struct Evaluator<UnaryExpr<Op, A>> {
  using T = typename A::value_type;
  struct Cache { T v; typename Evaluator<A>::Cache a; };
  Op op;
  Evaluator<A> a;
  Evaluator(const UnaryExpr<Op, A>& e, const LoopLayout& L) : op(e.op), a(e.a, L) {}
  void set_row(const int64_t* idx) { a.set_row(idx); }
  bool unit() const { return a.unit(); }
  template <bool Unit> T at(int64_t j) const { return op(a.template at<Unit>(j)); }
  template <bool Unit> Cache cache(int64_t j) const {
    auto ca = a.template cache<Unit>(j);
    return {op(cache_value(ca)), ca};
  }
  template <int Leaf> void backprop(const Cache& c, T adj, T* const* grads, int64_t pos) const {
    a.template backprop<Leaf>(c.a, adj * op.d(cache_value(c.a), c.v), grads, pos);
  }
};

template <class Op, class A, class B>
struct Evaluator<BinaryExpr<Op, A, B>> {
  using T = typename A::value_type;
  struct Cache { T v; typename Evaluator<A>::Cache a; typename Evaluator<B>::Cache b; };
  Op op;
  Evaluator<A> a;
  Evaluator<B> b;
  Evaluator(const BinaryExpr<Op, A, B>& e, const LoopLayout& L) : op(e.op), a(e.a, L), b(e.b, L) {}
  void set_row(const int64_t* idx) { a.set_row(idx); b.set_row(idx); }
  bool unit() const { return a.unit() && b.unit(); }
  template <bool Unit> T at(int64_t j) const { return op(a.template at<Unit>(j), b.template at<Unit>(j)); }
  template <bool Unit> Cache cache(int64_t j) const {
    auto ca = a.template cache<Unit>(j);
    auto cb = b.template cache<Unit>(j);
    return {op(cache_value(ca), cache_value(cb)), ca, cb};
  }
  template <int Leaf> void backprop(const Cache& c, T adj, T* const* grads, int64_t pos) const {
    T va = cache_value(c.a), vb = cache_value(c.b);
    if constexpr (leaf_count<A>::value > 0) a.template backprop<Leaf>(c.a, adj * op.da(va, vb, c.v), grads, pos);
    if constexpr (leaf_count<B>::value > 0)
      b.template backprop<Leaf + leaf_count<A>::value>(c.b, adj * op.db(va, vb, c.v), grads, pos);
  }
};

template <class Op, class A, class B, class C>
struct Evaluator<TernaryExpr<Op, A, B, C>> {
  using T = typename A::value_type;
  struct Cache { T v; typename Evaluator<A>::Cache a; typename Evaluator<B>::Cache b; typename Evaluator<C>::Cache c; };
  Op op;
  Evaluator<A> a;
  Evaluator<B> b;
  Evaluator<C> c;
  Evaluator(const TernaryExpr<Op, A, B, C>& e, const LoopLayout& L) : op(e.op), a(e.a, L), b(e.b, L), c(e.c, L) {}
  void set_row(const int64_t* idx) { a.set_row(idx); b.set_row(idx); c.set_row(idx); }
  bool unit() const { return a.unit() && b.unit() && c.unit(); }
  template <bool Unit> T at(int64_t j) const {
    return op(a.template at<Unit>(j), b.template at<Unit>(j), c.template at<Unit>(j));
  }
  template <bool Unit> Cache cache(int64_t j) const {
    auto ca = a.template cache<Unit>(j);
    auto cb = b.template cache<Unit>(j);
    auto cc = c.template cache<Unit>(j);
    return {op(cache_value(ca), cache_value(cb), cache_value(cc)), ca, cb, cc};
  }
  template <int Leaf> void backprop(const Cache& k, T adj, T* const* grads, int64_t pos) const {
    T va = cache_value(k.a), vb = cache_value(k.b), vc = cache_value(k.c);
    if constexpr (leaf_count<A>::value > 0) a.template backprop<Leaf>(k.a, adj * op.d0(va, vb, vc, k.v), grads, pos);
    if constexpr (leaf_count<B>::value > 0)
      b.template backprop<Leaf + leaf_count<A>::value>(k.b, adj * op.d1(va, vb, vc, k.v), grads, pos);
    if constexpr (leaf_count<C>::value > 0)
      c.template backprop<Leaf + leaf_count<A>::value + leaf_count<B>::value>(k.c, adj * op.d2(va, vb, vc, k.v), grads, pos);
  }
};

}  // namespace dl::expr
