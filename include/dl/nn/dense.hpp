// nn::Dense (alias nn::Linear): y = x W^T + b, a fully connected layer over the last axis.
// W has shape (out, in) and b shape (out,), like PyTorch's Linear, so state_dicts map one to one.
// Default initialisation is PyTorch's: W ~ kaiming_uniform with a = sqrt(5), which is
// U(-1/sqrt(in), 1/sqrt(in)), and b ~ U(-1/sqrt(in), 1/sqrt(in)); pass a Generator to seed it.
//
//   dl::nn::Dense fc(784, 256);                 // weight (256, 784), bias (256,)
//   auto h = fc(x);                             // x (batch, 784) -> (batch, 256); (..., 784) works too
#pragma once
#include <cmath>
#include <cstdint>

#include "dl/graph/sym.hpp"
#include "dl/nn/init.hpp"
#include "dl/nn/module.hpp"
#include "dl/ops/matmul.hpp"

namespace dl::nn {

class Dense : public Module {
 public:
  NDArray<float> weight;  // (out_features, in_features)
  NDArray<float> bias;    // (out_features,); undefined when constructed with bias = false

  Dense(int64_t in_features, int64_t out_features, bool bias = true, Generator& gen = default_generator())
      : in_(in_features), out_(out_features) {
    check<ValueError>(in_features > 0 && out_features > 0, "dense: in_features and out_features must be positive, got (",
                      in_features, ", ", out_features, ")");
    weight = NDArray<float>(Shape{out_features, in_features});
    init::kaiming_uniform(weight, std::sqrt(5.0), init::FanMode::fan_in, gen);
    register_parameter("weight", &Dense::weight);
    if (bias) {
      this->bias = NDArray<float>(Shape{out_features});
      double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
      init::uniform(this->bias, -bound, bound, gen);
      register_parameter("bias", &Dense::bias);
    }
  }

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  bool has_bias() const { return bias.defined(); }

  // The input is an NDArray or elementwise expression of float (eager), or a graph symbol: the
  // same formula as an op node of the compiled graph, with the bias fused into the GEMM.
  template <class X>
  auto forward(const X& x) {
    if constexpr (graph::is_symbolic_v<X>) {
      return graph::linear(x, weight, bias);
    } else {
    static_assert(ArrayLike<X>, "dense: input must be an NDArray or an elementwise expression");
    NDArray<value_type_t<X>> a = dl::eval(x);
    a.require_defined("dense");
    check<ShapeError>(a.rank() >= 1 && a.shape(-1) == in_, "dense: input of shape ", a.shape(),
                      " must have last dimension ", in_, " (in_features)");
    NDArray<value_type_t<X>> y = matmul(a, weight.transpose());
    if (bias.defined()) y = y + bias;  // a fresh array (rebinding y), recorded as one fused node
    return y;
    }
  }
  template <class X>
  auto operator()(const X& x) { return forward(x); }

 private:
  int64_t in_, out_;
};

using Linear = Dense;

}  // namespace dl::nn
