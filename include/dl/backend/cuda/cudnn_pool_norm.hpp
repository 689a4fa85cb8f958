// cuDNN pooling and batch normalisation, forward and backward, on the device's compute stream: the
// GPU branch of ops/pool.hpp (max_pool2d, avg_pool2d) and ops/batch_norm.hpp. NCHW, float or
// double. dl's semantics map onto cuDNN's one to one:
//
//   max_pool2d            CUDNN_POOLING_MAX_DETERMINISTIC, NaN propagated (a NaN wins, as on the CPU)
//   avg_pool2d            CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING / _EXCLUDE_PADDING (count_include_pad)
//   output size           floor((H + 2 * pad - kernel) / stride) + 1 on both (dl has no ceil_mode)
//   batch_norm training   ForwardTraining (exponentialAverageFactor = dl's momentum; the running
//                         variance takes the unbiased batch variance on both) + Backward
//   batch_norm eval       ForwardInference (its backward is elementwise: ops/batch_norm.hpp)
//
// A batch-norm input (N, C, d1, ...) is described to cuDNN as (N, C, d1 * ..., 1). Where a max
// pooling window holds tied maxima, the CPU sends the gradient to the first one and cuDNN to one
// of its choice. Needs DL_HAVE_CUDNN (meson defines it when cuDNN is found).
#pragma once
#include <climits>
#include <cstdint>

#include "dl/backend/cpu/pool.hpp"  // Pool2dGeometry
#include "dl/backend/cuda/cudnn.hpp"
#include "dl/core/device.hpp"

namespace dl::cuda {

// True when `op` runs on the GPU for an array on `d`: a CUDA device in a cuDNN build. A CUDA
// array in a CUDA build without cuDNN is a DeviceError naming `op`; a CPU-only build raises
// require_cpu's error, as before.
inline bool pool_norm_on_gpu(const Device& d, const char* op) {
  if (d.is_cpu()) return false;
#if defined(DL_CUDA_ENABLED) && defined(DL_HAVE_CUDNN)
  (void)op;
  return true;
#elif defined(DL_CUDA_ENABLED)
  fail<DeviceError>(op, ": array is on ", d.to_string(),
                    " but this build has no cuDNN, which runs this op on the GPU; install cuDNN and rebuild "
                    "(meson then defines DL_HAVE_CUDNN), or move the array to the CPU");
#else
  require_cpu(d, op);
  return false;
#endif
}

#if defined(DL_CUDA_ENABLED) && defined(DL_HAVE_CUDNN)

struct PoolingDesc {
  cudnnPoolingDescriptor_t d = nullptr;
  PoolingDesc() { check_cudnn(cudnnCreatePoolingDescriptor(&d), "cudnnCreatePoolingDescriptor"); }
  ~PoolingDesc() { cudnnDestroyPoolingDescriptor(d); }
  PoolingDesc(const PoolingDesc&) = delete;
  PoolingDesc& operator=(const PoolingDesc&) = delete;
};

enum class PoolMode { max, avg_include_pad, avg_exclude_pad };

namespace detail {

inline int dnn_int(int64_t v, const char* op) {
  check<DeviceError>(v <= INT_MAX, op, ": dimension ", v, " is too large for cuDNN (at most ", INT_MAX, ")");
  return static_cast<int>(v);
}

template <class T>
void set_nchw(TensorDesc& t, int64_t n, int64_t c, int64_t h, int64_t w, const char* op) {
  check_cudnn(cudnnSetTensor4dDescriptor(t.d, CUDNN_TENSOR_NCHW, dnn_type<T>(), dnn_int(n, op), dnn_int(c, op),
                                         dnn_int(h, op), dnn_int(w, op)),
              "cudnnSetTensor4dDescriptor");
}

// The pooling window and the x (N, C, H, W) / y (N, C, OH, OW) descriptors of one call.
template <class T>
void set_pooling(PoolingDesc& p, TensorDesc& xd, TensorDesc& yd, const Shape& x_shape, const cpu::Pool2dGeometry& g,
                 PoolMode m) {
  const char* op = m == PoolMode::max ? "cudnn max_pool2d" : "cudnn avg_pool2d";
  const cudnnPoolingMode_t mode = m == PoolMode::max               ? CUDNN_POOLING_MAX_DETERMINISTIC
                                  : m == PoolMode::avg_include_pad ? CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING
                                                                   : CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING;
  check_cudnn(cudnnSetPooling2dDescriptor(p.d, mode, CUDNN_PROPAGATE_NAN, dnn_int(g.kernel_h, op),
                                          dnn_int(g.kernel_w, op), dnn_int(g.pad_h, op), dnn_int(g.pad_w, op),
                                          dnn_int(g.stride_h, op), dnn_int(g.stride_w, op)),
              "cudnnSetPooling2dDescriptor");
  set_nchw<T>(xd, x_shape[0], x_shape[1], g.in_h, g.in_w, op);
  set_nchw<T>(yd, x_shape[0], x_shape[1], g.out_h, g.out_w, op);
}

}  // namespace detail

// y (N, C, OH, OW) from a contiguous device x (N, C, H, W); the geometry comes from ops/pool.hpp's checks.
template <class T>
NDArray<T> pool2d_forward(const NDArray<T>& x, const cpu::Pool2dGeometry& g, PoolMode m) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "cudnn pooling: needs float or double");
  NDArray<T> y(Shape{x.shape(0), x.shape(1), g.out_h, g.out_w}, x.device());
  if (y.numel() == 0) return y;
  const int dev = x.device().index;
  DeviceGuard guard(dev);
  PoolingDesc p;
  TensorDesc xd, yd;
  detail::set_pooling<T>(p, xd, yd, x.shape(), g, m);
  const T one = T(1), zero = T(0);
  check_cudnn(cudnnPoolingForward(dnn_handle(dev), p.d, &one, xd.d, x.data(), &zero, yd.d, y.data()),
              "cudnnPoolingForward");
  return y;
}

