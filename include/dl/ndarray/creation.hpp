// Creating arrays: zeros, ones, full, arange, linspace, rand, randn (seeded Philox: the same
// numbers for any thread count), and from C++ containers.
//
//   auto x = dl::randn<float>({64, 784});           // default generator; dl::manual_seed(0) first
//   auto m = dl::tensor<float>({{1, 2}, {3, 4}});   // (2, 2) from nested lists
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <vector>

#include "dl/core/parallel.hpp"
#include "dl/core/rng.hpp"
#include "dl/ndarray/ndarray.hpp"

namespace dl {

template <class T = float>
NDArray<T> empty(const Shape& shape, Device device = Device::cpu()) { return NDArray<T>(shape, device); }

template <class T = float>
NDArray<T> full(const Shape& shape, T value, Device device = Device::cpu()) {
  NDArray<T> out(shape, device);
  if (device.is_cuda()) {  // one fill kernel (expr/assign.hpp dispatches to the device)
    out.assign(value);
    return out;
  }
  T* p = out.numel() ? out.data() : nullptr;
  parallel_for(0, out.numel(), 65536, [&](int64_t b, int64_t e) { std::fill(p + b, p + e, value); });
  return out;
}
template <class T = float> NDArray<T> zeros(const Shape& shape, Device device = Device::cpu()) { return full<T>(shape, T(0), device); }
template <class T = float> NDArray<T> ones(const Shape& shape, Device device = Device::cpu()) { return full<T>(shape, T(1), device); }
template <class T> NDArray<T> zeros_like(const NDArray<T>& a) { return zeros<T>(a.shape(), a.device()); }
template <class T> NDArray<T> ones_like(const NDArray<T>& a) { return ones<T>(a.shape(), a.device()); }

// [start, stop) in steps of `step`, like numpy.arange.
template <class T = float>
NDArray<T> arange(double start, double stop, double step = 1.0) {
  check<ValueError>(step != 0, "arange: step must be non-zero");
  double n = std::ceil((stop - start) / step);
  int64_t count = n > 0 ? static_cast<int64_t>(n) : 0;
  NDArray<T> out(Shape{count});
  for (int64_t i = 0; i < count; ++i) out.data()[i] = static_cast<T>(start + static_cast<double>(i) * step);
  return out;
}
template <class T = float> NDArray<T> arange(double stop) { return arange<T>(0.0, stop, 1.0); }

// `num` evenly spaced values over [start, stop] (stop included).
template <class T = float>
NDArray<T> linspace(double start, double stop, int64_t num) {
  check<ValueError>(num >= 0, "linspace: num must be non-negative, got ", num);
  NDArray<T> out(Shape{num});
  double step = num > 1 ? (stop - start) / static_cast<double>(num - 1) : 0.0;
  for (int64_t i = 0; i < num; ++i) out.data()[i] = static_cast<T>(i == num - 1 && num > 1 ? stop : start + static_cast<double>(i) * step);
  return out;
}

// Uniform in [low, high).
template <class T = float>
NDArray<T> rand(const Shape& shape, double low = 0.0, double high = 1.0, Generator& gen = default_generator()) {
  check<ValueError>(low <= high, "rand: low ", low, " is above high ", high);
  NDArray<T> out(shape);
  PhiloxState s = gen.reserve(static_cast<uint64_t>(out.numel()));
  T* p = out.numel() ? out.data() : nullptr;
  parallel_for(0, out.numel(), 16384, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) p[i] = static_cast<T>(low + (high - low) * philox_uniform(s, static_cast<uint64_t>(i)));
  });
  return out;
}

// Normal with the given mean and standard deviation.
template <class T = float>
NDArray<T> randn(const Shape& shape, double mean = 0.0, double stddev = 1.0, Generator& gen = default_generator()) {
  check<ValueError>(stddev >= 0, "randn: stddev must be non-negative, got ", stddev);
  NDArray<T> out(shape);
  PhiloxState s = gen.reserve(static_cast<uint64_t>(out.numel()));
  T* p = out.numel() ? out.data() : nullptr;
  parallel_for(0, out.numel(), 16384, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) p[i] = static_cast<T>(mean + stddev * philox_normal(s, static_cast<uint64_t>(i)));
  });
  return out;
}

// Copies `values` into a new array of the given shape (1-D of values.size() by default).
template <class T>
NDArray<T> from_vector(const std::vector<T>& values, const Shape& shape) {
  check<ShapeError>(shape.numel() == static_cast<int64_t>(values.size()), "from_vector: ", values.size(),
                    " values do not fill shape ", shape);
  NDArray<T> out(shape);
  if (!values.empty()) std::memcpy(out.data(), values.data(), values.size() * sizeof(T));
  return out;
}
template <class T>
NDArray<T> from_vector(const std::vector<T>& values) { return from_vector(values, Shape{static_cast<int64_t>(values.size())}); }

template <class T = float>
NDArray<T> tensor(std::initializer_list<T> values) { return from_vector(std::vector<T>(values)); }

template <class T = float>
NDArray<T> tensor(std::initializer_list<std::initializer_list<T>> rows) {
  int64_t n = static_cast<int64_t>(rows.size()), m = n ? static_cast<int64_t>(rows.begin()->size()) : 0;
  std::vector<T> v;
  for (const auto& r : rows) {
    check<ShapeError>(static_cast<int64_t>(r.size()) == m, "tensor: rows have different lengths (", m, " and ", r.size(), ")");
    v.insert(v.end(), r.begin(), r.end());
  }
  return from_vector(v, Shape{n, m});
}

}  // namespace dl
