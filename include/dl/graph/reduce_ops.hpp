// Reductions in the compiled graph: the symbol forms of sum and mean (the whole array, one axis,
// a list of axes; keepdims), global_avg_pool2d (the mean over each (H, W) plane, kept as
// (N, C, 1, 1) as eager), max, min, prod, var (ddof) and logsumexp. One node, ReduceNode<A, Kind>,
// serves them all. Its executor materialises at the reduction with the eager kernels
// (cpu::sum_reduce, arg_reduce, prod_reduce; any strides): an elementwise operand is one fused
// region whose output buffer the reduction reads. Backward follows eager's rules (ops/reduce.hpp):
// sum / mean broadcast g (times 1 / count) in one pass; max / min send g to the FIRST extremum
// (the indices arg_reduce saved in forward); prod uses prod / x with zeros handled exactly; var
// sends 2 (x - mean) g / (n - ddof); logsumexp sends exp(x - lse) g.
//
//   auto loss = dl::mean(dl::square(net(x)));   // ReduceNode<UnaryExpr<Square, ...>>: shape ()
//   auto s = dl::sum(h, {0, 2}, true);           // (N, C, L) -> (1, C, 1)
//   auto p = dl::global_avg_pool2d(h);          // (N, C, H, W) -> (N, C, 1, 1)
//   auto m = dl::max(h, 1);                      // ReduceNode<..., ReduceKind::max>
//   auto v = dl::var(h, {0}, false, 1);          // unbiased variance over the batch
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "dl/graph/exec.hpp"
#include "dl/graph/sym.hpp"
#include "dl/ops/pool.hpp"
#include "dl/ops/reduce.hpp"

