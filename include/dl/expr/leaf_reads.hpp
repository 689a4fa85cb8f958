// Which leaves' values the backward pass of a fused expression reads, from the rule table's
// grad_reads (expr/primitives.hpp), and replace_leaves, which rebuilds an expression with some
// leaves swapped. Together they let a saved expression drop the leaves no derivative rule reads
// (a in a + b) and run its backward with stand-ins in their place: eager tape nodes
// (expr/assign.hpp's FusedNode) and the compiled graph's regions (graph/exec.hpp's RegionExec).
#pragma once
#include <array>
#include <cstddef>
#include <utility>

#include "dl/expr/expr.hpp"

namespace dl::expr {

// A partial is computed for every operand that holds a leaf; a node's value is read when one of
// its computed partials reads it (or reads the node's output, which depends on every operand) or
// when the node above reads it, and a read value needs every leaf under it.
//   x + s * relu(m):  add reads neither operand, mul by a scalar reads only the scalar, relu reads m:
//                     {x: no, m: yes}
template <class E> struct value_reads {  // a leaf
  template <size_t N> static constexpr void mark(std::array<bool, N>& r, size_t at, bool read) { r[at] = r[at] || read; }
};
template <class T> struct value_reads<ScalarExpr<T>> {
  template <size_t N> static constexpr void mark(std::array<bool, N>&, size_t, bool) {}
};
template <class Op, class A> struct value_reads<UnaryExpr<Op, A>> {
  template <size_t N> static constexpr void mark(std::array<bool, N>& r, size_t at, bool read) {
    if constexpr (unary_is_leaf<Op, A>::value) {
      r[at] = r[at] || read;
    } else {
      constexpr unsigned p = prim::grad_reads<Op>::partial[0];
      value_reads<A>::mark(r, at, read || (p & (prim::reads::operand(0) | prim::reads::output)) != 0);
    }
  }
};
template <class Op, class A, class B> struct value_reads<BinaryExpr<Op, A, B>> {
  template <size_t N> static constexpr void mark(std::array<bool, N>& r, size_t at, bool read) {
    constexpr unsigned p = (leaf_count<A>::value > 0 ? prim::grad_reads<Op>::partial[0] : 0u) |
                           (leaf_count<B>::value > 0 ? prim::grad_reads<Op>::partial[1] : 0u);
    constexpr bool out = (p & prim::reads::output) != 0;
    value_reads<A>::mark(r, at, read || out || (p & prim::reads::operand(0)) != 0);
    value_reads<B>::mark(r, at + leaf_count<A>::value, read || out || (p & prim::reads::operand(1)) != 0);
  }
};
template <class Op, class A, class B, class C> struct value_reads<TernaryExpr<Op, A, B, C>> {
  template <size_t N> static constexpr void mark(std::array<bool, N>& r, size_t at, bool read) {
    constexpr unsigned p = (leaf_count<A>::value > 0 ? prim::grad_reads<Op>::partial[0] : 0u) |
                           (leaf_count<B>::value > 0 ? prim::grad_reads<Op>::partial[1] : 0u) |
                           (leaf_count<C>::value > 0 ? prim::grad_reads<Op>::partial[2] : 0u);
    constexpr bool out = (p & prim::reads::output) != 0;
    value_reads<A>::mark(r, at, read || out || (p & prim::reads::operand(0)) != 0);
    value_reads<B>::mark(r, at + leaf_count<A>::value, read || out || (p & prim::reads::operand(1)) != 0);
    value_reads<C>::mark(r, at + leaf_count<A>::value + leaf_count<B>::value,
                         read || out || (p & prim::reads::operand(2)) != 0);
  }
};
// One flag per leaf (leaf_count order): does the backward loop read its value?
template <class E> constexpr std::array<bool, leaf_count<E>::value> leaf_values_read() {
  std::array<bool, leaf_count<E>::value> r{};
  value_reads<E>::mark(r, 0, false);
  return r;
}

// The expression with leaf I (for_each_leaf's order; a unary_is_leaf node is one leaf) replaced by
// fn(std::integral_constant<size_t, I>{}, leaf). Scalars stay.
//   replace_leaves(a + b * 2, fn) == fn(0, a) + fn(1, b) * 2
// (Declared first: the overloads call each other.)
template <size_t I = 0, class E, class Fn> auto replace_leaves(const E& leaf, Fn& fn);
template <size_t I = 0, class T, class Fn> auto replace_leaves(const ScalarExpr<T>& s, Fn&);
template <size_t I = 0, class Op, class A, class Fn> auto replace_leaves(const UnaryExpr<Op, A>& e, Fn& fn);
template <size_t I = 0, class Op, class A, class B, class Fn> auto replace_leaves(const BinaryExpr<Op, A, B>& e, Fn& fn);
template <size_t I = 0, class Op, class A, class B, class C, class Fn>
auto replace_leaves(const TernaryExpr<Op, A, B, C>& e, Fn& fn);

template <size_t I, class E, class Fn> auto replace_leaves(const E& leaf, Fn& fn) {
  return fn(std::integral_constant<size_t, I>{}, leaf);
}
template <size_t I, class T, class Fn> auto replace_leaves(const ScalarExpr<T>& s, Fn&) { return s; }
template <size_t I, class Op, class A, class Fn> auto replace_leaves(const UnaryExpr<Op, A>& e, Fn& fn) {
  if constexpr (unary_is_leaf<Op, A>::value) {
    return fn(std::integral_constant<size_t, I>{}, e);
  } else {
    auto a = replace_leaves<I>(e.a, fn);
    return UnaryExpr<Op, decltype(a)>{e.op, a};
  }
}
template <size_t I, class Op, class A, class B, class Fn> auto replace_leaves(const BinaryExpr<Op, A, B>& e, Fn& fn) {
  auto a = replace_leaves<I>(e.a, fn);
  auto b = replace_leaves<I + leaf_count<A>::value>(e.b, fn);
  return BinaryExpr<Op, decltype(a), decltype(b)>{e.op, a, b};
}
template <size_t I, class Op, class A, class B, class C, class Fn>
auto replace_leaves(const TernaryExpr<Op, A, B, C>& e, Fn& fn) {
  auto a = replace_leaves<I>(e.a, fn);
  auto b = replace_leaves<I + leaf_count<A>::value>(e.b, fn);
  auto c = replace_leaves<I + leaf_count<A>::value + leaf_count<B>::value>(e.c, fn);
  return TernaryExpr<Op, decltype(a), decltype(b), decltype(c)>{e.op, a, b, c};
}

}  // namespace dl::expr
