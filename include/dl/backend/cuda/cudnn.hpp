// cuDNN kernels: conv2d forward, input gradient (backward data) and weight gradient (backward
// filter), and softmax over the last axis, on the device's compute stream. The three convolution
// calls share one descriptor setup (ConvDescriptors, from the CPU kernel's Conv2dGeometry); each
// direction chooses its algorithm once per (device, dtype, TF32, shapes, options) with cuDNN's
// heuristic (cudnnGet...Algorithm_v7, the first algorithm with status success) and caches it;
// workspaces come from the caching allocator, so repeated steps allocate nothing. Float math is
// exact FMA unless set_allow_tf32(true) (backend/cuda/gemm.hpp).
//
//   cuda::conv2d_forward(x.data(), w.data(), y.data(), geometry, dev);   // y = conv2d(x, w)
//
// dl::conv2d (ops/conv.hpp) dispatches here for CUDA arrays, forward and backward (the bias is a
// broadcast add and a sum over (N, H, W) there); the array-level dl::cuda::conv2d_forward(x, w,
// options) is there too (it needs Conv2dOptions, and ops/conv.hpp includes this header, not the
// reverse). Needs -lcudnn and DL_HAVE_CUDNN (meson defines it when cuDNN is found). Ran on an H200
// (tests/gpu/test_cuda_conv.cu: forward, both backward passes and gradcheck against the CPU).
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>

#include "dl/backend/cpu/conv.hpp"  // Conv2dGeometry
#include "dl/backend/cuda/allocator.hpp"
#include "dl/backend/cuda/gemm.hpp"  // allow_tf32()
#include "dl/backend/cuda/runtime.hpp"
#include "dl/ndarray/ndarray.hpp"

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

// The cuDNN view of one convolution: the x, w, y (and so dx, dw, dy) descriptors and the
// convolution descriptor, filled once from the geometry for the forward and both backward calls.
struct ConvDescriptors {
  TensorDesc x, y;
  FilterDesc w;
  ConvDesc conv;
  bool tf32 = false;

  template <class T>
  ConvDescriptors(const cpu::Conv2dGeometry& g, std::type_identity<T>) {
    auto i32 = [](int64_t v) { return static_cast<int>(v); };
    const cudnnDataType_t type = dnn_type<T>();
    check_cudnn(cudnnSetTensor4dDescriptor(x.d, CUDNN_TENSOR_NCHW, type, i32(g.batch), i32(g.in_channels), i32(g.in_h),
                                           i32(g.in_w)),
                "cudnnSetTensor4dDescriptor");
    check_cudnn(cudnnSetTensor4dDescriptor(y.d, CUDNN_TENSOR_NCHW, type, i32(g.batch), i32(g.out_channels),
                                           i32(g.out_h), i32(g.out_w)),
                "cudnnSetTensor4dDescriptor");
    check_cudnn(cudnnSetFilter4dDescriptor(w.d, type, CUDNN_TENSOR_NCHW, i32(g.out_channels), i32(g.in_per_group()),
                                           i32(g.kernel_h), i32(g.kernel_w)),
                "cudnnSetFilter4dDescriptor");
    check_cudnn(cudnnSetConvolution2dDescriptor(conv.d, i32(g.pad_h), i32(g.pad_w), i32(g.stride_h), i32(g.stride_w),
                                                i32(g.dilation_h), i32(g.dilation_w), CUDNN_CROSS_CORRELATION, type),
                "cudnnSetConvolution2dDescriptor");
    check_cudnn(cudnnSetConvolutionGroupCount(conv.d, i32(g.groups)), "cudnnSetConvolutionGroupCount");
    // Tensor cores only with the user's TF32 opt-in (set_allow_tf32 in backend/cuda/gemm.hpp).
    tf32 = std::is_same_v<T, float> && allow_tf32();
    check_cudnn(cudnnSetConvolutionMathType(conv.d, tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH),
                "cudnnSetConvolutionMathType");
  }
};

// (device, dtype + 2 * tf32, x shape, w shape, stride/padding/dilation/groups).
using ConvKey = std::tuple<int, int, std::array<int64_t, 4>, std::array<int64_t, 4>, std::array<int64_t, 7>>;
template <class T>
ConvKey conv_key(const cpu::Conv2dGeometry& g, bool tf32, int dev) {
  return ConvKey{dev, (std::is_same_v<T, float> ? 0 : 1) + (tf32 ? 2 : 0),
                 {g.batch, g.in_channels, g.in_h, g.in_w},
                 {g.out_channels, g.in_per_group(), g.kernel_h, g.kernel_w},
                 {g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dilation_h, g.dilation_w, g.groups}};
}

// One cache per direction: Algo is cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t.
template <class Algo>
std::map<ConvKey, Algo>& conv_algorithm_cache() {
  static std::map<ConvKey, Algo> cache;
  return cache;
}
inline std::mutex& conv_algorithm_mutex() {
  static std::mutex m;
  return m;
}

// The cached algorithm for `key`, else the first of cuDNN's heuristic ranking (find(perf, count,
// &found) calls cudnnGet...Algorithm_v7) whose status is success, else `fallback`.
template <class Perf, int Count, class Algo, class Find>
Algo conv_algorithm(const ConvKey& key, Algo fallback, Find find) {
  std::lock_guard lock(conv_algorithm_mutex());
  auto& cache = conv_algorithm_cache<Algo>();
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  Perf perf[Count];
  int found = 0;
  find(perf, Count, &found);
  Algo algo = fallback;
  for (int i = 0; i < found; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS) {
      algo = perf[i].algo;
      break;
    }
  cache.emplace(key, algo);
  return algo;
}

