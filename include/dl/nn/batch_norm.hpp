// nn::BatchNorm2d: batch normalisation over the channels of an (N, C, H, W) array, PyTorch's
// BatchNorm2d. Parameters `weight` (gamma, ones) and `bias` (beta, zeros); buffers `running_mean`
// (zeros) and `running_var` (ones), saved in state_dict but not trained. In training mode
// (is_training()) it normalises with the batch statistics and updates the running ones
// (r <- (1 - momentum) r + momentum * batch statistic, unbiased variance); in eval mode it
// normalises with the running statistics. The arithmetic is dl::batch_norm (ops/batch_norm.hpp).
// A checkpoint recomputation (autograd::is_recomputing()) uses the batch statistics again but does
// not update the running ones a second time.
//
//   dl::nn::BatchNorm2d bn(16);                // weight, bias, running_mean, running_var: (16,)
//   auto y = bn(conv(x));                      // train mode: batch statistics
//   net.eval(); auto z = bn(conv(x));          // eval mode: running statistics
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "dl/autograd/checkpoint.hpp"
#include "dl/graph/sym.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/nn/module.hpp"
#include "dl/ops/batch_norm.hpp"

namespace dl::nn {

class BatchNorm2d : public Module {
 public:
  NDArray<float> weight;        // gamma (C,), trained
  NDArray<float> bias;          // beta (C,), trained
  NDArray<float> running_mean;  // (C,), buffer
  NDArray<float> running_var;   // (C,), buffer

  explicit BatchNorm2d(int64_t channels, double momentum = 0.1, double eps = 1e-5)
      : channels_(channels), momentum_(momentum), eps_(eps) {
    check<ValueError>(channels > 0, "BatchNorm2d: channels must be positive, got ", channels);
    check<ValueError>(momentum >= 0 && momentum <= 1, "BatchNorm2d: momentum must be in [0, 1], got ", momentum);
    check<ValueError>(std::isfinite(eps) && eps >= 0, "BatchNorm2d: eps must be non-negative, got ", eps);
    weight = ones<float>({channels});
    bias = zeros<float>({channels});
    running_mean = zeros<float>({channels});
    running_var = ones<float>({channels});
    register_parameter("weight", &BatchNorm2d::weight);
    register_parameter("bias", &BatchNorm2d::bias);
    register_buffer("running_mean", &BatchNorm2d::running_mean);
    register_buffer("running_var", &BatchNorm2d::running_var);
  }

  int64_t num_features() const { return channels_; }
  double momentum() const { return momentum_; }
  double eps() const { return eps_; }

  // x (N, C, H, W) of float -> same shape.
  template <class X>
  auto forward(const X& x) {
    static_assert(ArrayLike<X>, "BatchNorm2d: input must be an NDArray or an elementwise expression");
    static_assert(std::is_same_v<value_type_t<X>, float>, "BatchNorm2d: input must be float, like the parameters");
    if constexpr (graph::is_symbolic_v<X>) {  // a node of the compiled graph; the mode is fixed at tracing
      return dl::batch_norm(x, weight, bias, running_mean, running_var, is_training(), momentum_, eps_);
    } else {
    NDArray<float> a = dl::eval(x);
    a.require_defined("BatchNorm2d");
    check<ShapeError>(a.rank() == 4 && a.shape(1) == channels_, "BatchNorm2d: input of shape ", a.shape(),
                      " must be (N, ", channels_, ", H, W) (channels ", channels_, ")");
    // The running statistics are handles sharing the module's storage: batch_norm updates them in place.
    // Recomputing (checkpoint backward): the step already updated them, so pass none.
    if (is_training() && autograd::is_recomputing())
      return batch_norm(a, weight, bias, NDArray<float>(), NDArray<float>(), true, momentum_, eps_);
    return batch_norm(a, weight, bias, running_mean, running_var, is_training(), momentum_, eps_);
    }
  }
  template <class X>
  auto operator()(const X& x) { return forward(x); }

 private:
  int64_t channels_;
  double momentum_, eps_;
};

}  // namespace dl::nn
