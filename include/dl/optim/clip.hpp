// clip_grad_norm(params, max_norm): scales all gradients together so that their global L2 norm
// (over every element of every gradient, as if concatenated) is at most max_norm, and returns the
// norm before clipping. Like PyTorch, the scale is max_norm / (norm + 1e-6) and is applied only
// when it is below 1. Parameters without a gradient buffer are skipped. A non-finite norm is
// returned as is and nothing is scaled (check the return value to skip such a step).
//
//   double norm = dl::optim::clip_grad_norm(net.parameters(), 1.0);
#pragma once
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "dl/autograd/record.hpp"
#include "dl/core/parallel.hpp"
#include "dl/expr/assign.hpp"
#include "dl/ops/elementwise.hpp"  // the tape accumulates gradients with operator+

namespace dl::optim {

inline double clip_grad_norm(const std::vector<NDArray<float>>& params, double max_norm) {
  check<ValueError>(max_norm >= 0 && std::isfinite(max_norm), "clip_grad_norm: max_norm must be non-negative and finite, got ",
                    max_norm);
  autograd::pause no_tape;
  std::vector<NDArray<float>> grads;
  for (const auto& p : params) {
    const auto& m = p.grad_meta();
    if (m && m->requires_grad && m->grad.defined() && m->grad.numel() > 0) {
      require_cpu(m->grad.device(), "clip_grad_norm");
      grads.push_back(m->grad);
    }
  }
  // Sum of squares in double, serially per array (deterministic for any thread count).
  double total = 0;
  for (const auto& g : grads)
    for_each_element(g, [&](float* x) { total += static_cast<double>(*x) * static_cast<double>(*x); });
  double norm = std::sqrt(total);
  if (!std::isfinite(norm)) return norm;
  double scale = max_norm / (norm + 1e-6);
  if (scale < 1.0)
    for (auto& g : grads) {
      NDArray<float> dst = g;
      dst *= static_cast<float>(scale);
    }
  return norm;
}

inline double clip_grad_norm(const std::vector<std::pair<std::string, NDArray<float>>>& params, double max_norm) {
  std::vector<NDArray<float>> plain;
  for (const auto& [name, p] : params) plain.push_back(p);
  return clip_grad_norm(plain, max_norm);
}

}  // namespace dl::optim
