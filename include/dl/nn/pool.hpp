// Pooling modules over NCHW arrays: MaxPool2d, AvgPool2d and GlobalAvgPool2d. They hold no
// parameters; each wraps the operator of ops/pool.hpp so it can stand in a Sequential. The stride
// defaults to the kernel (non-overlapping windows), like PyTorch.
//
//   dl::nn::MaxPool2d pool(2);                 // (N, C, 28, 28) -> (N, C, 14, 14)
//   dl::nn::AvgPool2d avg(3, 1, 1);            // kernel 3, stride 1, padding 1: same size
//   dl::nn::GlobalAvgPool2d gap;               // (N, C, H, W) -> (N, C, 1, 1)
//   dl::nn::MaxPool2d tall(std::array<int64_t, 2>{3, 1});  // ({3, 1}) would be ambiguous: also kernel 3, stride 1
#pragma once
#include <array>
#include <cstdint>

#include "dl/graph/reduce_ops.hpp"
#include "dl/nn/module.hpp"
#include "dl/ops/pool.hpp"

namespace dl::nn {

namespace detail {
inline void check_pool_window(const char* op, const std::array<int64_t, 2>& kernel,
                              const std::array<int64_t, 2>& stride, const std::array<int64_t, 2>& padding) {
  check<ValueError>(kernel[0] > 0 && kernel[1] > 0, op, ": kernel size must be positive, got ",
                    dl::detail::pair_string(kernel));
  check<ValueError>(stride[0] > 0 && stride[1] > 0, op, ": stride must be positive, got ",
                    dl::detail::pair_string(stride));
  check<ValueError>(padding[0] >= 0 && padding[1] >= 0 && padding[0] <= kernel[0] / 2 && padding[1] <= kernel[1] / 2,
                    op, ": padding ", dl::detail::pair_string(padding), " must be non-negative and at most half the kernel ",
                    dl::detail::pair_string(kernel));
}
}  // namespace detail

class MaxPool2d : public Module {
 public:
  MaxPool2d(std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride, std::array<int64_t, 2> padding = {0, 0})
      : kernel_(kernel), stride_(stride), padding_(padding) {
    detail::check_pool_window("MaxPool2d", kernel_, stride_, padding_);
  }
  explicit MaxPool2d(std::array<int64_t, 2> kernel) : MaxPool2d(kernel, kernel) {}
  explicit MaxPool2d(int64_t kernel) : MaxPool2d({kernel, kernel}, {kernel, kernel}) {}
  MaxPool2d(int64_t kernel, int64_t stride, int64_t padding = 0)
      : MaxPool2d({kernel, kernel}, {stride, stride}, {padding, padding}) {}

  std::array<int64_t, 2> kernel_size() const { return kernel_; }
  std::array<int64_t, 2> stride() const { return stride_; }
  std::array<int64_t, 2> padding() const { return padding_; }

  template <class X>
  auto forward(const X& x) {
    static_assert(ArrayLike<X>, "MaxPool2d: input must be an NDArray or an elementwise expression");
    return max_pool2d(x, kernel_, stride_, padding_);
  }
  template <class X>
  auto operator()(const X& x) { return forward(x); }

 private:
  std::array<int64_t, 2> kernel_, stride_, padding_;
};

class AvgPool2d : public Module {
 public:
  AvgPool2d(std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride, std::array<int64_t, 2> padding = {0, 0},
            bool count_include_pad = true)
      : kernel_(kernel), stride_(stride), padding_(padding), count_include_pad_(count_include_pad) {
    detail::check_pool_window("AvgPool2d", kernel_, stride_, padding_);
  }
  explicit AvgPool2d(std::array<int64_t, 2> kernel) : AvgPool2d(kernel, kernel) {}
  explicit AvgPool2d(int64_t kernel) : AvgPool2d({kernel, kernel}, {kernel, kernel}) {}
  AvgPool2d(int64_t kernel, int64_t stride, int64_t padding = 0, bool count_include_pad = true)
      : AvgPool2d({kernel, kernel}, {stride, stride}, {padding, padding}, count_include_pad) {}

  std::array<int64_t, 2> kernel_size() const { return kernel_; }
  std::array<int64_t, 2> stride() const { return stride_; }
  std::array<int64_t, 2> padding() const { return padding_; }
  bool count_include_pad() const { return count_include_pad_; }

  template <class X>
  auto forward(const X& x) {
    static_assert(ArrayLike<X>, "AvgPool2d: input must be an NDArray or an elementwise expression");
    return avg_pool2d(x, kernel_, stride_, padding_, count_include_pad_);
  }
  template <class X>
  auto operator()(const X& x) { return forward(x); }

 private:
  std::array<int64_t, 2> kernel_, stride_, padding_;
  bool count_include_pad_;
};

// The mean of every (H, W) plane: (N, C, H, W) -> (N, C, 1, 1), PyTorch's AdaptiveAvgPool2d(1).
class GlobalAvgPool2d : public Module {
 public:
  template <class X>
  auto forward(const X& x) {
    static_assert(ArrayLike<X>, "GlobalAvgPool2d: input must be an NDArray or an elementwise expression");
    if constexpr (graph::is_symbolic_v<X>) return dl::global_avg_pool2d(x);  // a graph node (a mean over H, W)
    else return global_avg_pool2d(x);
  }
  template <class X>
  auto operator()(const X& x) { return forward(x); }
};

}  // namespace dl::nn
