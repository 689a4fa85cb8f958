// dropout2d in the compiled graph: the symbol form of ops/dropout2d.hpp. Each call reserves N * C
// Philox numbers from the generator, as eager, so the same generator state gives the same channel
// mask in both; the per-plane factors (0 or 1 / (1 - p)) are kept for backward, which scales the
// gradient plane by plane in place (dx shares g's memory). Identity when not training or p = 0.
// (Element-wise dropout is graph/sym.hpp's DropoutNode.)
//
//   auto h = dl::dropout2d(dl::relu(conv(x)), 0.2, training, gen);
#pragma once
#include <cstdint>
#include <vector>

#include "dl/graph/exec.hpp"
#include "dl/graph/sym.hpp"
#include "dl/ops/dropout2d.hpp"

namespace dl {

namespace graph {

template <class A>
struct Dropout2dNode {
  using value_type = typename A::value_type;
  A a;
  double p = 0.5;
  bool training = true;
  Generator* generator = nullptr;
};

template <class A> struct is_symbolic<Dropout2dNode<A>> : std::true_type {};
template <class A> struct static_rank<Dropout2dNode<A>> : static_rank<A> {};

}  // namespace graph

template <class A> struct is_expr_node<graph::Dropout2dNode<A>> : std::true_type {};

template <ArrayLike X>
  requires SymbolExpr<X>
auto dropout2d(const X& input, double p, bool training, Generator& gen = default_generator()) {
  static_assert(FloatingPoint<value_type_t<X>>, "dropout2d: needs a float or double array");
  check<ValueError>(p >= 0 && p <= 1, "dropout2d: probability p must be in [0, 1], got ", p);
  return graph::Dropout2dNode<std::remove_cvref_t<X>>{input, p, training, &gen};
}

namespace graph {

template <class A>
struct Exec<Dropout2dNode<A>> {
  using T = typename A::value_type;
  Dropout2dNode<A> node;
  Exec<A> a;
  Shape shape;
  bool needs_grad = false, active = false;
  int value_id_ = -1, grad_id = -1;
  NDArray<T> value, grad;
  int64_t planes = 0, spatial = 0;
  std::vector<T> factor;  // per (n, c) plane: 0 or 1 / (1 - p); sized when planned

  explicit Exec(const Dropout2dNode<A>& n) : node(n), a(n.a) {}
  void plan_forward(PlanContext& ctx) {
    a.plan_forward(ctx);
    shape = a.shape;
    check<ShapeError>(shape.rank() >= 3, "dropout2d: expected an input (N, C, ...) of rank >= 3, got ", shape);
    needs_grad = a.needs_grad;
    active = node.training && node.p > 0.0;
    if (!active) {  // identity: the operand's value and gradient
      grad_id = a.grad_id;
      value_id_ = a.value_id();
      return;
    }
    planes = shape[0] * shape[1];
    spatial = planes ? shape.numel() / planes : 0;
    factor.assign(static_cast<size_t>(planes), T(0));
    ++ctx.op_nodes;
    value_id_ = ctx.memory.add(shape.numel() * static_cast<int64_t>(sizeof(T)));
    int step = ctx.memory.next_step();
    ctx.memory.use(value_id_, step);
    ctx.memory.use(a.value_id(), step);
    if (ctx.training && needs_grad) {
      grad_id = ctx.memory.add(shape.numel() * static_cast<int64_t>(sizeof(T)));
      ctx.memory.alias(a.grad_id, grad_id);  // dx[i] = factor[plane of i] * g[i]: in place
    }
  }
  void plan_backward(PlanContext& ctx) {
    if (!needs_grad) return;
    if (active) {
      int step = ctx.memory.next_step();
      ctx.memory.use(grad_id, step);
      ctx.memory.use(a.grad_id, step);
    }
    a.plan_backward(ctx);
  }
  void bind(PlanContext& ctx) {
    a.bind(ctx);
    if (!active) {
      grad = a.grad;
      return;
    }
    value = ctx.memory.template view<T>(value_id_, shape);
    if (grad_id >= 0) grad = ctx.memory.template view<T>(grad_id, shape);
  }
  template <class F> void for_each_input(F&& f) { a.for_each_input(f); }
  void forward() {
    a.forward();
    if (!active) {
      value = a.value;
      return;
    }
    check<ValueError>(a.value.is_contiguous(), "dropout2d: a compiled dropout2d needs a contiguous input");
    // As eager: one reservation of N * C numbers per call, plane kept iff uniform >= p.
    const PhiloxState state = node.generator->reserve(static_cast<uint64_t>(planes));
    const T keep_scale = node.p < 1 ? static_cast<T>(1.0 / (1.0 - node.p)) : T(0);
    for (int64_t i = 0; i < planes; ++i)
      factor[static_cast<size_t>(i)] = philox_uniform(state, static_cast<uint64_t>(i)) >= node.p ? keep_scale : T(0);
    if (value.numel() > 0) dl::detail::scale_planes(a.value.data(), value.data(), factor, spatial);
  }
  void backward() {
    if (active && a.needs_grad && grad.numel() > 0) dl::detail::scale_planes(grad.data(), a.grad.data(), factor, spatial);
    if (a.needs_grad) a.backward();
  }
  int value_id() const { return value_id_; }
};

}  // namespace graph

}  // namespace dl
