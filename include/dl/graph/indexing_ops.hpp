// take and gather in the compiled graph: the symbol forms of ops/indexing.hpp's take (NumPy:
// entries along `axis` picked by a constant int64 index array of any shape; negative indices
// count from the end) and gather (PyTorch: out[i][j] = x[i][index[i][j]] for axis 1; index has
// the input's rank). The indices are checked and normalised into a planned buffer at every call
// (the array is held by handle, so its contents may change between calls); forward and backward
// are eager's kernels (take_copy / gather_copy; take_scatter_add / gather_scatter_add into a
// zeroed gradient: repeated indices add up, in a fixed order).
//
//   auto rows = dl::take(h, idx, 0);          // h (N, D), idx (B) -> (B, D)
//   auto picked = dl::gather(h, 1, idx2);     // h (N, D), idx2 (N, K) -> (N, K)
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "dl/graph/exec.hpp"
#include "dl/graph/shape_ops.hpp"  // OneOperandExec
#include "dl/graph/sym.hpp"
#include "dl/ops/indexing.hpp"

namespace dl {

namespace graph {

template <class A>
struct TakeNode {
  using value_type = typename A::value_type;
  A a;
  NDArray<int64_t> indices;
  int axis = 0;
  bool flat = false;  // take(x, indices): over the flattened operand
  uint64_t id = detail::next_node_id();
};

// PyTorch gather along `axis` by a constant int64 index array of the input's rank.
template <class A>
struct GatherNode {
  using value_type = typename A::value_type;
  A a;
  int axis = 0;
  NDArray<int64_t> index;
  uint64_t id = detail::next_node_id();
};

template <class A> struct is_symbolic<TakeNode<A>> : std::true_type {};
template <class A> struct is_symbolic<GatherNode<A>> : std::true_type {};
template <class A> struct static_rank<GatherNode<A>> : static_rank<A> {};

}  // namespace graph

template <class A> struct is_expr_node<graph::TakeNode<A>> : std::true_type {};
template <class A> struct is_expr_node<graph::GatherNode<A>> : std::true_type {};

template <ArrayLike A>
  requires SymbolExpr<A>
auto take(const A& input, const NDArray<int64_t>& indices, int axis) {
  indices.require_defined("take");
  return graph::TakeNode<std::remove_cvref_t<A>>{input, indices, axis, false};
}
template <ArrayLike A>
  requires SymbolExpr<A>
auto take(const A& input, const NDArray<int64_t>& indices) {
  indices.require_defined("take");
  return graph::TakeNode<std::remove_cvref_t<A>>{input, indices, 0, true};
}
template <ArrayLike A>
  requires SymbolExpr<A>
auto gather(const A& input, int axis, const NDArray<int64_t>& index) {
  index.require_defined("gather");
  require_cpu(index.device(), "gather");
  return graph::GatherNode<std::remove_cvref_t<A>>{input, axis, index};
}

namespace graph {

template <class A>
struct OpExec<TakeNode<A>> : OneOperandExec<OpExec<TakeNode<A>>, TakeNode<A>, A> {
  using T = typename A::value_type;
  using OneOperandExec<OpExec<TakeNode<A>>, TakeNode<A>, A>::OneOperandExec;
  dl::detail::TakeGeometry geometry;

