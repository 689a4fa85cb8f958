// Reductions: sum, mean, max, min, prod, var, logsumexp, argmax, argmin. Each reduces the whole
// array (result shape ()), one axis, or a set of axes (NumPy semantics: negative axes count from
// the end; an empty set reduces nothing); keepdims leaves the reduced axes as size 1. The work
// runs in the plan-based kernels of backend/cpu/reduce.hpp; each op records one tape node.
//
//   auto x = dl::randn<float>({2, 3, 4});
//   dl::sum(x);                 // shape ()
//   dl::mean(x, -1);            // (2, 3)
//   dl::max(x, {0, 2}, true);   // (1, 3, 1)
//   dl::argmax(x, 1, true);     // NDArray<int64_t> (2, 1, 4)
//
// Gradients: sum broadcasts g; mean broadcasts g / count; max/min send g to the FIRST extremum
// in row-major order of the reduced sub-space (ties: only that position gets it, like
// torch.max(dim)); prod uses prod / x, with zeros handled exactly (one zero: only that position
// gets the product of the others; two or more: all zero); var sends 2 (x - mean) / (n - ddof);
// logsumexp sends softmax(x). Integer arrays support sum, prod, max, min, argmax, argmin (sum
// and prod keep the element type, so they can overflow); mean, var, logsumexp need float/double.
#pragma once
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <vector>

#include "dl/autograd/record.hpp"
#include "dl/backend/cpu/reduce.hpp"
#include "dl/backend/cuda/reduce.hpp"
#include "dl/ops/elementwise.hpp"

