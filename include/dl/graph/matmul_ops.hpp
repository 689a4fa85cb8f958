// matmul of two symbol expressions in the compiled graph (attention's q k^T, p v): the right
// operand is computed by the graph too, not a parameter (graph/sym.hpp's MatmulNode covers
// matmul(symbol, parameter)). Operands have rank >= 2: (..., M, K) x (..., K, N) -> (..., M, N)
// with broadcast batch dims, as eager matmul (ops/matmul.hpp). Each batch is one backend GEMM
// (cpu::gemm) on the operands' strides, so a transposed operand is read without a copy; batches
// run in parallel as eager. Backward: dA = G B^T, dB = A^T G per batch, the transposes being
// views; an operand broadcast over batches accumulates its batches' products into its gradient.
//
//   auto scores = dl::matmul(q, dl::transpose(k, 1, 2));   // (B, T, D) x (B, D, T) -> (B, T, T)
//   auto out = dl::matmul(dl::softmax(scores), v);         // SymbolMatmulNode<SoftmaxNode<...>, ...>
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "dl/backend/cpu/gemm.hpp"
#include "dl/core/parallel.hpp"
#include "dl/graph/exec.hpp"
#include "dl/graph/sym.hpp"

namespace dl {

namespace graph {

// lhs x rhs, both array-likes, at least one of them symbolic (an NDArray operand is a parameter).
template <class A, class B>
struct SymbolMatmulNode {
  using value_type = typename A::value_type;
  A a;
  B b;
  uint64_t id = detail::next_node_id();
};

template <class A, class B> struct is_symbolic<SymbolMatmulNode<A, B>> : std::true_type {};

}  // namespace graph

template <class A, class B> struct is_expr_node<graph::SymbolMatmulNode<A, B>> : std::true_type {};

// matmul(symbol, symbol) and matmul(array, symbol). (matmul(symbol, NDArray) is sym.hpp's
// MatmulNode; these constraints are stricter than its, so they win where both apply.)
template <ArrayLike A, ArrayLike B>
  requires SymbolExpr<B>
auto matmul(const A& lhs, const B& rhs) {
  static_assert(std::is_same_v<value_type_t<A>, value_type_t<B>>, "matmul: operands have different element types");
  static_assert(Arithmetic<value_type_t<A>>, "matmul: needs an arithmetic element type");
  return graph::SymbolMatmulNode<std::remove_cvref_t<A>, std::remove_cvref_t<B>>{lhs, rhs};
}
template <ArrayLike A, ArrayLike B>
  requires SymbolExpr<A> && SymbolExpr<B>
auto matmul(const A& lhs, const B& rhs) {
  static_assert(std::is_same_v<value_type_t<A>, value_type_t<B>>, "matmul: operands have different element types");
  static_assert(Arithmetic<value_type_t<A>>, "matmul: needs an arithmetic element type");
  return graph::SymbolMatmulNode<std::remove_cvref_t<A>, std::remove_cvref_t<B>>{lhs, rhs};
}

namespace graph {

namespace detail {
// The element offset of batch i of an operand with batch dims `batch_of` (its strides `st`, which
// broadcast to `batch`: stride 0 along the dims it is broadcast over).
inline int64_t batch_offset(int64_t i, const Shape& batch, const Strides& st) {
  int64_t off = 0;
  for (int d = batch.rank() - 1; d >= 0; --d) {
    off += (i % batch[d]) * st[static_cast<size_t>(d)];
    i /= batch[d];
  }
  return off;
}
// A parameter leaf (Exec<NDArray>) as a direct operand: its gradient is written at `step`.
template <class X> void set_grad_step(X& x, int step) {
  if constexpr (requires { x.grad_step; }) x.grad_step = step;
}
}  // namespace detail

template <class A, class B>
struct OpExec<SymbolMatmulNode<A, B>> {
  using T = typename A::value_type;
  SymbolMatmulNode<A, B> node;
  Exec<A> a;
  Exec<B> b;
  Shape shape, batch;
  int64_t M = 0, K = 0, N = 0, batches = 1;
  bool a_broadcast = false, b_broadcast = false;  // fewer batches than the output: gradients accumulate
  bool needs_grad = false;
  int value_id_ = -1, grad_id = -1;
  NDArray<T> value, grad;

  explicit OpExec(const SymbolMatmulNode<A, B>& n) : node(n), a(n.a), b(n.b) {}

