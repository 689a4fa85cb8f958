// NumPy-style printing: `[[1, 2.5],\n [3, 4]]`, with "..." past 1000 elements (3 edge items).
// Also array_equal / allclose for tests and users.
#pragma once
#include <cmath>
#include <iomanip>
#include <ostream>
#include <sstream>
#include <string>

#include "dl/ndarray/ndarray.hpp"

namespace dl {

namespace detail {
template <class T>
std::string format_element(T v) {
  std::ostringstream os;
  if constexpr (std::is_same_v<T, uint8_t>) os << static_cast<int>(v);
  else if constexpr (std::is_floating_point_v<T> || std::is_same_v<T, bfloat16> || std::is_same_v<T, float16>)
    os << std::setprecision(6) << static_cast<double>(static_cast<float>(v));
  else os << v;
  return os.str();
}

template <class T>
void print_rec(std::ostream& os, const NDArray<T>& a, int dim, int64_t offset, int indent, bool summarize) {
  const T* base = static_cast<const T*>(a.storage()->data());
  os << '[';
  int64_t n = a.shape()[dim];
  for (int64_t i = 0; i < n; ++i) {
    if (summarize && n > 6 && i == 3) {
      os << (dim + 1 == a.rank() ? "..., " : "...,\n" + std::string(static_cast<size_t>(indent + 1), ' '));
      i = n - 3;
    }
    int64_t off = offset + i * a.strides()[dim];
    if (dim + 1 == a.rank()) os << format_element(base[off]);
    else print_rec(os, a, dim + 1, off, indent + 1, summarize);
    if (i + 1 < n) os << (dim + 1 == a.rank() ? ", " : ",\n" + std::string(static_cast<size_t>(indent + 1), ' '));
  }
  os << ']';
}
}  // namespace detail

template <class T>
std::ostream& operator<<(std::ostream& os, const NDArray<T>& a) {
  if (!a.defined()) return os << "NDArray(undefined)";
  require_cpu(a.device(), "print");
  if (a.rank() == 0) return os << detail::format_element(*a.data());
  detail::print_rec(os, a, 0, a.offset(), 0, a.numel() > 1000);
  return os;
}

template <class T>
std::string to_string(const NDArray<T>& a) {
  std::ostringstream os;
  os << a;
  return os.str();
}

// Same shape and exactly equal elements.
template <class T>
bool array_equal(const NDArray<T>& a, const NDArray<T>& b) {
  return a.shape() == b.shape() && a.to_vector() == b.to_vector();
}

// Same shape and |a - b| <= atol + rtol * |b| everywhere (NaNs equal only if equal_nan).
template <class T>
bool allclose(const NDArray<T>& a, const NDArray<T>& b, double rtol = 1e-5, double atol = 1e-8, bool equal_nan = false) {
  if (!(a.shape() == b.shape())) return false;
  auto x = a.to_vector(), y = b.to_vector();
  for (size_t i = 0; i < x.size(); ++i) {
    double u = static_cast<double>(x[i]), v = static_cast<double>(y[i]);
    if (std::isnan(u) || std::isnan(v)) {
      if (!(equal_nan && std::isnan(u) && std::isnan(v))) return false;
      continue;
    }
    if (std::abs(u - v) > atol + rtol * std::abs(v)) return false;
  }
  return true;
}

}  // namespace dl
