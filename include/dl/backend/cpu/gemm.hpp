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
}  // namespace detail

// C = A * B (accumulate: C += A * B). C is row-major with leading dimension ldc.
template <class T>
void gemm(const MatrixView<T>& a, const MatrixView<T>& b, T* c, int64_t ldc, bool accumulate = false) {
  using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<RowMat, 0, Eigen::OuterStride<>> out(c, a.rows, b.cols, Eigen::OuterStride<>(std::max<int64_t>(ldc, 1)));
  if (a.cols == 0) {
    if (!accumulate) out.setZero();
    return;
  }
  Eigen::setNbThreads(in_parallel_region() ? 1 : num_threads());
  detail::with_eigen_map(a, [&](const auto& ma) {
    detail::with_eigen_map(b, [&](const auto& mb) {
      if (accumulate) out.noalias() += ma * mb;
      else out.noalias() = ma * mb;
    });
  });
}

}  // namespace dl::cpu
