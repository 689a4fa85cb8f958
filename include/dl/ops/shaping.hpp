// Joining, splitting and padding arrays: concat, stack, split (equal sections or given sizes)
// and constant pad. concat/stack/pad copy into a new array through the strided assignment
// executor (inputs may be non-contiguous); their gradients are views of the incoming gradient
// (no copy). split returns slices of the input (views, one tape node each).
//
//   auto a = dl::ones<float>({2, 3}), b = dl::zeros<float>({1, 3});
//   dl::concat({a, b}, 0);                 // (3, 3)
//   dl::stack({a, a}, 1);                  // (2, 2, 3)
//   dl::split(a, 3, 1);                     // three (2, 1) slices
//   dl::split(a, {1, 2}, 1);                // (2, 1) and (2, 2)
//   dl::pad(a, {{1, 0}, {2, 2}}, 9.0f);    // (3, 7), border of 9
#pragma once
#include <initializer_list>
#include <numeric>
#include <utility>
#include <vector>

#include "dl/autograd/record.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/ops/elementwise.hpp"

namespace dl {

namespace detail {

// The view of `a` at position i along `axis`, with that axis removed (no copy, not recorded).
template <class T>
NDArray<T> select_view(const NDArray<T>& a, int axis, int64_t i) {
  std::vector<int64_t> dims;
  Strides st{};
  int k = 0;
  for (int d = 0; d < a.rank(); ++d) {
    if (d == axis) continue;
    dims.push_back(a.shape()[d]);
    st[static_cast<size_t>(k++)] = a.strides()[static_cast<size_t>(d)];
  }
  return NDArray<T>(a.storage(), Shape(dims), st, a.offset() + i * a.strides()[static_cast<size_t>(axis)]);
}

// `a` seen with a new size-1 axis at `axis` (no copy, not recorded).
template <class T>
NDArray<T> unit_axis_view(const NDArray<T>& a, int axis) {
  std::vector<int64_t> dims = a.shape().vec();
  dims.insert(dims.begin() + axis, 1);
  Strides st{};
  for (int d = 0, k = 0; d < a.rank() + 1; ++d)
    st[static_cast<size_t>(d)] = d == axis ? 0 : a.strides()[static_cast<size_t>(k++)];
  return NDArray<T>(a.storage(), Shape(dims), st, a.offset());
}

// A sub-box of `a`: start[d] .. start[d] + shape[d] on every axis (no copy, not recorded).
template <class T>
NDArray<T> box_view(const NDArray<T>& a, const std::vector<int64_t>& start, const Shape& shape) {
  int64_t off = a.offset();
  for (int d = 0; d < a.rank(); ++d) off += start[static_cast<size_t>(d)] * a.strides()[static_cast<size_t>(d)];
  return NDArray<T>(a.storage(), shape, a.strides(), off);
}

template <class T>
void require_inputs(const std::vector<NDArray<T>>& xs, const char* op) {
  check<ValueError>(!xs.empty(), op, ": needs at least one array");
  for (const auto& x : xs) {
    x.require_defined(op);
    require_cpu(x.device(), op);
  }
}

}  // namespace detail

// Joins arrays along an existing axis; all other dims must match.
template <class T>
NDArray<T> concat(const std::vector<NDArray<T>>& xs, int axis = 0) {
  detail::require_inputs(xs, "concat");
  const Shape& first = xs[0].shape();
  check<ShapeError>(first.rank() > 0, "concat: cannot concatenate 0-d arrays (use stack)");
  const int ax = normalize_axis(axis, first.rank(), "concat");
  std::vector<int64_t> offsets;  // start of each input along the axis
  int64_t total = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Shape& s = xs[i].shape();
    bool ok = s.rank() == first.rank();
    for (int d = 0; ok && d < s.rank(); ++d) ok = d == ax || s[d] == first[d];
    check<ShapeError>(ok, "concat: array ", i, " has shape ", s, ", which does not match array 0's shape ", first,
                      " outside axis ", ax);
    offsets.push_back(total);
    total += s[ax];
  }
  Shape out_shape = first;
  out_shape[ax] = total;
  NDArray<T> out(out_shape);
  for (size_t i = 0; i < xs.size(); ++i) {
    std::vector<int64_t> start(static_cast<size_t>(first.rank()), 0);
    start[static_cast<size_t>(ax)] = offsets[i];
    NDArray<T> region = detail::box_view(out, start, xs[i].shape());
    region.assign(xs[i].detach());
  }
  if constexpr (FloatingPoint<T>) {
    std::vector<Shape> shapes;
    for (const auto& x : xs) shapes.push_back(x.shape());
    autograd::record_op<T>("concat", xs, out, [shapes, offsets, ax](const NDArray<T>& g) {
      std::vector<NDArray<T>> grads;
      for (size_t i = 0; i < shapes.size(); ++i) {
        std::vector<int64_t> start(static_cast<size_t>(g.rank()), 0);
        start[static_cast<size_t>(ax)] = offsets[i];
        grads.push_back(detail::box_view(g, start, shapes[i]));
      }
      return grads;
    });
  }
  return out;
}

// concat({a, b}, axis) with the element type deduced from the arrays.
template <class T>
NDArray<T> concat(std::initializer_list<NDArray<T>> xs, int axis = 0) {
  return concat(std::vector<NDArray<T>>(xs), axis);
}

