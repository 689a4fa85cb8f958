// dropout2d: zeroes whole channels (every (n, c) plane of an (N, C, ...) input) with probability
// p in training and scales the kept ones by 1 / (1 - p) (inverted dropout), so eval mode is the
// identity. The mask comes from Philox: one draw of N*C numbers reserved from the generator,
// channel (n, c) kept when uniform(n * C + c) >= p, so the same generator state gives the same mask
// for any thread count (save gen.state() to replay it). Gradient: the same mask and scale.
//
//   dl::Generator gen(7);
//   auto y = dl::dropout2d(x, 0.2, /*training=*/true, gen);
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "dl/autograd/record.hpp"
#include "dl/core/rng.hpp"
#include "dl/ops/elementwise.hpp"

namespace dl {

namespace detail {
// y[plane] = x[plane] * factor[plane] over contiguous (planes, S) arrays.
template <class T>
void scale_planes(const T* x, T* y, const std::vector<T>& factor, int64_t spatial) {
  parallel_for(0, static_cast<int64_t>(factor.size()), std::max<int64_t>(1, 16384 / std::max<int64_t>(spatial, 1)),
               [&](int64_t p0, int64_t p1) {
                 for (int64_t p = p0; p < p1; ++p)
                   for (int64_t i = 0; i < spatial; ++i) y[p * spatial + i] = x[p * spatial + i] * factor[static_cast<size_t>(p)];
               });
}
}  // namespace detail

template <ArrayLike X>
NDArray<value_type_t<X>> dropout2d(const X& input, double p, bool training, Generator& gen = default_generator()) {
  using T = value_type_t<X>;
  static_assert(FloatingPoint<T>, "dropout2d: needs a float or double array");
  NDArray<T> x = eval(input);
  x.require_defined("dropout2d");
  require_cpu(x.device(), "dropout2d");
  check<ShapeError>(x.rank() >= 3, "dropout2d: expected an input (N, C, ...) of rank >= 3, got ", x.shape());
  check<ValueError>(p >= 0 && p <= 1, "dropout2d: probability p must be in [0, 1], got ", p);
  if (!training || p == 0) return x;  // the identity: no draw, nothing recorded
  const int64_t planes = x.shape(0) * x.shape(1), spatial = planes ? x.numel() / planes : 0;
  PhiloxState state = gen.reserve(static_cast<uint64_t>(planes));
  // p == 1 drops everything; the scale is then irrelevant (and 1 / 0 avoided).
  const T keep_scale = p < 1 ? static_cast<T>(1.0 / (1.0 - p)) : T(0);
  std::vector<T> factor(static_cast<size_t>(planes));
  for (int64_t i = 0; i < planes; ++i)
    factor[static_cast<size_t>(i)] = philox_uniform(state, static_cast<uint64_t>(i)) >= p ? keep_scale : T(0);
  NDArray<T> xc = x.contiguous();
  NDArray<T> out(x.shape());
  if (out.numel() > 0) detail::scale_planes(xc.data(), out.data(), factor, spatial);
  autograd::record_op<T>("dropout2d", {x}, out, [factor, spatial, shape = x.shape()](const NDArray<T>& g) {
    NDArray<T> dx(shape);
    if (dx.numel() > 0) detail::scale_planes(g.contiguous().data(), dx.data(), factor, spatial);
    return std::vector<NDArray<T>>{dx};
  });
  return out;
}

}  // namespace dl
