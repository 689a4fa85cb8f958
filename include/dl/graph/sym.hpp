// Symbols: the placeholders and op nodes of the compile-time graph. A symbol expression's *type*
// is the graph. Symbols are leaves of the same expression nodes as NDArrays (UnaryExpr,
// BinaryExpr, ... in expr/expr.hpp), so `dl::relu(x * 2 + b)` on a symbol reuses the elementwise
// primitives and their rule table unchanged. Operators that are not elementwise get symbol
// overloads with the eager names and semantics (dl::matmul, dl::cross_entropy, ...): they build
// op nodes that hold their operands by value and parameters by NDArray handle.
//
//   dl::graph::Input<float, 2, 0> x;                       // what compile() passes to the model
//   auto logits = dl::matmul(x, w.transpose());            // MatmulNode<Input<float, 2, 0>>
//   auto h = dl::relu(logits + b);                         // UnaryExpr<Relu, BinaryExpr<Add, MatmulNode<..>, NDArray>>
//
// Nothing here computes: graph/exec.hpp turns a symbol expression type into loops and kernels.
#pragma once
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "dl/expr/expr.hpp"
#include "dl/ops/batch_norm.hpp"
#include "dl/ops/conv.hpp"
#include "dl/ops/dropout.hpp"
#include "dl/ops/loss.hpp"
#include "dl/ops/matmul.hpp"
#include "dl/ops/pool.hpp"

