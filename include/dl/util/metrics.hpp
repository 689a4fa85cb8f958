// Training metrics that accumulate over an epoch: Accuracy (arg-max of logits vs labels),
// RunningMean (weighted mean of e.g. per-batch losses) and Throughput (samples per second on a
// steady clock). All are plain values with update()/value()/reset(); none allocates per update.
//
//   dl::util::Accuracy acc;  dl::util::RunningMean loss;  dl::util::Throughput speed;
//   acc.update(logits, batch.y);  loss.update(l.item(), batch_size);  speed.update(batch_size);
//   std::cout << acc.value() << " " << loss.value() << " " << speed.samples_per_second();
#pragma once
#include <chrono>
#include <cstdint>

#include "dl/core/device.hpp"
#include "dl/core/error.hpp"
#include "dl/ndarray/ndarray.hpp"

namespace dl::util {

// Number of rows of `logits` (N, C) whose arg-max equals the label (ties: the first maximum).
template <class T>
int64_t count_correct(const NDArray<T>& logits, const NDArray<int64_t>& labels) {
  logits.require_defined("accuracy");
  labels.require_defined("accuracy");
  require_cpu(logits.device(), "accuracy");
  require_cpu(labels.device(), "accuracy");
  check<ShapeError>(logits.rank() == 2, "accuracy: logits must be (N, C), got shape ", logits.shape());
  check<ShapeError>(labels.rank() == 1 && labels.shape()[0] == logits.shape()[0], "accuracy: labels of shape ",
                    labels.shape(), " do not match logits of shape ", logits.shape());
  int64_t n = logits.shape()[0], c = logits.shape()[1];
  check<ShapeError>(c > 0 || n == 0, "accuracy: logits have no classes, shape ", logits.shape());
  // Strided access: logits may be a view (a slice or a transpose) without a copy.
  const T* base = static_cast<const T*>(logits.storage()->data()) + logits.offset();
  const int64_t* lab = static_cast<const int64_t*>(labels.storage()->data()) + labels.offset();
  int64_t rs = logits.strides()[0], cs = logits.strides()[1], ls = labels.strides()[0];
  int64_t correct = 0;
  for (int64_t i = 0; i < n; ++i) {
    int64_t y = lab[i * ls];
    check<ValueError>(y >= 0 && y < c, "accuracy: label ", y, " at index ", i, " is out of range for ", c, " classes");
    const T* row = base + i * rs;
    int64_t best = 0;
    for (int64_t j = 1; j < c; ++j)
      if (row[j * cs] > row[best * cs]) best = j;
    correct += best == y;
  }
  return correct;
}

class Accuracy {
 public:
  template <class T>
  void update(const NDArray<T>& logits, const NDArray<int64_t>& labels) {
    correct_ += count_correct(logits, labels);
    total_ += logits.shape()[0];
  }
  // Fraction correct so far; 0 before any sample.
  double value() const { return total_ ? static_cast<double>(correct_) / static_cast<double>(total_) : 0.0; }
  int64_t correct() const { return correct_; }
  int64_t total() const { return total_; }
  void reset() { correct_ = total_ = 0; }

 private:
  int64_t correct_ = 0, total_ = 0;
};

class RunningMean {
 public:
  // Adds `value` with `weight` (e.g. a batch's mean loss weighted by its batch size).
  void update(double value, double weight = 1.0) {
    check<ValueError>(weight >= 0, "RunningMean: weight must be non-negative, got ", weight);
    sum_ += value * weight;
    weight_ += weight;
    last_ = value;
  }
  double value() const { return weight_ > 0 ? sum_ / weight_ : 0.0; }
  double last() const { return last_; }
  double weight() const { return weight_; }
  void reset() { sum_ = weight_ = last_ = 0; }

 private:
  double sum_ = 0, weight_ = 0, last_ = 0;
};

// Samples per second since construction or the last reset().
class Throughput {
 public:
  using Clock = std::chrono::steady_clock;
  Throughput() { reset(); }
  void reset() {
    start_ = Clock::now();
    samples_ = 0;
  }
  void update(int64_t samples) { samples_ += samples; }
  int64_t samples() const { return samples_; }
  double elapsed_seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  double samples_per_second() const {
    double s = elapsed_seconds();
    return s > 0 ? static_cast<double>(samples_) / s : 0.0;
  }

 private:
  Clock::time_point start_;
  int64_t samples_ = 0;
};

}  // namespace dl::util
