// Shape operators as free functions for arrays and symbols alike: reshape, transpose, permute
// and concat (of a tuple of operands). On arrays they are NDArray's methods and ops/shaping.hpp's
// concat (views or copies, recorded on the tape). In the compiled graph
// reshape is a view of its operand's buffer (no pass, its gradient in place, like flatten);
// transpose and permute copy into a contiguous buffer (one strided pass each way), because the
// ops after them (conv2d, pooling, softmax, cross_entropy, ...) and every gradient writer expect
// contiguous buffers. concat copies each operand into its slab of the output; the operands'
// gradients are copied back out of the slabs.
//
//   dl::reshape(x, {-1, 4});        // (2, 3, 4) -> (6, 4)
//   dl::transpose(h);               // all axes reversed: (M, N) -> (N, M)
//   dl::transpose(h, 1, 2);         // (N, C, L) -> (N, L, C)
//   dl::permute(h, {0, 2, 3, 1});   // NCHW -> NHWC
//   dl::concat(std::tuple{a, b}, 1); // (N, 3) and (N, 5) -> (N, 8); operands of different types
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <numeric>
#include <tuple>
#include <utility>
#include <vector>

#include "dl/graph/exec.hpp"
#include "dl/graph/sym.hpp"
#include "dl/ops/shaping.hpp"

