// Losses in the compiled graph beside cross_entropy (graph/exec.hpp): the symbol forms of mse,
// binary_cross_entropy_with_logits and nll (ops/loss.hpp), with eager's reductions (none, mean,
// sum; sums in double in a fixed order). mse and binary_cross_entropy_with_logits are one node,
// PointwiseLossNode<Formula, ...>: both operands are materialised, the per-element losses are
// eager's fused formula (square(p - t); softplus(x) - x * t) run over them with the same
// executor and rule table, and backward runs that formula's backward loop (so the gradients
// are eager's bit for bit, a leaf used twice included). nll is cross_entropy's layout with the
// nll kernels (backend/cpu/softmax.hpp): log-probabilities (N, C), labels (N) as an array or a
// symbol.
//
//   auto loss = dl::mse(net(x), target);                                 // target: array or symbol
//   auto bce = dl::binary_cross_entropy_with_logits(head(x), t, dl::Reduction::sum);
//   auto nll = dl::nll(dl::log_softmax(logits, 1), labels);
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <type_traits>

#include "dl/graph/exec.hpp"
#include "dl/graph/matmul_ops.hpp"  // detail::set_grad_step
#include "dl/graph/sym.hpp"
#include "dl/ops/loss.hpp"

namespace dl {

namespace graph {

// The per-element formulas: eager's expressions, the operand (0: the first argument, 1: the
// second) each leaf reads, and the shape check with eager's message.
struct MseFormula {
  static constexpr const char* name = "mse";
  static constexpr std::array<int, 2> operand{0, 1};
  template <class T> static auto apply(const NDArray<T>& p, const NDArray<T>& t) { return dl::square(p - t); }
  static void check_shapes(const Shape& p, const Shape& t) {
    check<ShapeError>(p == t, "mse: pred of shape ", p, " and target of shape ", t, " differ (mse does not broadcast)");
  }
};
struct BceWithLogitsFormula {
  static constexpr const char* name = "binary_cross_entropy_with_logits";
  static constexpr std::array<int, 3> operand{0, 0, 1};
  template <class T> static auto apply(const NDArray<T>& x, const NDArray<T>& t) { return dl::softplus(x) - x * t; }
  static void check_shapes(const Shape& x, const Shape& t) {
    check<ShapeError>(x == t, name, ": logits of shape ", x, " and targets of shape ", t, " differ");
  }
};

template <class Formula, class P, class Tg>
struct PointwiseLossNode {
  using value_type = typename P::value_type;
  P first;
  Tg second;
  Reduction reduction = Reduction::mean;
  uint64_t id = detail::next_node_id();
};

// Negative log-likelihood of log-probabilities (N, C) against integer labels (N).
template <class A, class Labels>
struct NllNode {
  using value_type = typename A::value_type;
  A log_probs;
  Labels labels;
  Reduction reduction = Reduction::mean;
  uint64_t id = detail::next_node_id();
};

template <class F, class P, class Tg> struct is_symbolic<PointwiseLossNode<F, P, Tg>> : std::true_type {};
template <class A, class L> struct is_symbolic<NllNode<A, L>> : std::true_type {};

}  // namespace graph

template <class F, class P, class Tg> struct is_expr_node<graph::PointwiseLossNode<F, P, Tg>> : std::true_type {};
template <class A, class L> struct is_expr_node<graph::NllNode<A, L>> : std::true_type {};

namespace graph::detail {
template <class Formula, class A, class B>
auto pointwise_loss(const A& a, const B& b, Reduction reduction) {
  static_assert(std::is_same_v<value_type_t<A>, value_type_t<B>>, "loss: the two operands have different element types");
  static_assert(FloatingPoint<value_type_t<A>>, "loss: needs float or double arrays");
  dl::detail::check_reduction(reduction, Formula::name);
  return PointwiseLossNode<Formula, std::remove_cvref_t<A>, std::remove_cvref_t<B>>{a, b, reduction};
}
}  // namespace graph::detail

// Either operand may be the symbol (a target computed by the graph, or passed as an input).
template <ArrayLike A, ArrayLike B>
  requires(SymbolExpr<A> || SymbolExpr<B>)
auto mse(const A& pred, const B& target, Reduction reduction = Reduction::mean) {
  return graph::detail::pointwise_loss<graph::MseFormula>(pred, target, reduction);
}
template <ArrayLike A, ArrayLike B>
  requires(SymbolExpr<A> || SymbolExpr<B>)
auto binary_cross_entropy_with_logits(const A& logits, const B& targets, Reduction reduction = Reduction::mean) {
  return graph::detail::pointwise_loss<graph::BceWithLogitsFormula>(logits, targets, reduction);
}

template <ArrayLike A, class Label>
  requires SymbolExpr<A>
auto nll(const A& log_probs, const NDArray<Label>& labels, Reduction reduction = Reduction::mean) {
  static_assert(FloatingPoint<value_type_t<A>>, "nll: log_probs need a float or double array");
  static_assert(detail::is_label_type_v<Label>, "nll: labels must be an NDArray<int64_t> or NDArray<int32_t>");
  detail::check_reduction(reduction, "nll");
  return graph::NllNode<std::remove_cvref_t<A>, NDArray<Label>>{log_probs, labels, reduction};
}
template <ArrayLike A, class Label, int R, int I>
auto nll(const A& log_probs, const graph::Input<Label, R, I>& labels, Reduction reduction = Reduction::mean) {
  static_assert(graph::is_symbolic_v<A>, "nll: symbolic labels need symbolic log_probs");
  static_assert(FloatingPoint<value_type_t<A>>, "nll: log_probs need a float or double array");
  static_assert(detail::is_label_type_v<Label>, "nll: label symbol must be int64_t or int32_t");
  static_assert(R == -1 || R == 1, "nll: label symbol must have rank 1 (N)");
  detail::check_reduction(reduction, "nll");
  return graph::NllNode<std::remove_cvref_t<A>, graph::Input<Label, R, I>>{log_probs, labels, reduction};
}

namespace graph {

// ---- pointwise losses ---------------------------------------------------------------------------

template <class Formula, class P, class Tg>
struct OpExec<PointwiseLossNode<Formula, P, Tg>> {
  using T = typename P::value_type;
  using Lowered = decltype(Formula::apply(std::declval<const NDArray<T>&>(), std::declval<const NDArray<T>&>()));
  static constexpr size_t kLeaves = Formula::operand.size();
  static_assert(kLeaves == static_cast<size_t>(dl::leaf_count<Lowered>::value), "a loss formula's operand table must list every leaf");
  PointwiseLossNode<Formula, P, Tg> node;
  Exec<P> first;
  Exec<Tg> second;
  std::optional<Lowered> lowered;
  Shape shape, loss_shape;
  double scale = 1.0;
  bool per_element = false, needs_grad = false;
  int value_id_ = -1, grad_id = -1, losses_id = -1, scaled_id = -1;
  std::array<int, kLeaves> temp_id{};  // a leaf whose operand an earlier leaf already reads
  NDArray<T> value, grad, losses, scaled;
  std::array<NDArray<T>, kLeaves> temp;

