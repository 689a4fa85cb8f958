// optim::RMSProp (Hinton's lecture 6e; PyTorch's non-centred form). For parameter p with gradient g:
//
//   g   = g + weight_decay * p
//   v   = alpha * v + (1 - alpha) * g^2                       (v starts at 0; name square_avg)
//   buf = momentum * buf + g / (sqrt(v) + eps)               (with momentum > 0; momentum_buffer)
//   p   = p - lr * buf         or, without momentum,   p = p - lr * g / (sqrt(v) + eps)
//
//   dl::optim::RMSProp opt(net.named_parameters(), 1e-2);    // alpha 0.99, eps 1e-8, momentum 0
#pragma once
#include <cmath>

#include "dl/core/parallel.hpp"
#include "dl/optim/optimizer.hpp"

namespace dl::optim {

class RMSProp : public Optimizer {
 public:
  RMSProp(NamedParameters params, double lr = 1e-2, double alpha = 0.99, double eps = 1e-8, double momentum = 0.0,
          double weight_decay = 0.0)
      : Optimizer("rmsprop", std::move(params), lr,
                  momentum > 0 ? std::vector<std::string>{"square_avg", "momentum_buffer"}
                               : std::vector<std::string>{"square_avg"}),
        alpha_(alpha), eps_(eps), momentum_(momentum), weight_decay_(weight_decay) {
    check<ValueError>(alpha >= 0 && alpha < 1, "rmsprop: alpha must be in [0, 1), got ", alpha);
    check<ValueError>(eps >= 0 && std::isfinite(eps), "rmsprop: eps must be non-negative, got ", eps);
    check<ValueError>(momentum >= 0 && momentum < 1, "rmsprop: momentum must be in [0, 1), got ", momentum);
    check<ValueError>(weight_decay >= 0 && std::isfinite(weight_decay), "rmsprop: weight_decay must be non-negative, got ",
                      weight_decay);
  }
  RMSProp(const std::vector<NDArray<float>>& params, double lr = 1e-2, double alpha = 0.99, double eps = 1e-8,
          double momentum = 0.0, double weight_decay = 0.0)
      : RMSProp(name_by_index(params), lr, alpha, eps, momentum, weight_decay) {}

  double alpha() const { return alpha_; }
  double eps() const { return eps_; }
  double momentum() const { return momentum_; }
  double weight_decay() const { return weight_decay_; }

 protected:
  void update(size_t index, float* p, const float* g, int64_t n, int64_t) override {
    const float lr = static_cast<float>(this->lr()), a = static_cast<float>(alpha_), e = static_cast<float>(eps_),
                mu = static_cast<float>(momentum_), wd = static_cast<float>(weight_decay_);
    float* v = slot(index, 0);
    float* buf = momentum_ > 0 ? slot(index, 1) : nullptr;
    parallel_for(0, n, 16384, [&](int64_t b, int64_t end) {
      for (int64_t i = b; i < end; ++i) {
        float gi = g[i] + wd * p[i];
        v[i] = a * v[i] + (1.0f - a) * gi * gi;
        float d = gi / (std::sqrt(v[i]) + e);
        if (buf) {
          buf[i] = mu * buf[i] + d;
          d = buf[i];
        }
        p[i] -= lr * d;
      }
    });
  }

 private:
  double alpha_, eps_, momentum_, weight_decay_;
};

}  // namespace dl::optim
