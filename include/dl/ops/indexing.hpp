// Indexing by integer arrays: take (NumPy), gather (PyTorch) and one_hot. Indices are checked
// before any work (an out-of-range index is a ValueError naming the op, the index and the size),
// and the gradients of take and gather scatter-add into a zero array of the input's shape:
// repeated indices add up. The scatter loops give each thread a disjoint set of destination
// columns and walk the index positions in order, so results do not depend on the thread count.
//
//   auto x = dl::arange<float>(6).reshape({2, 3});           // [[0, 1, 2], [3, 4, 5]]
//   dl::take(x, dl::tensor<int64_t>({2, -3}), 1);            // [[2, 0], [5, 3]]
//   dl::gather(x, 1, dl::tensor<int64_t>({{0, 0}, {2, 1}})); // [[0, 0], [5, 4]]
//   dl::one_hot(dl::tensor<int64_t>({1, 0}), 3);             // [[0, 1, 0], [1, 0, 0]]
#pragma once
#include <cstring>
#include <type_traits>
#include <vector>

#include "dl/autograd/record.hpp"
#include "dl/core/parallel.hpp"
#include "dl/ops/elementwise.hpp"

namespace dl {

namespace detail {

template <class T>
NDArray<T> zeros_array(const Shape& s) {
  NDArray<T> z(s);
  if (z.numel()) std::memset(z.data(), 0, static_cast<size_t>(z.numel()) * sizeof(T));
  return z;
}

// take along `axis` of a contiguous array seen as (outer, n, inner): the index array is
// flattened to `count` positions. copy: dst[o, j, :] = src[o, idx[j], :];
// scatter_add: dst[o, idx[j], :] += src[o, j, :].
struct TakeGeometry {
  int64_t outer = 1, n = 1, inner = 1, count = 0;
};

template <class T>
void take_copy(const T* src, const int64_t* idx, const TakeGeometry& t, T* dst) {
  const int64_t rows = t.outer * t.count;
  parallel_for(0, rows, std::max<int64_t>(1, 32768 / std::max<int64_t>(t.inner, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t o = r / t.count, j = r % t.count;
      std::memcpy(dst + r * t.inner, src + (o * t.n + idx[j]) * t.inner, static_cast<size_t>(t.inner) * sizeof(T));
    }
  });
}

template <class T>
void take_scatter_add(const T* src, const int64_t* idx, const TakeGeometry& t, T* dst) {
  // Threads own disjoint (o, column) ranges; within one, positions j run in order.
  parallel_for(0, t.outer * t.inner, 4096, [&](int64_t b, int64_t e) {
    for (int64_t pos = b; pos < e;) {
      int64_t o = pos / t.inner, c0 = pos % t.inner, c1 = std::min(t.inner, c0 + (e - pos));
      for (int64_t j = 0; j < t.count; ++j) {
        const T* s = src + (o * t.count + j) * t.inner;
        T* d = dst + (o * t.n + idx[j]) * t.inner;
        for (int64_t c = c0; c < c1; ++c) d[c] = static_cast<T>(d[c] + s[c]);
      }
      pos += c1 - c0;
    }
  });
}

// gather geometry: a "column" is one choice of the non-axis coordinates of `index`; along a
// column, position k reads input[..., index[..., k, ...], ...]. Offsets are in elements.
struct GatherColumns {
  int rank = 0, axis = 0;
  Shape index_shape;
  Strides index_strides{}, input_strides{}, out_strides{};
  int64_t columns = 0, length = 0;

