// local_response_norm: normalisation across neighbouring channels (AlexNet), PyTorch's formula
//   y[n, c, ...] = x[n, c, ...] / (k + alpha / size * sum of x[n, c', ...]^2 over the `size`
//                  channels c' in [c - size/2, c + (size-1)/2])^beta
// (channels outside [0, C) count as zeros). Input (N, C, ...) of rank >= 3; gradient for x.
// Kernels are backend/cpu/lrn.hpp.
//
//   auto y = dl::local_response_norm(x, 5, 1e-4, 0.75, 2.0);  // AlexNet's settings
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "dl/autograd/record.hpp"
#include "dl/backend/cpu/lrn.hpp"
#include "dl/ops/elementwise.hpp"

namespace dl {

template <ArrayLike X>
NDArray<value_type_t<X>> local_response_norm(const X& input, int64_t size, double alpha = 1e-4, double beta = 0.75,
                                             double k = 2.0) {
  using T = value_type_t<X>;
  static_assert(FloatingPoint<T>, "local_response_norm: needs a float or double array");
  NDArray<T> x = eval(input);
  x.require_defined("local_response_norm");
  require_cpu(x.device(), "local_response_norm");
  check<ShapeError>(x.rank() >= 3, "local_response_norm: expected an input (N, C, ...) of rank >= 3, got ", x.shape());
  check<ValueError>(size >= 1, "local_response_norm: size must be positive, got ", size);
  // alpha >= 0 and k > 0 keep the base of the power positive.
  check<ValueError>(std::isfinite(alpha) && alpha >= 0, "local_response_norm: alpha must be non-negative, got ", alpha);
  check<ValueError>(std::isfinite(k) && k > 0, "local_response_norm: k must be positive, got ", k);
  check<ValueError>(std::isfinite(beta), "local_response_norm: beta must be finite, got ", beta);
  cpu::LrnParams p{x.shape(0), x.shape(1), 1, size, alpha, beta, k};
  for (int d = 2; d < x.rank(); ++d) p.spatial *= x.shape(d);
  NDArray<T> xc = x.contiguous().detach();
  NDArray<T> out(x.shape()), scale(x.shape());
  if (out.numel() > 0) cpu::lrn_forward(xc.data(), out.data(), scale.data(), p);
  autograd::record_op<T>("local_response_norm", {x}, out, [xc, y = out.detach(), scale, p](const NDArray<T>& g) {
    NDArray<T> dx(xc.shape());
    if (dx.numel() > 0) {
      NDArray<T> gy = g.contiguous(), work(xc.shape());
      cpu::lrn_backward(xc.data(), y.data(), scale.data(), gy.data(), dx.data(), work.data(), p);
    }
    return std::vector<NDArray<T>>{dx};
  });
  return out;
}

}  // namespace dl
