// graph/matmul_ops.hpp, reduce_ops.hpp (max, min, prod, var, logsumexp) and indexing_ops.hpp
// (take): the symbol forms of matmul of two symbols, the remaining reductions and take. For each,
// the compiled forward and the gradients (parameters, and an input that tracks grad through the
// graph as one tape node) equal eager's (bit for bit where the kernels are the same); errors name
// the op and the values; a later step allocates nothing. (Losses, local_response_norm, dropout2d:
// test_compile_losses.cpp.)
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "dl/dl.hpp"
#include "dl/graph/compile.hpp"
#include "support/graph_fixtures.hpp"

using namespace dl;
using dl_test::check_close;
using dl_test::check_matches_eager;
using dl_test::random_input;

namespace {

// Graphs of one type with different settings (one instantiation: keeps this file's compile time down).
auto max_over(int axis) {
  return graph::compile([axis](auto a) { return dl::max(a, axis); });
}
auto var_over(int axis, int ddof) {
  return graph::compile([axis, ddof](auto a) { return dl::var(a, axis, false, ddof); });
}

}  // namespace

TEST_CASE("compile ops2: matmul of two symbols (2-D, batched, broadcast) matches eager") {
  Generator gen(1);
  nn::Dense fc(4, 6, true, gen);
  std::vector<NDArray<float>> params{fc.weight, fc.bias};
  // A Gram matrix h^T h through a layer: both operands carry gradient.
  check_matches_eager([&](const auto& x) { auto h = dl::tanh(fc(x)); return dl::matmul(dl::transpose(h), h * 2.0f); },
                      Shape{5, 4}, params, 1e-5);
  // Batched (B, T, D): attention's scores, softmax, and the weighted sum of values.
  auto attention = [&](const auto& x) {
    auto scores = dl::matmul(x, dl::transpose(x, 1, 2)) * 0.5f;
    return dl::matmul(dl::softmax(scores), dl::tanh(x));
  };
  check_matches_eager(attention, Shape{2, 3, 4}, {}, 1e-5);
  // Broadcast batch: a (3, 4) parameter times a batch (2, 4, 5) symbol.
  NDArray<float> w = random_input(Shape{3, 4}, 7);
  w.attach_grad();
  check_matches_eager([&](const auto& x) { return dl::matmul(w, x); }, Shape{2, 4, 5}, {w}, 1e-5);
  // Both operands broadcast: (2, 1, 3, 4) x (1, 2, 4, 3) -> (2, 2, 3, 3).
  check_matches_eager([&](const auto& x) { return dl::matmul(dl::reshape(x, {2, 1, 3, 4}), dl::reshape(dl::exp(x), {1, 2, 4, 3})); },
                      Shape{2, 3, 4}, {}, 1e-5);
}

TEST_CASE("compile ops2: max, min, prod, var and logsumexp match eager bit for bit") {
  Generator gen(3);
  nn::Dense fc(4, 5, true, gen);
  std::vector<NDArray<float>> params{fc.weight, fc.bias};
  // Ties: max sends the gradient to the FIRST extremum only, as eager. Several reductions in one
  // model (each output element has its own slope, so every gradient is checked): x's gradient is
  // the sum of their contributions, added in another order than eager's engine adds them, so
  // those models compare to 1e-6; a model that reads x once is compared bit for bit.
  NDArray<float> ties = from_vector<float>(std::vector<float>{1, 3, 3, 2, -1, -1, 0, -1}, Shape{2, 4});
  check_matches_eager([](const auto& x) { return dl::max(x, 1) + dl::min(x, {1}) * 2.0f + dl::max(x); }, ties, {}, 1e-6);
  check_matches_eager([](const auto& x) { return dl::min(x * x, {0, 2}, true); }, Shape{3, 4, 5}, {}, 0.0);
  check_matches_eager([&](const auto& x) { return dl::max(dl::tanh(fc(x)), 0, true); }, Shape{6, 4}, params, 0.0);
  // prod: no zero, one zero (the product of the others), two zeros (all 0).
  NDArray<float> zeros = from_vector<float>(std::vector<float>{2, 0, 3, 0, 0, 5, 1.5f, -2, 0.5f}, Shape{3, 3});
  check_matches_eager([](const auto& x) { return dl::prod(x, 1) + dl::prod(x + 1.0f, {0}) + dl::prod(x); }, zeros, {}, 1e-6);
  // var with ddof 0 and 1, over one axis and a list; logsumexp of a layer's output, of large values.
  check_matches_eager([&](const auto& x) { return dl::logsumexp(fc(x), 1) + dl::var(x, -1) + dl::var(fc(x), {0, 1}, false, 1); },
                      Shape{6, 4}, params, 1e-6);
  check_matches_eager(
      [](const auto& x) {
        return dl::var(x, 1, true, 1) + dl::var(x) + dl::logsumexp(x * 30.0f, {0, 2}, true) + dl::logsumexp(x);
      },
      Shape{2, 3, 4}, {}, 1e-6);
  // A transposed (strided) input is read as it is.
  auto tmax = max_over(0);
  auto t = random_input(Shape{3, 4}, 5);
  CHECK(tmax.forward(t.transpose()).to_vector() == NDArray<float>(dl::max(t.transpose(), 0)).to_vector());
  // Integer arrays: max, min and prod forward.
  auto imax = graph::compile([](auto a) { return dl::max(a, 1) + dl::min(a, 1) + dl::prod(a, 1); });
  NDArray<int64_t> ints = from_vector<int64_t>(std::vector<int64_t>{3, -1, 2, 4, 4, 1}, Shape{2, 3});
  CHECK(imax.forward(ints).to_vector() == std::vector<int64_t>{3 - 1 - 6, 4 + 1 + 16});
}