  // Offsets of column c's first element in the index, the input and the output.
  void column_offsets(int64_t c, int64_t& idx_off, int64_t& in_off, int64_t& out_off) const {
    idx_off = in_off = out_off = 0;
    for (int d = rank - 1; d >= 0; --d) {
      if (d == axis) continue;
      int64_t i = c % index_shape[d];
      c /= index_shape[d];
      idx_off += i * index_strides[static_cast<size_t>(d)];
      in_off += i * input_strides[static_cast<size_t>(d)];
      out_off += i * out_strides[static_cast<size_t>(d)];
    }
  }
};

// gather along geo's columns: dst[out] = src[input offset of index[out]] (src read through
// geo.input_strides: any strides), and its gradient, scatter_add: dst[input] += src[out] (dst
// contiguous, zeroed by the caller). Columns write to disjoint input columns and, within one, k
// runs in order: results do not depend on the thread count. One loop serves both (Scatter).
template <bool Scatter, class T>
void gather_columns(const T* src, const int64_t* idx, const GatherColumns& geo, T* dst) {
  const int64_t in_step = geo.input_strides[static_cast<size_t>(geo.axis)];
  const int64_t step = geo.out_strides[static_cast<size_t>(geo.axis)];
  parallel_for(0, geo.columns, std::max<int64_t>(1, 32768 / std::max<int64_t>(geo.length, 1)), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int64_t io, xo, oo;
      geo.column_offsets(c, io, xo, oo);
      for (int64_t k = 0; k < geo.length; ++k) {
        if constexpr (Scatter) dst[xo + idx[io + k * step] * in_step] += src[oo + k * step];
        else dst[oo + k * step] = src[xo + idx[io + k * step] * in_step];
      }
    }
  });
}
template <class T>
void gather_copy(const T* src, const int64_t* idx, const GatherColumns& geo, T* dst) {
  gather_columns<false>(src, idx, geo, dst);
}
template <class T>
void gather_scatter_add(const T* src, const int64_t* idx, const GatherColumns& geo, T* dst) {
  gather_columns<true>(src, idx, geo, dst);
}

// Checks every index against `size` (negatives wrap when allowed) and writes them normalised to
// `out` (row-major over the index's shape; index.numel() entries). The compiled graph's take and
// gather write into a planned buffer; eager code uses checked_indices.
inline void checked_indices_into(const NDArray<int64_t>& index, int64_t size, bool wrap_negative, const char* op,
                                 int axis, int64_t* out) {
  int64_t i = 0;
  for_each_element(index, [&](int64_t* p) {
    int64_t v = *p;
    int64_t w = (wrap_negative && v < 0) ? v + size : v;
    check<ValueError>(w >= 0 && w < size, op, ": index ", v, " is out of range for axis ", axis, " of size ", size);
    out[i++] = w;
  });
}
// The same, into a new contiguous array.
inline NDArray<int64_t> checked_indices(const NDArray<int64_t>& index, int64_t size, bool wrap_negative,
                                        const char* op, int axis) {
  NDArray<int64_t> out(index.shape());
  checked_indices_into(index, size, wrap_negative, op, axis, out.numel() ? out.data() : nullptr);
  return out;
}

}  // namespace detail

// NumPy take: picks entries along `axis` by an index array of any shape. The result's shape is
// x.shape[:axis] + indices.shape + x.shape[axis+1:]. Negative indices count from the end.
template <ArrayLike A>
auto take(const A& input, const NDArray<int64_t>& indices, int axis) {
  using T = value_type_t<A>;
  NDArray<T> x = eval(input);
  x.require_defined("take");
  indices.require_defined("take");
  require_cpu(x.device(), "take");
  require_cpu(indices.device(), "take");
  check<ValueError>(x.rank() > 0, "take: axis ", axis, " is out of range for rank 0");
  const int ax = normalize_axis(axis, x.rank(), "take");
  detail::TakeGeometry t;
  for (int d = 0; d < ax; ++d) t.outer *= x.shape()[d];
  t.n = x.shape()[ax];
  for (int d = ax + 1; d < x.rank(); ++d) t.inner *= x.shape()[d];
  t.count = indices.numel();
  check<ShapeError>(x.rank() - 1 + indices.rank() <= kMaxRank, "take: result rank ", x.rank() - 1 + indices.rank(),
                    " exceeds the maximum of ", kMaxRank);
  NDArray<int64_t> idx = detail::checked_indices(indices, t.n, true, "take", axis);
  std::vector<int64_t> dims(x.shape().begin(), x.shape().begin() + ax);
  dims.insert(dims.end(), indices.shape().begin(), indices.shape().end());
  dims.insert(dims.end(), x.shape().begin() + ax + 1, x.shape().end());
  NDArray<T> out{Shape(dims)};
  NDArray<T> xc = x.detach().contiguous();
  if (out.numel() > 0) detail::take_copy(xc.data(), idx.data(), t, out.data());
  if constexpr (FloatingPoint<T>) {
    Shape in_shape = x.shape();
    autograd::record_op<T>("take", {x}, out, [idx, t, in_shape](const NDArray<T>& g) {
      NDArray<T> gx = detail::zeros_array<T>(in_shape);
      NDArray<T> gc = g.contiguous();
      if (gc.numel() > 0) detail::take_scatter_add(gc.data(), idx.data(), t, gx.data());
      return std::vector<NDArray<T>>{gx};
    });
  }
  return out;
}