namespace dl {

namespace graph {

// The operand seen with a new shape (one dim may be -1): a view of a contiguous buffer.
template <class A>
struct ReshapeNode {
  using value_type = typename A::value_type;
  A a;
  std::vector<int64_t> dims;
};

// The operand's axes reordered: out axis i is operand axis axes[i]. `swap` (transpose(x, a0, a1))
// and an empty axes list (transpose(x): all reversed) are resolved when the rank is known.
template <class A>
struct PermuteNode {
  using value_type = typename A::value_type;
  A a;
  std::vector<int> axes;
  bool swap = false;     // axes holds the two axes to exchange
  bool reverse = false;  // all axes reversed (axes empty)
  const char* op = "permute";
  uint64_t id = detail::next_node_id();
};

// The operands joined along an existing axis (every other dim equal): one copy per operand.
template <class... As>
struct ConcatNode {
  using value_type = typename std::tuple_element_t<0, std::tuple<As...>>::value_type;
  std::tuple<As...> parts;
  int axis = 0;
  uint64_t id = detail::next_node_id();
};

template <class A> struct is_symbolic<ReshapeNode<A>> : std::true_type {};
template <class... As> struct is_symbolic<ConcatNode<As...>> : std::true_type {};
// Permuting and joining keep the rank.
template <class A> struct static_rank<PermuteNode<A>> : static_rank<A> {};
template <class A, class... Rest> struct static_rank<ConcatNode<A, Rest...>> : static_rank<A> {};
template <class A> struct is_symbolic<PermuteNode<A>> : std::true_type {};

}  // namespace graph

template <class A> struct is_expr_node<graph::ReshapeNode<A>> : std::true_type {};
template <class A> struct is_expr_node<graph::PermuteNode<A>> : std::true_type {};
template <class... As> struct is_expr_node<graph::ConcatNode<As...>> : std::true_type {};

// ---- arrays ---------------------------------------------------------------------------------------

template <ArrayLike X>
  requires(!SymbolExpr<X>)
auto reshape(const X& x, const std::vector<int64_t>& dims) {
  NDArray<value_type_t<X>> a = dl::eval(x);
  a.require_defined("reshape");
  return a.reshape(dims);
}
template <ArrayLike X>
  requires(!SymbolExpr<X>)
auto reshape(const X& x, const Shape& shape) {
  return dl::reshape(x, shape.vec());
}
template <ArrayLike X>
  requires(!SymbolExpr<X>)
auto reshape(const X& x, std::initializer_list<int64_t> dims) {
  return dl::reshape(x, std::vector<int64_t>(dims));
}
template <ArrayLike X>
  requires(!SymbolExpr<X>)
auto permute(const X& x, const std::vector<int>& axes) {
  NDArray<value_type_t<X>> a = dl::eval(x);
  a.require_defined("permute");
  return a.permute(axes);
}
template <ArrayLike X>
  requires(!SymbolExpr<X>)
auto permute(const X& x, std::initializer_list<int> axes) {
  return dl::permute(x, std::vector<int>(axes));
}
template <ArrayLike X>
  requires(!SymbolExpr<X>)
auto transpose(const X& x) {
  NDArray<value_type_t<X>> a = dl::eval(x);
  a.require_defined("transpose");
  return a.transpose();
}
template <ArrayLike X>
  requires(!SymbolExpr<X>)
auto transpose(const X& x, int axis0, int axis1) {
  NDArray<value_type_t<X>> a = dl::eval(x);
  a.require_defined("transpose");
  return a.transpose(axis0, axis1);
}

// concat(std::tuple{a, b}, axis): ops/shaping.hpp's concat for operands of different types
// (arrays, expressions), so one spelling serves arrays and symbols.
template <ArrayLike... Xs>
  requires(sizeof...(Xs) > 0 && !(SymbolExpr<Xs> || ...))
auto concat(const std::tuple<Xs...>& xs, int axis = 0) {
  using T = value_type_t<std::tuple_element_t<0, std::tuple<Xs...>>>;
  static_assert((std::is_same_v<T, value_type_t<Xs>> && ...), "concat: operands have different element types");
  std::vector<NDArray<T>> arrays;
  std::apply([&](const auto&... x) { (arrays.push_back(NDArray<T>(dl::eval(x))), ...); }, xs);
  return dl::concat(arrays, axis);
}

// ---- symbols --------------------------------------------------------------------------------------

template <ArrayLike X>
  requires SymbolExpr<X>
auto reshape(const X& x, const std::vector<int64_t>& dims) {
  return graph::ReshapeNode<std::remove_cvref_t<X>>{x, dims};
}
template <ArrayLike X>
  requires SymbolExpr<X>
auto reshape(const X& x, const Shape& shape) {
  return graph::ReshapeNode<std::remove_cvref_t<X>>{x, shape.vec()};
}
template <ArrayLike X>
  requires SymbolExpr<X>
auto reshape(const X& x, std::initializer_list<int64_t> dims) {
  return graph::ReshapeNode<std::remove_cvref_t<X>>{x, std::vector<int64_t>(dims)};
}
template <ArrayLike X>
  requires SymbolExpr<X>
auto permute(const X& x, const std::vector<int>& axes) {
  return graph::PermuteNode<std::remove_cvref_t<X>>{x, axes, false, false, "permute"};
}
template <ArrayLike X>
  requires SymbolExpr<X>
auto permute(const X& x, std::initializer_list<int> axes) {
  return graph::PermuteNode<std::remove_cvref_t<X>>{x, std::vector<int>(axes), false, false, "permute"};
}
template <ArrayLike X>
  requires SymbolExpr<X>
auto transpose(const X& x) {
  return graph::PermuteNode<std::remove_cvref_t<X>>{x, {}, false, true, "transpose"};
}
template <ArrayLike X>
  requires SymbolExpr<X>
auto transpose(const X& x, int axis0, int axis1) {
  return graph::PermuteNode<std::remove_cvref_t<X>>{x, {axis0, axis1}, true, false, "transpose"};
}

// Every operand a symbol expression (a constant array operand: concat it eagerly beforehand).
template <ArrayLike... Xs>
  requires(sizeof...(Xs) > 0 && (SymbolExpr<Xs> && ...))
auto concat(const std::tuple<Xs...>& xs, int axis = 0) {
  using T = value_type_t<std::tuple_element_t<0, std::tuple<Xs...>>>;
  static_assert((std::is_same_v<T, value_type_t<Xs>> && ...), "concat: operands have different element types");
  return graph::ConcatNode<std::remove_cvref_t<Xs>...>{xs, axis};
}

namespace graph {

// ---- reshape: a view (no pass, gradient in place) -------------------------------------------------

template <class A>
struct Exec<ReshapeNode<A>> : ViewExec<Exec<ReshapeNode<A>>, ReshapeNode<A>, A> {
  static constexpr const char* kName = "reshape";
  using ViewExec<Exec<ReshapeNode<A>>, ReshapeNode<A>, A>::ViewExec;
  Shape view_shape(const Shape& s) const {
    std::vector<int64_t> d = this->node.dims;
    int64_t known = 1;
    int infer = -1;
    for (size_t i = 0; i < d.size(); ++i) {
      if (d[i] == -1) {
        check<ShapeError>(infer < 0, "reshape: more than one -1 in the new shape for an input of shape ", s);
        infer = static_cast<int>(i);
      } else {
        check<ShapeError>(d[i] >= 0, "reshape: negative dimension ", d[i], " in the new shape for an input of shape ", s);
        known *= d[i];
      }
    }
    if (infer >= 0) {
      check<ShapeError>(known != 0 && s.numel() % known == 0, "reshape: cannot infer -1 reshaping ", s, " (",
                        s.numel(), " elements)");
      d[static_cast<size_t>(infer)] = s.numel() / known;
    }
    Shape shape(d);
    check<ShapeError>(shape.numel() == s.numel(), "reshape: cannot reshape ", s, " (", s.numel(), " elements) to ", shape,
                      " (", shape.numel(), " elements)");
    return shape;
  }
};

// ---- permute / transpose: one strided copy each way ---------------------------------------------

template <class A>
struct OpExec<PermuteNode<A>> {
  using T = typename A::value_type;
  PermuteNode<A> node;
  Exec<A> a;
  Shape shape;
  std::vector<int> axes, inverse;  // out axis i = operand axis axes[i]; operand axis j = out axis inverse[j]
  bool needs_grad = false;
  int value_id_ = -1, grad_id = -1;
  NDArray<T> value, grad;

