// Loss functions: cross_entropy (fused log-softmax + pick, optional label smoothing), nll,
// mse and binary_cross_entropy_with_logits, each with a Reduction (none: one loss per sample,
// mean, sum: a rank-0 array). Classification losses take logits (N, C) or (N, C, d1, ...) with
// integer labels (N) or (N, d1, ...) as NDArray<int64_t> or NDArray<int32_t>; labels get no gradient.
//
//   auto loss = dl::cross_entropy(net.forward(x), labels);            // mean over the batch
//   auto per  = dl::cross_entropy(logits, labels, 0.1, dl::Reduction::none);
//
// cross_entropy makes one pass per row: logsumexp and the label's logit together. It saves only the
// row maximum and log-sum (2 numbers a row) next to the logits; backward is one more pass:
// d logits = (softmax - ((1 - s) * onehot + s / C)) * g (/ rows for mean).
// Sums (mean/sum) are accumulated in double in a fixed order, independent of the thread count.
#pragma once
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "dl/autograd/record.hpp"
#include "dl/backend/cpu/softmax.hpp"
#include "dl/backend/cuda/reduce.hpp"
#include "dl/backend/cuda/softmax.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/ops/elementwise.hpp"

namespace dl {

enum class Reduction { none, mean, sum };

namespace detail {

inline void check_reduction(Reduction r, const char* op) {
  check<ValueError>(r == Reduction::none || r == Reduction::mean || r == Reduction::sum, op, ": unknown reduction ",
                    static_cast<int>(r), " (expected none, mean or sum)");
}

// The factor that turns a sum over n losses into the requested reduction (mean of nothing: NaN).
inline double reduction_scale(Reduction r, int64_t n) {
  if (r != Reduction::mean) return 1.0;
  return n > 0 ? 1.0 / static_cast<double>(n) : std::numeric_limits<double>::quiet_NaN();
}

// (sum of the n losses) * scale as a rank-0 array on the losses' device. On the CPU the sum is
// accumulated in double in a fixed order; on a GPU by CUB in T (also a fixed order).
template <class T>
NDArray<T> scaled_total(const NDArray<T>& losses, double scale) {
  const int64_t n = losses.numel();
#if defined(DL_CUDA_ENABLED)
  if constexpr (cuda::kernel_type<T>) {
    if (losses.device().is_cuda()) {
      if (n == 0) return full<T>(Shape{}, static_cast<T>(0.0 * scale), losses.device());
      NDArray<T> out(Shape{}, losses.device());
      cuda::sum_all(losses.data(), n, out.data(), losses.device().index);
      autograd::pause no_tape;
      out *= static_cast<T>(scale);
      return out;
    }
  }
#endif
  NDArray<T> out(Shape{});
  *out.data() = static_cast<T>((n > 0 ? cpu::sum_deterministic(losses.data(), n) : 0.0) * scale);
  return out;
}

// Sum or mean of `losses` as a recorded rank-0 array; Reduction::none returns `losses` itself.
template <class T>
NDArray<T> reduce_loss(const NDArray<T>& losses, Reduction r, const char* op) {
  if (r == Reduction::none) return losses;
  NDArray<T> l = losses.contiguous();
  const int64_t n = l.numel();
  const double scale = reduction_scale(r, n);
  NDArray<T> out = scaled_total(l, scale);
  autograd::record_op<T>(op, {l}, out, [shape = l.shape(), scale](const NDArray<T>& g) {
    return std::vector<NDArray<T>>{full<T>(shape, static_cast<T>(static_cast<double>(g.item()) * scale))};
  });
  return out;
}

template <class Label>
inline constexpr bool is_label_type_v = std::is_same_v<Label, int64_t> || std::is_same_v<Label, int32_t>;

// Logits (N, C, d1, ...) as contiguous rows (M, C), M = N * d1 * ..., with labels (N, d1, ...)
// flattened to (M). `loss_shape` is the labels' shape (the shape of Reduction::none's result).
template <class T, class Label>
struct ClassRows {
  NDArray<T> x;
  NDArray<Label> labels;
  Shape loss_shape;
  int64_t rows = 0, cols = 0;
};

// gpu_ok: the loss has CUDA kernels (cross_entropy); logits and labels must then share a device.
template <class T, class Label>
ClassRows<T, Label> class_rows(const NDArray<T>& logits, const NDArray<Label>& labels, const char* op,
                               const char* what, bool gpu_ok = false) {
  logits.require_defined(op);
  labels.require_defined(op);
  if (!gpu_ok || !cuda::kernel_type<T>) {
    require_cpu(logits.device(), op);
    require_cpu(labels.device(), op);
  }
  check<DeviceError>(logits.device() == labels.device(), op, ": ", what, " are on ", logits.device(),
                     " but labels on ", labels.device(), "; move one with .to()");
  const Shape& s = logits.shape();
  check<ShapeError>(s.rank() >= 2, op, ": ", what, " must have shape (N, C) or (N, C, d1, ...), got ", s);
  std::vector<int64_t> expect = s.vec();
  expect.erase(expect.begin() + 1);
  check<ShapeError>(labels.shape() == Shape(expect), op, ": labels of shape ", labels.shape(), " do not match ",
                    what, " of shape ", s, " (expected labels of shape ", Shape(expect), ")");
  ClassRows<T, Label> r;
  r.cols = s[1];
  r.rows = labels.numel();
  r.loss_shape = labels.shape();
  // Every label is checked here, before any kernel runs (kernels must not throw). Labels on a GPU
  // are read through a host copy (the host waits for them once).
  const NDArray<Label> host_labels = labels.device().is_cuda() ? labels.cpu() : labels;
  int64_t i = 0;
  for_each_element(host_labels, [&](const Label* p) {
    const int64_t v = static_cast<int64_t>(*p);
    if (v < 0 || v >= r.cols) [[unlikely]] {
      if (labels.rank() == 1) fail<ValueError>(op, ": label ", v, " at row ", i, " is out of range for ", r.cols, " classes");
      std::vector<int64_t> at(static_cast<size_t>(labels.rank()));
      for (int64_t d = labels.rank() - 1, rest = i; d >= 0; --d) {
        at[static_cast<size_t>(d)] = rest % labels.shape()[static_cast<int>(d)];
        rest /= labels.shape()[static_cast<int>(d)];
      }
      fail<ValueError>(op, ": label ", v, " at index ", Shape(at), " is out of range for ", r.cols, " classes");
    }
    ++i;
  });
  if (s.rank() == 2) {
    r.x = logits.contiguous();
  } else {
    // (N, C, d1, ...) -> (N, d1, ..., C): the class axis last, so each row is one sample's logits.
    std::vector<int> axes{0};
    for (int d = 2; d < s.rank(); ++d) axes.push_back(d);
    axes.push_back(1);
    r.x = logits.permute(axes).contiguous().reshape(Shape{r.rows, r.cols});
  }
  r.labels = labels.contiguous().reshape(Shape{r.rows});
  return r;
}

}  // namespace detail

// Softmax cross entropy of logits (N, C) [or (N, C, d1, ...)] against class indices (N) [or
// (N, d1, ...)] in [0, C). label_smoothing s in [0, 1) mixes the one-hot target with the uniform
// distribution: target = (1 - s) * onehot + s / C. mean divides by the number of labels.
template <ArrayLike A, class Label>
NDArray<value_type_t<A>> cross_entropy(const A& logits, const NDArray<Label>& labels, double label_smoothing = 0.0,
                                       Reduction reduction = Reduction::mean) {
  using T = value_type_t<A>;
  static_assert(FloatingPoint<T>, "cross_entropy: logits need a float or double array");
  static_assert(detail::is_label_type_v<Label>, "cross_entropy: labels must be an NDArray<int64_t> or NDArray<int32_t>");
  detail::check_reduction(reduction, "cross_entropy");
  check<ValueError>(label_smoothing >= 0.0 && label_smoothing < 1.0,
                    "cross_entropy: label_smoothing must be in [0, 1), got ", label_smoothing);
  auto rows = detail::class_rows(eval(logits), labels, "cross_entropy", "logits", true);
  const int64_t M = rows.rows, C = rows.cols;
  const T smoothing = static_cast<T>(label_smoothing);
  const Device device = rows.x.device();
  NDArray<T> losses(Shape{M}, device), row_max(Shape{M}, device), log_sum(Shape{M}, device);
  if (M > 0) {
#if defined(DL_CUDA_ENABLED)
    if (device.is_cuda())
      cuda::cross_entropy_forward(rows.x.data(), rows.labels.data(), M, C, smoothing, losses.data(), row_max.data(),
                                  log_sum.data(), device.index);
    else
#endif
      cpu::cross_entropy_forward(rows.x.data(), rows.labels.data(), M, C, smoothing, losses.data(), row_max.data(),
                                 log_sum.data());
  }
  const bool per_row = reduction == Reduction::none;
  const double scale = detail::reduction_scale(reduction, M);
  NDArray<T> out = per_row ? losses : detail::scaled_total(losses, scale);
  autograd::record_op<T>("cross_entropy", {rows.x}, out,
                         [x = rows.x.detach(), lab = rows.labels, row_max, log_sum, per_row, scale, smoothing, M,
                          C](const NDArray<T>& g) {
                           NDArray<T> gc = g.contiguous();
                           NDArray<T> dx(x.shape(), x.device());
                           if (dx.numel() == 0) return std::vector<NDArray<T>>{dx};
#if defined(DL_CUDA_ENABLED)
                           if (x.device().is_cuda())
                             cuda::cross_entropy_backward(x.data(), lab.data(), row_max.data(), log_sum.data(),
                                                          gc.data(), per_row ? 1 : 0, static_cast<T>(scale), M, C,
                                                          smoothing, dx.data(), x.device().index);
                           else
#endif
                             cpu::cross_entropy_backward(x.data(), lab.data(), row_max.data(), log_sum.data(),
                                                         gc.data(), per_row ? 1 : 0, static_cast<T>(scale), M, C,
                                                         smoothing, dx.data());
                           return std::vector<NDArray<T>>{dx};
                         });
  if (per_row && rows.loss_shape.rank() != 1) out = out.reshape(rows.loss_shape);
  return out;
}

// Negative log-likelihood: -log_probs[i, label_i] for log-probabilities (N, C) [or (N, C, d1, ...)],
// usually the output of log_softmax(x, 1). cross_entropy(x, y) == nll(log_softmax(x, 1), y).
template <ArrayLike A, class Label>
NDArray<value_type_t<A>> nll(const A& log_probs, const NDArray<Label>& labels, Reduction reduction = Reduction::mean) {
  using T = value_type_t<A>;
  static_assert(FloatingPoint<T>, "nll: log_probs need a float or double array");
  static_assert(detail::is_label_type_v<Label>, "nll: labels must be an NDArray<int64_t> or NDArray<int32_t>");
  detail::check_reduction(reduction, "nll");
  auto rows = detail::class_rows(eval(log_probs), labels, "nll", "log_probs");
  const int64_t M = rows.rows, C = rows.cols;
  NDArray<T> losses(Shape{M});
  if (M > 0) cpu::nll_forward(rows.x.data(), rows.labels.data(), M, C, losses.data());
  const bool per_row = reduction == Reduction::none;
  const double scale = detail::reduction_scale(reduction, M);
  NDArray<T> out = per_row ? losses : detail::scaled_total(losses, scale);
  autograd::record_op<T>("nll", {rows.x}, out,
                         [lab = rows.labels, per_row, scale, M, C](const NDArray<T>& g) {
                           NDArray<T> gc = g.contiguous();
                           NDArray<T> dx(Shape{M, C});
                           if (dx.numel() > 0)
                             cpu::nll_backward(lab.data(), gc.data(), per_row ? 1 : 0, static_cast<T>(scale), M, C,
                                               dx.data());
                           return std::vector<NDArray<T>>{dx};
                         });
  if (per_row && rows.loss_shape.rank() != 1) out = out.reshape(rows.loss_shape);
  return out;
}

// Mean squared error (pred - target)^2; pred and target must have the same shape (no broadcasting,
// which would silently turn a (N, 1) vs (N) mix-up into an (N, N) loss). Both get gradients.
template <ArrayLike A, ArrayLike B>
NDArray<value_type_t<A>> mse(const A& pred, const B& target, Reduction reduction = Reduction::mean) {
  using T = value_type_t<A>;
  static_assert(std::is_same_v<T, value_type_t<B>>, "mse: pred and target have different element types");
  static_assert(FloatingPoint<T>, "mse: needs float or double arrays");
  detail::check_reduction(reduction, "mse");
  NDArray<T> p = eval(pred), t = eval(target);
  p.require_defined("mse");
  t.require_defined("mse");
  require_cpu(p.device(), "mse");
  require_cpu(t.device(), "mse");
  check<ShapeError>(p.shape() == t.shape(), "mse: pred of shape ", p.shape(), " and target of shape ", t.shape(),
                    " differ (mse does not broadcast)");
  NDArray<T> squared = square(p - t);  // one fused, recorded pass
  return detail::reduce_loss(squared, reduction, "mse");
}

// Binary cross entropy on logits x with targets t in [0, 1], stable for any x:
//   loss = max(x, 0) - x * t + log1p(exp(-|x|))   (= softplus(x) - x * t)
// d/dx = sigmoid(x) - t, d/dt = -x. Shapes must match exactly.
template <ArrayLike A, ArrayLike B>
NDArray<value_type_t<A>> binary_cross_entropy_with_logits(const A& logits, const B& targets,
                                                          Reduction reduction = Reduction::mean) {
  using T = value_type_t<A>;
  static_assert(std::is_same_v<T, value_type_t<B>>,
                "binary_cross_entropy_with_logits: logits and targets have different element types");
  static_assert(FloatingPoint<T>, "binary_cross_entropy_with_logits: needs float or double arrays");
  const char* op = "binary_cross_entropy_with_logits";
  detail::check_reduction(reduction, op);
  NDArray<T> x = eval(logits), t = eval(targets);
  x.require_defined(op);
  t.require_defined(op);
  require_cpu(x.device(), op);
  require_cpu(t.device(), op);
  check<ShapeError>(x.shape() == t.shape(), op, ": logits of shape ", x.shape(), " and targets of shape ", t.shape(),
                    " differ");
  // The softplus primitive is max(x, 0) + log1p(exp(-|x|)) with derivative sigmoid(x), exact at 0.
  NDArray<T> losses = softplus(x) - x * t;
  return detail::reduce_loss(losses, reduction, op);
}

}  // namespace dl