TEST_CASE("compile ops2: reduction errors name the op and the values") {
  auto x = random_input(Shape{3, 4}, 1);
  auto max2 = max_over(2);
  CHECK_THROWS_WITH_AS(max2.forward(x), doctest::Contains("max: axis 2 is out of range for an input of shape (3, 4)"),
                       ValueError);
  auto max_empty = max_over(0);
  CHECK_THROWS_WITH_AS(max_empty.forward(random_input(Shape{0, 4}, 1)),
                       doctest::Contains("max: cannot reduce over zero elements (input shape (0, 4))"), ValueError);
  auto var_ddof = var_over(1, 4);
  CHECK_THROWS_WITH_AS(var_ddof.forward(x), doctest::Contains("var: ddof 4 leaves no degrees of freedom for 4 reduced"),
                       ValueError);
  auto var_neg = var_over(1, -1);
  CHECK_THROWS_WITH_AS(var_neg.forward(x), doctest::Contains("var: ddof must be non-negative, got -1"), ValueError);
  auto lse_rep = graph::compile([](auto a) { return dl::logsumexp(a, {0, -2}); });
  CHECK_THROWS_WITH_AS(lse_rep.forward(x), doctest::Contains("logsumexp: axis -2 is repeated"), ValueError);
  auto mm = graph::compile([](auto a, auto b) { return dl::matmul(a, b); });
  CHECK_THROWS_WITH_AS(mm.forward(x, random_input(Shape{3, 4}, 2)),
                       doctest::Contains("matmul: inner dimensions differ: lhs (3, 4) vs rhs (3, 4)"), ShapeError);
  CHECK_THROWS_WITH_AS(mm.forward(x, random_input(Shape{4}, 2)),
                       doctest::Contains("matmul: a compiled matmul of symbols needs operands of rank >= 2"), ShapeError);
  CHECK_THROWS_WITH_AS(mm.forward(random_input(Shape{2, 3, 4}, 1), random_input(Shape{3, 4, 2}, 2)),
                       doctest::Contains("matmul"), ShapeError);
}

TEST_CASE("compile ops2: take (repeated and negative indices) matches eager bit for bit") {
  NDArray<int64_t> idx = from_vector<int64_t>(std::vector<int64_t>{2, -1, 0, 2, 3, 2}, Shape{2, 3});
  check_matches_eager([&](const auto& x) { return dl::take(dl::tanh(x), idx, 1); }, Shape{2, 4, 3}, {}, 0.0);
  auto bad = graph::compile([&](auto a) { return dl::take(a, idx, -1); });
  CHECK(bad.forward(random_input(Shape{5, 4}, 1)).shape() == Shape{5, 2, 3});
  CHECK_THROWS_WITH_AS(bad.forward(random_input(Shape{4, 3}, 1)),
                       doctest::Contains("take: index 3 is out of range for axis -1 of size 3"), ValueError);
}
