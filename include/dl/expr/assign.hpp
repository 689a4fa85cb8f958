// Materialising expressions: evaluate() runs one fused pass into a new array and, when recording,
// records the whole expression as ONE tape node (FusedNode) whose backward is derived from the
// expression type with the rule table; assign_into() writes into an existing array, alias-safe.
// The node keeps only the leaves whose values its backward reads (expr/leaf_reads.hpp).
#pragma once
#include <array>
#include <optional>
#include <type_traits>

#include "dl/autograd/record.hpp"
#include "dl/expr/executor.hpp"
#include "dl/expr/leaf_reads.hpp"
#if defined(DL_CUDA_ENABLED)
#include "dl/backend/cuda/elementwise.hpp"
#endif

namespace dl {

namespace expr {
// The device of an expression: that of its first leaf (CPU for scalars only).
template <class E>
Device expr_device(const E& e) {
  Device d = Device::cpu();
  bool first = true;
  for_each_leaf(e, [&](const auto& leaf) {
    if (first) d = leaf.device();
    first = false;
  });
  return d;
}

// Runs the fused loop where dst lives: the CPU executor, or (nvcc builds) the CUDA kernel.
template <class T, class E>
void run_assign_on_device(NDArray<T>& dst, const E& e) {
#if defined(DL_CUDA_ENABLED)
  cuda::require_same_device(e, dst.device(), "elementwise");
  if (dst.device().is_cuda()) {
    if constexpr (cuda::kernel_type<T>) return cuda::run_assign(dst, e);
    else fail<DTypeError>("elementwise: this element type has no CUDA kernels (float, double, int32, int64, uint8 have)");
  }
#endif
  run_assign(dst, e);
}

template <class T, class E>
void run_backward_on_device(const E& e, const Shape& shape, const NDArray<T>& gout,
                            const std::array<T*, leaf_count<E>::value>& grads) {
#if defined(DL_CUDA_ENABLED)
  if (gout.device().is_cuda()) {
    if constexpr (cuda::kernel_type<T>) return cuda::run_backward(e, shape, gout, grads);
    else fail<DTypeError>("elementwise: this element type has no CUDA kernels (float, double, int32, int64, uint8 have)");
  }
#endif
  run_backward(e, shape, gout, grads);
}
}  // namespace expr

namespace autograd {

// One recorded node for a whole fused elementwise expression. It keeps the expression (its
// leaves' handles are the saved inputs) and recomputes forward values in registers during backward.
// A leaf whose value no derivative rule reads and whose shape is the output's (a in a + bias, the
// matmul output of a dense layer) is not kept: its handle in `expr` is empty, and backward reads
// the output gradient in its place, valid memory of the right shape whose values no rule uses. A
// broadcast leaf keeps its array: the stand-in would not have its shape.
template <class T, class E>
struct FusedNode : TypedNode<T> {
  static constexpr int kLeaves = leaf_count<E>::value;
  static constexpr std::array<bool, kLeaves> kValueRead = expr::leaf_values_read<E>();
  std::optional<E> expr;
  Shape shape;
  std::array<std::shared_ptr<GradMeta<T>>, kLeaves> metas{};
  std::array<Shape, kLeaves> leaf_shapes{};
  std::array<bool, kLeaves> stand_in{};  // leaves not kept

