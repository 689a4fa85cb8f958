// split and pad in the compiled graph: the symbol forms of ops/shaping.hpp's split and pad. Both
// copy a box: a split piece is a box of its operand (copied into its own contiguous buffer; its
// gradient is written into that box of a zeroed operand gradient), and pad writes its operand
// into a box of an output filled with the pad value (its gradient is that box of the output's).
//
// A graph's type must know how many pieces a split gives, so the symbol forms take the count at
// compile time and return a std::tuple of piece symbols (structured bindings take them apart):
//
//   auto [a, b, c] = dl::split<3>(h, 1);                            // three equal pieces along axis 1
//   auto [p, q] = dl::split(h, std::array<int64_t, 2>{1, 3}, 1);    // sizes 1 and 3
//   auto [p, q] = dl::split<2>(h, {1, 3}, 1);                       // the same
//   dl::pad(h, {{0, 0}, {1, 2}}, -1.0f);                            // (N, D) -> (N, D + 3), border of -1
//
// These forms take arrays too (a std::tuple of eager split's slices), so one model definition
// serves both modes. eager's run-time forms (split(x, sections, axis), split(x, sizes vector or
// {..}, axis)) are compile-time errors on symbols, saying which form to use. Each piece is an op
// node of its own: an operand that is an op node (matmul, conv2d, ...) is computed once for all
// pieces (Shared), and its gradient is the sum of the pieces' (one zeroed operand-size buffer per
// piece); an elementwise operand is a fused region re-run per piece (dl::graph::let computes it
// once).
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <tuple>
#include <utility>
#include <vector>

#include "dl/graph/exec.hpp"
#include "dl/graph/shape_ops.hpp"  // OneOperandExec
#include "dl/graph/sym.hpp"
#include "dl/ops/shaping.hpp"