  explicit OpExec(const PointwiseLossNode<Formula, P, Tg>& n) : node(n), first(n.first), second(n.second) { temp_id.fill(-1); }
  template <class F> void with_operand(int i, F&& f) {
    if (i == 0) f(first);
    else f(second);
  }
  void plan_forward(PlanContext& ctx) {
    first.plan_forward(ctx);
    second.plan_forward(ctx);
    Formula::check_shapes(first.shape, second.shape);
    loss_shape = first.shape;
    per_element = node.reduction == Reduction::none;
    scale = dl::detail::reduction_scale(node.reduction, loss_shape.numel());
    shape = per_element ? loss_shape : Shape{};
    ++ctx.op_nodes;
    needs_grad = first.needs_grad || second.needs_grad;
    const int64_t bytes = loss_shape.numel() * static_cast<int64_t>(sizeof(T));
    losses_id = ctx.memory.add(bytes);
    value_id_ = per_element ? losses_id : ctx.memory.add(static_cast<int64_t>(sizeof(T)));
    int step = ctx.memory.next_step();
    for (int id : {losses_id, value_id_, first.value_id(), second.value_id()}) ctx.memory.use(id, step);
    if (!(ctx.training && needs_grad)) return;
    grad_id = ctx.memory.add(shape.numel() * static_cast<int64_t>(sizeof(T)));
    if (!per_element) scaled_id = ctx.memory.add(static_cast<int64_t>(sizeof(T)));
    std::array<bool, 2> seen{};
    for (size_t l = 0; l < kLeaves; ++l) {
      const int op = Formula::operand[l];
      if (seen[static_cast<size_t>(op)]) temp_id[l] = ctx.memory.add(bytes);
      seen[static_cast<size_t>(op)] = true;
    }
  }
  void plan_backward(PlanContext& ctx) {
    if (!needs_grad) return;
    int step = ctx.memory.next_step();
    for (int id : {grad_id, scaled_id, first.value_id(), second.value_id(), first.needs_grad ? first.grad_id : -1,
                   second.needs_grad ? second.grad_id : -1})
      ctx.memory.use(id, step);
    for (int id : temp_id) ctx.memory.use(id, step);
    detail::set_grad_step(first, step);
    detail::set_grad_step(second, step);
    if (second.needs_grad) second.plan_backward(ctx);
    if (first.needs_grad) first.plan_backward(ctx);
  }
  void bind(PlanContext& ctx) {
    first.bind(ctx);
    second.bind(ctx);
    losses = ctx.memory.template view<T>(losses_id, loss_shape);
    value = ctx.memory.template view<T>(value_id_, shape);
    if (grad_id >= 0) grad = ctx.memory.template view<T>(grad_id, shape);
    if (scaled_id >= 0) scaled = ctx.memory.template view<T>(scaled_id, Shape{});
    for (size_t l = 0; l < kLeaves; ++l)
      if (temp_id[l] >= 0) temp[l] = ctx.memory.template view<T>(temp_id[l], loss_shape);
  }
  template <class F> void for_each_input(F&& f) {
    first.for_each_input(f);
    second.for_each_input(f);
  }
  void forward() {
    first.forward();
    second.forward();
    lowered.emplace(Formula::apply(first.value, second.value));
    expr::run_assign(losses, *lowered);
    if (per_element) return;
    const int64_t n = losses.numel();  // as eager's reduce_loss
    *value.data() = static_cast<T>((n > 0 ? cpu::sum_deterministic(losses.data(), n) : 0.0) * scale);
  }
  void backward() {
    if (!needs_grad) return;
    if (loss_shape.numel() > 0) {
      if (!per_element) *scaled.data() = static_cast<T>(static_cast<double>(*grad.data()) * scale);
      std::array<T*, kLeaves> ptrs{};
      for (size_t l = 0; l < kLeaves; ++l)
        with_operand(Formula::operand[l], [&](auto& x) {
          if (x.needs_grad) ptrs[l] = temp_id[l] >= 0 ? temp[l].data() : x.grad.data();
        });
      expr::run_backward(*lowered, loss_shape, per_element ? grad : scaled, ptrs);
      for (size_t l = 0; l < kLeaves; ++l)  // a second leaf of one operand: added in leaf order, as eager
        with_operand(Formula::operand[l], [&](auto& x) {
          if (x.needs_grad && temp_id[l] >= 0)
            expr::run_assign(x.grad, BinaryExpr<prim::Add, NDArray<T>, NDArray<T>>{{}, x.grad, temp[l]});
        });
    }
    if (second.needs_grad) second.backward();
    if (first.needs_grad) first.backward();
  }
  int value_id() const { return value_id_; }
};

template <class F, class P, class Tg>
struct Exec<PointwiseLossNode<F, P, Tg>> : Shared<OpExec<PointwiseLossNode<F, P, Tg>>> {
  using Shared<OpExec<PointwiseLossNode<F, P, Tg>>>::Shared;
};

// ---- nll ----------------------------------------------------------------------------------------

template <class A, class Labels>
struct OpExec<NllNode<A, Labels>> {
  using T = typename A::value_type;
  NllNode<A, Labels> node;
  Exec<A> a;
  LabelSource<Labels> labels;
  Shape shape;
  int64_t M = 0, C = 0;
  double scale = 1.0;
  bool needs_grad = false;
  int value_id_ = -1, grad_id = -1, losses_id = -1;
  NDArray<T> value, grad, losses;