namespace dl {

namespace graph {

// Which reduction a ReduceNode computes (sum covers mean: ReduceNode::mean scales it).
enum class ReduceKind { sum, max, min, prod, var, logsumexp };

// The reduction `Kind` over `axes` of the operand; all = true reduces every axis (shape ()).
template <class A, ReduceKind Kind = ReduceKind::sum>
struct ReduceNode {
  using value_type = typename A::value_type;
  A a;
  std::vector<int> axes;
  bool all = true, keepdims = false, mean = false;
  const char* op = "sum";   // the user's name, for errors
  int rank = -1;            // the operand rank the op requires (global_avg_pool2d: 4); -1: any
  const char* layout = "";  // the axes' names in that error, e.g. "(N, C, H, W)"
  int ddof = 0;             // var: divide by count - ddof
  uint64_t id = detail::next_node_id();
};

template <class A, ReduceKind K> struct is_symbolic<ReduceNode<A, K>> : std::true_type {};

namespace detail {
template <bool Mean, class X>
auto reduce_node(const X& x, std::vector<int> axes, bool all, bool keepdims, const char* op) {
  static_assert(!Mean || FloatingPoint<value_type_t<X>>, "mean: needs a float or double array");
  static_assert(Arithmetic<value_type_t<X>>, "sum: needs an arithmetic element type");
  return ReduceNode<std::remove_cvref_t<X>>{x, std::move(axes), all, keepdims, Mean, op};
}
template <ReduceKind Kind, class X>
auto reduce_node_of(const X& x, std::vector<int> axes, bool all, bool keepdims, const char* op, int ddof = 0) {
  using T = value_type_t<X>;
  if constexpr (Kind == ReduceKind::var || Kind == ReduceKind::logsumexp)
    static_assert(FloatingPoint<T>, "var / logsumexp: needs a float or double array");
  else
    static_assert(Arithmetic<T>, "max / min / prod: needs an arithmetic element type");
  ReduceNode<std::remove_cvref_t<X>, Kind> n{x, std::move(axes), all, keepdims, false, op};
  n.ddof = ddof;
  return n;
}
}  // namespace detail

}  // namespace graph

template <class A, graph::ReduceKind K> struct is_expr_node<graph::ReduceNode<A, K>> : std::true_type {};

// ---- symbol overloads (the same four forms as ops/reduce.hpp) ----------------------------------

#define DL_SYMBOL_REDUCTION(fn, make)                                                                        \
  template <ArrayLike A>                                                                                     \
    requires SymbolExpr<A>                                                                                   \
  auto fn(const A& x) {                                                                                      \
    return graph::detail::make(x, {}, true, false, #fn);                                                     \
  }                                                                                                          \
  template <ArrayLike A>                                                                                     \
    requires SymbolExpr<A>                                                                                   \
  auto fn(const A& x, int axis, bool keepdims = false) {                                                     \
    return graph::detail::make(x, {axis}, false, keepdims, #fn);                                             \
  }                                                                                                          \
  template <ArrayLike A>                                                                                     \
    requires SymbolExpr<A>                                                                                   \
  auto fn(const A& x, const std::vector<int>& axes, bool keepdims = false) {                                 \
    return graph::detail::make(x, axes, false, keepdims, #fn);                                               \
  }                                                                                                          \
  template <ArrayLike A>                                                                                     \
    requires SymbolExpr<A>                                                                                   \
  auto fn(const A& x, std::initializer_list<int> axes, bool keepdims = false) {                              \
    return graph::detail::make(x, std::vector<int>(axes), false, keepdims, #fn);                             \
  }
DL_SYMBOL_REDUCTION(sum, reduce_node<false>)
DL_SYMBOL_REDUCTION(mean, reduce_node<true>)
DL_SYMBOL_REDUCTION(max, reduce_node_of<graph::ReduceKind::max>)
DL_SYMBOL_REDUCTION(min, reduce_node_of<graph::ReduceKind::min>)
DL_SYMBOL_REDUCTION(prod, reduce_node_of<graph::ReduceKind::prod>)
DL_SYMBOL_REDUCTION(logsumexp, reduce_node_of<graph::ReduceKind::logsumexp>)
#undef DL_SYMBOL_REDUCTION

// Variance with `ddof` delta degrees of freedom, as ops/reduce.hpp's var (the whole-array form: ddof 0).
template <ArrayLike A>
  requires SymbolExpr<A>
auto var(const A& x) {
  return graph::detail::reduce_node_of<graph::ReduceKind::var>(x, {}, true, false, "var");
}
template <ArrayLike A>
  requires SymbolExpr<A>
auto var(const A& x, int axis, bool keepdims = false, int ddof = 0) {
  return graph::detail::reduce_node_of<graph::ReduceKind::var>(x, {axis}, false, keepdims, "var", ddof);
}
template <ArrayLike A>
  requires SymbolExpr<A>
auto var(const A& x, const std::vector<int>& axes, bool keepdims = false, int ddof = 0) {
  return graph::detail::reduce_node_of<graph::ReduceKind::var>(x, axes, false, keepdims, "var", ddof);
}
template <ArrayLike A>
  requires SymbolExpr<A>
auto var(const A& x, std::initializer_list<int> axes, bool keepdims = false, int ddof = 0) {
  return graph::detail::reduce_node_of<graph::ReduceKind::var>(x, std::vector<int>(axes), false, keepdims, "var", ddof);
}

// The mean of every (H, W) plane: (N, C, H, W) -> (N, C, 1, 1), a mean over axes {2, 3} kept.
template <ArrayLike X>
  requires SymbolExpr<X>
auto global_avg_pool2d(const X& input) {
  static_assert(FloatingPoint<value_type_t<X>>, "global_avg_pool2d: needs a float or double array");
  auto n = graph::detail::reduce_node<true>(input, {2, 3}, false, true, "global_avg_pool2d");
  n.rank = 4;
  n.layout = "(N, C, H, W)";
  return n;
}

namespace graph {

// ---- executor -----------------------------------------------------------------------------------

// Buffers beside the output (sizes in elements of the output or of the operand):
//   max / min:  the extremum's index per output (int64), forward to backward
//   prod:       the non-zero product (T) and the zero count (int64, and as T for the gradient)
//   var:        the kept-dims mean (T), forward to backward; the squared deviations (forward only)
//   logsumexp:  the shift (T) and its index (int64); exp(x - shift) (forward only)
template <class A, ReduceKind Kind>
struct OpExec<ReduceNode<A, Kind>> {
  using T = typename A::value_type;
  static constexpr bool kExtremum = Kind == ReduceKind::max || Kind == ReduceKind::min;
  ReduceNode<A, Kind> node;
  Exec<A> a;
  dl::detail::ReduceAxes r;
  Shape shape;
  T scale = T(1);
  bool needs_grad = false;
  int value_id_ = -1, grad_id = -1, index_id = -1, saved_id = -1, count_id = -1, scratch_id = -1;
  NDArray<T> value, grad;
  NDArray<int64_t> index;  // max / min: arg; prod: zero counts; logsumexp: the shift's arg
  NDArray<T> saved;        // prod: non-zero product; var: mean; logsumexp: shift (kept dims)
  NDArray<T> count;        // prod: zero counts as T (kept dims)
  NDArray<T> scratch;      // var, logsumexp: a full-size forward temporary

  explicit OpExec(const ReduceNode<A, Kind>& n) : node(n), a(n.a) {}

  // x (kept dims, contiguous) seen in shape `s` (r.keep_shape or r.out_shape) without a copy.
  static NDArray<T> seen_as(const NDArray<T>& x, const Shape& s) {
    return NDArray<T>(x.storage(), s, contiguous_strides(s), x.offset());
  }

  void plan_forward(PlanContext& ctx) {
    a.plan_forward(ctx);
    const Shape& s = a.shape;
    if (node.rank >= 0)
      check<ShapeError>(s.rank() == node.rank, node.op, ": expected a ", node.rank, "-D input ", node.layout, ", got ", s);
    for (int axis : node.axes)
      check<ValueError>(s.rank() > 0 && axis >= -s.rank() && axis < s.rank(), node.op, ": axis ", axis,
                        " is out of range for an input of shape ", s);
    r = node.all ? dl::detail::reduction_all(s) : dl::detail::reduction_over(s, node.axes, node.keepdims, node.op);
    if constexpr (Kind == ReduceKind::sum) {
      if (node.mean) {
        if constexpr (FloatingPoint<T>) scale = T(1) / static_cast<T>(r.count);
        check<ValueError>(r.count > 0, node.op, ": cannot reduce over zero elements (input shape ", s, ")");
      }
    }
    if constexpr (kExtremum || Kind == ReduceKind::var) dl::detail::require_nonempty(r, node.op);
    if constexpr (Kind == ReduceKind::var) {  // eager's checks and messages
      check<ValueError>(node.ddof >= 0, "var: ddof must be non-negative, got ", node.ddof);
      check<ValueError>(node.ddof < r.count, "var: ddof ", node.ddof, " leaves no degrees of freedom for ", r.count,
                        " reduced element(s)");
      scale = T(1) / static_cast<T>(r.count - node.ddof);
    }
    shape = r.out_shape;
    ++ctx.op_nodes;
    needs_grad = a.needs_grad;
    const int64_t outs = shape.numel(), ins = s.numel();
    const int64_t bytes = outs * static_cast<int64_t>(sizeof(T));
    value_id_ = ctx.memory.add(bytes);
    if constexpr (Kind != ReduceKind::sum && Kind != ReduceKind::var)
      index_id = ctx.memory.add(outs * static_cast<int64_t>(sizeof(int64_t)));
    if constexpr (Kind == ReduceKind::prod) count_id = ctx.memory.add(bytes);
    if constexpr (Kind == ReduceKind::prod || Kind == ReduceKind::var || Kind == ReduceKind::logsumexp)
      saved_id = ctx.memory.add(bytes);
    if constexpr (Kind == ReduceKind::var || Kind == ReduceKind::logsumexp)
      scratch_id = ctx.memory.add(ins * static_cast<int64_t>(sizeof(T)));
    int step = ctx.memory.next_step();
    for (int id : {value_id_, a.value_id(), index_id, count_id, saved_id, scratch_id}) ctx.memory.use(id, step);
    if (ctx.training && needs_grad) grad_id = ctx.memory.add(bytes);
  }
  void plan_backward(PlanContext& ctx) {
    if (!needs_grad) return;
    int step = ctx.memory.next_step();
    ctx.memory.use(grad_id, step);
    ctx.memory.use(a.grad_id, step);
    if constexpr (Kind == ReduceKind::prod || Kind == ReduceKind::var || Kind == ReduceKind::logsumexp)
      ctx.memory.use(a.value_id(), step);  // x read again
    if constexpr (Kind == ReduceKind::logsumexp) ctx.memory.use(value_id_, step);
    for (int id : {index_id, count_id, saved_id}) ctx.memory.use(id, step);
    a.plan_backward(ctx);
  }
  void bind(PlanContext& ctx) {
    a.bind(ctx);
    value = ctx.memory.template view<T>(value_id_, shape);
    if (grad_id >= 0) grad = ctx.memory.template view<T>(grad_id, shape);
    if (index_id >= 0) index = ctx.memory.template view<int64_t>(index_id, shape);
    if (saved_id >= 0) saved = ctx.memory.template view<T>(saved_id, r.keep_shape);
    if (count_id >= 0) count = ctx.memory.template view<T>(count_id, r.keep_shape);
    if (scratch_id >= 0) scratch = ctx.memory.template view<T>(scratch_id, r.in_shape);
  }
  template <class F> void for_each_input(F&& f) { a.for_each_input(f); }

  void forward() {
    a.forward();
    const int64_t n = value.numel();
    if (n == 0) return;
    T* out = value.data();
    const NDArray<T>& x = a.value;
    if constexpr (Kind == ReduceKind::sum) {
      if (x.numel() == 0) {  // nothing to add (a reduced axis of size 0): zeros
        std::fill(out, out + n, T(0));
        return;
      }
      cpu::sum_reduce(x.data(), x.shape(), x.strides(), r.mask, out);
      if (node.mean)  // as eager mean: the sum, then times 1 / count
        for (int64_t i = 0; i < n; ++i) out[i] *= scale;
    } else if constexpr (kExtremum) {
      cpu::arg_reduce<Kind == ReduceKind::max>(x.data(), x.shape(), x.strides(), r.mask, out, index.data());
    } else if constexpr (Kind == ReduceKind::prod) {
      T* nonzero = saved.data();
      cpu::prod_reduce(x.data(), x.shape(), x.strides(), r.mask, nonzero, index.data());
      for (int64_t o = 0; o < n; ++o) {
        out[o] = index.data()[o] > 0 ? T(0) : nonzero[o];
        count.data()[o] = static_cast<T>(index.data()[o]);
      }
    } else if constexpr (Kind == ReduceKind::var) {
      // As eager: the kept-dims mean, the squared deviations, their sum times 1 / (n - ddof).
      T* m = saved.data();
      cpu::sum_reduce(x.data(), x.shape(), x.strides(), r.mask, m);
      const T inv = T(1) / static_cast<T>(r.count);
      for (int64_t o = 0; o < n; ++o) m[o] *= inv;
      expr::run_assign(scratch, dl::square(x - saved));
      cpu::sum_reduce(scratch.data(), scratch.shape(), scratch.strides(), r.mask, out);
      for (int64_t o = 0; o < n; ++o) out[o] *= scale;
    } else {  // logsumexp, as eager: shift by the max (0 where it is not finite), exp, sum, log + shift
      T* shift = saved.data();
      const int64_t* arg = index.data();
      cpu::arg_reduce<true>(x.data(), x.shape(), x.strides(), r.mask, shift, index.data());
      for (int64_t o = 0; o < n; ++o)
        if (arg[o] < 0 || !std::isfinite(shift[o])) shift[o] = T(0);
      expr::run_assign(scratch, dl::exp(x - saved));
      cpu::sum_reduce(scratch.data(), scratch.shape(), scratch.strides(), r.mask, out);
      expr::run_assign(value, dl::log(value) + seen_as(saved, shape));
    }
  }

  void backward() {
    if (!needs_grad) return;
    NDArray<T> da = a.grad;
    if (da.numel() > 0) {
      const NDArray<T> g = seen_as(grad, r.keep_shape);  // broadcasts over the reduced axes
      if constexpr (Kind == ReduceKind::sum) {
        if (node.mean) expr::run_assign(da, BinaryExpr<prim::Mul, NDArray<T>, ScalarExpr<T>>{{}, g, ScalarExpr<T>{scale}});
        else expr::run_assign(da, g);
      } else if constexpr (kExtremum) {  // g to the first extremum, zeros elsewhere
        std::fill(da.data(), da.data() + da.numel(), T(0));
        cpu::scatter_reduced(grad.data(), index.data(), r.in_shape, r.mask, da.data());
      } else if constexpr (Kind == ReduceKind::prod) {
        // Eager's rule: no zero: prod / x; one zero: the product of the others there, else 0;
        // two or more zeros: 0.
        const NDArray<T>& x = a.value;
        auto one_zero_here = dl::equal(count, T(1)) * dl::equal(x, T(0));
        expr::run_assign(da, dl::where(dl::equal(count, T(0)), saved / x, dl::where(one_zero_here, saved, T(0))) * g);
      } else if constexpr (Kind == ReduceKind::var) {
        expr::run_assign(da, (a.value - saved) * g * (T(2) * scale));
      } else {  // logsumexp: softmax(x) g
        expr::run_assign(da, dl::exp(a.value - seen_as(value, r.keep_shape)) * g);
      }
    }
    a.backward();
  }
  int value_id() const { return value_id_; }
};

template <class A, ReduceKind K> struct Exec<ReduceNode<A, K>> : Shared<OpExec<ReduceNode<A, K>>> {
  using Shared<OpExec<ReduceNode<A, K>>>::Shared;
};

}  // namespace graph

}  // namespace dl
