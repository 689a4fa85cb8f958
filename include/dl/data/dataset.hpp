// TensorDataset: N samples held in memory as one float array (N, ...) of inputs and one int64
// array (N,) of labels, e.g. the output of load_mnist(). It is what a DataLoader draws batches
// from; gather() copies the chosen rows into a new Batch. Handles are shared, not copied.
//
//   dl::data::TensorDataset ds(mnist.images, mnist.labels);  // ds.size() == 60000
//   dl::data::Batch b = ds.gather({3, 1, 4});                // b.x (3, 1, 28, 28), b.y (3,)
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#include "dl/core/error.hpp"
#include "dl/core/shape.hpp"
#include "dl/ndarray/ndarray.hpp"

namespace dl::data {

struct Batch {
  NDArray<float> x;    // (B, sample shape...)
  NDArray<int64_t> y;  // (B,)
};

namespace detail {
// A contiguous array with the same values (copies only when `a` is a strided view).
template <class T>
NDArray<T> dense(const NDArray<T>& a) {
  if (a.is_contiguous()) return a.detach();
  NDArray<T> out(a.shape());
  std::vector<T> v = a.to_vector();
  if (!v.empty()) std::memcpy(out.data(), v.data(), v.size() * sizeof(T));
  return out;
}
}  // namespace detail

class TensorDataset {
 public:
  TensorDataset(const NDArray<float>& inputs, const NDArray<int64_t>& labels) {
    inputs.require_defined("TensorDataset");
    labels.require_defined("TensorDataset");
    require_cpu(inputs.device(), "TensorDataset");
    require_cpu(labels.device(), "TensorDataset");
    check<ShapeError>(inputs.rank() >= 1, "TensorDataset: inputs need a sample axis, got shape ", inputs.shape());
    check<ShapeError>(labels.rank() == 1, "TensorDataset: labels must be 1-D, got shape ", labels.shape());
    check<ShapeError>(inputs.shape()[0] == labels.shape()[0], "TensorDataset: ", inputs.shape()[0],
                      " inputs but ", labels.shape()[0], " labels");
    inputs_ = detail::dense(inputs);
    labels_ = detail::dense(labels);
    sample_shape_ = Shape(inputs.shape().begin() + 1, inputs.shape().end());
    sample_numel_ = sample_shape_.numel();
  }

  int64_t size() const { return labels_.shape()[0]; }
  const Shape& sample_shape() const { return sample_shape_; }
  int64_t sample_numel() const { return sample_numel_; }
  const NDArray<float>& inputs() const { return inputs_; }
  const NDArray<int64_t>& labels() const { return labels_; }

  // Pointer to sample i's contiguous data (sample_numel() floats).
  const float* sample(int64_t i) const {
    check_index(i);
    return inputs_.data() + i * sample_numel_;
  }
  int64_t label(int64_t i) const {
    check_index(i);
    return labels_.data()[i];
  }

  Batch gather(const std::vector<int64_t>& indices) const {
    Shape xs;
    xs.push_back(static_cast<int64_t>(indices.size()));
    for (int64_t d : sample_shape_) xs.push_back(d);
    Batch b{NDArray<float>(xs), NDArray<int64_t>(Shape{static_cast<int64_t>(indices.size())})};
    for (size_t k = 0; k < indices.size(); ++k) {
      std::memcpy(b.x.data() + static_cast<int64_t>(k) * sample_numel_, sample(indices[k]),
                  static_cast<size_t>(sample_numel_) * sizeof(float));
      b.y.data()[k] = labels_.data()[indices[k]];
    }
    return b;
  }

 private:
  void check_index(int64_t i) const {
    check<ValueError>(i >= 0 && i < size(), "TensorDataset: index ", i, " is out of range for ", size(), " samples");
  }
  NDArray<float> inputs_;
  NDArray<int64_t> labels_;
  Shape sample_shape_;
  int64_t sample_numel_ = 0;
};

}  // namespace dl::data