  void apply() override {
    NDArray<T> g = std::move(this->pending);
    this->pending = NDArray<T>();
    std::array<NDArray<T>, kLeaves> bufs;
    std::array<T*, kLeaves> ptrs{};
    for (int l = 0; l < kLeaves; ++l) {
      if (!metas[l]) continue;
      bufs[l] = NDArray<T>(shape, g.device());
      ptrs[l] = bufs[l].numel() ? bufs[l].data() : nullptr;
    }
    auto with_stand_ins = [&](auto l, const NDArray<T>& leaf) { return stand_in[l] ? g : leaf; };
    expr::run_backward_on_device(expr::replace_leaves(*expr, with_stand_ins), shape, g, ptrs);
    if (is_anomaly_enabled())
      for (int l = 0; l < kLeaves; ++l)
        if (metas[l]) detail::anomaly_check_gradient(detail::fused_name(*expr), bufs[l], static_cast<size_t>(l));
    for (int l = 0; l < kLeaves; ++l)
      if (metas[l]) accumulate(metas[l], dl::detail::sum_to(bufs[l], leaf_shapes[l]));
  }
  void release() override {
    expr.reset();
    this->released = true;
  }
};

}  // namespace autograd

namespace detail {

template <class T, class E>
void record_fused(const E& e, NDArray<T>& out) {
  if constexpr (FloatingPoint<T>) {
    if (!autograd::is_recording()) return;
    bool any = false;
    for_each_leaf(e, [&](const auto& leaf) { any = any || leaf.tracks_grad(); });
    if (!any) return;
    auto node = std::make_shared<autograd::FusedNode<T, E>>();
    node->name = "elementwise";
    if (autograd::is_anomaly_enabled()) {  // check the output; errors name the formula
      std::vector<NDArray<T>> leaves;
      for_each_leaf(e, [&](const auto& leaf) { leaves.push_back(leaf); });
      autograd::detail::anomaly_check_forward(autograd::detail::fused_name(e), out, leaves);
    }
    node->shape = out.shape();
    size_t l = 0;
    for_each_leaf(e, [&](const auto& leaf) {
      if (leaf.tracks_grad()) {
        node->metas[l] = leaf.grad_meta();
        node->note_input(leaf.grad_meta());
      }
      node->leaf_shapes[l] = leaf.shape();
      node->stand_in[l] = !node->kValueRead[l] && leaf.shape() == out.shape();
      if (leaf.grad_fn()) node->next.push_back(leaf.grad_fn());
      ++l;
    });
    auto kept = [&](auto i, const NDArray<T>& leaf) { return node->stand_in[i] ? NDArray<T>() : leaf; };
    node->expr.emplace(expr::replace_leaves(e, kept));
    out.grad_meta() = std::make_shared<autograd::GradMeta<T>>();
    out.grad_meta()->grad_fn = std::move(node);
  }
}

template <class E>
auto evaluate(const E& e) {
  using T = typename E::value_type;
  Shape shape = expr_shape(e);
  NDArray<T> out(shape, expr::expr_device(e));
  expr::run_assign_on_device(out, e);
  record_fused(e, out);
  return out;
}

// Turns a scalar into a ScalarExpr of the array's type; passes arrays and expressions through.
template <class T, class E>
auto as_operand(const E& e) {
  if constexpr (std::is_arithmetic_v<E>) return ScalarExpr<T>{static_cast<T>(e)};
  else return e;
}

// dst = e with e broadcast to dst's shape; never recorded.
template <class T, class E>
void assign_plain(NDArray<T>& dst, const E& e) {
  Shape es = expr_shape(e);
  check<ShapeError>(broadcast_shapes(dst.shape(), es, "assign") == dst.shape(), "assign: cannot write shape ", es,
                    " into an array of shape ", dst.shape());
  NDArray<T> target = dst.detach();
  // An operand that shares memory with dst but is laid out differently (a transpose of it, a
  // shifted slice) would read elements already overwritten: evaluate it into a temporary first.
  bool unsafe = false;
  Strides dst_st = expr::broadcast_strides(dst.shape(), dst.strides(), dst.shape());
  for_each_leaf(e, [&](const auto& leaf) {
    if (leaf.storage() != dst.storage() || leaf.numel() == 0) return;
    bool same = leaf.offset() == dst.offset() && leaf.shape() == dst.shape() &&
                expr::broadcast_strides(leaf.shape(), leaf.strides(), dst.shape()) == dst_st;
    unsafe = unsafe || !same;
  });
  if (unsafe) {
    NDArray<T> tmp(es, dst.device());
    expr::run_assign_on_device(tmp, e);
    expr::run_assign_on_device(target, tmp);
    return;
  }
  expr::run_assign_on_device(target, e);
}

// dst (op)= src for op in {=, +=, -=, *=, /=} (mode 0..4); src is an array, expression or scalar.
template <class T, class E>
void assign_into(NDArray<T>& dst, const E& src, int mode) {
  dst.require_defined("assign");
  auto e = as_operand<T>(src);
  using Operand = decltype(e);
  static_assert(std::is_same_v<typename Operand::value_type, T>,
                "assign: element types differ; convert the right-hand side with cast<T>()");
  check<AutogradError>(!(autograd::is_recording() && dst.tracks_grad()),
                       "assign: in-place update of an array that requires grad while recording; "
                       "compute a new array instead (y = y + x), or update under autograd::pause");
  Shape es = expr_shape(e);
  check<ShapeError>(broadcast_shapes(dst.shape(), es, "assign") == dst.shape(), "assign: cannot write shape ", es,
                    " into an array of shape ", dst.shape());
  NDArray<T> self = dst.detach();
  switch (mode) {
    case 0: return assign_plain(dst, e);
    case 1: return assign_plain(dst, BinaryExpr<prim::Add, NDArray<T>, Operand>{{}, self, e});
    case 2: return assign_plain(dst, BinaryExpr<prim::Sub, NDArray<T>, Operand>{{}, self, e});
    case 3: return assign_plain(dst, BinaryExpr<prim::Mul, NDArray<T>, Operand>{{}, self, e});
    default: return assign_plain(dst, BinaryExpr<prim::Div, NDArray<T>, Operand>{{}, self, e});
  }
}

}  // namespace detail
}  // namespace dl
