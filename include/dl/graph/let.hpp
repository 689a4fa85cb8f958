// Named values in the compile-time graph: a value computed once and used several times without
// repeating its expression in the graph's type. In a symbol expression a value used twice is two
// copies of its subtree (Shared in graph/exec.hpp computes it once, but the TYPE still holds it
// twice), so a residual block, whose input feeds both branches, doubles the type (and the
// executor tree) per block. let(x, body) computes x once and calls body with a Ref: a leaf that
// stands for x's value by id, whose type does not contain x's. chain(x, blocks, f) runs a run-time
// number of blocks of one graph type, each on the previous one's output through a Ref, so a deep
// stack (ResNet-20's 9 blocks) is one graph whose type is that of ONE block.
//
//   auto y = dl::graph::let(x, [&](const auto& in) { return dl::relu(conv(in) + in); });
//   //  LetNode<X, UnaryExpr<Relu, BinaryExpr<Add, Conv2dNode<Ref<float, -1>>, Ref<float, -1>>>>
//   auto z = dl::graph::chain(y, blocks, [](auto& block, const auto& in) { return block(in); });
//
// Nothing here computes: graph/exec.hpp's executors bind a Ref to its value and sum the Refs'
// gradients into the named value's gradient.
#pragma once
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "dl/graph/sym.hpp"

namespace dl::graph {

// The value named `id` by an enclosing let or chain (a leaf of the graph).
template <class T, int Rank>
struct Ref {
  using value_type = T;
  static constexpr int rank = Rank;
  uint64_t id = 0;
};

// `bound` computed once; `body` reads it through Ref leaves carrying `id`.
template <class X, class Body>
struct LetNode {
  using value_type = typename Body::value_type;
  X bound;
  Body body;
  uint64_t id = 0;
};

// bodies[0] reads `input` (Ref ids[0]), bodies[k] reads bodies[k - 1]'s output (Ref ids[k]); the
// result is the last body's output (the input when there are no bodies).
template <class X, class Body>
struct ChainNode {
  using value_type = typename X::value_type;
  X input;
  std::vector<Body> bodies;
  std::vector<uint64_t> ids;
};

template <class T, int R> struct is_symbolic<Ref<T, R>> : std::true_type {};
template <class X, class B> struct is_symbolic<LetNode<X, B>> : std::true_type {};
template <class X, class B> struct is_symbolic<ChainNode<X, B>> : std::true_type {};
template <class T, int R> struct static_rank<Ref<T, R>> : std::integral_constant<int, R> {};
template <class X, class B> struct static_rank<LetNode<X, B>> : static_rank<B> {};
template <class X, class B> struct static_rank<ChainNode<X, B>> : static_rank<X> {};

// let(x, body): body(ref) with ref standing for x's value, computed once.
template <SymbolExpr X, class Body>
auto let(const X& x, Body&& body) {
  using V = std::remove_cvref_t<X>;
  const uint64_t id = detail::next_node_id();
  auto out = body(Ref<value_type_t<V>, static_rank<V>::value>{id});
  using Out = std::remove_cvref_t<decltype(out)>;
  static_assert(is_symbolic_v<Out>, "let: the body must return a symbol expression");
  return LetNode<V, Out>{x, std::move(out), id};
}

// chain(x, blocks, f): f(blocks[0], x), then f(blocks[1], that), ... with one graph type for every
// block (f(block, ref) must return the same type for each; its output must have x's element type).
template <SymbolExpr X, class Blocks, class F>
auto chain(const X& x, Blocks& blocks, F&& f) {
  using V = std::remove_cvref_t<X>;
  using R = Ref<value_type_t<V>, static_rank<V>::value>;
  using Body = std::remove_cvref_t<decltype(f(*std::begin(blocks), std::declval<const R&>()))>;
  static_assert(std::is_same_v<value_type_t<Body>, value_type_t<V>>, "chain: a block must keep the element type");
  ChainNode<V, Body> node{x, {}, {}};
  for (auto& block : blocks) {
    node.ids.push_back(detail::next_node_id());
    node.bodies.push_back(f(block, R{node.ids.back()}));
  }
  return node;
}

}  // namespace dl::graph

namespace dl {
template <class T, int R> struct is_expr_node<graph::Ref<T, R>> : std::true_type {};
template <class X, class B> struct is_expr_node<graph::LetNode<X, B>> : std::true_type {};
template <class X, class B> struct is_expr_node<graph::ChainNode<X, B>> : std::true_type {};
}  // namespace dl