  void plan_shape(const Shape& operand) {
    const TakeNode<A>& node = this->node;
    const Shape in = node.flat ? Shape{operand.numel()} : operand;
    const NDArray<int64_t>& idx = node.indices;
    check<ValueError>(in.rank() > 0, "take: axis ", node.axis, " is out of range for rank 0");
    const int ax = normalize_axis(node.axis, in.rank(), "take");
    geometry = dl::detail::TakeGeometry{};
    for (int d = 0; d < ax; ++d) geometry.outer *= in[d];
    geometry.n = in[ax];
    for (int d = ax + 1; d < in.rank(); ++d) geometry.inner *= in[d];
    geometry.count = idx.numel();
    check<ShapeError>(in.rank() - 1 + idx.rank() <= kMaxRank, "take: result rank ", in.rank() - 1 + idx.rank(),
                      " exceeds the maximum of ", kMaxRank);
    std::vector<int64_t> dims(in.begin(), in.begin() + ax);
    dims.insert(dims.end(), idx.shape().begin(), idx.shape().end());
    dims.insert(dims.end(), in.begin() + ax + 1, in.end());
    this->shape = Shape(dims);
    this->index_shape = idx.shape();
  }
  void forward() {
    auto& a = this->a;
    a.forward();
    check<ValueError>(a.value.is_contiguous(), "take: a compiled take needs a contiguous input");
    // As eager's checked_indices: every index checked (negatives wrap), in row-major order.
    dl::detail::checked_indices_into(this->node.indices, geometry.n, true, "take", this->node.axis,
                                     this->index.numel() ? this->index.data() : nullptr);
    if (this->value.numel() > 0) dl::detail::take_copy(a.value.data(), this->index.data(), geometry, this->value.data());
  }
  void backward() {
    if (!this->needs_grad) return;
    NDArray<T>& da = this->a.grad;
    if (da.numel() > 0) {
      std::fill(da.data(), da.data() + da.numel(), T(0));
      if (this->grad.numel() > 0) dl::detail::take_scatter_add(this->grad.data(), this->index.data(), geometry, da.data());
    }
    this->a.backward();
  }
};

template <class A> struct Exec<TakeNode<A>> : Shared<OpExec<TakeNode<A>>> {
  using Shared<OpExec<TakeNode<A>>>::Shared;
};

// ---- gather: eager's column loops on planned buffers --------------------------------------------

template <class A>
struct OpExec<GatherNode<A>> : OneOperandExec<OpExec<GatherNode<A>>, GatherNode<A>, A> {
  using T = typename A::value_type;
  using OneOperandExec<OpExec<GatherNode<A>>, GatherNode<A>, A>::OneOperandExec;
  dl::detail::GatherColumns geometry;  // input_strides set per pass (forward: the input's own strides)

  void plan_shape(const Shape& in) {
    const GatherNode<A>& node = this->node;
    const Shape& is = node.index.shape();
    check<ShapeError>(in.rank() > 0, "gather: input must have rank >= 1, got shape ", in);
    const int ax = normalize_axis(node.axis, in.rank(), "gather");
    check<ShapeError>(is.rank() == in.rank(), "gather: index rank ", is.rank(), " differs from input rank ", in.rank(),
                      " (index ", is, ", input ", in, ")");
    for (int d = 0; d < in.rank(); ++d)
      check<ShapeError>(d == ax || is[d] <= in[d], "gather: index shape ", is, " exceeds input shape ", in, " at axis ", d);
    geometry = dl::detail::GatherColumns{};
    geometry.rank = in.rank();
    geometry.axis = ax;
    geometry.index_shape = is;
    geometry.index_strides = contiguous_strides(is);
    geometry.out_strides = geometry.index_strides;
    geometry.length = is[ax];
    geometry.columns = geometry.length ? is.numel() / geometry.length : 0;
    this->shape = is;
    this->index_shape = is;
  }
  void forward() {
    auto& a = this->a;
    a.forward();
    dl::detail::checked_indices_into(this->node.index, a.shape[geometry.axis], false, "gather", this->node.axis,
                                     this->index.numel() ? this->index.data() : nullptr);
    if (this->value.numel() == 0) return;
    dl::detail::GatherColumns fwd = geometry;
    fwd.input_strides = a.value.strides();  // any strides, as eager
    dl::detail::gather_copy(a.value.data(), this->index.data(), fwd, this->value.data());
  }
  void backward() {
    if (!this->needs_grad) return;
    NDArray<T>& da = this->a.grad;
    if (da.numel() > 0) {
      std::fill(da.data(), da.data() + da.numel(), T(0));
      dl::detail::GatherColumns bwd = geometry;
      bwd.input_strides = contiguous_strides(this->a.shape);
      if (this->grad.numel() > 0) dl::detail::gather_scatter_add(this->grad.data(), this->index.data(), bwd, da.data());
    }
    this->a.backward();
  }
};

template <class A> struct Exec<GatherNode<A>> : Shared<OpExec<GatherNode<A>>> {
  using Shared<OpExec<GatherNode<A>>>::Shared;
};

}  // namespace graph

}  // namespace dl