// dx (N, C, H, W) from the forward's contiguous x and y and a contiguous dy, all on one device.
template <class T>
NDArray<T> pool2d_backward(const NDArray<T>& x, const NDArray<T>& y, const NDArray<T>& dy, const cpu::Pool2dGeometry& g,
                           PoolMode m) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "cudnn pooling: needs float or double");
  NDArray<T> dx(x.shape(), x.device());
  if (dx.numel() == 0) return dx;
  const int dev = x.device().index;
  DeviceGuard guard(dev);
  if (y.numel() == 0) {  // no window: no gradient
    DL_CUDA_CHECK(cudaMemsetAsync(dx.data(), 0, static_cast<size_t>(dx.numel()) * sizeof(T), compute_stream(dev)));
    return dx;
  }
  PoolingDesc p;
  TensorDesc xd, yd;
  detail::set_pooling<T>(p, xd, yd, x.shape(), g, m);
  const T one = T(1), zero = T(0);
  check_cudnn(cudnnPoolingBackward(dnn_handle(dev), p.d, &one, yd.d, y.data(), yd.d, dy.data(), xd.d, x.data(), &zero,
                                   xd.d, dx.data()),
              "cudnnPoolingBackward");
  return dx;
}

namespace detail {
// x as (N, C, S, 1) and the derived per-channel (1, C, 1, 1) descriptor of scale, bias and statistics.
template <class T>
void set_batch_norm(TensorDesc& xd, TensorDesc& pd, const Shape& s, double eps) {
  const char* op = "cudnn batch_norm";
  check<ValueError>(eps >= CUDNN_BN_MIN_EPSILON, op, ": eps ", eps, " is below cuDNN's minimum ", CUDNN_BN_MIN_EPSILON);
  int64_t spatial = 1;
  for (int d = 2; d < s.rank(); ++d) spatial *= s[d];
  set_nchw<T>(xd, s[0], s[1], spatial, 1, op);
  check_cudnn(cudnnDeriveBNTensorDescriptor(pd.d, xd.d, CUDNN_BATCHNORM_SPATIAL), "cudnnDeriveBNTensorDescriptor");
}
}  // namespace detail

