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
struct Exec<Dropout2dNode<A>> : MaskedScaleExec<Exec<Dropout2dNode<A>>, Dropout2dNode<A>, A> {
  using Base = MaskedScaleExec<Exec<Dropout2dNode<A>>, Dropout2dNode<A>, A>;
  using T = typename Base::T;
  int64_t planes = 0, spatial = 0;
  std::vector<T> factor;  // per (n, c) plane: 0 or 1 / (1 - p); sized when planned

  using Base::Base;
  void prepare() {
    const Shape& shape = this->shape;
    check<ShapeError>(shape.rank() >= 3, "dropout2d: expected an input (N, C, ...) of rank >= 3, got ", shape);
    if (!this->active) return;
    planes = shape[0] * shape[1];
    spatial = planes ? shape.numel() / planes : 0;
    factor.assign(static_cast<size_t>(planes), T(0));
  }
  void forward() {
    if (this->forward_identity("dropout2d: a compiled dropout2d needs a contiguous input")) return;
    auto& node = this->node;
    // As eager: one reservation of N * C numbers per call, plane kept iff uniform >= p.
    const PhiloxState state = node.generator->reserve(static_cast<uint64_t>(planes));
    const T keep_scale = node.p < 1 ? static_cast<T>(1.0 / (1.0 - node.p)) : T(0);
    for (int64_t i = 0; i < planes; ++i)
      factor[static_cast<size_t>(i)] = philox_uniform(state, static_cast<uint64_t>(i)) >= node.p ? keep_scale : T(0);
    if (this->value.numel() > 0) dl::detail::scale_planes(this->a.value.data(), this->value.data(), factor, spatial);
  }
  void backward() {
    auto& a = this->a;
    if (this->active && a.needs_grad && this->grad.numel() > 0)
      dl::detail::scale_planes(this->grad.data(), a.grad.data(), factor, spatial);
    if (a.needs_grad) a.backward();
  }
};

}  // namespace graph

}  // namespace dl
