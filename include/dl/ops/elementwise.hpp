// Elementwise operators: each builds an expression node (nothing is computed until the
// expression is assigned, passed to a non-elementwise operator or .eval()-ed). Scalars may stand
// on either side and take the array's element type; shapes broadcast like NumPy.
//
//   NDArray<float> y = dl::relu(x * w + b) - 0.5f;   // one fused pass, one tape node
#pragma once
#include <type_traits>

#include "dl/expr/assign.hpp"
#include "dl/expr/expr.hpp"

namespace dl {

template <class A, class B>
concept ElementwiseOperands = (ArrayLike<A> && ArrayLike<B>) || (ArrayLike<A> && std::is_arithmetic_v<B>) ||
                              (std::is_arithmetic_v<A> && ArrayLike<B>);

namespace detail {
template <class A, class B>
using pair_value_t = typename std::conditional_t<ArrayLike<A>, std::remove_cvref_t<A>, std::remove_cvref_t<B>>::value_type;

template <class Op, class A, class B>
auto make_binary(Op op, const A& a, const B& b) {
  using T = pair_value_t<A, B>;
  auto x = as_operand<T>(a);
  auto y = as_operand<T>(b);
  return BinaryExpr<Op, decltype(x), decltype(y)>{op, x, y};
}
template <class Op, class A>
auto make_unary(Op op, const A& a) { return UnaryExpr<Op, operand_t<A>>{op, a}; }
}  // namespace detail

#define DL_UNARY_FN(fn, Prim) \
  template <ArrayLike A> auto fn(const A& a) { return detail::make_unary(prim::Prim{}, a); }
DL_UNARY_FN(neg, Neg)
DL_UNARY_FN(abs, Abs)
DL_UNARY_FN(exp, Exp)
DL_UNARY_FN(log, Log)
DL_UNARY_FN(log1p, Log1p)
DL_UNARY_FN(expm1, Expm1)
DL_UNARY_FN(sqrt, Sqrt)
DL_UNARY_FN(rsqrt, Rsqrt)
DL_UNARY_FN(square, Square)
DL_UNARY_FN(tanh, Tanh)
DL_UNARY_FN(sigmoid, Sigmoid)
DL_UNARY_FN(relu, Relu)
DL_UNARY_FN(softplus, Softplus)
DL_UNARY_FN(gelu, Gelu)
DL_UNARY_FN(sin, Sin)
DL_UNARY_FN(cos, Cos)
#undef DL_UNARY_FN

template <ArrayLike A> auto operator-(const A& a) { return neg(a); }
template <ArrayLike A> auto leaky_relu(const A& a, double slope = 0.01) { return detail::make_unary(prim::LeakyRelu{slope}, a); }
template <ArrayLike A> auto clamp(const A& a, double lo, double hi) {
  check<ValueError>(lo <= hi, "clamp: lower bound ", lo, " is above upper bound ", hi);
  return detail::make_unary(prim::Clamp{lo, hi}, a);
}

#define DL_BINARY_FN(fn, Prim) \
  template <class A, class B> requires ElementwiseOperands<A, B> \
  auto fn(const A& a, const B& b) { return detail::make_binary(prim::Prim{}, a, b); }
DL_BINARY_FN(operator+, Add)
DL_BINARY_FN(operator-, Sub)
DL_BINARY_FN(operator*, Mul)
DL_BINARY_FN(operator/, Div)
DL_BINARY_FN(add, Add)
DL_BINARY_FN(subtract, Sub)
DL_BINARY_FN(multiply, Mul)
DL_BINARY_FN(divide, Div)
DL_BINARY_FN(maximum, Maximum)
DL_BINARY_FN(minimum, Minimum)
DL_BINARY_FN(equal, Equal)
DL_BINARY_FN(not_equal, NotEqual)
DL_BINARY_FN(less, Less)
DL_BINARY_FN(less_equal, LessEqual)
DL_BINARY_FN(greater, Greater)
DL_BINARY_FN(greater_equal, GreaterEqual)
DL_BINARY_FN(operator<, Less)
DL_BINARY_FN(operator<=, LessEqual)
DL_BINARY_FN(operator>, Greater)
DL_BINARY_FN(operator>=, GreaterEqual)
#undef DL_BINARY_FN

// pow(x, p): a scalar exponent uses the cheaper one-operand primitive.
template <class A, class B> requires ElementwiseOperands<A, B>
auto pow(const A& a, const B& b) {
  if constexpr (ArrayLike<A> && std::is_arithmetic_v<B>) return detail::make_unary(prim::PowScalar{static_cast<double>(b)}, a);
  else return detail::make_binary(prim::Pow{}, a, b);
}

// where(cond, a, b): a where cond is non-zero, else b (cond has the same element type).
template <class C, class A, class B>
  requires ArrayLike<C> && (ArrayLike<A> || std::is_arithmetic_v<A>) && (ArrayLike<B> || std::is_arithmetic_v<B>)
auto where(const C& cond, const A& a, const B& b) {
  using T = value_type_t<C>;
  auto x = detail::as_operand<T>(a);
  auto y = detail::as_operand<T>(b);
  return TernaryExpr<prim::Where, operand_t<C>, decltype(x), decltype(y)>{{}, cond, x, y};
}

// Materialises an array-like value (an NDArray passes through unchanged).
template <ArrayLike A>
auto eval(const A& a) {
  if constexpr (is_ndarray_v<std::remove_cvref_t<A>>) return a;
  else return NDArray<value_type_t<A>>(a);
}

}  // namespace dl
