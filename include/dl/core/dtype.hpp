// Element types: float, double, int32, int64, uint8 compute; bfloat16 and float16 are storage
// types (convert with cast<float>() before computing). DType is the runtime tag used by file
// formats and error messages; dtype_of<T> maps a C++ type to it.
#pragma once
#include <bit>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>

namespace dl {

// bfloat16: the top 16 bits of an IEEE float, rounded to nearest even on conversion.
struct bfloat16 {
  uint16_t bits = 0;
  bfloat16() = default;
  bfloat16(float f) {  // NOLINT(google-explicit-constructor): numeric conversion
    uint32_t u = std::bit_cast<uint32_t>(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) { bits = static_cast<uint16_t>((u >> 16) | 0x40); return; }
    u += 0x7fffu + ((u >> 16) & 1u);
    bits = static_cast<uint16_t>(u >> 16);
  }
  operator float() const { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }
};

// float16 (IEEE binary16), round to nearest even; subnormals and inf/nan preserved.
struct float16 {
  uint16_t bits = 0;
  float16() = default;
  float16(float f) {  // NOLINT(google-explicit-constructor)
    uint32_t u = std::bit_cast<uint32_t>(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u) { bits = static_cast<uint16_t>(sign | 0x7e00u); return; }
    if (absu >= 0x477ff000u) { bits = static_cast<uint16_t>(sign | 0x7c00u); return; }  // overflow -> inf
    if (absu < 0x38800000u) {  // subnormal half (or zero)
      float a = std::bit_cast<float>(absu);
      bits = static_cast<uint16_t>(sign | static_cast<uint32_t>(__builtin_nearbyintf(a * 16777216.0f)));
      return;
    }
    uint32_t mant_odd = (absu >> 13) & 1u;
    absu += 0xc8000fffu + mant_odd;  // rebias exponent (-112 << 23) and round
    bits = static_cast<uint16_t>(sign | (absu >> 13));
  }
  operator float() const {
    uint32_t sign = (bits & 0x8000u) << 16;
    uint32_t exp = (bits >> 10) & 0x1fu, mant = bits & 0x3ffu;
    if (exp == 0) {
      float v = static_cast<float>(mant) / 16777216.0f;
      return sign ? -v : v;
    }
    if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
    return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
  }
};

enum class DType : uint8_t { f32, f64, i32, i64, u8, bf16, f16 };

template <class T> struct dtype_traits;
template <> struct dtype_traits<float> { static constexpr DType value = DType::f32; static constexpr const char* name = "float32"; };
template <> struct dtype_traits<double> { static constexpr DType value = DType::f64; static constexpr const char* name = "float64"; };
template <> struct dtype_traits<int32_t> { static constexpr DType value = DType::i32; static constexpr const char* name = "int32"; };
template <> struct dtype_traits<int64_t> { static constexpr DType value = DType::i64; static constexpr const char* name = "int64"; };
template <> struct dtype_traits<uint8_t> { static constexpr DType value = DType::u8; static constexpr const char* name = "uint8"; };
template <> struct dtype_traits<bfloat16> { static constexpr DType value = DType::bf16; static constexpr const char* name = "bfloat16"; };
template <> struct dtype_traits<float16> { static constexpr DType value = DType::f16; static constexpr const char* name = "float16"; };

template <class T>
concept Element = requires { dtype_traits<T>::value; };
// Types the elementwise and linear-algebra kernels compute in.
template <class T>
concept Arithmetic = Element<T> && std::is_arithmetic_v<T>;
template <class T>
concept FloatingPoint = std::is_same_v<T, float> || std::is_same_v<T, double>;

template <class T> inline constexpr DType dtype_of = dtype_traits<T>::value;

inline constexpr size_t dtype_size(DType d) {
  switch (d) {
    case DType::f32: case DType::i32: return 4;
    case DType::f64: case DType::i64: return 8;
    case DType::u8: return 1;
    case DType::bf16: case DType::f16: return 2;
  }
  return 0;
}

inline constexpr std::string_view dtype_name(DType d) {
  switch (d) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::i32: return "int32";
    case DType::i64: return "int64";
    case DType::u8: return "uint8";
    case DType::bf16: return "bfloat16";
    case DType::f16: return "float16";
  }
  return "unknown";
}

}  // namespace dl
