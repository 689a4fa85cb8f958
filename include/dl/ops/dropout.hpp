// dropout(x, p, training): inverted dropout. In training, each element is kept with probability
// 1 - p and scaled by 1 / (1 - p), so the expected value of every element is unchanged and
// evaluation needs no rescaling. The keep mask comes from the counter-based Philox generator
// (core/rng.hpp): element i (row-major) is kept iff uniform(state, i) >= p, so the mask depends
// only on the generator state, never on the thread count. The backward pass regenerates the same
// mask from the saved PhiloxState instead of storing it (no memory kept between the passes).
//
//   dl::Generator gen(7);
//   auto y = dl::dropout(x, 0.5, /*training=*/true, gen);   // ~half zero, the rest doubled
//   auto z = dl::dropout(x, 0.5, /*training=*/false);       // z is x (the same handle)
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "dl/autograd/record.hpp"
#include "dl/core/parallel.hpp"
#include "dl/core/rng.hpp"
#include "dl/ops/elementwise.hpp"

namespace dl {

namespace detail {
// out[i] = in[i] * scale where element i of the draw is kept, else 0. `in` and `out` are contiguous.
template <class T>
void dropout_apply(const T* in, T* out, int64_t n, const PhiloxState& state, double p, T scale) {
  parallel_for(0, n, 16384, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      out[i] = philox_uniform(state, static_cast<uint64_t>(i)) >= p ? in[i] * scale : T(0);
  });
}
}  // namespace detail

template <ArrayLike A>
NDArray<value_type_t<A>> dropout(const A& input, double p, bool training, Generator& gen = default_generator()) {
  using T = value_type_t<A>;
  static_assert(FloatingPoint<T>, "dropout: needs a float or double array");
  // !(p >= 0) also rejects NaN.
  check<ValueError>(p >= 0.0 && p < 1.0, "dropout: probability p must be in [0, 1), got ", p);
  NDArray<T> x = eval(input);
  x.require_defined("dropout");
  if (!training || p == 0.0) return x;  // identity: the same handle, nothing recorded
  require_cpu(x.device(), "dropout");
  NDArray<T> src = x.detach().contiguous();
  NDArray<T> out(x.shape(), x.device());
  int64_t n = x.numel();
  // Reserve the numbers even for an empty array so the generator's stream advances the same way.
  PhiloxState state = gen.reserve(static_cast<uint64_t>(n));
  T scale = static_cast<T>(1.0 / (1.0 - p));
  if (n > 0) detail::dropout_apply(src.data(), out.data(), n, state, p, scale);
  autograd::record_op<T>("dropout", {x}, out, [state, p, scale](const NDArray<T>& g) {
    // The gradient goes through the same mask and scale: regenerate it from the saved state.
    NDArray<T> gc = g.contiguous();
    NDArray<T> dx(gc.shape(), gc.device());
    if (gc.numel() > 0) detail::dropout_apply(gc.data(), dx.data(), gc.numel(), state, p, scale);
    return std::vector<NDArray<T>>{dx};
  });
  return out;
}

}  // namespace dl
