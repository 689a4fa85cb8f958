// Expression nodes: the lazy, typed tree that `a * b + 1` builds. Nodes compute nothing; they
// hold their operands by value (NDArray handles, scalars, sub-expressions), so an expression
// kept in an `auto` variable never dangles. expr/evaluator.hpp gives element i on a device;
// expr/executor.hpp runs the fused loop; expr/assign.hpp materialises and records for autograd.
#pragma once
#include <type_traits>

#include "dl/expr/primitives.hpp"
#include "dl/ndarray/ndarray.hpp"

namespace dl {

// A scalar operand broadcast to every element.
template <class T>
struct ScalarExpr {
  using value_type = T;
  T value;
};

template <class Op, class A>
struct UnaryExpr {
  using value_type = typename A::value_type;
  static_assert(!Op::floating || FloatingPoint<value_type>, "elementwise: this operation needs a float or double array");
  Op op;
  A a;
  NDArray<value_type> eval() const { return NDArray<value_type>(*this); }
  Shape shape() const;
};

template <class Op, class A, class B>
struct BinaryExpr {
  using value_type = typename A::value_type;
  static_assert(std::is_same_v<value_type, typename B::value_type>,
                "elementwise: operands have different element types; convert one with cast<T>()");
  static_assert(!Op::floating || FloatingPoint<value_type>, "elementwise: this operation needs a float or double array");
  Op op;
  A a;
  B b;
  NDArray<value_type> eval() const { return NDArray<value_type>(*this); }
  Shape shape() const;
};

template <class Op, class A, class B, class C>
struct TernaryExpr {
  using value_type = typename A::value_type;
  static_assert(std::is_same_v<value_type, typename B::value_type> && std::is_same_v<value_type, typename C::value_type>,
                "where: operands have different element types; convert with cast<T>()");
  Op op;
  A a;
  B b;
  C c;
  NDArray<value_type> eval() const { return NDArray<value_type>(*this); }
  Shape shape() const;
};

template <class T> struct is_expr_node<ScalarExpr<T>> : std::true_type {};
template <class Op, class A> struct is_expr_node<UnaryExpr<Op, A>> : std::true_type {};
template <class Op, class A, class B> struct is_expr_node<BinaryExpr<Op, A, B>> : std::true_type {};
template <class Op, class A, class B, class C> struct is_expr_node<TernaryExpr<Op, A, B, C>> : std::true_type {};

// Anything that can stand where an array is expected: an NDArray or an expression node.
template <class E>
concept ArrayLike = is_ndarray_v<std::remove_cvref_t<E>> || is_expr_node_v<E>;

template <class E> using value_type_t = typename std::remove_cvref_t<E>::value_type;

// A unary node that the expression's user runs as one leaf instead of a primitive over its
// operand. Never for eager expressions; the compiled graph's regions take relu over a GEMM as a
// leaf (graph/exec.hpp's is_epilogue_leaf).
template <class Op, class A> struct unary_is_leaf : std::false_type {};

// Number of leaves in an expression: its NDArrays (in a compiled graph's region: its graph nodes
// and unary_is_leaf nodes). Scalars are not leaves.
template <class E> struct leaf_count : std::integral_constant<int, 1> {};
template <class T> struct leaf_count<ScalarExpr<T>> : std::integral_constant<int, 0> {};
template <class Op, class A>
struct leaf_count<UnaryExpr<Op, A>>
    : std::conditional_t<unary_is_leaf<Op, A>::value, std::integral_constant<int, 1>, leaf_count<A>> {};
template <class Op, class A, class B>
struct leaf_count<BinaryExpr<Op, A, B>> : std::integral_constant<int, leaf_count<A>::value + leaf_count<B>::value> {};
template <class Op, class A, class B, class C>
struct leaf_count<TernaryExpr<Op, A, B, C>>
    : std::integral_constant<int, leaf_count<A>::value + leaf_count<B>::value + leaf_count<C>::value> {};

// Calls fn(leaf) for every NDArray leaf, left to right (the order leaf indices follow).
template <class T, class Fn> void for_each_leaf(const NDArray<T>& a, Fn&& fn) { fn(a); }
template <class T, class Fn> void for_each_leaf(const ScalarExpr<T>&, Fn&&) {}
template <class Op, class A, class Fn> void for_each_leaf(const UnaryExpr<Op, A>& e, Fn&& fn) { for_each_leaf(e.a, fn); }
template <class Op, class A, class B, class Fn>
void for_each_leaf(const BinaryExpr<Op, A, B>& e, Fn&& fn) { for_each_leaf(e.a, fn); for_each_leaf(e.b, fn); }
template <class Op, class A, class B, class C, class Fn>
void for_each_leaf(const TernaryExpr<Op, A, B, C>& e, Fn&& fn) {
  for_each_leaf(e.a, fn); for_each_leaf(e.b, fn); for_each_leaf(e.c, fn);
}

// The broadcast shape of an expression; a mismatch names the operation.
template <class T> Shape expr_shape(const NDArray<T>& a) { a.require_defined("elementwise"); return a.shape(); }
template <class T> Shape expr_shape(const ScalarExpr<T>&) { return Shape{}; }
template <class Op, class A> Shape expr_shape(const UnaryExpr<Op, A>& e) { return expr_shape(e.a); }
template <class Op, class A, class B> Shape expr_shape(const BinaryExpr<Op, A, B>& e) {
  return broadcast_shapes(expr_shape(e.a), expr_shape(e.b), Op::name);
}
template <class Op, class A, class B, class C> Shape expr_shape(const TernaryExpr<Op, A, B, C>& e) {
  return broadcast_shapes(broadcast_shapes(expr_shape(e.a), expr_shape(e.b), Op::name), expr_shape(e.c), Op::name);
}

template <class Op, class A> Shape UnaryExpr<Op, A>::shape() const { return expr_shape(*this); }
template <class Op, class A, class B> Shape BinaryExpr<Op, A, B>::shape() const { return expr_shape(*this); }
template <class Op, class A, class B, class C> Shape TernaryExpr<Op, A, B, C>::shape() const { return expr_shape(*this); }

// Operand storage: NDArrays and nodes by value.
template <class E> using operand_t = std::remove_cvref_t<E>;

}  // namespace dl
