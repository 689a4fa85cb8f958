// optim::Adam (Kingma & Ba 2015) with L2 weight decay folded into the gradient, and optim::AdamW
// (Loshchilov & Hutter 2019) with decoupled weight decay; PyTorch's formulas. For parameter p with
// gradient g at its t-th update (t = 1, 2, ...):
//
//   Adam:  g = g + weight_decay * p
//   AdamW: p = p * (1 - lr * weight_decay)          (decay applied to p, not mixed into g)
//   m = beta1 * m + (1 - beta1) * g                  (m, v start at 0; names exp_avg, exp_avg_sq)
//   v = beta2 * v + (1 - beta2) * g^2
//   p = p - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
//
//   dl::optim::AdamW opt(net.named_parameters(), 1e-3);   // betas (0.9, 0.999), eps 1e-8, decay 0.01
#pragma once
#include <cmath>

#include "dl/core/parallel.hpp"
#include "dl/optim/optimizer.hpp"

namespace dl::optim {

namespace detail {
inline void check_adam_hyper(const char* op, double beta1, double beta2, double eps, double weight_decay) {
  check<ValueError>(beta1 >= 0 && beta1 < 1, op, ": beta1 must be in [0, 1), got ", beta1);
  check<ValueError>(beta2 >= 0 && beta2 < 1, op, ": beta2 must be in [0, 1), got ", beta2);
  check<ValueError>(eps >= 0 && std::isfinite(eps), op, ": eps must be non-negative, got ", eps);
  check<ValueError>(weight_decay >= 0 && std::isfinite(weight_decay), op, ": weight_decay must be non-negative, got ",
                    weight_decay);
}

// One fused pass for Adam (decoupled = false) and AdamW (decoupled = true).
inline void adam_update(float* p, const float* g, float* m, float* v, int64_t n, int64_t step, double lr, double beta1,
                        double beta2, double eps, double weight_decay, bool decoupled) {
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  const float step_size = static_cast<float>(lr / bc1), inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  const float b1 = static_cast<float>(beta1), b2 = static_cast<float>(beta2), e = static_cast<float>(eps);
  const float l2 = decoupled ? 0.0f : static_cast<float>(weight_decay);
  const float shrink = decoupled ? static_cast<float>(1.0 - lr * weight_decay) : 1.0f;
  // Captured by value with restrict-qualified pointers so the loop vectorises.
  parallel_for(0, n, 16384, [=](int64_t b, int64_t end) {
    float* __restrict pp = p;
    const float* __restrict gg = g;
    float* __restrict mm = m;
    float* __restrict vv = v;
    for (int64_t i = b; i < end; ++i) {
      float gi = gg[i] + l2 * pp[i];
      float pi = pp[i] * shrink;
      mm[i] = b1 * mm[i] + (1.0f - b1) * gi;
      vv[i] = b2 * vv[i] + (1.0f - b2) * gi * gi;
      pp[i] = pi - step_size * mm[i] / (std::sqrt(vv[i]) * inv_sqrt_bc2 + e);
    }
  });
}
}  // namespace detail

class Adam : public Optimizer {
 public:
  Adam(NamedParameters params, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
       double weight_decay = 0.0)
      : Adam("adam", std::move(params), lr, beta1, beta2, eps, weight_decay, false) {}
  Adam(const std::vector<NDArray<float>>& params, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999,
       double eps = 1e-8, double weight_decay = 0.0)
      : Adam(name_by_index(params), lr, beta1, beta2, eps, weight_decay) {}

  double beta1() const { return beta1_; }
  double beta2() const { return beta2_; }
  double eps() const { return eps_; }
  double weight_decay() const { return weight_decay_; }

 protected:
  Adam(const char* name, NamedParameters params, double lr, double beta1, double beta2, double eps, double weight_decay,
       bool decoupled)
      : Optimizer(name, std::move(params), lr, {"exp_avg", "exp_avg_sq"}),
        beta1_(beta1), beta2_(beta2), eps_(eps), weight_decay_(weight_decay), decoupled_(decoupled) {
    detail::check_adam_hyper(name, beta1, beta2, eps, weight_decay);
  }
  void update(size_t index, float* p, const float* g, int64_t n, int64_t step) override {
    detail::adam_update(p, g, slot(index, 0), slot(index, 1), n, step, lr(), beta1_, beta2_, eps_, weight_decay_,
                        decoupled_);
  }

 private:
  double beta1_, beta2_, eps_, weight_decay_;
  bool decoupled_;
};

class AdamW : public Adam {
 public:
  AdamW(NamedParameters params, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weight_decay = 1e-2)
      : Adam("adamw", std::move(params), lr, beta1, beta2, eps, weight_decay, true) {}
  AdamW(const std::vector<NDArray<float>>& params, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999,
        double eps = 1e-8, double weight_decay = 1e-2)
      : AdamW(name_by_index(params), lr, beta1, beta2, eps, weight_decay) {}
};

}  // namespace dl::optim