  explicit OpExec(const PermuteNode<A>& n) : node(n), a(n.a) {}
  // x's elements seen in the axis order `order` (a strided view, no copy).
  static NDArray<T> permuted(const NDArray<T>& x, const std::vector<int>& order) {
    std::vector<int64_t> d;
    Strides st{};
    for (size_t i = 0; i < order.size(); ++i) {
      d.push_back(x.shape()[order[i]]);
      st[i] = x.strides()[static_cast<size_t>(order[i])];
    }
    return NDArray<T>(x.storage(), Shape(d), st, x.offset());
  }
  void plan_forward(PlanContext& ctx) {
    a.plan_forward(ctx);
    const Shape& s = a.shape;
    const int rank = s.rank();
    auto axis_of = [&](int axis) {
      check<ValueError>(axis >= -rank && axis < rank, node.op, ": axis ", axis, " is out of range for an input of shape ", s);
      return axis < 0 ? axis + rank : axis;
    };
    axes.resize(static_cast<size_t>(rank));
    if (node.swap) {
      std::iota(axes.begin(), axes.end(), 0);
      std::swap(axes[static_cast<size_t>(axis_of(node.axes[0]))], axes[static_cast<size_t>(axis_of(node.axes[1]))]);
    } else if (node.reverse) {
      std::iota(axes.rbegin(), axes.rend(), 0);
    } else {
      check<ShapeError>(static_cast<int>(node.axes.size()) == rank, node.op, ": got ", node.axes.size(),
                        " axes for an input of shape ", s);
      for (int i = 0; i < rank; ++i) axes[static_cast<size_t>(i)] = axis_of(node.axes[static_cast<size_t>(i)]);
    }
    inverse.assign(static_cast<size_t>(rank), -1);
    std::vector<int64_t> d;
    for (int i = 0; i < rank; ++i) {
      const int ax = axes[static_cast<size_t>(i)];
      check<ValueError>(inverse[static_cast<size_t>(ax)] < 0, node.op, ": axis ", ax, " repeated for an input of shape ", s);
      inverse[static_cast<size_t>(ax)] = i;
      d.push_back(s[ax]);
    }
    shape = Shape(d);
    ++ctx.op_nodes;
    needs_grad = a.needs_grad;
    const int64_t bytes = shape.numel() * static_cast<int64_t>(sizeof(T));
    value_id_ = ctx.memory.add(bytes);
    int step = ctx.memory.next_step();
    ctx.memory.use(value_id_, step);
    ctx.memory.use(a.value_id(), step);
    if (ctx.training && needs_grad) grad_id = ctx.memory.add(bytes);
  }
  void plan_backward(PlanContext& ctx) {
    if (!needs_grad) return;
    int step = ctx.memory.next_step();
    ctx.memory.use(grad_id, step);
    ctx.memory.use(a.grad_id, step);
    a.plan_backward(ctx);
  }
  void bind(PlanContext& ctx) {
    a.bind(ctx);
    value = ctx.memory.template view<T>(value_id_, shape);
    if (grad_id >= 0) grad = ctx.memory.template view<T>(grad_id, shape);
  }
  template <class F> void for_each_input(F&& f) { a.for_each_input(f); }
  void forward() {
    a.forward();
    if (value.numel() > 0) expr::run_assign(value, permuted(a.value, axes));
  }
  void backward() {
    if (!needs_grad) return;
    if (a.grad.numel() > 0) {
      NDArray<T> da = a.grad;
      expr::run_assign(da, permuted(grad, inverse));
    }
    a.backward();
  }
  int value_id() const { return value_id_; }
};

template <class A> struct Exec<PermuteNode<A>> : Shared<OpExec<PermuteNode<A>>> {
  using Shared<OpExec<PermuteNode<A>>>::Shared;
};

// ---- concat: each operand copied into its slab of the output; gradients are the slabs ----------

template <class... As>
struct OpExec<ConcatNode<As...>> {
  using T = typename ConcatNode<As...>::value_type;
  static constexpr size_t kParts = sizeof...(As);
  ConcatNode<As...> node;
  std::tuple<Exec<As>...> parts;
  Shape shape;
  int axis = 0;
  std::array<int64_t, kParts> offsets{};  // start of each operand along the axis
  bool needs_grad = false;
  int value_id_ = -1, grad_id = -1;
  NDArray<T> value, grad;

