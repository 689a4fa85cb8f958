// GEMM on the GPU through cuBLAS (one handle per device, bound to its compute stream).
//
// cuBLAS is column-major; dl is row-major. A row-major C (M x N) is the column-major C^T, and
// C^T = B^T A^T, so the call is gemm(opB, opA, N, M, K, B, A, C). A row-major operand (strides
// (ld, 1)) seen as column-major is already the transpose (op N); a transposed view (strides
// (1, ld)) is op T with the same ld. Any other layout is copied to contiguous by the caller
// (ops/matmul.hpp).
//
// TF32: off by default (float GEMMs are exact float32); set_allow_tf32(true) lets cuBLAS use
// TF32 tensor cores for float, as torch.backends.cuda.matmul.allow_tf32 does in PyTorch.
// Run on an H100 (tests/gpu: plain, transposed, batched, TF32 opt-in).
#pragma once
#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <type_traits>

#include "dl/backend/cuda/runtime.hpp"
#include "dl/core/error.hpp"

#if defined(DL_CUDA_ENABLED)
#include <cublas_v2.h>
#endif

namespace dl::cuda {

inline std::atomic<bool>& allow_tf32_flag() {
  static std::atomic<bool> on{false};
  return on;
}
// Lets float GEMMs use TF32 tensor cores (10-bit mantissa products, float32 accumulation).
inline void set_allow_tf32(bool on) { allow_tf32_flag().store(on); }
inline bool allow_tf32() { return allow_tf32_flag().load(); }

template <class T> inline constexpr bool blas_type = std::is_same_v<T, float> || std::is_same_v<T, double>;

// A strided matrix in device memory (the CUDA twin of cpu::MatrixView).
template <class T>
struct Matrix {
  const T* data;
  int64_t rows, cols, row_stride, col_stride;
};

// How a row-major strided matrix is passed to column-major BLAS: transposed or not, and its ld.
struct BlasLayout {
  bool ok = false;
  bool trans = false;  // op T in the column-major call
  int64_t ld = 1;
};
template <class T>
BlasLayout blas_layout(const Matrix<T>& m) {
  // Size-1 dims may carry any stride; give them the one that makes the layout valid.
  int64_t rs = m.rows == 1 ? std::max<int64_t>(m.cols, 1) : m.row_stride;
  int64_t cs = m.cols == 1 ? std::max<int64_t>(m.rows, 1) : m.col_stride;
  if (m.cols <= 1 || cs == 1) {
    if (rs >= std::max<int64_t>(m.cols, 1)) return {true, false, rs};
  }
  if (m.rows <= 1 || rs == 1) {
    if (cs >= std::max<int64_t>(m.rows, 1)) return {true, true, cs};
  }
  return {};
}

#if defined(DL_CUDA_ENABLED)

inline void check_cublas(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) [[likely]] return;
  fail<DeviceError>("cublas: ", what, ": ", cublasGetStatusString(s), " (status ", static_cast<int>(s), ")");
}

inline cublasHandle_t blas_handle(int dev) {
  static std::array<cublasHandle_t, kMaxDevices> handles{};
  static std::array<std::once_flag, kMaxDevices> once;
  cudaStream_t s = compute_stream(dev);  // also checks the index
  std::call_once(once[static_cast<size_t>(dev)], [dev, s] {
    DeviceGuard guard(dev);
    check_cublas(cublasCreate(&handles[static_cast<size_t>(dev)]), "cublasCreate");
    check_cublas(cublasSetStream(handles[static_cast<size_t>(dev)], s), "cublasSetStream");
  });
  return handles[static_cast<size_t>(dev)];
}

// c (M x N, row-major, leading dimension ldc) = a (M x K) * b (K x N), on device `dev`'s stream.
template <class T>
void gemm(const Matrix<T>& a, const Matrix<T>& b, T* c, int64_t ldc, int dev) {
  static_assert(blas_type<T>, "cuda gemm: needs float or double");
  const int64_t M = a.rows, K = a.cols, N = b.cols;
  if (M == 0 || N == 0) return;
  BlasLayout la = blas_layout(a), lb = blas_layout(b);
  check<ValueError>(la.ok && lb.ok, "cuda gemm: operand strides (", a.row_stride, ", ", a.col_stride, ") and (",
                    b.row_stride, ", ", b.col_stride, ") are not BLAS layouts; pass contiguous copies");
  constexpr int64_t kMax = 2147483647;
  check<ValueError>(M <= kMax && N <= kMax && K <= kMax && la.ld <= kMax && lb.ld <= kMax && ldc <= kMax,
                    "cuda gemm: dimensions (", M, ", ", K, ", ", N, ") exceed cuBLAS's 32-bit sizes");
  DeviceGuard guard(dev);
  cublasHandle_t h = blas_handle(dev);
  const T alpha = T(1), beta = T(0);
  cudaDataType_t type = std::is_same_v<T, float> ? CUDA_R_32F : CUDA_R_64F;
  cublasComputeType_t compute = std::is_same_v<T, float>
                                    ? (allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F)
                                    : CUBLAS_COMPUTE_64F;
  int kk = static_cast<int>(std::max<int64_t>(K, 0));
  check_cublas(cublasGemmEx(h, lb.trans ? CUBLAS_OP_T : CUBLAS_OP_N, la.trans ? CUBLAS_OP_T : CUBLAS_OP_N,
                            static_cast<int>(N), static_cast<int>(M), kk, &alpha, b.data, type,
                            static_cast<int>(lb.ld), a.data, type, static_cast<int>(la.ld), &beta, c, type,
                            static_cast<int>(ldc), compute, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx");
}

#endif  // DL_CUDA_ENABLED

}  // namespace dl::cuda
