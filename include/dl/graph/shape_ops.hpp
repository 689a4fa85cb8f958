// Shape operators as free functions for arrays and symbols alike: reshape, transpose, permute,
// concat and stack (of a tuple of operands). On arrays they are NDArray's methods and
// ops/shaping.hpp's concat / stack (views or copies, recorded on the tape). In the compiled graph
// reshape is a view of its operand's buffer (no pass, its gradient in place, like flatten);
// transpose and permute copy into a contiguous buffer (one strided pass each way), because the
// ops after them (conv2d, pooling, softmax, cross_entropy, ...) and every gradient writer expect
// contiguous buffers. concat copies each operand into its slab of the output; the operands'
// gradients are copied back out of the slabs. stack is concat's executor with a new axis (each
// operand seen with a unit axis there).
//
//   dl::reshape(x, {-1, 4});        // (2, 3, 4) -> (6, 4)
//   dl::transpose(h);               // all axes reversed: (M, N) -> (N, M)
//   dl::transpose(h, 1, 2);         // (N, C, L) -> (N, L, C)
//   dl::permute(h, {0, 2, 3, 1});   // NCHW -> NHWC
//   dl::concat(std::tuple{a, b}, 1); // (N, 3) and (N, 5) -> (N, 8); operands of different types
//   dl::concat({a, b}, 1);           // operands of one type
//   dl::stack(std::tuple{a, b}, 1);  // (N, 3) twice -> (N, 2, 3); dl::stack({a, b}, 1) likewise
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <numeric>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "dl/graph/exec.hpp"
#include "dl/graph/sym.hpp"
#include "dl/ops/shaping.hpp"

namespace dl {

namespace graph {

// The operand seen with a new shape (one dim may be -1): a view of a contiguous buffer.
namespace detail {
// {xs[0], ..., xs[N-1]} as a tuple (concat / stack of a braced list of symbols of one type).
template <class X, size_t N, size_t... I>
auto tuple_of(const X (&xs)[N], std::index_sequence<I...>) {
  return std::make_tuple(xs[I]...);
}
}  // namespace detail

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
  bool new_axis = false;  // stack: every operand of one shape, joined along a new axis
  uint64_t id = detail::next_node_id();
};

// The operands (all of one shape) joined along a new axis: a ConcatNode with new_axis set, and
// its own type for the rank (one more than the operands').
template <class... As>
struct StackNode : ConcatNode<As...> {};

template <class A> struct is_symbolic<ReshapeNode<A>> : std::true_type {};
template <class... As> struct is_symbolic<ConcatNode<As...>> : std::true_type {};
// Permuting and joining keep the rank.
template <class A> struct static_rank<PermuteNode<A>> : static_rank<A> {};
template <class A, class... Rest> struct static_rank<ConcatNode<A, Rest...>> : static_rank<A> {};
template <class... As> struct is_symbolic<StackNode<As...>> : std::true_type {};
template <class A, class... Rest>
struct static_rank<StackNode<A, Rest...>>
    : std::integral_constant<int, static_rank<A>::value < 0 ? -1 : static_rank<A>::value + 1> {};
template <class A> struct is_symbolic<PermuteNode<A>> : std::true_type {};

}  // namespace graph

template <class A> struct is_expr_node<graph::ReshapeNode<A>> : std::true_type {};
template <class A> struct is_expr_node<graph::PermuteNode<A>> : std::true_type {};
template <class... As> struct is_expr_node<graph::ConcatNode<As...>> : std::true_type {};
template <class... As> struct is_expr_node<graph::StackNode<As...>> : std::true_type {};

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
// stack(std::tuple{a, b}, axis): ops/shaping.hpp's stack, spelled as for symbols.
template <ArrayLike... Xs>
  requires(sizeof...(Xs) > 0 && !(SymbolExpr<Xs> || ...))