  explicit OpExec(const NllNode<A, Labels>& n) : node(n), a(n.log_probs), labels(n.labels) {}
  void plan_forward(PlanContext& ctx) {
    a.plan_forward(ctx);
    const Shape& s = a.shape;
    check_class_rows("nll", "log_probs", s, labels.value());
    M = s[0];
    C = s[1];
    scale = dl::detail::reduction_scale(node.reduction, M);
    shape = node.reduction == Reduction::none ? Shape{M} : Shape{};
    ++ctx.op_nodes;
    needs_grad = a.needs_grad;
    losses_id = ctx.memory.add(M * static_cast<int64_t>(sizeof(T)));
    value_id_ = node.reduction == Reduction::none ? losses_id : ctx.memory.add(static_cast<int64_t>(sizeof(T)));
    int step = ctx.memory.next_step();
    for (int id : {losses_id, value_id_, a.value_id()}) ctx.memory.use(id, step);
    if (ctx.training && needs_grad) grad_id = ctx.memory.add(shape.numel() * static_cast<int64_t>(sizeof(T)));
  }
  void plan_backward(PlanContext& ctx) {
    if (!needs_grad) return;
    int step = ctx.memory.next_step();
    for (int id : {grad_id, a.grad_id}) ctx.memory.use(id, step);
    a.plan_backward(ctx);
  }
  void bind(PlanContext& ctx) {
    a.bind(ctx);
    losses = ctx.memory.template view<T>(losses_id, Shape{M});
    value = ctx.memory.template view<T>(value_id_, shape);
    if (grad_id >= 0) grad = ctx.memory.template view<T>(grad_id, shape);
  }
  template <class F> void for_each_input(F&& f) {
    a.for_each_input(f);
    labels.for_each_input(f);
  }
  void forward() {
    a.forward();
    const auto& lab = labels.value();
    check<ValueError>(lab.is_contiguous() && a.value.is_contiguous(), "nll: a compiled nll needs contiguous log_probs and labels");
    const auto* lp = lab.data();
    for (int64_t r = 0; r < M; ++r) {  // every label checked before the kernel runs, as eager
      const int64_t v = static_cast<int64_t>(lp[r]);
      if (v < 0 || v >= C) [[unlikely]]
        fail<ValueError>("nll: label ", v, " at row ", r, " is out of range for ", C, " classes");
    }
    if (M == 0) {
      if (node.reduction != Reduction::none) *value.data() = static_cast<T>(0.0 * scale);
      return;
    }
    cpu::nll_forward(a.value.data(), lp, M, C, losses.data());
    if (node.reduction != Reduction::none) *value.data() = static_cast<T>(cpu::sum_deterministic(losses.data(), M) * scale);
  }
  void backward() {
    if (M > 0 && a.grad.numel())
      cpu::nll_backward(labels.value().data(), grad.data(), node.reduction == Reduction::none ? 1 : 0, static_cast<T>(scale), M, C,
                        a.grad.data());
    a.backward();
  }
  int value_id() const { return value_id_; }
};

template <class A, class L> struct Exec<NllNode<A, L>> : Shared<OpExec<NllNode<A, L>>> {
  using Shared<OpExec<NllNode<A, L>>>::Shared;
};

}  // namespace graph

}  // namespace dl
