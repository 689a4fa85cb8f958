// graph/indexing_ops.hpp (gather), graph/shape_ops.hpp (stack) and graph/select_ops.hpp (split,
// pad): the last eager operators' symbol forms. For each, the compiled forward and the gradients
// (parameters, and an input that tracks grad through the graph as one tape node) equal eager's bit
// for bit (the same copies and scatter-adds); errors name the op and the values; a later step
// allocates nothing.
#include <doctest/doctest.h>

#include <array>
#include <tuple>
#include <vector>

#include "dl/dl.hpp"
#include "dl/graph/compile.hpp"
#include "support/graph_fixtures.hpp"

using namespace dl;
using dl_test::check_close;
using dl_test::check_loss_matches_eager;
using dl_test::check_matches_eager;
using dl_test::random_input;

namespace {

NDArray<int64_t> indices(Shape s, std::vector<int64_t> values) { return from_vector<int64_t>(values, s); }

}  // namespace

TEST_CASE("compile ops3: gather (repeated indices, any axis, a smaller index) matches eager bit for bit") {
  Generator gen(21);
  nn::Dense fc(4, 5, true, gen);
  std::vector<NDArray<float>> params{fc.weight, fc.bias};
  // (3, 5) by a (3, 4) index along axis 1: repeated columns add up in the gradient.
  auto idx1 = indices(Shape{3, 4}, {0, 4, 4, 1, 2, 2, 2, 0, 3, 1, 0, 3});
  check_matches_eager([&](const auto& x) { return dl::gather(fc(x), 1, idx1); }, Shape{3, 4}, params, 0.0);
  // Along axis 0 (negative), an index smaller than the input in the other axis, an input straight from the caller.
  auto idx0 = indices(Shape{2, 3}, {1, 0, 1, 1, 1, 0});
  check_matches_eager([&](const auto& x) { return dl::gather(x * 2.0f, -2, idx0) + 1.0f; }, Shape{2, 4}, {}, 0.0);
  // A transposed (strided) input is read through its strides, as eager.
  auto g = graph::compile([&](auto x) { return dl::gather(x, 1, idx0); });
  auto xt = random_input(Shape{4, 2}, 3).transpose();
  check_close(g.forward(xt).to_vector(), dl::gather(xt, 1, idx0).to_vector(), 0.0, "strided input");
}

TEST_CASE("compile ops3: stack of a tuple or a braced list of symbols matches eager bit for bit") {
  Generator gen(22);
  nn::Dense fc1(4, 3, true, gen), fc2(4, 3, true, gen);
  std::vector<NDArray<float>> params{fc1.weight, fc1.bias, fc2.weight, fc2.bias};
  for (int axis : {0, 1, 2, -1}) {
    CAPTURE(axis);
    check_matches_eager([&](const auto& x) { return dl::stack(std::tuple{fc1(x), dl::tanh(fc2(x)), fc1(x)}, axis); },
                        Shape{2, 4}, params, 0.0);
  }
  // The braced form (operands of one type): stack({a, b}) as eager's initializer_list.
  check_matches_eager([&](const auto& x) { return dl::stack({fc1(x), fc2(x)}, 1) * 3.0f; }, Shape{5, 4}, params, 0.0);
  auto two = graph::compile([](auto a, auto b) { return dl::stack(std::tuple{a, b}, 0); });
  CHECK(two.forward(random_input(Shape{3}, 1), random_input(Shape{3}, 2)).shape() == Shape{2, 3});
}

TEST_CASE("compile ops3: split into N pieces (equal, given sizes) matches eager bit for bit") {
  Generator gen(23);
  nn::Dense fc(4, 6, true, gen), head(4, 2, true, gen);
  std::vector<NDArray<float>> params{fc.weight, fc.bias};
  // Three equal pieces of an op node's output (computed once; its gradient is the pieces' sum).
  check_matches_eager(
      [&](const auto& x) {
        auto [a, b, c] = dl::split<3>(fc(x), 1);
        return dl::concat(std::tuple{c * a, dl::tanh(b)}, 1);
      },
      Shape{3, 4}, params, 0.0);
  // Given sizes (a std::array, or split<N>(x, {...})), an unused piece, a piece of size 0.
  check_matches_eager(
      [&](const auto& x) {
        auto [a, b, c] = dl::split(fc(x), std::array<int64_t, 3>{1, 0, 5}, -1);
        return dl::concat(std::tuple{c, b}, 1);
      },
      Shape{3, 4}, params, 0.0);
  check_matches_eager(
      [&](const auto& x) {
        auto [a, b] = dl::split<2>(x * 2.0f, {2, 4}, 0);  // an elementwise operand: re-run per piece
        return head(dl::relu(dl::concat(std::tuple{b, a}, 0)));
      },
      Shape{6, 4}, {head.weight, head.bias}, 0.0);
  // The pieces' operand (an op node) is computed once: two shared uses.
  auto pieces = graph::compile([&](auto x) {
    auto [a, b, c] = dl::split<3>(fc(x), 1);
    return dl::concat(std::tuple{c, b, a}, 1);
  });
  CHECK(pieces.forward(random_input(Shape{3, 4}, 5)).shape() == Shape{3, 6});
  CHECK(pieces.plan_report().shared_uses == 2);
}

TEST_CASE("compile ops3: pad (some or all axes, a value) matches eager bit for bit") {
  Generator gen(24);
  nn::Dense fc(4, 3, true, gen);
  std::vector<NDArray<float>> params{fc.weight, fc.bias};
  check_matches_eager([&](const auto& x) { return dl::pad(fc(x), {{1, 0}, {2, 2}}, -0.5f); }, Shape{2, 4}, params, 0.0);
  check_matches_eager([&](const auto& x) { return dl::relu(dl::pad(x, {{0, 3}})); }, Shape{2, 3, 2}, {}, 0.0);
}

