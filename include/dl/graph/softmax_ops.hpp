// softmax and log_softmax in the compiled graph: the symbol forms of ops/softmax.hpp, with the
// same kernels (backend/cpu/softmax.hpp) on planned buffers. Backward uses the saved output y
// (softmax dx = y * (g - sum(g * y)), log_softmax dx = g - exp(y) * sum(g)) and runs in place:
// the kernel reads a whole line of g before it writes that line of dx, so the operand's gradient
// shares the output gradient's memory.
//
//   auto p = dl::softmax(logits);                  // SoftmaxNode<..., false>, along the last axis
//   auto loss = -dl::mean(dl::log_softmax(h, 1) * target);
#pragma once
#include <algorithm>
#include <cstdint>

#include "dl/graph/exec.hpp"
#include "dl/graph/sym.hpp"
#include "dl/ops/softmax.hpp"

namespace dl {

namespace graph {

// softmax (Log = false) or log_softmax (Log = true) along `axis` (negative counts from the end).
template <class A, bool Log>
struct SoftmaxNode {
  using value_type = typename A::value_type;
  A a;
  int axis = -1;
  uint64_t id = detail::next_node_id();
};

template <class A, bool Log> struct is_symbolic<SoftmaxNode<A, Log>> : std::true_type {};
template <class A, bool Log> struct static_rank<SoftmaxNode<A, Log>> : static_rank<A> {};

}  // namespace graph

template <class A, bool Log> struct is_expr_node<graph::SoftmaxNode<A, Log>> : std::true_type {};

template <ArrayLike A>
  requires SymbolExpr<A>
auto softmax(const A& x, int axis = -1) {
  static_assert(FloatingPoint<value_type_t<A>>, "softmax: needs a float or double array");
  return graph::SoftmaxNode<std::remove_cvref_t<A>, false>{x, axis};
}

template <ArrayLike A>
  requires SymbolExpr<A>
auto log_softmax(const A& x, int axis = -1) {
  static_assert(FloatingPoint<value_type_t<A>>, "log_softmax: needs a float or double array");
  return graph::SoftmaxNode<std::remove_cvref_t<A>, true>{x, axis};
}

namespace graph {

template <class A, bool Log>
struct OpExec<SoftmaxNode<A, Log>> {
  using T = typename A::value_type;
  static constexpr const char* op = Log ? "log_softmax" : "softmax";
  SoftmaxNode<A, Log> node;
  Exec<A> a;
  Shape shape;
  cpu::SoftmaxLayout layout;
  bool needs_grad = false;
  int value_id_ = -1, grad_id = -1;
  NDArray<T> value, grad;

  explicit OpExec(const SoftmaxNode<A, Log>& n) : node(n), a(n.a) {}
  void plan_forward(PlanContext& ctx) {
    a.plan_forward(ctx);
    shape = a.shape;
    const int r = std::max(shape.rank(), 1);  // a 0-d array is one line of one element, as eager
    check<ValueError>(node.axis >= -r && node.axis < r, op, ": axis ", node.axis, " is out of range for an input of shape ",
                      shape);
    layout = dl::detail::softmax_layout(shape, node.axis < 0 ? node.axis + r : node.axis);
    ++ctx.op_nodes;
    needs_grad = a.needs_grad;
    const int64_t bytes = shape.numel() * static_cast<int64_t>(sizeof(T));
    value_id_ = ctx.memory.add(bytes);
    int step = ctx.memory.next_step();
    ctx.memory.use(value_id_, step);
    ctx.memory.use(a.value_id(), step);
    if (ctx.training && needs_grad) {
      grad_id = ctx.memory.add(bytes);
      ctx.memory.alias(a.grad_id, grad_id);  // dx written over g, line by line (see above)
    }
  }
  void plan_backward(PlanContext& ctx) {
    if (!needs_grad) return;
    int step = ctx.memory.next_step();
    for (int id : {grad_id, value_id_, a.grad_id}) ctx.memory.use(id, step);  // y saved from forward
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
    check<ValueError>(a.value.is_contiguous(), op, ": a compiled ", op, " needs a contiguous input");
    if (value.numel() > 0) cpu::softmax_forward<Log>(a.value.data(), value.data(), layout);
  }
  void backward() {
    if (!needs_grad) return;
    if (a.grad.numel() > 0) cpu::softmax_backward<Log>(value.data(), grad.data(), a.grad.data(), layout);
    a.backward();
  }
  int value_id() const { return value_id_; }
};

template <class A, bool Log> struct Exec<SoftmaxNode<A, Log>> : Shared<OpExec<SoftmaxNode<A, Log>>> {
  using Shared<OpExec<SoftmaxNode<A, Log>>>::Shared;
};

}  // namespace graph

}  // namespace dl
