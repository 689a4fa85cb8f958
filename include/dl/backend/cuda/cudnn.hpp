// cuDNN kernels: conv2d forward and softmax over the last axis, on the device's compute stream.
// The convolution algorithm is chosen once per (shapes, options, dtype) with cuDNN's heuristic
// (cudnnGetConvolutionForwardAlgorithm_v7, first algorithm whose workspace fits) and cached; the
// workspace comes from the caching allocator, so repeated steps allocate nothing.
//
//   NDArray<float> y = dl::cuda::conv2d_forward(x, w, {.stride = {2, 2}, .padding = {1, 1}});
//
// Explicit API only: ops/conv.hpp and ops/softmax.hpp do not dispatch here yet. Needs -lcudnn
// and DL_HAVE_CUDNN (meson defines it when cuDNN is found).
// Run on an H100 (tests/gpu: forward conv2d and softmax against the CPU). No backward yet (issue #8).
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>

#include "dl/backend/cuda/allocator.hpp"
#include "dl/backend/cuda/gemm.hpp"  // allow_tf32()
#include "dl/backend/cuda/runtime.hpp"
#include "dl/ndarray/ndarray.hpp"
#include "dl/ops/conv.hpp"

#if defined(DL_CUDA_ENABLED) && defined(DL_HAVE_CUDNN)
#include <cudnn.h>
#endif

namespace dl::cuda {

#if defined(DL_CUDA_ENABLED) && defined(DL_HAVE_CUDNN)

inline void check_cudnn(cudnnStatus_t s, const char* what) {
  if (s == CUDNN_STATUS_SUCCESS) [[likely]] return;
  fail<DeviceError>("cudnn: ", what, ": ", cudnnGetErrorString(s), " (status ", static_cast<int>(s), ")");
}

inline cudnnHandle_t dnn_handle(int dev) {
  static std::array<cudnnHandle_t, kMaxDevices> handles{};
  static std::array<std::once_flag, kMaxDevices> once;
  cudaStream_t s = compute_stream(dev);
  std::call_once(once[static_cast<size_t>(dev)], [dev, s] {
    DeviceGuard guard(dev);
    check_cudnn(cudnnCreate(&handles[static_cast<size_t>(dev)]), "cudnnCreate");
    check_cudnn(cudnnSetStream(handles[static_cast<size_t>(dev)], s), "cudnnSetStream");
  });
  return handles[static_cast<size_t>(dev)];
}

template <class T> cudnnDataType_t dnn_type() { return std::is_same_v<T, float> ? CUDNN_DATA_FLOAT : CUDNN_DATA_DOUBLE; }

// RAII owners of the descriptors one call needs.
struct TensorDesc {
  cudnnTensorDescriptor_t d = nullptr;
  TensorDesc() { check_cudnn(cudnnCreateTensorDescriptor(&d), "cudnnCreateTensorDescriptor"); }
  ~TensorDesc() { cudnnDestroyTensorDescriptor(d); }
};
struct FilterDesc {
  cudnnFilterDescriptor_t d = nullptr;
  FilterDesc() { check_cudnn(cudnnCreateFilterDescriptor(&d), "cudnnCreateFilterDescriptor"); }
  ~FilterDesc() { cudnnDestroyFilterDescriptor(d); }
};
struct ConvDesc {
  cudnnConvolutionDescriptor_t d = nullptr;
  ConvDesc() { check_cudnn(cudnnCreateConvolutionDescriptor(&d), "cudnnCreateConvolutionDescriptor"); }
  ~ConvDesc() { cudnnDestroyConvolutionDescriptor(d); }
};

using ConvKey = std::tuple<int, int, std::array<int64_t, 4>, std::array<int64_t, 4>, std::array<int64_t, 7>>;
inline std::map<ConvKey, cudnnConvolutionFwdAlgo_t>& conv_algorithm_cache() {
  static std::map<ConvKey, cudnnConvolutionFwdAlgo_t> cache;
  return cache;
}
inline std::mutex& conv_algorithm_mutex() {
  static std::mutex m;
  return m;
}

// y = conv2d(x, w) without bias; x (N, C, H, W), w (O, C/groups, kh, kw), both on one device.
template <class T>
NDArray<T> conv2d_forward(const NDArray<T>& input, const NDArray<T>& weight, const Conv2dOptions& o = {}) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "cudnn conv2d: needs float or double");
  check<DeviceError>(input.device().is_cuda() && input.device() == weight.device(), "cudnn conv2d: input on ",
                     input.device(), " and weight on ", weight.device(), "; both must be on one CUDA device");
  check<ShapeError>(input.rank() == 4 && weight.rank() == 4, "cudnn conv2d: expected 4-D input and weight, got ",
                    input.shape(), " and ", weight.shape());
  check<ShapeError>(o.groups >= 1 && input.shape(1) == weight.shape(1) * o.groups && weight.shape(0) % o.groups == 0,
                    "cudnn conv2d: input ", input.shape(), " and weight ", weight.shape(), " do not match groups ", o.groups);
  auto hw = detail::window_output_size("cudnn conv2d", input.shape(2), input.shape(3), {weight.shape(2), weight.shape(3)},
                                       o.stride, o.padding, o.dilation, true);
  NDArray<T> x = input.contiguous(), w = weight.contiguous();
  NDArray<T> y(Shape{x.shape(0), w.shape(0), hw[0], hw[1]}, x.device());
  if (y.numel() == 0) return y;
  const int dev = x.device().index;
  DeviceGuard guard(dev);
  cudnnHandle_t h = dnn_handle(dev);
  auto i32 = [](int64_t v) { return static_cast<int>(v); };
  TensorDesc xd, yd;
  FilterDesc wd;
  ConvDesc cd;
  check_cudnn(cudnnSetTensor4dDescriptor(xd.d, CUDNN_TENSOR_NCHW, dnn_type<T>(), i32(x.shape(0)), i32(x.shape(1)),
                                         i32(x.shape(2)), i32(x.shape(3))), "cudnnSetTensor4dDescriptor");
  check_cudnn(cudnnSetTensor4dDescriptor(yd.d, CUDNN_TENSOR_NCHW, dnn_type<T>(), i32(y.shape(0)), i32(y.shape(1)),
                                         i32(y.shape(2)), i32(y.shape(3))), "cudnnSetTensor4dDescriptor");
  check_cudnn(cudnnSetFilter4dDescriptor(wd.d, dnn_type<T>(), CUDNN_TENSOR_NCHW, i32(w.shape(0)), i32(w.shape(1)),
                                         i32(w.shape(2)), i32(w.shape(3))), "cudnnSetFilter4dDescriptor");
  check_cudnn(cudnnSetConvolution2dDescriptor(cd.d, i32(o.padding[0]), i32(o.padding[1]), i32(o.stride[0]),
                                              i32(o.stride[1]), i32(o.dilation[0]), i32(o.dilation[1]),
                                              CUDNN_CROSS_CORRELATION, dnn_type<T>()),
              "cudnnSetConvolution2dDescriptor");
  check_cudnn(cudnnSetConvolutionGroupCount(cd.d, i32(o.groups)), "cudnnSetConvolutionGroupCount");
  // Tensor cores only with the user's TF32 opt-in (set_allow_tf32 in backend/cuda/gemm.hpp).
  const bool tf32 = std::is_same_v<T, float> && allow_tf32();
  check_cudnn(cudnnSetConvolutionMathType(cd.d, tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH), "cudnnSetConvolutionMathType");

  ConvKey key{dev, (std::is_same_v<T, float> ? 0 : 1) + (tf32 ? 2 : 0),
              {x.shape(0), x.shape(1), x.shape(2), x.shape(3)}, {w.shape(0), w.shape(1), w.shape(2), w.shape(3)},
              {o.stride[0], o.stride[1], o.padding[0], o.padding[1], o.dilation[0], o.dilation[1], o.groups}};
  cudnnConvolutionFwdAlgo_t algo;
  {
    std::lock_guard lock(conv_algorithm_mutex());
    auto it = conv_algorithm_cache().find(key);
    if (it != conv_algorithm_cache().end()) {
      algo = it->second;
    } else {
      cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      int found = 0;
      check_cudnn(cudnnGetConvolutionForwardAlgorithm_v7(h, xd.d, wd.d, cd.d, yd.d, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                                          &found, perf),
                  "cudnnGetConvolutionForwardAlgorithm_v7");
      algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;  // needs no workspace
      for (int i = 0; i < found; ++i)
        if (perf[i].status == CUDNN_STATUS_SUCCESS) {
          algo = perf[i].algo;
          break;
        }
      conv_algorithm_cache().emplace(key, algo);
    }
  }
  size_t ws_bytes = 0;
  check_cudnn(cudnnGetConvolutionForwardWorkspaceSize(h, xd.d, wd.d, cd.d, yd.d, algo, &ws_bytes),
              "cudnnGetConvolutionForwardWorkspaceSize");
  DeviceAllocator& alloc = device_allocator(dev);
  void* ws = ws_bytes ? alloc.allocate(ws_bytes) : nullptr;
  const T one = T(1), zero = T(0);
  cudnnStatus_t st = cudnnConvolutionForward(h, &one, xd.d, x.data(), wd.d, w.data(), cd.d, algo, ws, ws_bytes, &zero,
                                             yd.d, y.data());
  alloc.deallocate(ws);  // stream-ordered reuse: later work queues behind this convolution
  check_cudnn(st, "cudnnConvolutionForward");
  return y;
}

