// take in the compiled graph: the symbol form of ops/indexing.hpp's take (NumPy: entries along
// `axis` picked by a constant int64 index array of any shape; negative indices count from the
// end). The indices are checked and normalised into a planned buffer at every call (the array is
// held by handle, so its contents may change between calls); forward and backward are eager's
// kernels (take_copy; take_scatter_add into a zeroed gradient: repeated indices add up, in a
// fixed order).
//
//   auto rows = dl::take(h, idx, 0);   // h (N, D), idx (B) -> (B, D)
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "dl/graph/exec.hpp"
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

template <class A> struct is_symbolic<TakeNode<A>> : std::true_type {};

}  // namespace graph

template <class A> struct is_expr_node<graph::TakeNode<A>> : std::true_type {};

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

namespace graph {

template <class A>
struct OpExec<TakeNode<A>> {
  using T = typename A::value_type;
  TakeNode<A> node;
  Exec<A> a;
  Shape shape;
  dl::detail::TakeGeometry geometry;
  bool needs_grad = false;
  int value_id_ = -1, grad_id = -1, index_id = -1;
  NDArray<T> value, grad;
  NDArray<int64_t> index;  // the checked, normalised indices (contiguous)

  explicit OpExec(const TakeNode<A>& n) : node(n), a(n.a) {}
  void plan_forward(PlanContext& ctx) {
    a.plan_forward(ctx);
    const Shape in = node.flat ? Shape{a.shape.numel()} : a.shape;
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
    shape = Shape(dims);
    ++ctx.op_nodes;
    needs_grad = a.needs_grad;
    const int64_t bytes = shape.numel() * static_cast<int64_t>(sizeof(T));
    value_id_ = ctx.memory.add(bytes);
    index_id = ctx.memory.add(idx.numel() * static_cast<int64_t>(sizeof(int64_t)));
    int step = ctx.memory.next_step();
    for (int id : {value_id_, index_id, a.value_id()}) ctx.memory.use(id, step);
    if (ctx.training && needs_grad) grad_id = ctx.memory.add(bytes);
  }
  void plan_backward(PlanContext& ctx) {
    if (!needs_grad) return;
    int step = ctx.memory.next_step();
    for (int id : {grad_id, index_id, a.grad_id}) ctx.memory.use(id, step);
    a.plan_backward(ctx);
  }
  void bind(PlanContext& ctx) {
    a.bind(ctx);
    value = ctx.memory.template view<T>(value_id_, shape);
    index = ctx.memory.template view<int64_t>(index_id, node.indices.shape());
    if (grad_id >= 0) grad = ctx.memory.template view<T>(grad_id, shape);
  }
  template <class F> void for_each_input(F&& f) { a.for_each_input(f); }
  void forward() {
    a.forward();
    check<ValueError>(a.value.is_contiguous(), "take: a compiled take needs a contiguous input");
    // As eager's checked_indices: every index checked (negatives wrap), in row-major order.
    int64_t* out = index.numel() ? index.data() : nullptr;
    int64_t i = 0;
    const int64_t size = geometry.n;
    for_each_element(node.indices, [&](int64_t* p) {
      const int64_t v = *p, w = v < 0 ? v + size : v;
      check<ValueError>(w >= 0 && w < size, "take: index ", v, " is out of range for axis ", node.axis, " of size ", size);
      out[i++] = w;
    });
    if (value.numel() > 0) dl::detail::take_copy(a.value.data(), index.data(), geometry, value.data());
  }
  void backward() {
    if (!needs_grad) return;
    if (a.grad.numel() > 0) {
      std::fill(a.grad.data(), a.grad.data() + a.grad.numel(), T(0));
      if (grad.numel() > 0) dl::detail::take_scatter_add(grad.data(), index.data(), geometry, a.grad.data());
    }
    a.backward();
  }
  int value_id() const { return value_id_; }
};

template <class A> struct Exec<TakeNode<A>> : Shared<OpExec<TakeNode<A>>> {
  using Shared<OpExec<TakeNode<A>>>::Shared;
};

}  // namespace graph

}  // namespace dl
