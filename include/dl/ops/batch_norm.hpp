// batch_norm over (N, C) or (N, C, H, W) arrays (any (N, C, ...) works), PyTorch's semantics.
// Training normalises with the batch statistics and updates the running statistics in place
// (running_mean <- (1 - momentum) * running_mean + momentum * mean, and the same for running_var
// with the *unbiased* batch variance); those updates are never recorded on the tape. Eval mode
// normalises with the running statistics. gamma and beta (C) may be undefined (no affine part);
// the running statistics may be undefined in training only. Gradients flow to x, gamma and beta.
// Arrays on a CUDA device (all of them on one) run on cuDNN (backend/cuda/cudnn_pool_norm.hpp);
// eval mode's backward there is elementwise ops and sums on the device.
//
//   auto y = dl::batch_norm(x, gamma, beta, running_mean, running_var, /*training=*/true);
#pragma once
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "dl/autograd/record.hpp"
#include "dl/backend/cpu/batch_norm.hpp"
#include "dl/backend/cuda/cudnn_pool_norm.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/ops/elementwise.hpp"
#include "dl/ops/reduce.hpp"

namespace dl {

namespace detail {
template <class T>
void check_channel_vector(const NDArray<T>& v, int64_t channels, const char* what, const Device& device) {
  if (!v.defined()) return;
  if (device.is_cpu())
    require_cpu(v.device(), "batch_norm");
  else
    check<DeviceError>(v.device() == device, "batch_norm: ", what, " is on ", v.device().to_string(), " but the input on ",
                       device.to_string(), "; move it with .to()");
  check<ShapeError>(v.rank() == 1 && v.shape(0) == channels, "batch_norm: ", what, " has shape ", v.shape(),
                    ", expected (", channels, ",)");
}
template <class T>
std::vector<double> channel_values(const NDArray<T>& v, int64_t channels, double fallback) {
  std::vector<double> out(static_cast<size_t>(channels), fallback);
  if (v.defined())
    for (int64_t c = 0; c < channels; ++c) out[static_cast<size_t>(c)] = static_cast<double>(v.data()[c * v.strides()[0]]);
  return out;
}

#if defined(DL_CUDA_ENABLED) && defined(DL_HAVE_CUDNN)
// The GPU branch of batch_norm (arguments already checked; all arrays on x's device). Training:
// cuDNN's forward (running statistics updated in place, a strided one through a contiguous copy)
// and backward from its saved mean and 1 / sqrt(var + eps). Eval: cuDNN's inference forward; the
// backward is elementwise, from the statistics as they were at the forward:
//   dx = g * gamma * invstd,  dgamma = sum(g * (x - mean) * invstd),  dbeta = sum(g)  (over all but C)
template <class T>
NDArray<T> batch_norm_gpu(const NDArray<T>& x, const NDArray<T>& gamma, const NDArray<T>& beta,
                          NDArray<T>& running_mean, NDArray<T>& running_var, bool training, double momentum,
                          double eps) {
  const Device dev = x.device();
  const int64_t C = x.shape(1);
  NDArray<T> xc = x.contiguous().detach();
  NDArray<T> scale = gamma.defined() ? gamma.contiguous().detach() : dl::full<T>(Shape{C}, T(1), dev);
  NDArray<T> bias = beta.defined() ? beta.contiguous().detach() : dl::full<T>(Shape{C}, T(0), dev);
  NDArray<T> out, mean, invstd;  // mean, invstd: (C) on the device, for backward
  if (training) {
    NDArray<T> rm, rv;
    if (running_mean.defined()) {
      rm = running_mean.contiguous().detach();
      rv = running_var.contiguous().detach();
    }
    if (xc.numel() > 0) {
      out = cuda::batch_norm_training_forward(xc, scale, bias, rm.defined() ? rm.data() : nullptr,
                                              rv.defined() ? rv.data() : nullptr, momentum, eps, mean, invstd);
    } else {  // C == 0 (training needs N * S > 1)
      out = NDArray<T>(x.shape(), dev);
      mean = NDArray<T>(Shape{C}, dev);
      invstd = NDArray<T>(Shape{C}, dev);
    }
    autograd::pause no_tape;  // running statistics stay off the tape, as on the CPU
    if (rm.defined() && rm.data() != running_mean.data()) running_mean.assign(rm);
    if (rv.defined() && rv.data() != running_var.data()) running_var.assign(rv);
  } else {
    // The CPU's check, on a host copy of the (C) variances.
    const NDArray<T> host_var = running_var.cpu();
    for (int64_t c = 0; c < C; ++c) {
      const double v = static_cast<double>(host_var.data()[c * host_var.strides()[0]]);
      check<ValueError>(v + eps > 0, "batch_norm: running_var[", c, "] + eps = ", v + eps, " is not positive");
    }
    autograd::pause no_tape;
    mean = running_mean.clone().detach();  // snapshots: later training steps update the running statistics
    invstd = NDArray<T>(dl::rsqrt(running_var.detach() + static_cast<T>(eps)));
    out = cuda::batch_norm_inference_forward(xc, scale, bias, mean, NDArray<T>(running_var.contiguous().detach()), eps);
  }
  std::vector<NDArray<T>> inputs{x};
  if (gamma.defined()) inputs.push_back(gamma);
  if (beta.defined()) inputs.push_back(beta);
  const bool has_gamma = gamma.defined(), has_beta = beta.defined();
  autograd::record_op<T>(
      "batch_norm", inputs, out, [xc, scale, mean, invstd, training, eps, has_gamma, has_beta](const NDArray<T>& g) {
        NDArray<T> gy = g.contiguous(), dx, dgamma, dbeta;
        const int64_t channels = xc.shape(1);
        if (training && xc.numel() > 0) {
          cuda::batch_norm_training_backward(xc, gy, scale, mean, invstd, eps, dx, dgamma, dbeta);
        } else if (training) {
          dx = NDArray<T>(xc.shape(), xc.device());
          dgamma = dl::full<T>(Shape{channels}, T(0), xc.device());
          dbeta = dgamma;
        } else {
          std::vector<int64_t> per_channel(static_cast<size_t>(xc.rank()), 1);
          per_channel[1] = channels;
          std::vector<int> axes{0};
          for (int d = 2; d < xc.rank(); ++d) axes.push_back(d);
          const NDArray<T> m = mean.reshape(per_channel), is = invstd.reshape(per_channel);
          dx = NDArray<T>(gy * NDArray<T>(scale * invstd).reshape(per_channel));
          dgamma = dl::sum(NDArray<T>(gy * (xc - m) * is), axes);
          dbeta = dl::sum(gy, axes);
        }
        std::vector<NDArray<T>> grads{dx};
        if (has_gamma) grads.push_back(dgamma);
        if (has_beta) grads.push_back(dbeta);
        return grads;
      });
  return out;
}
#endif
}  // namespace detail

template <ArrayLike X>
NDArray<value_type_t<X>> batch_norm(const X& input, const NDArray<value_type_t<X>>& gamma,
                                    const NDArray<value_type_t<X>>& beta, NDArray<value_type_t<X>> running_mean,
                                    NDArray<value_type_t<X>> running_var, bool training, double momentum = 0.1,
                                    double eps = 1e-5) {
  using T = value_type_t<X>;
  static_assert(FloatingPoint<T>, "batch_norm: needs a float or double array");
  NDArray<T> x = eval(input);
  x.require_defined("batch_norm");
  const bool gpu = cuda::pool_norm_on_gpu(x.device(), "batch_norm");
  check<ShapeError>(x.rank() >= 2, "batch_norm: expected an (N, C) or (N, C, H, W) input, got ", x.shape());
  const int64_t N = x.shape(0), C = x.shape(1);
  detail::check_channel_vector(gamma, C, "gamma", x.device());
  detail::check_channel_vector(beta, C, "beta", x.device());
  detail::check_channel_vector(running_mean, C, "running_mean", x.device());
  detail::check_channel_vector(running_var, C, "running_var", x.device());
  check<ValueError>(running_mean.defined() == running_var.defined(),
                    "batch_norm: running_mean and running_var must both be given or both be undefined");
  check<ValueError>(training || running_mean.defined(), "batch_norm: eval mode needs running_mean and running_var");
  check<ValueError>(std::isfinite(eps) && eps >= 0, "batch_norm: eps must be non-negative, got ", eps);
  check<ValueError>(momentum >= 0 && momentum <= 1, "batch_norm: momentum must be in [0, 1], got ", momentum);
  cpu::BatchNormGeometry geo{N, C, C > 0 && N > 0 ? x.numel() / (N * C) : 0};
  if (geo.spatial == 0) {  // an empty (N, C, 0, ...) array still has a spatial size
    geo.spatial = 1;
    for (int d = 2; d < x.rank(); ++d) geo.spatial *= x.shape(d);
  }
  const int64_t M = geo.per_channel();
  check<ValueError>(!training || M > 1, "batch_norm: training needs more than one value per channel, got input ",
                    x.shape());
#if defined(DL_CUDA_ENABLED) && defined(DL_HAVE_CUDNN)
  if (gpu) return detail::batch_norm_gpu(x, gamma, beta, running_mean, running_var, training, momentum, eps);
#endif
  (void)gpu;

  NDArray<T> xc = x.contiguous().detach();
  auto mean = std::make_shared<std::vector<double>>(static_cast<size_t>(C));
  auto invstd = std::make_shared<std::vector<double>>(static_cast<size_t>(C));
  if (training) {
    std::vector<double> var(static_cast<size_t>(C));
    if (M > 0) cpu::batch_norm_stats(xc.data(), geo, mean->data(), var.data());
    for (int64_t c = 0; c < C; ++c) {
      auto i = static_cast<size_t>(c);
      (*invstd)[i] = 1.0 / std::sqrt(var[i] + eps);
      if (running_mean.defined()) {  // in place, outside the tape
        T& rm = running_mean.data()[c * running_mean.strides()[0]];
        T& rv = running_var.data()[c * running_var.strides()[0]];
        double unbiased = var[i] * static_cast<double>(M) / static_cast<double>(M - 1);
        rm = static_cast<T>((1 - momentum) * rm + momentum * (*mean)[i]);
        rv = static_cast<T>((1 - momentum) * rv + momentum * unbiased);
      }
    }
  } else {
    *mean = detail::channel_values(running_mean, C, 0.0);
    std::vector<double> var = detail::channel_values(running_var, C, 1.0);
    for (size_t i = 0; i < var.size(); ++i) {
      check<ValueError>(var[i] + eps > 0, "batch_norm: running_var[", i, "] + eps = ", var[i] + eps,
                        " is not positive");
      (*invstd)[i] = 1.0 / std::sqrt(var[i] + eps);
    }
  }
  auto gamma_v = std::make_shared<std::vector<double>>(detail::channel_values(gamma, C, 1.0));
  std::vector<double> beta_v = detail::channel_values(beta, C, 0.0), scale(static_cast<size_t>(C)), shift(scale);
  for (size_t i = 0; i < scale.size(); ++i) {
    scale[i] = (*gamma_v)[i] * (*invstd)[i];
    shift[i] = beta_v[i] - (*mean)[i] * scale[i];
  }
  NDArray<T> out(x.shape());
  if (out.numel() > 0) cpu::batch_norm_apply(xc.data(), out.data(), geo, scale.data(), shift.data());

  std::vector<NDArray<T>> inputs{x};
  if (gamma.defined()) inputs.push_back(gamma);
  if (beta.defined()) inputs.push_back(beta);
  bool need_x = x.tracks_grad(), need_gamma = gamma.defined() && gamma.tracks_grad(),
       need_beta = beta.defined() && beta.tracks_grad(), has_gamma = gamma.defined(), has_beta = beta.defined();
  autograd::record_op<T>("batch_norm", inputs, out,
                         [xc, geo, mean, invstd, gamma_v, training, need_x, need_gamma, need_beta, has_gamma,
                          has_beta](const NDArray<T>& g) {
                           NDArray<T> gy = g.contiguous();
                           NDArray<T> dx = need_x ? NDArray<T>(xc.shape()) : NDArray<T>();
                           NDArray<T> dgamma = need_gamma ? NDArray<T>(Shape{geo.channels}) : NDArray<T>();
                           NDArray<T> dbeta = need_beta ? NDArray<T>(Shape{geo.channels}) : NDArray<T>();
                           if (geo.channels > 0)
                             cpu::batch_norm_backward(xc.numel() ? xc.data() : nullptr, gy.numel() ? gy.data() : nullptr,
                                                      geo, mean->data(), invstd->data(), gamma_v->data(), training,
                                                      need_x ? dx.data() : nullptr, need_gamma ? dgamma.data() : nullptr,
                                                      need_beta ? dbeta.data() : nullptr);
                           std::vector<NDArray<T>> grads{dx};
                           if (has_gamma) grads.push_back(dgamma);
                           if (has_beta) grads.push_back(dbeta);
                           return grads;
                         });
  return out;
}

}  // namespace dl