// Training forward over a contiguous non-empty device x (N, C, ...) with contiguous (C) scale and
// bias. Updates running_mean / running_var in place when given (both or neither, contiguous (C)),
// and fills save_mean / save_invstd (C): the batch mean and 1 / sqrt(biased variance + eps).
template <class T>
NDArray<T> batch_norm_training_forward(const NDArray<T>& x, const NDArray<T>& scale, const NDArray<T>& bias,
                                       T* running_mean, T* running_var, double momentum, double eps,
                                       NDArray<T>& save_mean, NDArray<T>& save_invstd) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "cudnn batch_norm: needs float or double");
  const int64_t C = x.shape(1);
  NDArray<T> y(x.shape(), x.device());
  save_mean = NDArray<T>(Shape{C}, x.device());
  save_invstd = NDArray<T>(Shape{C}, x.device());
  const int dev = x.device().index;
  DeviceGuard guard(dev);
  TensorDesc xd, pd;
  detail::set_batch_norm<T>(xd, pd, x.shape(), eps);
  const T one = T(1), zero = T(0);
  check_cudnn(cudnnBatchNormalizationForwardTraining(dnn_handle(dev), CUDNN_BATCHNORM_SPATIAL, &one, &zero, xd.d,
                                                     x.data(), xd.d, y.data(), pd.d, scale.data(), bias.data(),
                                                     momentum, running_mean, running_var, eps, save_mean.data(),
                                                     save_invstd.data()),
              "cudnnBatchNormalizationForwardTraining");
  return y;
}

// Eval forward: y = scale * (x - mean) / sqrt(var + eps) + bias with the given (C) statistics.
template <class T>
NDArray<T> batch_norm_inference_forward(const NDArray<T>& x, const NDArray<T>& scale, const NDArray<T>& bias,
                                        const NDArray<T>& mean, const NDArray<T>& var, double eps) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "cudnn batch_norm: needs float or double");
  NDArray<T> y(x.shape(), x.device());
  if (y.numel() == 0) return y;
  const int dev = x.device().index;
  DeviceGuard guard(dev);
  TensorDesc xd, pd;
  detail::set_batch_norm<T>(xd, pd, x.shape(), eps);
  const T one = T(1), zero = T(0);
  check_cudnn(cudnnBatchNormalizationForwardInference(dnn_handle(dev), CUDNN_BATCHNORM_SPATIAL, &one, &zero, xd.d,
                                                      x.data(), xd.d, y.data(), pd.d, scale.data(), bias.data(),
                                                      mean.data(), var.data(), eps),
              "cudnnBatchNormalizationForwardInference");
  return y;
}

// Training backward: dx, dscale, dbias from the forward's x, a contiguous dy and the saved statistics.
template <class T>
void batch_norm_training_backward(const NDArray<T>& x, const NDArray<T>& dy, const NDArray<T>& scale,
                                  const NDArray<T>& save_mean, const NDArray<T>& save_invstd, double eps, NDArray<T>& dx,
                                  NDArray<T>& dscale, NDArray<T>& dbias) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "cudnn batch_norm: needs float or double");
  const int64_t C = x.shape(1);
  dx = NDArray<T>(x.shape(), x.device());
  dscale = NDArray<T>(Shape{C}, x.device());
  dbias = NDArray<T>(Shape{C}, x.device());
  const int dev = x.device().index;
  DeviceGuard guard(dev);
  TensorDesc xd, pd;
  detail::set_batch_norm<T>(xd, pd, x.shape(), eps);
  const T one = T(1), zero = T(0);
  check_cudnn(cudnnBatchNormalizationBackward(dnn_handle(dev), CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &zero, xd.d,
                                              x.data(), xd.d, dy.data(), xd.d, dx.data(), pd.d, scale.data(),
                                              dscale.data(), dbias.data(), eps, save_mean.data(), save_invstd.data()),
              "cudnnBatchNormalizationBackward");
}

#endif  // DL_CUDA_ENABLED && DL_HAVE_CUDNN

}  // namespace dl::cuda
