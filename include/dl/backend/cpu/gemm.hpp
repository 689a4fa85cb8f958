// GEMM on the CPU through Eigen: C (M x N, row-major contiguous) = A (M x K) * B (K x N) [+ C].
// A and B may be any 2-D views with one unit stride (a transposed view is read as column-major,
// no copy); other layouts are packed once. Eigen threads its GEMM with OpenMP (num_threads()).
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
// Eigen keeps one global thread count; set it only when dl's setting changed (a GEMM inside a
// parallel_for runs on one thread, so it flips between 1 and num_threads()).
inline void set_eigen_threads(int n) {
  if (Eigen::nbThreads() != n) Eigen::setNbThreads(n);
}
}  // namespace detail

// C = A * B (accumulate: C += A * B). C is row-major with leading dimension ldc.
template <class T>
void gemm(const MatrixView<T>& a, const MatrixView<T>& b, T* c, int64_t ldc, bool accumulate = false) {
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
  detail::set_eigen_threads(in_parallel_region() ? 1 : num_threads());
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

}  // namespace dl::cpu
