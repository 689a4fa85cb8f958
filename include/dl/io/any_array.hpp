// AnyArray: an NDArray of any element type dl stores (float, double, int32, int64, uint8,
// bfloat16, float16), for file formats whose tensors have mixed dtypes. It is a thin wrapper over
// a std::variant of NDArray handles; get<T>() gives the typed handle or a DTypeError.
//
//   dl::io::AnyArray a = dl::arange<float>(6).reshape({2, 3});
//   a.dtype() == dl::DType::f32;  a.shape() == dl::Shape{2, 3};  auto f = a.get<float>();
#pragma once
#include <cstdint>
#include <type_traits>
#include <variant>

#include "dl/core/dtype.hpp"
#include "dl/core/error.hpp"
#include "dl/ndarray/ndarray.hpp"

namespace dl::io {

class AnyArray {
 public:
  using Variant = std::variant<NDArray<float>, NDArray<double>, NDArray<int32_t>, NDArray<int64_t>, NDArray<uint8_t>,
                               NDArray<bfloat16>, NDArray<float16>>;

  // Calls fn(const NDArray<T>&) with the typed handle.
  template <class Fn>
  decltype(auto) visit(Fn&& fn) const { return std::visit(std::forward<Fn>(fn), v_); }

  AnyArray() = default;
  template <class T>
  AnyArray(NDArray<T> a) : v_(std::move(a)) {}  // NOLINT(google-explicit-constructor): any typed array converts

  // A new uninitialised, contiguous array of the given runtime dtype and shape.
  static AnyArray empty(DType dtype, const Shape& shape) {
    switch (dtype) {
      case DType::f32: return NDArray<float>(shape);
      case DType::f64: return NDArray<double>(shape);
      case DType::i32: return NDArray<int32_t>(shape);
      case DType::i64: return NDArray<int64_t>(shape);
      case DType::u8: return NDArray<uint8_t>(shape);
      case DType::bf16: return NDArray<bfloat16>(shape);
      case DType::f16: return NDArray<float16>(shape);
    }
    fail<DTypeError>("AnyArray: unknown dtype");
  }

  bool defined() const { return visit([](const auto& a) { return a.defined(); }); }
  DType dtype() const { return visit([](const auto& a) { return a.dtype(); }); }
  Shape shape() const { return visit([](const auto& a) { return a.shape(); }); }
  int64_t numel() const { return visit([](const auto& a) { return a.numel(); }); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }

  template <class T>
  bool holds() const { return std::holds_alternative<NDArray<T>>(v_); }

  // The typed handle (shares storage); a DTypeError names both dtypes when T is not the stored one.
  template <class T>
  const NDArray<T>& get(const char* op = "AnyArray") const {
    const auto* p = std::get_if<NDArray<T>>(&v_);
    check<DTypeError>(p != nullptr, op, ": array holds ", dtype_name(dtype()), ", requested ", dtype_name(dtype_of<T>));
    return *p;
  }

  // This array when contiguous, else a row-major copy. Copies element by element, so it works for
  // the storage-only types (bfloat16, float16) too, and never records on the tape.
  AnyArray contiguous() const {
    return visit([](const auto& a) -> AnyArray {
      using T = typename std::remove_cvref_t<decltype(a)>::value_type;
      if (a.is_contiguous()) return a.detach();
      NDArray<T> out(a.shape(), a.device());
      T* o = out.numel() ? out.data() : nullptr;
      for_each_element(a, [&](T* p) { *o++ = *p; });
      return out;
    });
  }
  const void* raw_data() const {
    return visit([](const auto& a) -> const void* { return a.numel() ? static_cast<const void*>(a.data()) : nullptr; });
  }
  void* raw_data() {
    return visit([](const auto& a) -> void* { return a.numel() ? static_cast<void*>(a.data()) : nullptr; });
  }

 private:
  Variant v_;
};

}  // namespace dl::io
