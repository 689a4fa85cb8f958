// Shape: up to 8 int64 dimensions with an overflow-checked element count. Also the row-major
// strides helper and NumPy broadcasting of two shapes (and its inverse for gradients, sum_to_axes).
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <string>
#include <vector>

#include "dl/core/error.hpp"

namespace dl {

inline constexpr int kMaxRank = 8;

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) { assign(dims.begin(), dims.end()); }
  explicit Shape(const std::vector<int64_t>& dims) { assign(dims.begin(), dims.end()); }
  template <class It>
  Shape(It first, It last) { assign(first, last); }

  int rank() const { return rank_; }
  int64_t operator[](int i) const { return dims_[static_cast<size_t>(i)]; }
  int64_t& operator[](int i) { return dims_[static_cast<size_t>(i)]; }
  const int64_t* begin() const { return dims_.data(); }
  const int64_t* end() const { return dims_.data() + rank_; }
  std::vector<int64_t> vec() const { return {begin(), end()}; }

  // Product of the dims; throws if it does not fit in int64.
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank_; ++i) {
      if (__builtin_mul_overflow(n, dims_[i], &n))
        fail<ShapeError>("shape: element count of ", to_string(), " overflows int64");
    }
    return n;
  }

  void push_back(int64_t d) {
    check<ShapeError>(rank_ < kMaxRank, "shape: rank ", rank_ + 1, " exceeds the maximum of ", kMaxRank);
    check<ShapeError>(d >= 0, "shape: dimension ", rank_, " is negative (", d, ")");
    dims_[rank_++] = d;
  }

  std::string to_string() const {
    std::string s = "(";
    for (int i = 0; i < rank_; ++i) {
      if (i) s += ", ";
      s += std::to_string(dims_[i]);
    }
    if (rank_ == 1) s += ",";
    return s + ")";
  }

  friend bool operator==(const Shape& a, const Shape& b) {
    return a.rank_ == b.rank_ && std::equal(a.begin(), a.end(), b.begin());
  }
  friend std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << s.to_string(); }

 private:
  template <class It>
  void assign(It first, It last) {
    auto n = std::distance(first, last);
    check<ShapeError>(n <= kMaxRank, "shape: rank ", n, " exceeds the maximum of ", kMaxRank);
    rank_ = 0;
    for (; first != last; ++first) push_back(static_cast<int64_t>(*first));
    // Reject shapes whose element count overflows, and also those whose strides would: with a zero
    // dim numel() is 0, but contiguous_strides() still multiplies the other dims.
    (void)numel();  // an element count past int64 is reported as such
    int64_t span = 1;
    for (int i = 0; i < rank_; ++i)
      if (__builtin_mul_overflow(span, std::max<int64_t>(dims_[i], 1), &span))
        fail<ShapeError>("shape: dimensions of ", to_string(), " multiply past int64 (the strides would overflow)");
  }
  std::array<int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

// Strides in elements (not bytes), any sign; 0 marks a broadcast dimension.
using Strides = std::array<int64_t, kMaxRank>;

inline Strides contiguous_strides(const Shape& s) {
  Strides st{};
  int64_t acc = 1;
  for (int i = s.rank() - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= std::max<int64_t>(s[i], 1);
  }
  return st;
}

// Normalises a possibly negative axis; `op` names the caller in the error.
inline int normalize_axis(int axis, int rank, const char* op) {
  int r = std::max(rank, 1);
  check<ValueError>(axis >= -r && axis < r, op, ": axis ", axis, " is out of range for rank ", rank);
  return axis < 0 ? axis + r : axis;
}

// NumPy broadcasting: align trailing dims; each pair must be equal or contain a 1.
inline Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  int r = std::max(a.rank(), b.rank());
  std::vector<int64_t> out(static_cast<size_t>(r));
  for (int i = 0; i < r; ++i) {
    int ia = a.rank() - r + i, ib = b.rank() - r + i;
    int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
    if (da != db && da != 1 && db != 1)
      fail<ShapeError>(op, ": shapes ", a, " and ", b, " cannot be broadcast together");
    out[static_cast<size_t>(i)] = da == 1 ? db : da;
  }
  return Shape(out);
}

// The inverse of broadcasting, for gradients: the axes of `from` that are summed to get `to`
// (leading axes `to` lacks, and axes where `to` has 1). (4, 3, 5) to (3, 1): axes {0, 2}.
inline std::array<bool, kMaxRank> sum_to_axes(const Shape& from, const Shape& to) {
  check<ShapeError>(from.rank() >= to.rank(), "sum_to: cannot reduce ", from, " to ", to);
  std::array<bool, kMaxRank> mask{};
  int lead = from.rank() - to.rank();
  for (int d = 0; d < from.rank(); ++d) {
    int j = d - lead;
    mask[static_cast<size_t>(d)] = j < 0 || (to[j] == 1 && from[d] != 1);
    check<ShapeError>(j < 0 || to[j] == from[d] || to[j] == 1, "sum_to: cannot reduce ", from, " to ", to);
  }
  return mask;
}

}  // namespace dl