  void plan_forward(PlanContext& ctx) {
    a.plan_forward(ctx);
    b.plan_forward(ctx);
    const Shape &sa = a.shape, &sb = b.shape;
    check<ShapeError>(sa.rank() >= 2 && sb.rank() >= 2, "matmul: a compiled matmul of symbols needs operands of rank >= 2, got lhs ",
                      sa, " and rhs ", sb);
    const int ra = sa.rank(), rb = sb.rank();
    M = sa[ra - 2];
    K = sa[ra - 1];
    N = sb[rb - 1];
    check<ShapeError>(K == sb[rb - 2], "matmul: inner dimensions differ: lhs ", sa, " vs rhs ", sb);
    const Shape batch_a(sa.begin(), sa.end() - 2), batch_b(sb.begin(), sb.end() - 2);
    batch = broadcast_shapes(batch_a, batch_b, "matmul");
    batches = batch.numel();
    a_broadcast = batch_a.numel() != batches;
    b_broadcast = batch_b.numel() != batches;
    std::vector<int64_t> dims = batch.vec();
    dims.push_back(M);
    dims.push_back(N);
    shape = Shape(dims);
    ++ctx.op_nodes;
    needs_grad = a.needs_grad || b.needs_grad;
    const int64_t bytes = shape.numel() * static_cast<int64_t>(sizeof(T));
    value_id_ = ctx.memory.add(bytes);
    int step = ctx.memory.next_step();
    for (int id : {value_id_, a.value_id(), b.value_id()}) ctx.memory.use(id, step);
    if (ctx.training && needs_grad) grad_id = ctx.memory.add(bytes);
  }
  void plan_backward(PlanContext& ctx) {
    if (!needs_grad) return;
    int step = ctx.memory.next_step();
    for (int id : {grad_id, a.value_id(), b.value_id(), a.needs_grad ? a.grad_id : -1, b.needs_grad ? b.grad_id : -1})
      ctx.memory.use(id, step);
    detail::set_grad_step(a, step);
    detail::set_grad_step(b, step);
    if (b.needs_grad) b.plan_backward(ctx);
    if (a.needs_grad) a.plan_backward(ctx);
  }
  void bind(PlanContext& ctx) {
    a.bind(ctx);
    b.bind(ctx);
    value = ctx.memory.template view<T>(value_id_, shape);
    if (grad_id >= 0) grad = ctx.memory.template view<T>(grad_id, shape);
  }
  template <class F> void for_each_input(F&& f) {
    a.for_each_input(f);
    b.for_each_input(f);
  }

  // Batch strides of x (any strides; a gradient: contiguous) seen against the output's batch.
  Strides batch_strides(const NDArray<T>& x) const {
    const Shape& s = x.shape();
    return expr::broadcast_strides(Shape(s.begin(), s.end() - 2), x.strides(), batch);
  }
  static cpu::MatrixView<T> matrix(const NDArray<T>& x, int64_t off, bool transposed) {
    const int r = x.rank();
    const int64_t rows = x.shape()[r - 2], cols = x.shape()[r - 1], rs = x.strides()[r - 2], cs = x.strides()[r - 1];
    return transposed ? cpu::MatrixView<T>{x.data() + off, cols, rows, cs, rs} : cpu::MatrixView<T>{x.data() + off, rows, cols, rs, cs};
  }
  // Every batch i: one(i). In parallel over batches (each GEMM then on one thread) unless the
  // batches write the same output (an operand's gradient accumulated over broadcast batches).
  template <class F> void each_batch(bool parallel, F&& one) const {
    if (batches == 1 || !parallel) {
      for (int64_t i = 0; i < batches; ++i) one(i);
      return;
    }
    parallel_for(0, batches, 1, [&](int64_t i0, int64_t i1) { for (int64_t i = i0; i < i1; ++i) one(i); });
  }

  void forward() {
    a.forward();
    b.forward();
    if (value.numel() == 0) return;
    const NDArray<T> &x = a.value, &y = b.value;
    const Strides st_a = batch_strides(x), st_b = batch_strides(y);
    each_batch(true, [&](int64_t i) {
      cpu::gemm(matrix(x, detail::batch_offset(i, batch, st_a), false), matrix(y, detail::batch_offset(i, batch, st_b), false),
                value.data() + i * M * N, N);
    });
  }
  void backward() {
    if (!needs_grad) return;
    const NDArray<T> &x = a.value, &y = b.value;
    const Strides st_a = batch_strides(x), st_b = batch_strides(y);
    auto g = [&](int64_t i) { return cpu::MatrixView<T>{grad.data() + i * M * N, M, N, N, 1}; };
    if (a.needs_grad && a.grad.numel() > 0) {  // dA_i = G_i B_i^T
      NDArray<T> da = a.grad;
      const Strides st = batch_strides(da);
      if (a_broadcast || M * N == 0) std::fill(da.data(), da.data() + da.numel(), T(0));
      if (M * N > 0)
        each_batch(!a_broadcast, [&](int64_t i) {
          cpu::gemm(g(i), matrix(y, detail::batch_offset(i, batch, st_b), true), da.data() + detail::batch_offset(i, batch, st),
                    K, a_broadcast);
        });
    }
    if (b.needs_grad && b.grad.numel() > 0) {  // dB_i = A_i^T G_i
      NDArray<T> db = b.grad;
      const Strides st = batch_strides(db);
      if (b_broadcast || M * N == 0) std::fill(db.data(), db.data() + db.numel(), T(0));
      if (M * N > 0)
        each_batch(!b_broadcast, [&](int64_t i) {
          cpu::gemm(matrix(x, detail::batch_offset(i, batch, st_a), true), g(i), db.data() + detail::batch_offset(i, batch, st),
                    N, b_broadcast);
        });
    }
    if (b.needs_grad) b.backward();
    if (a.needs_grad) a.backward();
  }
  int value_id() const { return value_id_; }
};

template <class A, class B> struct Exec<SymbolMatmulNode<A, B>> : Shared<OpExec<SymbolMatmulNode<A, B>>> {
  using Shared<OpExec<SymbolMatmulNode<A, B>>>::Shared;
};

}  // namespace graph

}  // namespace dl