auto stack(const std::tuple<Xs...>& xs, int axis = 0) {
  using T = value_type_t<std::tuple_element_t<0, std::tuple<Xs...>>>;
  static_assert((std::is_same_v<T, value_type_t<Xs>> && ...), "stack: operands have different element types");
  std::vector<NDArray<T>> arrays;
  std::apply([&](const auto&... x) { (arrays.push_back(NDArray<T>(dl::eval(x))), ...); }, xs);
  return dl::stack(arrays, axis);
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
// concat({a, b}, axis) for symbols of one type (eager's initializer_list form; the count is the
// array's bound, so the graph's type knows it).
template <ArrayLike X, size_t N>
  requires SymbolExpr<X>
auto concat(const X (&xs)[N], int axis = 0) {
  return dl::concat(graph::detail::tuple_of(xs, std::make_index_sequence<N>{}), axis);
}
template <ArrayLike... Xs>
  requires(sizeof...(Xs) > 0 && (SymbolExpr<Xs> && ...))
auto stack(const std::tuple<Xs...>& xs, int axis = 0) {
  using T = value_type_t<std::tuple_element_t<0, std::tuple<Xs...>>>;
  static_assert((std::is_same_v<T, value_type_t<Xs>> && ...), "stack: operands have different element types");
  return graph::StackNode<std::remove_cvref_t<Xs>...>{{xs, axis, true}};
}
template <ArrayLike X, size_t N>
  requires SymbolExpr<X>
auto stack(const X (&xs)[N], int axis = 0) {
  return dl::stack(graph::detail::tuple_of(xs, std::make_index_sequence<N>{}), axis);
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

// ---- what one-operand ops with buffers of their own share ---------------------------------------

// An op node with one operand `a` and an output buffer of its own (value, and gradient when
// training), used with the operand's at one forward step and one backward step; optionally an
// int64 scratch of `index_shape` (take / gather: the checked indices), used at both steps.
// Derived: `void plan_shape(const Shape& operand)` (checks; sets `shape`, and `index_shape` where
// it needs the scratch), forward() and backward() (the latter calls a.backward() when needs_grad).
template <class Derived, class Node, class A>
struct OneOperandExec {
  using T = typename A::value_type;
  Node node;
  Exec<A> a;
  Shape shape;
  std::optional<Shape> index_shape;
  bool needs_grad = false;
  int value_id_ = -1, grad_id = -1, index_id = -1;
  NDArray<T> value, grad;
  NDArray<int64_t> index;

  explicit OneOperandExec(const Node& n) : node(n), a(n.a) {}
  void plan_forward(PlanContext& ctx) {
    a.plan_forward(ctx);
    static_cast<Derived*>(this)->plan_shape(a.shape);
    ++ctx.op_nodes;
    needs_grad = a.needs_grad;
    const int64_t bytes = shape.numel() * static_cast<int64_t>(sizeof(T));
    value_id_ = ctx.memory.add(bytes);
    if (index_shape) index_id = ctx.memory.add(index_shape->numel() * static_cast<int64_t>(sizeof(int64_t)));
    int step = ctx.memory.next_step();
    for (int id : {value_id_, index_id, a.value_id()}) ctx.memory.use(id, step);  // -1: nothing
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
    if (index_shape) index = ctx.memory.template view<int64_t>(index_id, *index_shape);
    if (grad_id >= 0) grad = ctx.memory.template view<T>(grad_id, shape);
  }
  template <class F> void for_each_input(F&& f) { a.for_each_input(f); }
  int value_id() const { return value_id_; }
};

// ---- permute / transpose: one strided copy each way ---------------------------------------------

template <class A>
struct OpExec<PermuteNode<A>> : OneOperandExec<OpExec<PermuteNode<A>>, PermuteNode<A>, A> {
  using T = typename A::value_type;
  using OneOperandExec<OpExec<PermuteNode<A>>, PermuteNode<A>, A>::OneOperandExec;
  std::vector<int> axes, inverse;  // out axis i = operand axis axes[i]; operand axis j = out axis inverse[j]

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
  void plan_shape(const Shape& s) {
    const PermuteNode<A>& node = this->node;
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
    this->shape = Shape(d);
  }
  void forward() {
    this->a.forward();
    if (this->value.numel() > 0) expr::run_assign(this->value, permuted(this->a.value, axes));
  }
  void backward() {
    if (!this->needs_grad) return;
    if (this->a.grad.numel() > 0) {
      NDArray<T> da = this->a.grad;
      expr::run_assign(da, permuted(this->grad, inverse));
    }
    this->a.backward();
  }
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
  std::array<Shape, kParts> slabs;        // each operand's slab (stack: its shape with a unit axis)
  bool needs_grad = false;
  int value_id_ = -1, grad_id = -1;
  NDArray<T> value, grad;

  explicit OpExec(const ConcatNode<As...>& n)
      : node(n), parts(std::apply([](const As&... p) { return std::tuple<Exec<As>...>{Exec<As>(p)...}; }, n.parts)) {}
  // Operand i's slab of x (the output or its gradient): a strided view.
  NDArray<T> slab(const NDArray<T>& x, size_t i) const {
    return NDArray<T>(x.storage(), slabs[i], x.strides(), x.offset() + offsets[i] * x.strides()[static_cast<size_t>(axis)]);
  }
  // An operand's value or gradient seen in its slab's shape (stack: a unit axis inserted).
  NDArray<T> as_slab(const NDArray<T>& x) const { return node.new_axis ? dl::detail::unit_axis_view(x, axis) : x; }
  void plan_forward(PlanContext& ctx) {
    detail::for_each_in(parts, [&](auto& p) { p.plan_forward(ctx); });
    const Shape first = std::get<0>(parts).shape;
    if (node.new_axis) {
      plan_stack(first);
    } else {
      plan_concat(first);
    }
    ++ctx.op_nodes;
    const int64_t bytes = shape.numel() * static_cast<int64_t>(sizeof(T));
    value_id_ = ctx.memory.add(bytes);
    int step = ctx.memory.next_step();
    ctx.memory.use(value_id_, step);
    detail::for_each_in(parts, [&](auto& p) { ctx.memory.use(p.value_id(), step); });
    if (ctx.training && needs_grad) grad_id = ctx.memory.add(bytes);
  }
  // stack: every operand of operand 0's shape; the output has kParts at the new axis.
  void plan_stack(const Shape& first) {
    check<ValueError>(node.axis >= -(first.rank() + 1) && node.axis <= first.rank(), "stack: axis ", node.axis,
                      " is out of range for operands of shape ", first, " (rank ", first.rank(), ": the new axis goes in -",
                      first.rank() + 1, " .. ", first.rank(), ")");
    axis = node.axis < 0 ? node.axis + first.rank() + 1 : node.axis;
    std::vector<int64_t> unit = first.vec();
    unit.insert(unit.begin() + axis, 1);
    size_t i = 0;
    detail::for_each_in(parts, [&](auto& p) {
      check<ShapeError>(p.shape == first, "stack: operand ", i, " has shape ", p.shape, ", which differs from operand 0's shape ",
                        first);
      slabs[i] = Shape(unit);
      offsets[i] = static_cast<int64_t>(i);
      ++i;
      needs_grad = needs_grad || p.needs_grad;
    });
    unit[static_cast<size_t>(axis)] = static_cast<int64_t>(kParts);
    shape = Shape(unit);
  }
  void plan_concat(const Shape& first) {
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
      slabs[i] = p.shape;
      offsets[i++] = total;
      total += p.shape[axis];
      needs_grad = needs_grad || p.needs_grad;
    });
    shape = first;
    shape[axis] = total;
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
      NDArray<T> dst = slab(value, i++);
      if (dst.numel() > 0) expr::run_assign(dst, as_slab(p.value));
    });
  }
  void backward() {
    if (!needs_grad) return;
    size_t i = 0;
    detail::for_each_in(parts, [&](auto& p) {
      if (p.needs_grad && p.grad.numel() > 0) {
        NDArray<T> dst = as_slab(p.grad);
        expr::run_assign(dst, slab(grad, i));
      }
      ++i;
    });
    detail::for_each_in_reverse(parts, [&](auto& p) { if (p.needs_grad) p.backward(); });
  }
  int value_id() const { return value_id_; }
};

template <class... As> struct Exec<ConcatNode<As...>> : Shared<OpExec<ConcatNode<As...>>> {
  using Shared<OpExec<ConcatNode<As...>>>::Shared;
};
// stack runs concat's executor (the node converts to its ConcatNode base).
template <class... As> struct Exec<StackNode<As...>> : Shared<OpExec<ConcatNode<As...>>> {
  using Shared<OpExec<ConcatNode<As...>>>::Shared;
};

}  // namespace graph

}  // namespace dl
