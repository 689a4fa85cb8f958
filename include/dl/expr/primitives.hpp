// The elementwise primitives and their derivative rules: one struct per primitive, the value and
// the partial derivative(s) side by side. This is the one rule table that eager autograd (fused
// tape nodes) and the compiled graph both derive backward passes from.
//
//   unary:   y = f(x);      d(x, y)            = dy/dx
//   binary:  y = f(a, b);   da(a, b, y), db(a, b, y)
//   ternary: y = f(c, a, b) (where): dc, da, db
// `floating` marks primitives that only make sense on float/double arrays.
#pragma once
#include <algorithm>
#include <cmath>
#include <numbers>
#include <type_traits>

#include "dl/core/device.hpp"  // DL_HOST_DEVICE: CUDA kernels apply the same rules

namespace dl::prim {

#define DL_UNARY(Name, label, is_floating, value_expr, deriv_expr) \
  struct Name {                                                     \
    static constexpr const char* name = label;                      \
    static constexpr bool floating = is_floating;                   \
    template <class T> DL_HOST_DEVICE T operator()(T x) const { return value_expr; } \
    template <class T> DL_HOST_DEVICE T d([[maybe_unused]] T x, [[maybe_unused]] T y) const { return deriv_expr; } \
  };

DL_UNARY(Neg, "neg", false, static_cast<T>(-x), T(-1))
DL_UNARY(Abs, "abs", false, static_cast<T>(x < T(0) ? -x : x), static_cast<T>(x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0))))
DL_UNARY(Exp, "exp", true, std::exp(x), y)
DL_UNARY(Log, "log", true, std::log(x), T(1) / x)
DL_UNARY(Log1p, "log1p", true, std::log1p(x), T(1) / (T(1) + x))
DL_UNARY(Expm1, "expm1", true, std::expm1(x), y + T(1))
DL_UNARY(Sqrt, "sqrt", true, std::sqrt(x), T(0.5) / y)
DL_UNARY(Rsqrt, "rsqrt", true, T(1) / std::sqrt(x), T(-0.5) * y * y * y)
DL_UNARY(Square, "square", false, static_cast<T>(x * x), static_cast<T>(T(2) * x))
DL_UNARY(Tanh, "tanh", true, std::tanh(x), T(1) - y * y)
DL_UNARY(Sigmoid, "sigmoid", true, T(1) / (T(1) + std::exp(-x)), y * (T(1) - y))
DL_UNARY(Relu, "relu", false, static_cast<T>(x > T(0) ? x : T(0)), static_cast<T>(x > T(0) ? T(1) : T(0)))
// softplus(x) = log(1 + e^x), computed as max(x, 0) + log1p(e^-|x|) to avoid overflow
DL_UNARY(Softplus, "softplus", true, (x > T(0) ? x : T(0)) + std::log1p(std::exp(-std::abs(x))),
         T(1) / (T(1) + std::exp(-x)))
DL_UNARY(Sin, "sin", true, std::sin(x), std::cos(x))
DL_UNARY(Cos, "cos", true, std::cos(x), -std::sin(x))
// gelu, tanh approximation (as in GPT-2 / PyTorch approximate="tanh")
DL_UNARY(Gelu, "gelu", true,
         T(0.5) * x * (T(1) + std::tanh(T(0.7978845608028654) * (x + T(0.044715) * x * x * x))),
         ([x] {
           T u = T(0.7978845608028654) * (x + T(0.044715) * x * x * x);
           T t = std::tanh(u);
           return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * T(0.7978845608028654) * (T(1) + T(3 * 0.044715) * x * x);
         }()))
#undef DL_UNARY

// Unary primitives with a parameter.
struct LeakyRelu {
  static constexpr const char* name = "leaky_relu";
  static constexpr bool floating = true;
  double slope = 0.01;
  template <class T> DL_HOST_DEVICE T operator()(T x) const { return x > T(0) ? x : static_cast<T>(slope) * x; }
  template <class T> DL_HOST_DEVICE T d(T x, T) const { return x > T(0) ? T(1) : static_cast<T>(slope); }
};
struct Clamp {
  static constexpr const char* name = "clamp";
  static constexpr bool floating = false;
  double lo, hi;
  template <class T> DL_HOST_DEVICE T operator()(T x) const { return std::min(std::max(x, static_cast<T>(lo)), static_cast<T>(hi)); }
  template <class T> DL_HOST_DEVICE T d(T x, T) const { return (x >= static_cast<T>(lo) && x <= static_cast<T>(hi)) ? T(1) : T(0); }
};
// x ** p for a scalar exponent.
struct PowScalar {
  static constexpr const char* name = "pow";
  static constexpr bool floating = true;
  double p;
  template <class T> DL_HOST_DEVICE T operator()(T x) const { return p == 2.0 ? x * x : static_cast<T>(std::pow(x, static_cast<T>(p))); }
  template <class T> DL_HOST_DEVICE T d(T x, T) const {
    return p == 2.0 ? T(2) * x : static_cast<T>(p) * static_cast<T>(std::pow(x, static_cast<T>(p - 1)));
  }
};
// Identity with a cast happening at the leaf; used by assignment of one array into another.
struct Identity {
  static constexpr const char* name = "identity";
  static constexpr bool floating = false;
  template <class T> DL_HOST_DEVICE T operator()(T x) const { return x; }
  template <class T> DL_HOST_DEVICE T d(T, T) const { return T(1); }
};