// Softmax over the last axis of a device array (rows of a contiguous (rows, classes) view).
template <class T>
NDArray<T> softmax_forward(const NDArray<T>& input) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "cudnn softmax: needs float or double");
  check<DeviceError>(input.device().is_cuda(), "cudnn softmax: array is on ", input.device());
  check<ShapeError>(input.rank() >= 1, "cudnn softmax: needs rank >= 1, got ", input.shape());
  NDArray<T> x = input.contiguous();
  NDArray<T> y(x.shape(), x.device());
  if (y.numel() == 0) return y;
  int64_t classes = x.shape(-1), rows = x.numel() / classes;
  const int dev = x.device().index;
  DeviceGuard guard(dev);
  TensorDesc d;
  check_cudnn(cudnnSetTensor4dDescriptor(d.d, CUDNN_TENSOR_NCHW, dnn_type<T>(), static_cast<int>(rows),
                                         static_cast<int>(classes), 1, 1),
              "cudnnSetTensor4dDescriptor");
  const T one = T(1), zero = T(0);
  check_cudnn(cudnnSoftmaxForward(dnn_handle(dev), CUDNN_SOFTMAX_ACCURATE, CUDNN_SOFTMAX_MODE_CHANNEL, &one, d.d,
                                  x.data(), &zero, d.d, y.data()),
              "cudnnSoftmaxForward");
  return y;
}

#endif  // DL_CUDA_ENABLED && DL_HAVE_CUDNN

}  // namespace dl::cuda
