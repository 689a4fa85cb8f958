#include <doctest/doctest.h>

#include "dl/dl.hpp"

using namespace dl;

TEST_CASE("leaf reads: which leaves the backward loop reads (grad_reads)") {
  using A = NDArray<float>;
  using S = ScalarExpr<float>;
  using expr::leaf_values_read;
  // x + s * relu(m): add reads neither operand, a scalar product only the scalar, relu its operand.
  static_assert(leaf_values_read<BinaryExpr<prim::Add, A, BinaryExpr<prim::Mul, S, UnaryExpr<prim::Relu, A>>>>() ==
                std::array<bool, 2>{false, true});
  static_assert(leaf_values_read<BinaryExpr<prim::Mul, A, A>>() == std::array<bool, 2>{true, true});
  static_assert(leaf_values_read<BinaryExpr<prim::Sub, A, UnaryExpr<prim::Neg, A>>>() == std::array<bool, 2>{false, false});
  // exp reads its output, which depends on a; the sum reads nothing of b.
  static_assert(leaf_values_read<BinaryExpr<prim::Add, UnaryExpr<prim::Exp, A>, A>>() == std::array<bool, 2>{true, false});
  // db of a / b reads the output: both operands.
  static_assert(leaf_values_read<BinaryExpr<prim::Div, A, A>>() == std::array<bool, 2>{true, true});
  // A node whose value a partial reads needs every leaf under it: (a + b) * 2 + exp(c) * (a + b).
  static_assert(leaf_values_read<BinaryExpr<prim::Mul, BinaryExpr<prim::Add, A, A>, S>>() == std::array<bool, 2>{false, false});
  static_assert(leaf_values_read<BinaryExpr<prim::Mul, UnaryExpr<prim::Exp, A>, BinaryExpr<prim::Add, A, A>>>() ==
                std::array<bool, 3>{true, true, true});
  // A primitive without an entry reads everything (maximum here).
  static_assert(leaf_values_read<BinaryExpr<prim::Maximum, A, A>>() == std::array<bool, 2>{true, true});
  // where(c, a, b): the condition is read, the branches are not.
  static_assert(leaf_values_read<TernaryExpr<prim::Where, A, A, A>>() == std::array<bool, 3>{true, false, false});
  // One array used twice is two leaves: a + a * a reads the product's operands only.
  auto a = ones<float>({2});
  static_assert(leaf_values_read<decltype(a + a * a)>() == std::array<bool, 3>{false, true, true});
}

TEST_CASE("leaf reads: replace_leaves rebuilds the expression with leaf i swapped") {
  auto a = tensor<float>({1, 2}), b = tensor<float>({3, 4}), c = tensor<float>({10, 20});
  auto e = relu(a) * 2.0f + b;
  // Leaf 1 (b) becomes c; leaf 0 stays; the type is unchanged.
  auto swap = [&](auto i, const NDArray<float>& leaf) { return i == 1 ? c : leaf; };
  auto r = expr::replace_leaves(e, swap);
  static_assert(std::is_same_v<decltype(r), decltype(e)>);
  CHECK(NDArray<float>(r).to_vector() == std::vector<float>{12, 24});
  CHECK(NDArray<float>(e).to_vector() == std::vector<float>{5, 8});
}