  explicit OpExec(const ConcatNode<As...>& n)
      : node(n), parts(std::apply([](const As&... p) { return std::tuple<Exec<As>...>{Exec<As>(p)...}; }, n.parts)) {}
  // Operand i's slab of x (the output or its gradient): a strided view.
  NDArray<T> slab(const NDArray<T>& x, size_t i, const Shape& part) const {
    return NDArray<T>(x.storage(), part, x.strides(), x.offset() + offsets[i] * x.strides()[static_cast<size_t>(axis)]);
  }
  void plan_forward(PlanContext& ctx) {
    detail::for_each_in(parts, [&](auto& p) { p.plan_forward(ctx); });
    const Shape first = std::get<0>(parts).shape;
    check<ShapeError>(first.rank() > 0, "concat: cannot concatenate 0-d arrays (use stack)");
    check<ValueError>(node.axis >= -first.rank() && node.axis < first.rank(), "concat: axis ", node.axis,
                      " is out of range for operand 0 of shape ", first);
    axis = node.axis < 0 ? node.axis + first.rank() : node.axis;
    int64_t total = 0;
    size_t i = 0;
    detail::for_each_in(parts, [&](auto& p) {
      bool ok = p.shape.rank() == first.rank();
      for (int d = 0; ok && d < first.rank(); ++d) ok = d == axis || p.shape[d] == first[d];
      check<ShapeError>(ok, "concat: operand ", i, " has shape ", p.shape, ", which does not match operand 0's shape ",
                        first, " outside axis ", axis);
      offsets[i++] = total;
      total += p.shape[axis];
      needs_grad = needs_grad || p.needs_grad;
    });
    shape = first;
    shape[axis] = total;
    ++ctx.op_nodes;
    const int64_t bytes = shape.numel() * static_cast<int64_t>(sizeof(T));
    value_id_ = ctx.memory.add(bytes);
    int step = ctx.memory.next_step();
    ctx.memory.use(value_id_, step);
    detail::for_each_in(parts, [&](auto& p) { ctx.memory.use(p.value_id(), step); });
    if (ctx.training && needs_grad) grad_id = ctx.memory.add(bytes);
  }
  void plan_backward(PlanContext& ctx) {
    if (!needs_grad) return;
    int step = ctx.memory.next_step();
    ctx.memory.use(grad_id, step);
    detail::for_each_in(parts, [&](auto& p) { if (p.needs_grad) ctx.memory.use(p.grad_id, step); });
    detail::for_each_in_reverse(parts, [&](auto& p) { if (p.needs_grad) p.plan_backward(ctx); });
  }
  void bind(PlanContext& ctx) {
    detail::for_each_in(parts, [&](auto& p) { p.bind(ctx); });
    value = ctx.memory.template view<T>(value_id_, shape);
    if (grad_id >= 0) grad = ctx.memory.template view<T>(grad_id, shape);
  }
  template <class F> void for_each_input(F&& f) { detail::for_each_in(parts, [&](auto& p) { p.for_each_input(f); }); }
  void forward() {
    // Every operand first: the plan lets the output share memory with the operands' scratch.
    detail::for_each_in(parts, [&](auto& p) { p.forward(); });
    size_t i = 0;
    detail::for_each_in(parts, [&](auto& p) {
      NDArray<T> dst = slab(value, i++, p.shape);
      if (dst.numel() > 0) expr::run_assign(dst, p.value);
    });
  }
  void backward() {
    if (!needs_grad) return;
    size_t i = 0;
    detail::for_each_in(parts, [&](auto& p) {
      if (p.needs_grad && p.grad.numel() > 0) expr::run_assign(p.grad, slab(grad, i, p.shape));
      ++i;
    });
    detail::for_each_in_reverse(parts, [&](auto& p) { if (p.needs_grad) p.backward(); });
  }
  int value_id() const { return value_id_; }
};

template <class... As> struct Exec<ConcatNode<As...>> : Shared<OpExec<ConcatNode<As...>>> {
  using Shared<OpExec<ConcatNode<As...>>>::Shared;
};

}  // namespace graph

}  // namespace dl
