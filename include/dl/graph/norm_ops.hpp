// local_response_norm in the compiled graph: the symbol form of ops/lrn.hpp with the same kernels
// (backend/cpu/lrn.hpp) on planned buffers. Forward saves the per-element scale
// (k + alpha / size * window sum of x^2) beside the output; backward reads x, y and that scale
// and uses one more full-size scratch buffer, as eager.
//
//   auto y = dl::local_response_norm(dl::relu(conv(x)), 5, 1e-4, 0.75, 2.0);  // AlexNet's settings
#pragma once
#include <cmath>
#include <cstdint>

#include "dl/graph/exec.hpp"
#include "dl/graph/sym.hpp"
#include "dl/ops/lrn.hpp"

namespace dl {

namespace graph {

template <class A>
struct LocalResponseNormNode {
  using value_type = typename A::value_type;
  A a;
  int64_t size = 1;
  double alpha = 1e-4, beta = 0.75, k = 2.0;
  uint64_t id = detail::next_node_id();
};

template <class A> struct is_symbolic<LocalResponseNormNode<A>> : std::true_type {};
template <class A> struct static_rank<LocalResponseNormNode<A>> : static_rank<A> {};

}  // namespace graph

template <class A> struct is_expr_node<graph::LocalResponseNormNode<A>> : std::true_type {};

template <ArrayLike X>
  requires SymbolExpr<X>
auto local_response_norm(const X& input, int64_t size, double alpha = 1e-4, double beta = 0.75, double k = 2.0) {
  static_assert(FloatingPoint<value_type_t<X>>, "local_response_norm: needs a float or double array");
  // eager's checks, at tracing (the shape is checked when the graph is planned)
  check<ValueError>(size >= 1, "local_response_norm: size must be positive, got ", size);
  check<ValueError>(std::isfinite(alpha) && alpha >= 0, "local_response_norm: alpha must be non-negative, got ", alpha);
  check<ValueError>(std::isfinite(k) && k > 0, "local_response_norm: k must be positive, got ", k);
  check<ValueError>(std::isfinite(beta), "local_response_norm: beta must be finite, got ", beta);
  return graph::LocalResponseNormNode<std::remove_cvref_t<X>>{input, size, alpha, beta, k};
}

namespace graph {

template <class A>
struct OpExec<LocalResponseNormNode<A>> {
  using T = typename A::value_type;
  LocalResponseNormNode<A> node;
  Exec<A> a;
  Shape shape;
  cpu::LrnParams params;
  bool needs_grad = false;
  int value_id_ = -1, grad_id = -1, scale_id = -1, work_id = -1;
  NDArray<T> value, grad, scale, work;

  explicit OpExec(const LocalResponseNormNode<A>& n) : node(n), a(n.a) {}
  void plan_forward(PlanContext& ctx) {
    a.plan_forward(ctx);
    shape = a.shape;
    check<ShapeError>(shape.rank() >= 3, "local_response_norm: expected an input (N, C, ...) of rank >= 3, got ", shape);
    params = cpu::LrnParams{shape[0], shape[1], 1, node.size, node.alpha, node.beta, node.k};
    for (int d = 2; d < shape.rank(); ++d) params.spatial *= shape[d];
    ++ctx.op_nodes;
    needs_grad = a.needs_grad;
    const int64_t bytes = shape.numel() * static_cast<int64_t>(sizeof(T));
    value_id_ = ctx.memory.add(bytes);
    scale_id = ctx.memory.add(bytes);
    int step = ctx.memory.next_step();
    for (int id : {value_id_, scale_id, a.value_id()}) ctx.memory.use(id, step);
    if (ctx.training && needs_grad) {
      grad_id = ctx.memory.add(bytes);
      work_id = ctx.memory.add(bytes);
    }
  }
  void plan_backward(PlanContext& ctx) {
    if (!needs_grad) return;
    int step = ctx.memory.next_step();
    for (int id : {grad_id, work_id, scale_id, value_id_, a.value_id(), a.grad_id}) ctx.memory.use(id, step);
    a.plan_backward(ctx);
  }
  void bind(PlanContext& ctx) {
    a.bind(ctx);
    value = ctx.memory.template view<T>(value_id_, shape);
    scale = ctx.memory.template view<T>(scale_id, shape);
    if (grad_id >= 0) {
      grad = ctx.memory.template view<T>(grad_id, shape);
      work = ctx.memory.template view<T>(work_id, shape);
    }
  }
  template <class F> void for_each_input(F&& f) { a.for_each_input(f); }
  void forward() {
    a.forward();
    check<ValueError>(a.value.is_contiguous(), "local_response_norm: a compiled local_response_norm needs a contiguous input");
    if (value.numel() > 0) cpu::lrn_forward(a.value.data(), value.data(), scale.data(), params);
  }
  void backward() {
    if (!needs_grad) return;
    if (a.grad.numel() > 0)
      cpu::lrn_backward(a.value.data(), value.data(), scale.data(), grad.data(), a.grad.data(), work.data(), params);
    a.backward();
  }
  int value_id() const { return value_id_; }
};

template <class A> struct Exec<LocalResponseNormNode<A>> : Shared<OpExec<LocalResponseNormNode<A>>> {
  using Shared<OpExec<LocalResponseNormNode<A>>>::Shared;
};

}  // namespace graph

}  // namespace dl
