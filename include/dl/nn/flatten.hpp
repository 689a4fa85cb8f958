// nn::Flatten: merges the axes from start_axis (default 1, keeping the batch axis) to the end,
// like PyTorch's nn.Flatten. A view when the input is contiguous; the gradient reshapes back.
//
//   dl::nn::Flatten flat;                  // (N, C, H, W) -> (N, C*H*W)
#pragma once
#include "dl/graph/sym.hpp"
#include "dl/nn/module.hpp"
#include "dl/ops/elementwise.hpp"

namespace dl::nn {

class Flatten : public Module {
 public:
  explicit Flatten(int start_axis = 1) : start_axis_(start_axis) {}
  int start_axis() const { return start_axis_; }
  template <class X>
  auto forward(const X& x) {
    static_assert(ArrayLike<X>, "flatten: input must be an NDArray or an elementwise expression");
    if constexpr (graph::is_symbolic_v<X>) {
      return graph::flatten(x, start_axis_);  // a view in the compiled graph
    } else {
    NDArray<value_type_t<X>> a = dl::eval(x);
    a.require_defined("flatten");
    return a.flatten(start_axis_);  // normalize_axis reports a bad axis as "flatten: axis ..."
    }
  }
  template <class X>
  auto operator()(const X& x) { return forward(x); }

 private:
  int start_axis_;
};

}  // namespace dl::nn