namespace dl {

namespace graph {

// Piece `piece` of split(a, sizes, axis), or of split(a, sections, axis) when sections > 0
// (sizes empty: equal pieces, computed when the operand's shape is known).
template <class A>
struct SplitPieceNode {
  using value_type = typename A::value_type;
  A a;
  int axis = 0;
  int64_t sections = 0;
  std::vector<int64_t> sizes;
  size_t piece = 0;
  uint64_t id = detail::next_node_id();
};

// Constant padding: pads[d] = (before, after) on axis d, from the first axis.
template <class A>
struct PadNode {
  using value_type = typename A::value_type;
  A a;
  std::vector<std::pair<int64_t, int64_t>> pads;
  value_type value{};
  uint64_t id = detail::next_node_id();
};

template <class A> struct is_symbolic<SplitPieceNode<A>> : std::true_type {};
template <class A> struct is_symbolic<PadNode<A>> : std::true_type {};
template <class A> struct static_rank<SplitPieceNode<A>> : static_rank<A> {};
template <class A> struct static_rank<PadNode<A>> : static_rank<A> {};

namespace detail {
template <class X, size_t... I>
auto split_pieces(const X& x, int axis, int64_t sections, const std::vector<int64_t>& sizes, std::index_sequence<I...>) {
  return std::tuple{SplitPieceNode<X>{x, axis, sections, sizes, I}...};
}
}  // namespace detail

}  // namespace graph

template <class A> struct is_expr_node<graph::SplitPieceNode<A>> : std::true_type {};
template <class A> struct is_expr_node<graph::PadNode<A>> : std::true_type {};

// ---- arrays: the compile-time-count forms, so one spelling serves arrays and symbols ------------

namespace detail {
template <class T, size_t... I>
auto tuple_of_pieces(const std::vector<NDArray<T>>& pieces, std::index_sequence<I...>) {
  return std::tuple{pieces[I]...};
}
}  // namespace detail

// split<N>(x, axis) on an array: eager split(x, N, axis) as a std::tuple of N slices.
template <size_t N, ArrayLike X>
  requires(!SymbolExpr<X>)
auto split(const X& input, int axis = 0) {
  static_assert(N > 0, "split: number of sections must be positive");
  return detail::tuple_of_pieces(dl::split(input, static_cast<int64_t>(N), axis), std::make_index_sequence<N>{});
}
template <size_t N, ArrayLike X>
  requires(!SymbolExpr<X>)
auto split(const X& input, const std::array<int64_t, N>& sizes, int axis = 0) {
  static_assert(N > 0, "split: needs at least one section size");
  return detail::tuple_of_pieces(dl::split(input, std::vector<int64_t>(sizes.begin(), sizes.end()), axis),
                                 std::make_index_sequence<N>{});
}

// ---- symbols -------------------------------------------------------------------------------------

// split<N>(x, axis): N equal pieces (the axis size must be divisible by N), a std::tuple.
template <size_t N, ArrayLike X>
  requires SymbolExpr<X>
auto split(const X& input, int axis = 0) {
  static_assert(N > 0, "split: number of sections must be positive");
  return graph::detail::split_pieces(std::remove_cvref_t<X>(input), axis, static_cast<int64_t>(N), {},
                                     std::make_index_sequence<N>{});
}
// split(x, std::array<int64_t, N>{...}, axis) or split<N>(x, {...}, axis): pieces of the given sizes.
template <size_t N, ArrayLike X>
  requires SymbolExpr<X>
auto split(const X& input, const std::array<int64_t, N>& sizes, int axis = 0) {
  static_assert(N > 0, "split: needs at least one section size");
  for (int64_t s : sizes) check<ValueError>(s >= 0, "split: section sizes must be non-negative, got ", s);
  return graph::detail::split_pieces(std::remove_cvref_t<X>(input), axis, 0, std::vector<int64_t>(sizes.begin(), sizes.end()),
                                     std::make_index_sequence<N>{});
}
// The run-time forms: the piece count is not part of the type.
template <ArrayLike X>
  requires SymbolExpr<X>
auto split(const X&, int64_t, int = 0) {
  static_assert(!SymbolExpr<X>, "split: a symbol's piece count must be known at compile time: use split<N>(x, axis)");
}
template <ArrayLike X>
  requires SymbolExpr<X>
auto split(const X&, const std::vector<int64_t>&, int = 0) {
  static_assert(!SymbolExpr<X>,
                "split: a symbol's piece count must be known at compile time: use split<N>(x, {sizes...}, axis) or "
                "a std::array of sizes");
}
template <ArrayLike X>
  requires SymbolExpr<X>
auto split(const X&, std::initializer_list<int64_t>, int = 0) {
  static_assert(!SymbolExpr<X>,
                "split: a symbol's piece count must be known at compile time: use split<N>(x, {sizes...}, axis) or "
                "a std::array of sizes");
}

template <ArrayLike A>
  requires SymbolExpr<A>
auto pad(const A& input, const std::vector<std::pair<int64_t, int64_t>>& pads, value_type_t<A> value = value_type_t<A>(0)) {
  for (size_t d = 0; d < pads.size(); ++d)
    check<ValueError>(pads[d].first >= 0 && pads[d].second >= 0, "pad: padding must be non-negative, got (", pads[d].first,
                      ", ", pads[d].second, ") for axis ", d);
  return graph::PadNode<std::remove_cvref_t<A>>{input, pads, value};
}

namespace graph {

template <class A>
struct OpExec<SplitPieceNode<A>> : OneOperandExec<OpExec<SplitPieceNode<A>>, SplitPieceNode<A>, A> {
  using T = typename A::value_type;
  using OneOperandExec<OpExec<SplitPieceNode<A>>, SplitPieceNode<A>, A>::OneOperandExec;
  std::vector<int64_t> start;  // where the piece starts in the operand
  // eager split's checks, for the whole split (every piece checks it: the first one raises).
  void plan_shape(const Shape& in) {
    const SplitPieceNode<A>& n = this->node;
    check<ValueError>(in.rank() > 0, "split: cannot split a 0-d array");
    const int ax = normalize_axis(n.axis, in.rank(), "split");
    std::vector<int64_t> sizes = n.sizes;
    if (n.sections > 0) {
      check<ValueError>(in[ax] % n.sections == 0, "split: axis ", n.axis, " of size ", in[ax], " cannot be split into ",
                        n.sections, " equal sections");
      sizes.assign(static_cast<size_t>(n.sections), in[ax] / n.sections);
    }
    int64_t total = 0, begin = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (i == n.piece) begin = total;
      total += sizes[i];
    }
    check<ValueError>(total == in[ax], "split: section sizes add up to ", total, " but axis ", n.axis, " has size ", in[ax]);
    start.assign(static_cast<size_t>(in.rank()), 0);
    start[static_cast<size_t>(ax)] = begin;
    this->shape = in;
    this->shape[ax] = sizes[n.piece];
  }
  void forward() {
    this->a.forward();
    if (this->value.numel() > 0) expr::run_assign(this->value, dl::detail::box_view(this->a.value, start, this->shape));
  }
  void backward() {
    if (!this->needs_grad) return;
    NDArray<T>& da = this->a.grad;
    if (da.numel() > 0) {
      std::fill(da.data(), da.data() + da.numel(), T(0));  // the other pieces' boxes
      NDArray<T> box = dl::detail::box_view(da, start, this->shape);
      if (box.numel() > 0) expr::run_assign(box, this->grad);
    }
    this->a.backward();
  }
};

template <class A>
struct OpExec<PadNode<A>> : OneOperandExec<OpExec<PadNode<A>>, PadNode<A>, A> {
  using T = typename A::value_type;
  using OneOperandExec<OpExec<PadNode<A>>, PadNode<A>, A>::OneOperandExec;
  std::vector<int64_t> start;  // where the operand starts in the output
  // eager pad's checks (the signs were checked when the node was built).
  void plan_shape(const Shape& in) {
    const auto& pads = this->node.pads;
    check<ValueError>(static_cast<int>(pads.size()) <= in.rank(), "pad: got ", pads.size(),
                      " (before, after) pairs for an array of rank ", in.rank());
    std::vector<int64_t> dims = in.vec();
    start.assign(static_cast<size_t>(in.rank()), 0);
    for (size_t d = 0; d < pads.size(); ++d) {
      auto [before, after] = pads[d];
      start[d] = before;
      bool overflow = __builtin_add_overflow(dims[d], before, &dims[d]) || __builtin_add_overflow(dims[d], after, &dims[d]);
      check<ShapeError>(!overflow, "pad: padded size of axis ", d, " overflows");
    }
    this->shape = Shape(dims);
  }
  void forward() {
    this->a.forward();
    if (this->value.numel() == 0) return;
    std::fill(this->value.data(), this->value.data() + this->value.numel(), this->node.value);
    NDArray<T> box = dl::detail::box_view(this->value, start, this->a.shape);
    if (box.numel() > 0) expr::run_assign(box, this->a.value);
  }
  void backward() {
    if (!this->needs_grad) return;
    if (this->a.grad.numel() > 0) expr::run_assign(this->a.grad, dl::detail::box_view(this->grad, start, this->a.shape));
    this->a.backward();
  }
};

template <class A> struct Exec<SplitPieceNode<A>> : Shared<OpExec<SplitPieceNode<A>>> {
  using Shared<OpExec<SplitPieceNode<A>>>::Shared;
};
template <class A> struct Exec<PadNode<A>> : Shared<OpExec<PadNode<A>>> {
  using Shared<OpExec<PadNode<A>>>::Shared;
};

}  // namespace graph

}  // namespace dl