#define DL_BINARY(Name, label, is_floating, value_expr, da_expr, db_expr) \
  struct Name {                                                            \
    static constexpr const char* name = label;                             \
    static constexpr bool floating = is_floating;                          \
    template <class T> DL_HOST_DEVICE T operator()(T a, T b) const { return value_expr; } \
    template <class T> DL_HOST_DEVICE T da([[maybe_unused]] T a, [[maybe_unused]] T b, [[maybe_unused]] T y) const { return da_expr; } \
    template <class T> DL_HOST_DEVICE T db([[maybe_unused]] T a, [[maybe_unused]] T b, [[maybe_unused]] T y) const { return db_expr; } \
  };

DL_BINARY(Add, "add", false, static_cast<T>(a + b), T(1), T(1))
DL_BINARY(Sub, "sub", false, static_cast<T>(a - b), T(1), T(-1))
DL_BINARY(Mul, "mul", false, static_cast<T>(a * b), b, a)
DL_BINARY(Div, "div", false, static_cast<T>(a / b), T(1) / b, -y / b)
DL_BINARY(Pow, "pow", true, std::pow(a, b), b * std::pow(a, b - T(1)), a > T(0) ? y * std::log(a) : T(0))
// Ties send the gradient to the left operand (as PyTorch's maximum does for the first argument).
DL_BINARY(Maximum, "maximum", false, a >= b ? a : b, static_cast<T>(a >= b ? T(1) : T(0)), static_cast<T>(a >= b ? T(0) : T(1)))
DL_BINARY(Minimum, "minimum", false, a <= b ? a : b, static_cast<T>(a <= b ? T(1) : T(0)), static_cast<T>(a <= b ? T(0) : T(1)))
// Comparisons give 1 or 0 in the operands' type and have zero gradient.
DL_BINARY(Equal, "equal", false, static_cast<T>(a == b ? 1 : 0), T(0), T(0))
DL_BINARY(NotEqual, "not_equal", false, static_cast<T>(a != b ? 1 : 0), T(0), T(0))
DL_BINARY(Less, "less", false, static_cast<T>(a < b ? 1 : 0), T(0), T(0))
DL_BINARY(LessEqual, "less_equal", false, static_cast<T>(a <= b ? 1 : 0), T(0), T(0))
DL_BINARY(Greater, "greater", false, static_cast<T>(a > b ? 1 : 0), T(0), T(0))
DL_BINARY(GreaterEqual, "greater_equal", false, static_cast<T>(a >= b ? 1 : 0), T(0), T(0))
#undef DL_BINARY

// where(cond, a, b): a where cond != 0, else b. The condition gets no gradient.
struct Where {
  static constexpr const char* name = "where";
  static constexpr bool floating = false;
  template <class T> DL_HOST_DEVICE T operator()(T c, T a, T b) const { return c != T(0) ? a : b; }
  template <class T> DL_HOST_DEVICE T d0(T, T, T, T) const { return T(0); }
  template <class T> DL_HOST_DEVICE T d1(T c, T, T, T) const { return c != T(0) ? T(1) : T(0); }
  template <class T> DL_HOST_DEVICE T d2(T c, T, T, T) const { return c != T(0) ? T(0) : T(1); }
};

// ---- what the derivative rules read ---------------------------------------------------------------
// For planners (graph/exec.hpp): a value no rule of a fused region reads need not be kept for
// backward. grad_reads<Op>::partial[k] is the set of values the partial derivative with respect to
// operand k reads: reads::operand(j) for operand j's value, reads::output for the primitive's
// value (which depends on every operand). Primitives listed nowhere read everything.
//
//   add:  da = 1, db = 1          partial = {none, none}
//   mul:  da = b, db = a          partial = {operand(1), operand(0)}
//   exp:  d = y                   partial = {output}
namespace reads {
inline constexpr unsigned none = 0, output = 1u << 3, all = 0xfu;
constexpr unsigned operand(int k) { return 1u << k; }
}  // namespace reads

template <class Op> struct grad_reads { static constexpr unsigned partial[3] = {reads::all, reads::all, reads::all}; };
#define DL_GRAD_READS(Name, ...) \
  template <> struct grad_reads<Name> { static constexpr unsigned partial[3] = {__VA_ARGS__}; };
DL_GRAD_READS(Neg, reads::none)
DL_GRAD_READS(Identity, reads::none)
DL_GRAD_READS(Abs, reads::operand(0))
DL_GRAD_READS(Exp, reads::output)
DL_GRAD_READS(Expm1, reads::output)
DL_GRAD_READS(Log, reads::operand(0))
DL_GRAD_READS(Sqrt, reads::output)
DL_GRAD_READS(Rsqrt, reads::output)
DL_GRAD_READS(Square, reads::operand(0))
DL_GRAD_READS(Tanh, reads::output)
DL_GRAD_READS(Sigmoid, reads::output)
DL_GRAD_READS(Relu, reads::operand(0))
DL_GRAD_READS(Add, reads::none, reads::none)
DL_GRAD_READS(Sub, reads::none, reads::none)
DL_GRAD_READS(Mul, reads::operand(1), reads::operand(0))
DL_GRAD_READS(Div, reads::operand(1), reads::operand(1) | reads::output)
DL_GRAD_READS(Where, reads::none, reads::operand(0), reads::operand(0))
#undef DL_GRAD_READS

// Primitives whose derivative d(x, y) depends only on whether x > 0: backward can keep one bit
// per element (x > 0) instead of a value, and take the derivative as d(1, 1) or d(0, 0).
// relu: d = (x > 0 ? 1 : 0), so d(1, 1) = 1 and d(0, 0) = 0.
template <class Op> struct derivative_from_sign : std::false_type {};
template <> struct derivative_from_sign<Relu> : std::true_type {};

}  // namespace dl::prim