namespace dl {

namespace detail {

// Which axes a reduction removes, and the shapes around it.
struct ReduceAxes {
  Shape in_shape;
  Shape out_shape;   // the result's shape (reduced axes dropped unless keepdims)
  Shape keep_shape;  // the result's shape with reduced axes kept as 1 (for broadcasting back)
  std::array<bool, kMaxRank> mask{};
  int64_t count = 1;  // input elements per output element
};

inline ReduceAxes reduction_from_mask(const Shape& s, const std::array<bool, kMaxRank>& mask, bool keepdims) {
  ReduceAxes r;
  r.in_shape = s;
  r.mask = mask;
  std::vector<int64_t> out, keep;
  for (int d = 0; d < s.rank(); ++d) {
    if (mask[static_cast<size_t>(d)]) {
      r.count *= s[d];
      keep.push_back(1);
      if (keepdims) out.push_back(1);
    } else {
      keep.push_back(s[d]);
      out.push_back(s[d]);
    }
  }
  r.out_shape = Shape(out);
  r.keep_shape = Shape(keep);
  return r;
}

// Every axis: the result is 0-d.
inline ReduceAxes reduction_all(const Shape& s) {
  std::array<bool, kMaxRank> mask{};
  for (int d = 0; d < s.rank(); ++d) mask[static_cast<size_t>(d)] = true;
  return reduction_from_mask(s, mask, false);
}

inline ReduceAxes reduction_over(const Shape& s, const std::vector<int>& axes, bool keepdims, const char* op) {
  std::array<bool, kMaxRank> mask{};
  for (int axis : axes) {
    // normalize_axis accepts axis 0 for rank 0 (it treats scalars as rank 1); NumPy does not.
    check<ValueError>(s.rank() > 0, op, ": axis ", axis, " is out of range for rank 0");
    int a = normalize_axis(axis, s.rank(), op);
    check<ValueError>(!mask[static_cast<size_t>(a)], op, ": axis ", axis, " is repeated in the axes list");
    mask[static_cast<size_t>(a)] = true;
  }
  return reduction_from_mask(s, mask, keepdims);
}

template <class T>
NDArray<T> zeros_of(const Shape& s) {
  NDArray<T> z(s);
  if (z.numel()) std::memset(z.data(), 0, static_cast<size_t>(z.numel()) * sizeof(T));
  return z;
}

// g (the result's shape) viewed with the reduced axes kept as 1, so it broadcasts against x.
template <class T>
NDArray<T> keep_view(const NDArray<T>& g, const ReduceAxes& r) {
  return g.reshape(r.keep_shape);
}

// gpu_ok: the reduction has a CUDA path (sum and mean; the others run on the CPU only).
template <class T>
void require_reducible(const NDArray<T>& a, const char* op, bool gpu_ok = false) {
  a.require_defined(op);
  if (!gpu_ok || !cuda::kernel_type<T>) require_cpu(a.device(), op);
}

// out = a summed over the dims where mask is true, on a's device.
template <class T>
void sum_reduce_on(const NDArray<T>& a, const std::array<bool, kMaxRank>& mask, NDArray<T>& out) {
#if defined(DL_CUDA_ENABLED)
  if constexpr (cuda::kernel_type<T>)
    if (a.device().is_cuda()) return cuda::sum_reduce(a.data(), a.shape(), a.strides(), mask, out.data(), a.device().index);
#endif
  cpu::sum_reduce(a.data(), a.shape(), a.strides(), mask, out.data());
}

inline void require_nonempty(const ReduceAxes& r, const char* op) {
  check<ValueError>(r.count > 0, op, ": cannot reduce over zero elements (input shape ", r.in_shape,
                    "); the operation has no identity");
}

template <class T>
NDArray<T> sum_impl(const NDArray<T>& a, const ReduceAxes& r) {
  static_assert(Arithmetic<T>, "sum: needs an arithmetic element type");
  require_reducible(a, "sum", true);
  NDArray<T> out(r.out_shape, a.device());
  sum_reduce_on(a, r.mask, out);
  if constexpr (FloatingPoint<T>) {
    autograd::record_op<T>("sum", {a}, out, [r](const NDArray<T>& g) {
      return std::vector<NDArray<T>>{keep_view(g, r).broadcast_to(r.in_shape)};
    });
  }
  return out;
}

template <class T>
NDArray<T> mean_impl(const NDArray<T>& a, const ReduceAxes& r) {
  static_assert(FloatingPoint<T>, "mean: needs a float or double array");
  require_reducible(a, "mean", true);
  require_nonempty(r, "mean");
  NDArray<T> out(r.out_shape, a.device());
  {
    autograd::pause no_tape;
    sum_reduce_on(a, r.mask, out);
    out *= T(1) / static_cast<T>(r.count);
  }
  autograd::record_op<T>("mean", {a}, out, [r](const NDArray<T>& g) {
    return std::vector<NDArray<T>>{NDArray<T>(keep_view(g, r).broadcast_to(r.in_shape) * (T(1) / static_cast<T>(r.count)))};
  });
  return out;
}

template <bool Max, class T>
NDArray<T> extremum_impl(const NDArray<T>& a, const ReduceAxes& r, const char* op) {
  static_assert(Arithmetic<T>, "max/min: needs an arithmetic element type");
  require_reducible(a, op);
  require_nonempty(r, op);
  NDArray<T> out(r.out_shape);
  NDArray<int64_t> arg(r.out_shape);
  cpu::arg_reduce<Max>(a.data(), a.shape(), a.strides(), r.mask, out.data(), arg.data());
  if constexpr (FloatingPoint<T>) {
    autograd::record_op<T>(op, {a}, out, [r, arg](const NDArray<T>& g) {
      NDArray<T> gx = zeros_of<T>(r.in_shape);
      NDArray<T> gc = g.contiguous();
      cpu::scatter_reduced(gc.data(), arg.data(), r.in_shape, r.mask, gx.data());
      return std::vector<NDArray<T>>{gx};
    });
  }
  return out;
}

template <class T>
NDArray<T> max_impl(const NDArray<T>& a, const ReduceAxes& r) { return extremum_impl<true>(a, r, "max"); }
template <class T>
NDArray<T> min_impl(const NDArray<T>& a, const ReduceAxes& r) { return extremum_impl<false>(a, r, "min"); }

template <class T>
NDArray<T> prod_impl(const NDArray<T>& a, const ReduceAxes& r) {
  static_assert(Arithmetic<T>, "prod: needs an arithmetic element type");
  require_reducible(a, "prod");
  NDArray<T> nonzero(r.out_shape), out(r.out_shape);
  NDArray<int64_t> zeros(r.out_shape);
  cpu::prod_reduce(a.data(), a.shape(), a.strides(), r.mask, nonzero.data(), zeros.data());
  for (int64_t o = 0; o < out.numel(); ++o) out.data()[o] = zeros.data()[o] > 0 ? T(0) : nonzero.data()[o];
  if constexpr (FloatingPoint<T>) {
    if (!autograd::needs_grad(a)) return out;
    // The zero count as T, so it can take part in the fused gradient expression.
    NDArray<T> zc(r.keep_shape);
    for (int64_t o = 0; o < zc.numel(); ++o) zc.data()[o] = static_cast<T>(zeros.data()[o]);
    NDArray<T> nz = nonzero.reshape(r.keep_shape), x = a.detach();
    autograd::record_op<T>("prod", {a}, out, [r, zc, nz, x](const NDArray<T>& g) {
      // no zero: prod / x; one zero: the product of the others at the zero, 0 elsewhere;
      // two or more zeros: 0. The unselected prod / x branch may be inf at x = 0; where drops it.
      NDArray<T> one_zero_here = equal(zc, T(1)) * equal(x, T(0));
      return std::vector<NDArray<T>>{
          NDArray<T>(where(equal(zc, T(0)), nz / x, where(one_zero_here, nz, T(0))) * keep_view(g, r))};
    });
  }
  return out;
}

// Mean with the reduced axes kept, for var's forward and backward.
template <class T>
NDArray<T> keepdims_mean(const NDArray<T>& a, const ReduceAxes& r) {
  NDArray<T> m(r.keep_shape);
  cpu::sum_reduce(a.data(), a.shape(), a.strides(), r.mask, m.data());
  m *= T(1) / static_cast<T>(r.count);
  return m;
}

template <class T>
NDArray<T> var_impl(const NDArray<T>& a, const ReduceAxes& r, int ddof) {
  static_assert(FloatingPoint<T>, "var: needs a float or double array");
  require_reducible(a, "var");
  require_nonempty(r, "var");
  check<ValueError>(ddof >= 0, "var: ddof must be non-negative, got ", ddof);
  check<ValueError>(ddof < r.count, "var: ddof ", ddof, " leaves no degrees of freedom for ", r.count,
                    " reduced element(s)");
  const T scale = T(1) / static_cast<T>(r.count - ddof);
  NDArray<T> out(r.out_shape), m;
  {
    autograd::pause no_tape;
    // Two passes (mean, then squared deviations): no cancellation as in E[x^2] - E[x]^2.
    m = keepdims_mean(a, r);
    NDArray<T> dev2 = square(a.detach() - m);
    cpu::sum_reduce(dev2.data(), dev2.shape(), dev2.strides(), r.mask, out.data());
    out *= scale;
  }
  autograd::record_op<T>("var", {a}, out, [r, m, x = a.detach(), scale](const NDArray<T>& g) {
    return std::vector<NDArray<T>>{NDArray<T>((x - m) * keep_view(g, r) * (T(2) * scale))};
  });
  return out;
}

template <class T>
NDArray<T> logsumexp_impl(const NDArray<T>& a, const ReduceAxes& r) {
  static_assert(FloatingPoint<T>, "logsumexp: needs a float or double array");
  require_reducible(a, "logsumexp");
  NDArray<T> shift(r.keep_shape), out(r.out_shape);
  {
    autograd::pause no_tape;
    NDArray<int64_t> arg(r.keep_shape);
    cpu::arg_reduce<true>(a.data(), a.shape(), a.strides(), r.mask, shift.data(), arg.data());
    // Subtract the max so exp never overflows; an infinite/NaN max (or an empty reduction) uses
    // shift 0, which gives +inf, -inf or NaN through the sum as it should.
    for (int64_t o = 0; o < shift.numel(); ++o) {
      T& s = shift.data()[o];
      if (arg.data()[o] < 0 || !std::isfinite(s)) s = T(0);
    }
    NDArray<T> e = exp(a.detach() - shift);
    cpu::sum_reduce(e.data(), e.shape(), e.strides(), r.mask, out.data());
    NDArray<T> s = shift.reshape(r.out_shape);
    out = NDArray<T>(log(out) + s);
  }
  autograd::record_op<T>("logsumexp", {a}, out, [r, x = a.detach(), lse = out.detach()](const NDArray<T>& g) {
    return std::vector<NDArray<T>>{NDArray<T>(exp(x - keep_view(lse, r)) * keep_view(g, r))};
  });
  return out;
}

template <bool Max, class T>
NDArray<int64_t> arg_impl(const NDArray<T>& a, const ReduceAxes& r, const char* op) {
  static_assert(Arithmetic<T>, "argmax/argmin: needs an arithmetic element type");
  require_reducible(a, op);
  require_nonempty(r, op);
  NDArray<T> values(r.out_shape);
  NDArray<int64_t> out(r.out_shape);
  cpu::arg_reduce<Max>(a.data(), a.shape(), a.strides(), r.mask, values.data(), out.data());
  return out;
}

}  // namespace detail

// Four overloads per reduction: whole array, one axis, a vector of axes, a braced list of axes
// ({} reduces nothing, as NumPy's axis=()).
#define DL_REDUCTION(fn)                                                                           \
  template <ArrayLike A>                                                                           \
  auto fn(const A& x) {                                                                            \
    auto a = eval(x);                                                                              \
    a.require_defined(#fn);                                                                        \
    return detail::fn##_impl(a, detail::reduction_all(a.shape()));                                 \
  }                                                                                                \
  template <ArrayLike A>                                                                           \
  auto fn(const A& x, int axis, bool keepdims = false) {                                           \
    auto a = eval(x);                                                                              \
    a.require_defined(#fn);                                                                        \
    return detail::fn##_impl(a, detail::reduction_over(a.shape(), {axis}, keepdims, #fn));        \
  }                                                                                                \
  template <ArrayLike A>                                                                           \
  auto fn(const A& x, const std::vector<int>& axes, bool keepdims = false) {                       \
    auto a = eval(x);                                                                              \
    a.require_defined(#fn);                                                                        \
    return detail::fn##_impl(a, detail::reduction_over(a.shape(), axes, keepdims, #fn));           \
  }                                                                                                \
  template <ArrayLike A>                                                                           \
  auto fn(const A& x, std::initializer_list<int> axes, bool keepdims = false) {                    \
    return fn(x, std::vector<int>(axes), keepdims);                                                \
  }
DL_REDUCTION(sum)
DL_REDUCTION(mean)
DL_REDUCTION(max)
DL_REDUCTION(min)
DL_REDUCTION(prod)
DL_REDUCTION(logsumexp)
#undef DL_REDUCTION

// Variance with `ddof` delta degrees of freedom (divides by n - ddof; needs 0 <= ddof < n).
// The whole-array form uses ddof = 0; pass every axis to choose another ddof.
template <ArrayLike A>
auto var(const A& x) {
  auto a = eval(x);
  a.require_defined("var");
  return detail::var_impl(a, detail::reduction_all(a.shape()), 0);
}
template <ArrayLike A>
auto var(const A& x, int axis, bool keepdims = false, int ddof = 0) {
  auto a = eval(x);
  a.require_defined("var");
  return detail::var_impl(a, detail::reduction_over(a.shape(), {axis}, keepdims, "var"), ddof);
}
template <ArrayLike A>
auto var(const A& x, const std::vector<int>& axes, bool keepdims = false, int ddof = 0) {
  auto a = eval(x);
  a.require_defined("var");
  return detail::var_impl(a, detail::reduction_over(a.shape(), axes, keepdims, "var"), ddof);
}
template <ArrayLike A>
auto var(const A& x, std::initializer_list<int> axes, bool keepdims = false, int ddof = 0) {
  return var(x, std::vector<int>(axes), keepdims, ddof);
}

// argmax / argmin: the position of the first extremum (NaN counts as the extremum, as in
// NumPy). The whole-array form gives the flat row-major index as a 0-d array; the axis form
// gives indices along that axis. No gradient.
template <ArrayLike A>
NDArray<int64_t> argmax(const A& x) {
  auto a = eval(x);
  a.require_defined("argmax");
  return detail::arg_impl<true>(a, detail::reduction_all(a.shape()), "argmax");
}
template <ArrayLike A>
NDArray<int64_t> argmax(const A& x, int axis, bool keepdims = false) {
  auto a = eval(x);
  a.require_defined("argmax");
  return detail::arg_impl<true>(a, detail::reduction_over(a.shape(), {axis}, keepdims, "argmax"), "argmax");
}
template <ArrayLike A>
NDArray<int64_t> argmin(const A& x) {
  auto a = eval(x);
  a.require_defined("argmin");
  return detail::arg_impl<false>(a, detail::reduction_all(a.shape()), "argmin");
}
template <ArrayLike A>
NDArray<int64_t> argmin(const A& x, int axis, bool keepdims = false) {
  auto a = eval(x);
  a.require_defined("argmin");
  return detail::arg_impl<false>(a, detail::reduction_over(a.shape(), {axis}, keepdims, "argmin"), "argmin");
}

}  // namespace dl