TEST_CASE("compile ops3: one loss over gather, stack, split and pad: forward_backward matches eager; a later step "
          "allocates nothing") {
  Generator gen(25);
  nn::Dense fc(6, 4, true, gen);
  std::vector<NDArray<float>> params{fc.weight, fc.bias};
  auto idx = indices(Shape{5, 2}, {3, 0, 1, 1, 2, 3, 0, 0, 3, 2});
  auto loss_fn = [&](const auto& x) {
    auto h = dl::tanh(fc(x));
    auto [a, b] = dl::split<2>(h, 1);
    auto s = dl::stack(std::tuple{a, b, dl::gather(h, 1, idx)}, 0);
    auto p = dl::pad(s, {{0, 0}, {1, 1}}, 0.25f);  // (3, 7, 2)
    return dl::mean(p * p);
  };
  auto x = random_input(Shape{5, 6}, 4);
  check_loss_matches_eager(loss_fn, x, params, 1e-6);
  auto step = graph::compile([&](auto a) { return loss_fn(a); });
  step.forward_backward(x);
  CHECK(dl_test::allocations_during([&] { step.forward_backward(x); }) == 0);
  // The plan: one op node each (split: two pieces), the value and gradient buffers planned.
  auto report = step.plan_report();
  CHECK(report.op_nodes >= 6);
}

TEST_CASE("compile ops3: shape and argument errors name the op and the values") {
  auto x = random_input(Shape{3, 4}, 1);
  // gather
  auto g_rank = graph::compile([](auto a) { return dl::gather(a, 1, NDArray<int64_t>(Shape{3})); });
  CHECK_THROWS_WITH_AS(g_rank.forward(x), doctest::Contains("gather: index rank 1 differs from input rank 2"), ShapeError);
  auto g_big = graph::compile([](auto a) { return dl::gather(a, 1, indices(Shape{4, 1}, {0, 0, 0, 0})); });
  CHECK_THROWS_WITH_AS(g_big.forward(x), doctest::Contains("gather: index shape (4, 1) exceeds input shape (3, 4) at axis 0"),
                       ShapeError);
  auto g_range = graph::compile([](auto a) { return dl::gather(a, 1, indices(Shape{1, 2}, {0, -1})); });
  CHECK_THROWS_WITH_AS(g_range.forward(x), doctest::Contains("gather: index -1 is out of range for axis 1 of size 4"),
                       ValueError);
  auto g_axis = graph::compile([](auto a) { return dl::gather(a, 2, indices(Shape{1, 1}, {0})); });
  CHECK_THROWS_WITH_AS(g_axis.forward(x), doctest::Contains("gather: axis 2 is out of range for rank 2"), ValueError);
  // stack
  auto st = graph::compile([](auto a, auto b) { return dl::stack(std::tuple{a, b}, 1); });
  CHECK_THROWS_WITH_AS(st.forward(x, random_input(Shape{3, 5}, 2)),
                       doctest::Contains("stack: operand 1 has shape (3, 5), which differs from operand 0's shape (3, 4)"),
                       ShapeError);
  auto st_axis = graph::compile([](auto a, auto b) { return dl::stack(std::tuple{a, b}, 3); });
  CHECK_THROWS_WITH_AS(st_axis.forward(x, x), doctest::Contains("stack: axis 3 is out of range for operands of shape (3, 4)"),
                       ValueError);
  // split
  auto sp3 = graph::compile([](auto a) { return std::get<0>(dl::split<3>(a, 1)); });
  CHECK_THROWS_WITH_AS(sp3.forward(x), doctest::Contains("split: axis 1 of size 4 cannot be split into 3 equal sections"),
                       ValueError);
  auto sp_sizes = graph::compile([](auto a) { return std::get<1>(dl::split<2>(a, {1, 1}, 0)); });
  CHECK_THROWS_WITH_AS(sp_sizes.forward(x), doctest::Contains("split: section sizes add up to 2 but axis 0 has size 3"),
                       ValueError);
  auto sp_neg = graph::compile([](auto a) { return std::get<1>(dl::split<2>(a, {5, -1}, 1)); });
  CHECK_THROWS_WITH_AS(sp_neg.forward(x), doctest::Contains("split: section sizes must be non-negative, got -1"), ValueError);
  // pad
  auto pd_many = graph::compile([](auto a) { return dl::pad(a, {{1, 1}, {1, 1}, {1, 1}}); });
  CHECK_THROWS_WITH_AS(pd_many.forward(x), doctest::Contains("pad: got 3 (before, after) pairs for an array of rank 2"),
                       ValueError);
  auto pd_neg = graph::compile([](auto a) { return dl::pad(a, {{0, -2}}); });
  CHECK_THROWS_WITH_AS(pd_neg.forward(x), doctest::Contains("pad: padding must be non-negative, got (0, -2) for axis 0"),
                       ValueError);
  // The same messages as eager's.
  CHECK_THROWS_WITH_AS(dl::split(x, 3, 1), doctest::Contains("split: axis 1 of size 4 cannot be split into 3 equal sections"),
                       ValueError);
  CHECK_THROWS_WITH_AS(dl::gather(x, 1, indices(Shape{1, 2}, {0, -1})),
                       doctest::Contains("gather: index -1 is out of range for axis 1 of size 4"), ValueError);
}
