// nn::Dropout(p): dl::dropout while the module is in training mode (module.train()), the identity
// after module.eval(). Masks come from the global generator unless one is given; a given generator
// must outlive the module (the module keeps a pointer to it, which copies share).
//
//   dl::nn::Dropout drop(0.5);
//   auto y = drop(x);      // training: ~half the elements zeroed, the rest doubled
//   drop.eval();
//   auto z = drop(x);      // z is x
#pragma once
#include "dl/graph/sym.hpp"
#include "dl/nn/module.hpp"
#include "dl/ops/dropout.hpp"

namespace dl::nn {

class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5) : p_(p) { check_p(); }
  Dropout(double p, Generator& gen) : p_(p), gen_(&gen) { check_p(); }

  double p() const { return p_; }
  template <class X>
  auto forward(const X& x) {
    static_assert(ArrayLike<X>, "dropout: input must be an NDArray or an elementwise expression");
    return dl::dropout(x, p_, is_training(), gen_ ? *gen_ : default_generator());
  }
  template <class X>
  auto operator()(const X& x) { return forward(x); }

 private:
  void check_p() const { check<ValueError>(p_ >= 0.0 && p_ < 1.0, "dropout: probability p must be in [0, 1), got ", p_); }
  double p_;
  Generator* gen_ = nullptr;
};

}  // namespace dl::nn