// Joins equally shaped arrays along a new axis (0 .. rank, negative counts from the end).
template <class T>
NDArray<T> stack(const std::vector<NDArray<T>>& xs, int axis = 0) {
  detail::require_inputs(xs, "stack");
  const Shape& first = xs[0].shape();
  const int ax = normalize_axis(axis, first.rank() + 1, "stack");
  for (size_t i = 0; i < xs.size(); ++i)
    check<ShapeError>(xs[i].shape() == first, "stack: array ", i, " has shape ", xs[i].shape(),
                      ", which differs from array 0's shape ", first);
  std::vector<int64_t> dims = first.vec();
  dims.insert(dims.begin() + ax, static_cast<int64_t>(xs.size()));
  NDArray<T> out{Shape(dims)};
  for (size_t i = 0; i < xs.size(); ++i) {
    NDArray<T> region = detail::select_view(out, ax, static_cast<int64_t>(i));
    region.assign(xs[i].detach());
  }
  if constexpr (FloatingPoint<T>) {
    const size_t n = xs.size();
    autograd::record_op<T>("stack", xs, out, [n, ax](const NDArray<T>& g) {
      std::vector<NDArray<T>> grads;
      for (size_t i = 0; i < n; ++i) grads.push_back(detail::select_view(g, ax, static_cast<int64_t>(i)));
      return grads;
    });
  }
  return out;
}

template <class T>
NDArray<T> stack(std::initializer_list<NDArray<T>> xs, int axis = 0) {
  return stack(std::vector<NDArray<T>>(xs), axis);
}

// Splits along `axis` into pieces of the given sizes (non-negative, summing to the axis size).
// Each piece is a slice (a view) recorded as its own tape node.
template <ArrayLike A>
auto split(const A& input, const std::vector<int64_t>& sizes, int axis = 0) {
  using T = value_type_t<A>;
  NDArray<T> x = eval(input);
  x.require_defined("split");
  check<ValueError>(x.rank() > 0, "split: cannot split a 0-d array");
  const int ax = normalize_axis(axis, x.rank(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    check<ValueError>(s >= 0, "split: section sizes must be non-negative, got ", s);
    total += s;
  }
  check<ValueError>(total == x.shape()[ax], "split: section sizes add up to ", total, " but axis ", axis,
                    " has size ", x.shape()[ax]);
  std::vector<NDArray<T>> out;
  int64_t start = 0;
  for (int64_t s : sizes) {
    out.push_back(x.slice(ax, start, start + s));
    start += s;
  }
  return out;
}

// Splits along `axis` into `sections` equal pieces (the axis size must be divisible).
template <ArrayLike A>
auto split(const A& input, int64_t sections, int axis = 0) {
  using T = value_type_t<A>;
  NDArray<T> x = eval(input);
  x.require_defined("split");
  check<ValueError>(sections > 0, "split: number of sections must be positive, got ", sections);
  check<ValueError>(x.rank() > 0, "split: cannot split a 0-d array");
  const int ax = normalize_axis(axis, x.rank(), "split");
  const int64_t n = x.shape()[ax];
  check<ValueError>(n % sections == 0, "split: axis ", axis, " of size ", n, " cannot be split into ", sections,
                    " equal sections");
  return split(x, std::vector<int64_t>(static_cast<size_t>(sections), n / sections), ax);
}

// Overload so that split(x, {1, 2}, axis) picks the sizes form.
template <ArrayLike A>
auto split(const A& input, std::initializer_list<int64_t> sizes, int axis = 0) {
  return split(input, std::vector<int64_t>(sizes), axis);
}

// Constant padding: pads[d] = (before, after) elements added on axis d, from the first axis;
// axes past pads.size() are not padded. Gradient: the interior of the incoming gradient.
template <ArrayLike A>
auto pad(const A& input, const std::vector<std::pair<int64_t, int64_t>>& pads, value_type_t<A> value = value_type_t<A>(0)) {
  using T = value_type_t<A>;
  NDArray<T> x = eval(input);
  x.require_defined("pad");
  require_cpu(x.device(), "pad");
  check<ValueError>(static_cast<int>(pads.size()) <= x.rank(), "pad: got ", pads.size(),
                    " (before, after) pairs for an array of rank ", x.rank());
  std::vector<int64_t> dims = x.shape().vec(), start(static_cast<size_t>(x.rank()), 0);
  for (size_t d = 0; d < pads.size(); ++d) {
    auto [before, after] = pads[d];
    check<ValueError>(before >= 0 && after >= 0, "pad: padding must be non-negative, got (", before, ", ", after,
                      ") for axis ", d);
    start[d] = before;
    bool overflow = __builtin_add_overflow(dims[d], before, &dims[d]) || __builtin_add_overflow(dims[d], after, &dims[d]);
    check<ShapeError>(!overflow, "pad: padded size of axis ", d, " overflows");
  }
  NDArray<T> out = full<T>(Shape(dims), value);
  NDArray<T> interior = detail::box_view(out, start, x.shape());
  interior.assign(x.detach());
  if constexpr (FloatingPoint<T>) {
    Shape in_shape = x.shape();
    autograd::record_op<T>("pad", {x}, out, [start, in_shape](const NDArray<T>& g) {
      return std::vector<NDArray<T>>{detail::box_view(g, start, in_shape)};
    });
  }
  return out;
}

}  // namespace dl
