// GEMM on the CPU through Eigen: C (M x N, row-major contiguous) = A (M x K) * B (K x N) [+ C].
// A and B may be any 2-D views with one unit stride (a transposed view is read as column-major,
// no copy); other layouts are packed once. Large products are split into column (or row) blocks
// on dl's thread pool, each an Eigen GEMM on one thread: measured faster than Eigen's own OpenMP
// threading here, and it does not stall when the machine is busy (see core/parallel.hpp).
#pragma once
#include <Eigen/Core>
#include <cstdint>

#include "dl/core/parallel.hpp"

namespace dl::cpu {

template <class T>
struct MatrixView {
  const T* data;
  int64_t rows, cols, row_stride, col_stride;
};

namespace detail {
template <class T, int Order>
using MapOf = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Order>, 0, Eigen::OuterStride<>>;

template <class T, class Fn>
void with_eigen_map(const MatrixView<T>& v, Fn&& fn) {
  if (v.col_stride == 1 || v.cols == 1) {
    fn(MapOf<T, Eigen::RowMajor>(v.data, v.rows, v.cols, Eigen::OuterStride<>(v.rows == 1 ? std::max<int64_t>(v.cols, 1) : v.row_stride)));
  } else if (v.row_stride == 1 || v.rows == 1) {
    fn(MapOf<T, Eigen::ColMajor>(v.data, v.rows, v.cols, Eigen::OuterStride<>(v.cols == 1 ? std::max<int64_t>(v.rows, 1) : v.col_stride)));
  } else {
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> packed(v.rows, v.cols);
    for (int64_t i = 0; i < v.rows; ++i)
      for (int64_t j = 0; j < v.cols; ++j) packed(i, j) = v.data[i * v.row_stride + j * v.col_stride];
    fn(MapOf<T, Eigen::RowMajor>(packed.data(), v.rows, v.cols, Eigen::OuterStride<>(v.cols)));
  }
}
// Eigen keeps one global thread count (used only when compiled with OpenMP); dl threads GEMMs
// itself, so Eigen always runs single-threaded.
inline void set_eigen_threads(int n) {
  if (Eigen::nbThreads() != n) Eigen::setNbThreads(n);
}
}  // namespace detail

// C = A * B (accumulate: C += A * B) on the calling thread. C is row-major with leading dimension ldc.
template <class T>
void gemm_serial(const MatrixView<T>& a, const MatrixView<T>& b, T* c, int64_t ldc, bool accumulate = false) {
  using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  auto product = [&](auto& out) {
    if (a.cols == 0) {
      if (!accumulate) out.setZero();
      return;
    }
    detail::with_eigen_map(a, [&](const auto& ma) {
      detail::with_eigen_map(b, [&](const auto& mb) {
        if (accumulate) out.noalias() += ma * mb;
        else out.noalias() = ma * mb;
      });
    });
  };
  detail::set_eigen_threads(1);
  if (ldc == b.cols || a.rows <= 1) {
    // A contiguous C gets a plain map: Eigen zeroes it (before accumulating the product) as one
    // linear vectorised loop; through a runtime outer stride it goes row by row, which costs ~6%
    // of a (512 x 128) x (128 x 10) product.
    Eigen::Map<RowMat> out(c, a.rows, b.cols);
    product(out);
  } else {
    Eigen::Map<RowMat, 0, Eigen::OuterStride<>> out(c, a.rows, b.cols, Eigen::OuterStride<>(std::max<int64_t>(ldc, 1)));
    product(out);
  }
}

// C = A * B (accumulate: C += A * B), threaded over blocks of C's columns (or rows when C is narrow).
template <class T>
void gemm(const MatrixView<T>& a, const MatrixView<T>& b, T* c, int64_t ldc, bool accumulate = false) {
  const int64_t M = a.rows, N = b.cols, K = a.cols;
  const double flops = 2.0 * static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K);
  if (num_threads() <= 1 || in_parallel_region() || flops < 2e6) return gemm_serial(a, b, c, ldc, accumulate);
  constexpr int64_t kUnit = 16;  // columns per unit: whole SIMD registers for the micro-kernel
  if (N >= 4 * kUnit) {
    parallel_for(0, (N + kUnit - 1) / kUnit, 1, [&](int64_t u0, int64_t u1) {
      int64_t j0 = u0 * kUnit, j1 = std::min(N, u1 * kUnit);
      MatrixView<T> bj{b.data + j0 * b.col_stride, K, j1 - j0, b.row_stride, b.col_stride};
      gemm_serial(a, bj, c + j0, ldc, accumulate);
    });
  } else if (M >= 4 * kUnit) {
    parallel_for(0, (M + kUnit - 1) / kUnit, 1, [&](int64_t u0, int64_t u1) {
      int64_t i0 = u0 * kUnit, i1 = std::min(M, u1 * kUnit);
      MatrixView<T> ai{a.data + i0 * a.row_stride, i1 - i0, K, a.row_stride, a.col_stride};
      gemm_serial(ai, b, c + i0 * ldc, ldc, accumulate);
    });
  } else {
    gemm_serial(a, b, c, ldc, accumulate);
  }
}

}  // namespace dl::cpu
