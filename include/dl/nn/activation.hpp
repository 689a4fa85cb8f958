// Activation modules: ReLU, Tanh, Sigmoid, GELU (tanh approximation, as dl::gelu) and LeakyReLU.
// They hold no parameters; each wraps the elementwise operator of the same name so it can stand
// in a Sequential. The result is materialised (one fused pass), so `net(x)` is always an NDArray.
//
//   dl::nn::Sequential net{dl::nn::Dense(4, 8), dl::nn::LeakyReLU(0.2), dl::nn::Dense(8, 1)};
#pragma once
#include <cmath>

#include "dl/graph/sym.hpp"
#include "dl/nn/module.hpp"
#include "dl/ops/elementwise.hpp"

namespace dl::nn {

#define DL_NN_ACTIVATION(Name, fn)                                                  \
  class Name : public Module {                                                      \
   public:                                                                          \
    template <class X>                                                              \
    auto forward(const X& x) {                                                      \
      static_assert(ArrayLike<X>, #Name ": input must be an NDArray or an expression");\
      if constexpr (graph::is_symbolic_v<X>) return dl::fn(x); /* a graph node */   \
      else return NDArray<value_type_t<X>>(dl::fn(x));                              \
    }                                                                               \
    template <class X>                                                              \
    auto operator()(const X& x) { return forward(x); }                              \
  };
DL_NN_ACTIVATION(ReLU, relu)
DL_NN_ACTIVATION(Tanh, tanh)
DL_NN_ACTIVATION(Sigmoid, sigmoid)
DL_NN_ACTIVATION(GELU, gelu)
#undef DL_NN_ACTIVATION

// max(x, 0) + slope * min(x, 0); slope 0.01 by default, like PyTorch.
class LeakyReLU : public Module {
 public:
  explicit LeakyReLU(double negative_slope = 0.01) : slope_(negative_slope) {
    check<ValueError>(std::isfinite(negative_slope), "leaky_relu: negative_slope must be finite, got ", negative_slope);
  }
  double negative_slope() const { return slope_; }
  template <class X>
  auto forward(const X& x) {
    static_assert(ArrayLike<X>, "LeakyReLU: input must be an NDArray or an expression");
    if constexpr (graph::is_symbolic_v<X>) return dl::leaky_relu(x, slope_);  // a graph node
    else return NDArray<value_type_t<X>>(dl::leaky_relu(x, slope_));
  }
  template <class X>
  auto operator()(const X& x) { return forward(x); }

 private:
  double slope_;
};

}  // namespace dl::nn