namespace dl {

// Declares an input of a compiled graph: element type and rank (-1: any rank), and a name for
// error messages. compile(fn, dl::sym<float, 2>("x"), dl::sym<int64_t, 1>("labels")).
template <class T, int Rank = -1>
struct sym {
  using value_type = T;
  static constexpr int rank = Rank;
  const char* name = nullptr;
  constexpr sym() = default;
  constexpr explicit sym(const char* n) : name(n) {}
};

namespace graph {

namespace detail {
// Identity of an op node: copies keep it, so a node used twice in one graph is recognised and
// computed once (common subexpressions are shared, see graph/exec.hpp's Shared).
inline uint64_t next_node_id() {
  static std::atomic<uint64_t> counter{0};
  return ++counter;
}
}  // namespace detail

// Input number Index of a compiled function: a symbol leaf.
template <class T, int Rank, int Index>
struct Input {
  using value_type = T;
  static constexpr int rank = Rank;
  static constexpr int index = Index;
};

// y = a (M, K) x W^T (+ bias) with W (N, K) when transposed, else a (M, K) x W (K, N): the rhs is
// a parameter (or constant) array; the bias (N) is added in the GEMM (the output starts as the
// bias and the GEMM accumulates onto it), so Dense's bias costs no extra pass.
template <class A>
struct MatmulNode {
  using value_type = typename A::value_type;
  A a;
  NDArray<value_type> weight;
  NDArray<value_type> bias;  // may be undefined
  bool transposed = false;   // weight is (N, K) and used as W^T
  uint64_t id = detail::next_node_id();
};

// Softmax cross entropy of logits (N, C) against integer labels (N): a symbol or an NDArray.
template <class A, class Labels>
struct CrossEntropyNode {
  using value_type = typename A::value_type;
  A logits;
  Labels labels;
  double smoothing = 0.0;
  Reduction reduction = Reduction::mean;
};

// Merges axes [start_axis, rank) into one: a view of the operand (no copy, no pass).
template <class A>
struct FlattenNode {
  using value_type = typename A::value_type;
  A a;
  int start_axis = 1;
};

// conv2d(x (N, C, H, W), weight (O, C/groups, kh, kw), bias (O) or undefined), PyTorch's semantics.
template <class A>
struct Conv2dNode {
  using value_type = typename A::value_type;
  A a;
  NDArray<value_type> weight;
  NDArray<value_type> bias;
  Conv2dOptions options;
  uint64_t id = detail::next_node_id();
};

// max_pool2d (Max) or avg_pool2d over NCHW.
template <class A, bool Max>
struct Pool2dNode {
  using value_type = typename A::value_type;
  A a;
  std::array<int64_t, 2> kernel, stride, padding;
  bool count_include_pad = true;
  uint64_t id = detail::next_node_id();
};

// batch_norm over (N, C, ...): batch statistics (and an in-place update of the running ones) in
// training, the running statistics in eval. The mode is fixed when the graph is traced.
template <class A>
struct BatchNormNode {
  using value_type = typename A::value_type;
  A a;
  NDArray<value_type> gamma, beta, running_mean, running_var;
  bool training = true;
  double momentum = 0.1, eps = 1e-5;
  uint64_t id = detail::next_node_id();
};

// Inverted dropout: each call draws a fresh mask from the generator (Philox: element i is kept iff
// uniform(state, i) >= p, as eager dropout); backward regenerates it. Identity when not training.
template <class A>
struct DropoutNode {
  using value_type = typename A::value_type;
  A a;
  double p = 0.5;
  bool training = true;
  Generator* generator = nullptr;
};

// One of two symbol expressions, chosen when the graph is traced (a module whose structure depends
// on a runtime setting, e.g. BasicBlock's optional projection shortcut). Only the chosen one is
// planned and run.
template <class A, class B>
struct ChoiceNode {
  using value_type = typename A::value_type;
  A first;
  B second;
  bool use_first = true;
};

// ---- traits ----------------------------------------------------------------------------------

template <class E> struct is_symbolic : std::false_type {};
template <class T, int R, int I> struct is_symbolic<Input<T, R, I>> : std::true_type {};
template <class A> struct is_symbolic<MatmulNode<A>> : std::true_type {};
template <class A, class L> struct is_symbolic<CrossEntropyNode<A, L>> : std::true_type {};
template <class A> struct is_symbolic<FlattenNode<A>> : std::true_type {};
template <class A> struct is_symbolic<Conv2dNode<A>> : std::true_type {};
template <class A> struct is_symbolic<BatchNormNode<A>> : std::true_type {};
template <class A, class B> struct is_symbolic<ChoiceNode<A, B>> : std::true_type {};
template <class A> struct is_symbolic<DropoutNode<A>> : std::true_type {};
template <class A, bool M> struct is_symbolic<Pool2dNode<A, M>> : std::true_type {};
template <class Op, class A> struct is_symbolic<UnaryExpr<Op, A>> : is_symbolic<A> {};
template <class Op, class A, class B>
struct is_symbolic<BinaryExpr<Op, A, B>> : std::bool_constant<is_symbolic<A>::value || is_symbolic<B>::value> {};
template <class Op, class A, class B, class C>
struct is_symbolic<TernaryExpr<Op, A, B, C>>
    : std::bool_constant<is_symbolic<A>::value || is_symbolic<B>::value || is_symbolic<C>::value> {};
template <class E> inline constexpr bool is_symbolic_v = is_symbolic<std::remove_cvref_t<E>>::value;

template <class E> struct is_input : std::false_type {};
template <class T, int R, int I> struct is_input<Input<T, R, I>> : std::true_type {};

// The static rank of a symbol expression where it is known, else -1.
template <class E> struct static_rank : std::integral_constant<int, -1> {};
template <class T, int R, int I> struct static_rank<Input<T, R, I>> : std::integral_constant<int, R> {};
template <class A> struct static_rank<MatmulNode<A>> : std::integral_constant<int, 2> {};

// ---- batch separability (the batch-parallel training step, graph/compile.hpp) -------------------
//
// per_sample<E>: row i (axis 0) of E's value depends only on row i of the inputs (and on
// parameters): E can run on a slice of the batch. A whitelist (default false): a node that mixes
// samples (batch_norm's batch statistics, a reduction over axis 0, a reshape naming the batch
// size) or draws random numbers by element position (dropout) is not on it. Parameters and
// scalars are broadcast, not sliced. ok(e) checks what only the traced node knows (an axis);
// shapes are checked when a slice is planned (graph/exec.hpp, PlanContext::batch_slice).
// batch_loss<E>: E is a per-sample loss reduced by mean or sum over the batch, the root of a
// batch-separable graph (is_batch_separable_v).
//
//   cross_entropy(linear(relu(conv2d(x, w)), ...), labels)   separable
//   cross_entropy(batch_norm(x, ..., true), labels)          not (batch statistics)
template <class E> struct per_sample : std::false_type {
  static bool ok(const E&) { return false; }
};
template <class E> struct batch_loss : std::false_type {
  static bool ok(const E&) { return false; }
};
template <class E> inline constexpr bool is_batch_separable_v = batch_loss<std::remove_cvref_t<E>>::value;

template <class E> struct per_sample_leaf : std::true_type {
  static bool ok(const E&) { return true; }
};
// A per-sample node with one operand `a`.
template <class A> struct per_sample_unary : std::bool_constant<per_sample<A>::value> {
  template <class Node> static bool ok(const Node& n) { return per_sample<A>::ok(n.a); }
};
template <class T, int R, int I> struct per_sample<Input<T, R, I>> : per_sample_leaf<Input<T, R, I>> {};
template <class T> struct per_sample<NDArray<T>> : per_sample_leaf<NDArray<T>> {};
template <class T> struct per_sample<ScalarExpr<T>> : per_sample_leaf<ScalarExpr<T>> {};
template <class Op, class A> struct per_sample<UnaryExpr<Op, A>> : per_sample_unary<A> {};
template <class Op, class A, class B>
struct per_sample<BinaryExpr<Op, A, B>> : std::bool_constant<per_sample<A>::value && per_sample<B>::value> {
  static bool ok(const BinaryExpr<Op, A, B>& e) { return per_sample<A>::ok(e.a) && per_sample<B>::ok(e.b); }
};
template <class Op, class A, class B, class C>
struct per_sample<TernaryExpr<Op, A, B, C>>
    : std::bool_constant<per_sample<A>::value && per_sample<B>::value && per_sample<C>::value> {
  static bool ok(const TernaryExpr<Op, A, B, C>& e) {
    return per_sample<A>::ok(e.a) && per_sample<B>::ok(e.b) && per_sample<C>::ok(e.c);
  }
};
template <class A> struct per_sample<MatmulNode<A>> : per_sample_unary<A> {};  // the rhs is a parameter
template <class A> struct per_sample<Conv2dNode<A>> : per_sample_unary<A> {};
template <class A, bool Max> struct per_sample<Pool2dNode<A, Max>> : per_sample_unary<A> {};
template <class A> struct per_sample<FlattenNode<A>> : per_sample_unary<A> {
  static bool ok(const FlattenNode<A>& n) { return n.start_axis >= 1 && per_sample<A>::ok(n.a); }
};
template <class A, class B>
struct per_sample<ChoiceNode<A, B>> : std::bool_constant<per_sample<A>::value && per_sample<B>::value> {
  static bool ok(const ChoiceNode<A, B>& n) {
    return n.use_first ? per_sample<A>::ok(n.first) : per_sample<B>::ok(n.second);
  }
};
// Labels: an input (sliced with the batch); a constant label array is not sliced, so not separable.
template <class A, class Label, int R, int I>
struct batch_loss<CrossEntropyNode<A, Input<Label, R, I>>> : std::bool_constant<per_sample<A>::value> {
  static bool ok(const CrossEntropyNode<A, Input<Label, R, I>>& n) {
    return n.reduction != Reduction::none && per_sample<A>::ok(n.logits);
  }
};

}  // namespace graph

// Symbols and op nodes stand where arrays are expected (ArrayLike), so elementwise operators
// accept them and build the usual expression nodes.
template <class T, int R, int I> struct is_expr_node<graph::Input<T, R, I>> : std::true_type {};
template <class A> struct is_expr_node<graph::MatmulNode<A>> : std::true_type {};
template <class A, class L> struct is_expr_node<graph::CrossEntropyNode<A, L>> : std::true_type {};
template <class A> struct is_expr_node<graph::FlattenNode<A>> : std::true_type {};
template <class A> struct is_expr_node<graph::Conv2dNode<A>> : std::true_type {};
template <class A> struct is_expr_node<graph::BatchNormNode<A>> : std::true_type {};
template <class A, class B> struct is_expr_node<graph::ChoiceNode<A, B>> : std::true_type {};
template <class A> struct is_expr_node<graph::DropoutNode<A>> : std::true_type {};
template <class A, bool M> struct is_expr_node<graph::Pool2dNode<A, M>> : std::true_type {};

// A symbol expression: an array-like whose type contains at least one symbol. (Written as
// ArrayLike && ..., so overloads constrained with it win over the eager ArrayLike ones.)
template <class E>
concept SymbolExpr = ArrayLike<E> && graph::is_symbolic_v<E>;

// flatten(x, start_axis = 1): (d0, ..., dk, ...) -> (d0, ..., d(k-1), product of the rest), so a
// model's forward can flatten arrays and symbols alike. Arrays: a view (x.flatten); symbols: the
// graph's FlattenNode (graph::flatten, found by argument-dependent lookup).
template <ArrayLike X>
  requires(!SymbolExpr<X>)
auto flatten(const X& x, int start_axis = 1) {
  NDArray<value_type_t<X>> a = dl::eval(x);
  a.require_defined("flatten");
  return a.flatten(start_axis);
}

namespace graph {
// Dense's formula on a symbol: x W^T + b with the bias fused into the GEMM.
template <SymbolExpr X>
auto linear(const X& x, const NDArray<value_type_t<X>>& weight, const NDArray<value_type_t<X>>& bias) {
  static_assert(static_rank<std::remove_cvref_t<X>>::value == -1 || static_rank<std::remove_cvref_t<X>>::value == 2,
                "dense: a symbolic input must have rank 2 (flatten it first)");
  return MatmulNode<std::remove_cvref_t<X>>{x, weight, bias, true};
}
// choose(c, a, b): a when c, else b (decided at tracing; both must be symbol expressions).
template <SymbolExpr A, SymbolExpr B>
auto choose(bool use_first, const A& a, const B& b) {
  static_assert(std::is_same_v<value_type_t<A>, value_type_t<B>>, "choose: both branches must have one element type");
  return ChoiceNode<std::remove_cvref_t<A>, std::remove_cvref_t<B>>{a, b, use_first};
}
template <SymbolExpr X>
auto flatten(const X& x, int start_axis = 1) { return FlattenNode<std::remove_cvref_t<X>>{x, start_axis}; }
}  // namespace graph

// ---- symbol overloads of the eager operators ---------------------------------------------------

// matmul(symbol (M, K), array (K, N)): the right operand is a parameter or constant array.
template <ArrayLike A, ArrayLike B>
  requires SymbolExpr<A>
auto matmul(const A& lhs, const B& rhs) {
  static_assert(is_ndarray_v<std::remove_cvref_t<B>>,
                "matmul: the right operand of a symbolic matmul must be an NDArray (a parameter)");
  static_assert(std::is_same_v<value_type_t<A>, value_type_t<B>>, "matmul: operands have different element types");
  return graph::MatmulNode<std::remove_cvref_t<A>>{lhs, rhs, NDArray<value_type_t<A>>(), false};
}

template <ArrayLike X, ArrayLike Wt>
  requires SymbolExpr<X>
auto conv2d(const X& input, const Wt& weight, const NDArray<value_type_t<X>>& bias = NDArray<value_type_t<X>>(),
            const Conv2dOptions& options = {}) {
  static_assert(is_ndarray_v<std::remove_cvref_t<Wt>>, "conv2d: the weight of a symbolic conv2d must be an NDArray (a parameter)");
  static_assert(std::is_same_v<value_type_t<X>, value_type_t<Wt>>, "conv2d: input and weight have different element types");
  static_assert(FloatingPoint<value_type_t<X>>, "conv2d: needs a float or double array");
  return graph::Conv2dNode<std::remove_cvref_t<X>>{input, weight, bias, options};
}

template <ArrayLike X>
  requires SymbolExpr<X>
auto batch_norm(const X& input, const NDArray<value_type_t<X>>& gamma, const NDArray<value_type_t<X>>& beta,
                NDArray<value_type_t<X>> running_mean, NDArray<value_type_t<X>> running_var, bool training,
                double momentum = 0.1, double eps = 1e-5) {
  static_assert(FloatingPoint<value_type_t<X>>, "batch_norm: needs a float or double array");
  check<ValueError>(running_mean.defined() == running_var.defined(),
                    "batch_norm: running_mean and running_var must both be given or both be undefined");
  check<ValueError>(training || running_mean.defined(), "batch_norm: eval mode needs running_mean and running_var");
  check<ValueError>(std::isfinite(eps) && eps >= 0, "batch_norm: eps must be non-negative, got ", eps);
  check<ValueError>(momentum >= 0 && momentum <= 1, "batch_norm: momentum must be in [0, 1], got ", momentum);
  return graph::BatchNormNode<std::remove_cvref_t<X>>{input, gamma, beta, running_mean, running_var, training, momentum, eps};
}

template <ArrayLike A>
  requires SymbolExpr<A>
auto dropout(const A& input, double p, bool training, Generator& gen = default_generator()) {
  static_assert(FloatingPoint<value_type_t<A>>, "dropout: needs a float or double array");
  check<ValueError>(p >= 0.0 && p < 1.0, "dropout: probability p must be in [0, 1), got ", p);
  return graph::DropoutNode<std::remove_cvref_t<A>>{input, p, training, &gen};
}

template <ArrayLike X>
  requires SymbolExpr<X>
auto max_pool2d(const X& input, const std::array<int64_t, 2>& kernel, const std::array<int64_t, 2>& stride,
                const std::array<int64_t, 2>& padding = {0, 0}) {
  static_assert(FloatingPoint<value_type_t<X>>, "max_pool2d: needs a float or double array");
  return graph::Pool2dNode<std::remove_cvref_t<X>, true>{input, kernel, stride, padding, true};
}
template <ArrayLike X>
  requires SymbolExpr<X>
auto max_pool2d(const X& input, const std::array<int64_t, 2>& kernel) { return max_pool2d(input, kernel, kernel, {0, 0}); }
template <ArrayLike X>
  requires SymbolExpr<X>
auto avg_pool2d(const X& input, const std::array<int64_t, 2>& kernel, const std::array<int64_t, 2>& stride,
                const std::array<int64_t, 2>& padding = {0, 0}, bool count_include_pad = true) {
  static_assert(FloatingPoint<value_type_t<X>>, "avg_pool2d: needs a float or double array");
  return graph::Pool2dNode<std::remove_cvref_t<X>, false>{input, kernel, stride, padding, count_include_pad};
}
template <ArrayLike X>
  requires SymbolExpr<X>
auto avg_pool2d(const X& input, const std::array<int64_t, 2>& kernel) { return avg_pool2d(input, kernel, kernel, {0, 0}, true); }

template <ArrayLike A, class Label>
  requires SymbolExpr<A>
auto cross_entropy(const A& logits, const NDArray<Label>& labels, double label_smoothing = 0.0,
                   Reduction reduction = Reduction::mean) {
  static_assert(FloatingPoint<value_type_t<A>>, "cross_entropy: logits need a float or double array");
  static_assert(detail::is_label_type_v<Label>, "cross_entropy: labels must be an NDArray<int64_t> or NDArray<int32_t>");
  detail::check_reduction(reduction, "cross_entropy");
  check<ValueError>(label_smoothing >= 0.0 && label_smoothing < 1.0,
                    "cross_entropy: label_smoothing must be in [0, 1), got ", label_smoothing);
  return graph::CrossEntropyNode<std::remove_cvref_t<A>, NDArray<Label>>{logits, labels, label_smoothing, reduction};
}

template <ArrayLike A, class Label, int R, int I>
auto cross_entropy(const A& logits, const graph::Input<Label, R, I>& labels, double label_smoothing = 0.0,
                   Reduction reduction = Reduction::mean) {
  static_assert(graph::is_symbolic_v<A>, "cross_entropy: symbolic labels need symbolic logits");
  static_assert(FloatingPoint<value_type_t<A>>, "cross_entropy: logits need a float or double array");
  static_assert(detail::is_label_type_v<Label>, "cross_entropy: label symbol must be int64_t or int32_t");
  static_assert(R == -1 || R == 1, "cross_entropy: label symbol must have rank 1 (N)");
  detail::check_reduction(reduction, "cross_entropy");
  check<ValueError>(label_smoothing >= 0.0 && label_smoothing < 1.0,
                    "cross_entropy: label_smoothing must be in [0, 1), got ", label_smoothing);
  return graph::CrossEntropyNode<std::remove_cvref_t<A>, graph::Input<Label, R, I>>{logits, labels, label_smoothing,
                                                                                     reduction};
}

// Symbols live in dl::graph, where argument-dependent lookup looks for operators: bring dl's
// elementwise operators in, so `x - 1.0f` on a bare symbol works in code outside namespace dl.
namespace graph {
using dl::operator+;
using dl::operator-;
using dl::operator*;
using dl::operator/;
using dl::operator<;
using dl::operator<=;
using dl::operator>;
using dl::operator>=;
}  // namespace graph

}  // namespace dl