// take over the flattened input (NumPy's take without an axis).
template <ArrayLike A>
auto take(const A& input, const NDArray<int64_t>& indices) {
  auto x = eval(input);
  x.require_defined("take");
  return take(x.reshape({-1}), indices, 0);
}

// PyTorch gather: out[i][j][k] = x[i][index[i][j][k]][k] for axis = 1 (likewise for any rank).
// index has x's rank, index.shape[d] <= x.shape[d] for d != axis, and the result has index's
// shape. Indices must lie in [0, x.shape[axis]) (negatives are rejected, as in PyTorch).
template <ArrayLike A>
auto gather(const A& input, int axis, const NDArray<int64_t>& index) {
  using T = value_type_t<A>;
  NDArray<T> x = eval(input);
  x.require_defined("gather");
  index.require_defined("gather");
  require_cpu(x.device(), "gather");
  require_cpu(index.device(), "gather");
  check<ShapeError>(x.rank() > 0, "gather: input must have rank >= 1, got shape ", x.shape());
  const int ax = normalize_axis(axis, x.rank(), "gather");
  check<ShapeError>(index.rank() == x.rank(), "gather: index rank ", index.rank(), " differs from input rank ",
                    x.rank(), " (index ", index.shape(), ", input ", x.shape(), ")");
  for (int d = 0; d < x.rank(); ++d)
    check<ShapeError>(d == ax || index.shape()[d] <= x.shape()[d], "gather: index shape ", index.shape(),
                      " exceeds input shape ", x.shape(), " at axis ", d);
  NDArray<int64_t> idx = detail::checked_indices(index, x.shape()[ax], false, "gather", axis);
  NDArray<T> out(index.shape());
  detail::GatherColumns geo;
  geo.rank = x.rank();
  geo.axis = ax;
  geo.index_shape = index.shape();
  geo.index_strides = contiguous_strides(index.shape());
  geo.out_strides = geo.index_strides;
  geo.length = index.shape()[ax];
  geo.columns = geo.length ? index.numel() / geo.length : 0;
  {
    // Reads go through x's own strides: no copy of a transposed or sliced input.
    detail::GatherColumns fwd = geo;
    fwd.input_strides = x.strides();
    detail::gather_copy(x.data(), idx.numel() ? idx.data() : nullptr, fwd, out.numel() ? out.data() : nullptr);
  }
  if constexpr (FloatingPoint<T>) {
    Shape in_shape = x.shape();
    autograd::record_op<T>("gather", {x}, out, [idx, geo, in_shape](const NDArray<T>& g) {
      NDArray<T> gx = detail::zeros_array<T>(in_shape);
      NDArray<T> gc = g.contiguous();
      detail::GatherColumns bwd = geo;
      bwd.input_strides = contiguous_strides(in_shape);
      detail::gather_scatter_add(gc.numel() ? gc.data() : nullptr, idx.numel() ? idx.data() : nullptr, bwd,
                                 gx.numel() ? gx.data() : nullptr);
      return std::vector<NDArray<T>>{gx};
    });
  }
  return out;
}

// One-hot encoding: labels of shape S give an array of shape S + (num_classes,) with a 1 at each
// label. Labels must lie in [0, num_classes). No gradient (labels are integers).
template <class T = float, class Label>
NDArray<T> one_hot(const NDArray<Label>& labels, int64_t num_classes) {
  static_assert(std::is_same_v<Label, int32_t> || std::is_same_v<Label, int64_t>,
                "one_hot: labels must be an int32 or int64 array");
  static_assert(Arithmetic<T>, "one_hot: the result needs an arithmetic element type");
  labels.require_defined("one_hot");
  require_cpu(labels.device(), "one_hot");
  check<ValueError>(num_classes > 0, "one_hot: num_classes must be positive, got ", num_classes);
  std::vector<int64_t> dims = labels.shape().vec();
  dims.push_back(num_classes);
  NDArray<T> out = detail::zeros_array<T>(Shape(dims));
  T* o = out.numel() ? out.data() : nullptr;
  int64_t i = 0;
  for_each_element(labels, [&](Label* p) {
    int64_t v = static_cast<int64_t>(*p);
    check<ValueError>(v >= 0 && v < num_classes, "one_hot: label ", v, " is out of range for ", num_classes,
                      " classes");
    o[i * num_classes + v] = T(1);
    ++i;
  });
  return out;
}

}  // namespace dl