// Runs call(workspace, bytes) with `bytes` of workspace from the caching allocator, given back
// right after the call is queued (stream-ordered reuse: later work queues behind it).
template <class Call>
void with_workspace(int dev, size_t bytes, const char* what, Call call) {
  DeviceAllocator& alloc = device_allocator(dev);
  void* ws = bytes ? alloc.allocate(bytes) : nullptr;
  cudnnStatus_t st = call(ws, bytes);
  alloc.deallocate(ws);
  check_cudnn(st, what);
}

// The three kernels below take contiguous NCHW device arrays of the geometry's shapes (checked by
// ops/conv.hpp) and need every size nonzero: x (N, C, H, W), w (O, C/groups, kh, kw), y (N, O, OH, OW).

// y = conv2d(x, w), no bias.
template <class T>
void conv2d_forward(const T* x, const T* w, T* y, const cpu::Conv2dGeometry& g, int dev) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "cudnn conv2d: needs float or double");
  DeviceGuard guard(dev);
  cudnnHandle_t h = dnn_handle(dev);
  ConvDescriptors d(g, std::type_identity<T>{});
  auto algo = conv_algorithm<cudnnConvolutionFwdAlgoPerf_t, CUDNN_CONVOLUTION_FWD_ALGO_COUNT>(
      conv_key<T>(g, d.tf32, dev), CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, [&](auto* perf, int count, int* found) {
        check_cudnn(cudnnGetConvolutionForwardAlgorithm_v7(h, d.x.d, d.w.d, d.conv.d, d.y.d, count, found, perf),
                    "cudnnGetConvolutionForwardAlgorithm_v7");
      });
  size_t bytes = 0;
  check_cudnn(cudnnGetConvolutionForwardWorkspaceSize(h, d.x.d, d.w.d, d.conv.d, d.y.d, algo, &bytes),
              "cudnnGetConvolutionForwardWorkspaceSize");
  const T one = T(1), zero = T(0);
  with_workspace(dev, bytes, "cudnnConvolutionForward", [&](void* ws, size_t n) {
    return cudnnConvolutionForward(h, &one, d.x.d, x, d.w.d, w, d.conv.d, algo, ws, n, &zero, d.y.d, y);
  });
}

// dx = the gradient of conv2d(x, w) for x, given dy (overwrites dx).
template <class T>
void conv2d_backward_data(const T* w, const T* dy, T* dx, const cpu::Conv2dGeometry& g, int dev) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "cudnn conv2d: needs float or double");
  DeviceGuard guard(dev);
  cudnnHandle_t h = dnn_handle(dev);
  ConvDescriptors d(g, std::type_identity<T>{});
  auto algo = conv_algorithm<cudnnConvolutionBwdDataAlgoPerf_t, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT>(
      conv_key<T>(g, d.tf32, dev), CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, [&](auto* perf, int count, int* found) {
        check_cudnn(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w.d, d.y.d, d.conv.d, d.x.d, count, found, perf),
                    "cudnnGetConvolutionBackwardDataAlgorithm_v7");
      });
  size_t bytes = 0;
  check_cudnn(cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.w.d, d.y.d, d.conv.d, d.x.d, algo, &bytes),
              "cudnnGetConvolutionBackwardDataWorkspaceSize");
  const T one = T(1), zero = T(0);
  with_workspace(dev, bytes, "cudnnConvolutionBackwardData", [&](void* ws, size_t n) {
    return cudnnConvolutionBackwardData(h, &one, d.w.d, w, d.y.d, dy, d.conv.d, algo, ws, n, &zero, d.x.d, dx);
  });
}

// dw = the gradient of conv2d(x, w) for w, given dy (overwrites dw).
template <class T>
void conv2d_backward_filter(const T* x, const T* dy, T* dw, const cpu::Conv2dGeometry& g, int dev) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "cudnn conv2d: needs float or double");
  DeviceGuard guard(dev);
  cudnnHandle_t h = dnn_handle(dev);
  ConvDescriptors d(g, std::type_identity<T>{});
  auto algo = conv_algorithm<cudnnConvolutionBwdFilterAlgoPerf_t, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT>(
      conv_key<T>(g, d.tf32, dev), CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, [&](auto* perf, int count, int* found) {
        check_cudnn(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.x.d, d.y.d, d.conv.d, d.w.d, count, found, perf),
                    "cudnnGetConvolutionBackwardFilterAlgorithm_v7");
      });
  size_t bytes = 0;
  check_cudnn(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d.x.d, d.y.d, d.conv.d, d.w.d, algo, &bytes),
              "cudnnGetConvolutionBackwardFilterWorkspaceSize");
  const T one = T(1), zero = T(0);
  with_workspace(dev, bytes, "cudnnConvolutionBackwardFilter", [&](void* ws, size_t n) {
    return cudnnConvolutionBackwardFilter(h, &one, d.x.d, x, d.y.d, dy, d.conv.d, algo, ws, n, &zero, d.w.d, dw);
  });
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
