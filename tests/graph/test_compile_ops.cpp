// graph/reduce_ops.hpp, graph/softmax_ops.hpp, graph/shape_ops.hpp: the symbol forms of sum,
// mean, global_avg_pool2d, softmax, log_softmax, reshape, transpose, permute and concat. For each, the
// compiled forward and the gradients (parameters, and an input that tracks grad through the graph
// as one tape node) equal eager's; shape errors name the op and the shapes; views allocate nothing.
#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "dl/dl.hpp"
#include "dl/graph/compile.hpp"
#include "support/graph_fixtures.hpp"

using namespace dl;

using dl_test::check_close;
using dl_test::check_loss_matches_eager;
using dl_test::check_matches_eager;
using dl_test::random_input;
using dl_test::random_labels;

TEST_CASE("compile ops: sum and mean of everything are scalar losses matching eager") {
  Generator gen(1);
  nn::Dense fc(6, 4, true, gen);
  auto x = random_input(Shape{5, 6}, 2);
  std::vector<NDArray<float>> params{fc.weight, fc.bias};
  check_loss_matches_eager([&](const auto& a) { auto y = fc(a); return dl::mean(y * y); }, x, params, 1e-5);
  check_loss_matches_eager([&](const auto& a) { return dl::sum(dl::tanh(fc(a))); }, x, params, 1e-5);
  // The reduction reads the fused region's output: relu(fc) is the GEMM's epilogue, * 2 - 1 one
  // region, then one reduction.
  auto step = graph::compile([&](auto a) { return dl::mean(dl::relu(fc(a)) * 2.0f - 1.0f); });
  auto loss = step.forward_backward(x);
  CHECK(loss.shape() == Shape{});
  auto r = step.plan_report();
  CHECK(r.op_nodes == 2);  // dense, mean
  CHECK(r.fused_kernels == 2);
}

TEST_CASE("compile ops: sum and mean over axes (one, a list, negative, keepdims) match eager") {
  Generator gen(3);
  nn::Dense fc(4, 4, true, gen);
  std::vector<NDArray<float>> params{fc.weight, fc.bias};
  // Exactly equal forward values where the kernels are the same (sum_reduce, then * 1/count).
  check_matches_eager([&](const auto& x) { return dl::sum(x, 1); }, Shape{3, 5, 4}, {}, 0.0);
  check_matches_eager([&](const auto& x) { return dl::mean(x, -1, true); }, Shape{3, 5, 4}, {}, 0.0);
  check_matches_eager([&](const auto& x) { return dl::sum(x * x, {0, 2}); }, Shape{3, 5, 4}, {}, 0.0);
  // Through parameters: a dense layer on the last axis, then a mean over the batch.
  check_matches_eager([&](const auto& x) { return dl::mean(dl::tanh(fc(x)), 0) * 3.0f; }, Shape{7, 4}, params, 1e-5);
  // The reduction's result feeds more nodes: a normalisation by the row sums.
  check_matches_eager([&](const auto& x) { auto e = dl::exp(x); return e / dl::sum(e, 1, true); }, Shape{4, 6}, {},
                      1e-6);
}

TEST_CASE("compile ops: random shapes, axes and keepdims: reductions of softmaxes equal eager bit for bit") {
  for (uint64_t seed = 0; seed < 10; ++seed) {
    CAPTURE(seed);
    std::mt19937_64 rng(seed);
    const int rank = 1 + static_cast<int>(rng() % 4);
    std::vector<int64_t> dims;
    std::vector<int> axes, perm(static_cast<size_t>(rank));
    for (int d = 0; d < rank; ++d) {
      dims.push_back(1 + static_cast<int64_t>(rng() % 5));
      if (rng() % 2) axes.push_back(rng() % 2 ? d : d - rank);
    }
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    const bool keepdims = rng() % 2 == 0;
    const int axis = static_cast<int>(rng() % static_cast<uint64_t>(rank)) - (rng() % 2 ? rank : 0);
    CAPTURE(Shape(dims));
    CAPTURE(axis);
    CAPTURE(keepdims);
    check_matches_eager([&](const auto& x) { return dl::sum(dl::softmax(x * 1.5f, axis), axes, keepdims); }, Shape(dims),
                        {}, 0.0, seed);
    check_matches_eager([&](const auto& x) { return dl::mean(dl::permute(dl::log_softmax(x, axis), perm), axes, keepdims); },
                        Shape(dims), {}, 0.0, seed);
  }
}

// (Middle axes, the kernels' strided-lines path, are in the random-shapes test above.)
TEST_CASE("compile ops: softmax and log_softmax after a dense layer match eager") {
  Generator gen(5);
  nn::Dense fc(6, 5, true, gen);
  std::vector<NDArray<float>> params{fc.weight, fc.bias};
  check_matches_eager([&](const auto& x) { return dl::softmax(fc(x)); }, Shape{4, 6}, params, 1e-6);
  check_matches_eager([&](const auto& x) { return dl::log_softmax(fc(x)); }, Shape{4, 6}, params, 1e-6);
  // A cross entropy written by hand equals the fused one (and eager).
  auto x = random_input(Shape{8, 6}, 4);
  auto y = random_labels(8, 5, 1);
  NDArray<float> onehot = zeros<float>({8, 5});
  for (int64_t i = 0; i < 8; ++i) onehot.data()[i * 5 + y.data()[i]] = 1.0f;
  check_loss_matches_eager([&](const auto& a) { return -dl::sum(dl::log_softmax(fc(a)) * onehot) / 8.0f; }, x, params,
                           1e-5);
  auto by_hand = graph::compile([&](auto a) { return -dl::mean(dl::sum(dl::log_softmax(fc(a)) * onehot, 1)); });
  auto fused = graph::compile([&](auto a, auto b) { return dl::cross_entropy(fc(a), b); });
  CHECK(by_hand.forward(x).item() == doctest::Approx(fused.forward(x, y).item()).epsilon(1e-5));
}

TEST_CASE("compile ops: a softmax used twice is computed once (entropy p * log p)") {
  Generator gen(7);
  nn::Dense fc(5, 4, true, gen);
  auto x = random_input(Shape{3, 5}, 6);
  std::vector<NDArray<float>> params{fc.weight, fc.bias};
  auto entropy = [&](const auto& a) {
    auto p = dl::softmax(fc(a));
    return -dl::sum(p * dl::log(p));
  };
  check_loss_matches_eager(entropy, x, params, 1e-5);
  auto step = graph::compile([&](auto a) { return entropy(a); });
  step.forward_backward(x);
  auto r = step.plan_report();
  CHECK(r.op_nodes == 3);     // dense, softmax, sum: each once
  CHECK(r.shared_uses == 1);  // the second use of softmax (its operand is not planned again)
}

TEST_CASE("compile ops: global_avg_pool2d and nn::GlobalAvgPool2d match eager") {
  Generator gen(9);
  nn::Sequential net{nn::Conv2d(2, 4, 3, 1, 1, true, gen), nn::ReLU(), nn::GlobalAvgPool2d(), nn::Flatten(),
                     nn::Dense(4, 3, true, gen)};
  auto x = random_input(Shape{3, 2, 5, 5}, 8);
  auto y = random_labels(3, 3, 2);
  std::vector<NDArray<float>> params;
  for (auto& p : net.parameters()) params.push_back(p);
  // Eager accumulates each plane in double, the graph's mean in float: equal to rounding.
  check_loss_matches_eager([&](const auto& a) { return dl::cross_entropy(net(a), y); }, x, params, 1e-5);
  check_matches_eager([&](const auto& a) { return dl::global_avg_pool2d(dl::square(a)); }, Shape{2, 3, 4, 5}, {}, 1e-6);
  auto pool = graph::compile([&](auto a) { return dl::global_avg_pool2d(a); });
  CHECK(pool.forward(x).shape() == Shape{3, 2, 1, 1});  // as eager: (N, C, 1, 1)
}

TEST_CASE("compile ops: reshape, transpose and permute match eager") {
  Generator gen(11);
  nn::Dense fc1(6, 8, true, gen), fc2(4, 3, true, gen);
  std::vector<NDArray<float>> params{fc1.weight, fc1.bias, fc2.weight, fc2.bias};
  // (5, 6) -> fc1 (5, 8) -> (10, 4) -> fc2 (10, 3)
  check_matches_eager([&](const auto& x) { return fc2(dl::reshape(dl::relu(fc1(x)), {-1, 4})); }, Shape{5, 6}, params,
                      1e-5);
  check_matches_eager([&](const auto& x) { return dl::reshape(x, Shape{4, 6}) * 2.0f; }, Shape{2, 3, 4}, {}, 0.0);
  // A transposed activation through a dense layer and back.
  nn::Dense fc3(5, 2, true, gen);
  std::vector<NDArray<float>> params3{fc1.weight, fc1.bias, fc3.weight, fc3.bias};
  check_matches_eager([&](const auto& x) { return dl::transpose(fc3(dl::transpose(dl::tanh(fc1(x))))); }, Shape{5, 6},
                      params3, 1e-5);
  check_matches_eager([&](const auto& x) { return dl::permute(x * x, {2, 0, 1}); }, Shape{2, 3, 4}, {}, 0.0);
  check_matches_eager([&](const auto& x) { return dl::softmax(dl::transpose(x, 0, 2), 1); }, Shape{2, 3, 4}, {}, 0.0);
  // The array forms are NDArray's methods.
  auto a = random_input(Shape{2, 3, 4}, 3);
  CHECK(dl::reshape(a, {6, -1}).shape() == Shape{6, 4});
  CHECK(dl::transpose(a).shape() == Shape{4, 3, 2});
  CHECK(dl::permute(a + 1.0f, {1, 2, 0}).shape() == Shape{3, 4, 2});
}

TEST_CASE("compile ops: a reshape is a view: no pass and no buffer") {
  Generator gen(13);
  nn::Dense fc(6, 8, true, gen);
  auto x = random_input(Shape{5, 6}, 2);
  auto plain = graph::compile([&](auto a) { return dl::sum(dl::relu(fc(a))); });
  auto reshaped = graph::compile([&](auto a) { return dl::sum(dl::reshape(dl::relu(fc(a)), {-1})); });
  CHECK(plain.forward_backward(x).item() == reshaped.forward_backward(x).item());
  auto p = plain.plan_report(), r = reshaped.plan_report();
  CHECK(r.views == 1);
  CHECK(r.op_nodes == p.op_nodes);
  CHECK(r.buffers == p.buffers);
  CHECK(r.bytes_planned == p.bytes_planned);
  // A transpose is an op with its own buffers (value and gradient).
  auto transposed = graph::compile([&](auto a) { return dl::sum(dl::transpose(dl::relu(fc(a)))); });
  transposed.forward_backward(x);
  CHECK(transposed.plan_report().op_nodes == p.op_nodes + 1);
  CHECK(transposed.plan_report().buffers == p.buffers + 2);
  // Softmax's gradient is written in place over its output gradient: one more buffer (the output).
  auto soft = graph::compile([&](auto a) { return dl::sum(dl::softmax(dl::relu(fc(a))) * 2.0f); });
  auto soft_unplanned =
      graph::compile([&](auto a) { return dl::sum(dl::softmax(dl::relu(fc(a))) * 2.0f); }, graph::CompileOptions{.memory_plan = false});
  soft.forward_backward(x);
  soft_unplanned.forward_backward(x);
  CHECK(soft.plan_report().bytes_planned < soft_unplanned.plan_report().bytes_planned);
  // A later step allocates nothing.
  CHECK(dl_test::allocations_during([&] {
          soft.forward_backward(x);
          reshaped.forward_backward(x);
          transposed.forward_backward(x);
        }) == 0);
}

TEST_CASE("compile ops: shape errors name the op and the shapes") {
  auto x = random_input(Shape{3, 4}, 1);
  auto sum2 = graph::compile([](auto a) { return dl::sum(a, 2); });
  CHECK_THROWS_WITH_AS(sum2.forward(x), doctest::Contains("sum: axis 2 is out of range for an input of shape (3, 4)"),
                       ValueError);
  auto mean_rep = graph::compile([](auto a) { return dl::mean(a, {1, -1}); });
  CHECK_THROWS_WITH_AS(mean_rep.forward(x), doctest::Contains("mean: axis -1 is repeated"), ValueError);
  auto mean_empty = graph::compile([](auto a) { return dl::mean(a, 0); });
  CHECK_THROWS_WITH_AS(mean_empty.forward(random_input(Shape{0, 4}, 1)),
                       doctest::Contains("mean: cannot reduce over zero elements (input shape (0, 4))"), ValueError);
  auto soft = graph::compile([](auto a) { return dl::softmax(a, 2); });
  CHECK_THROWS_WITH_AS(soft.forward(x), doctest::Contains("softmax: axis 2 is out of range for an input of shape (3, 4)"),
                       ValueError);
  auto lsoft = graph::compile([](auto a) { return dl::log_softmax(a, -3); });
  CHECK_THROWS_WITH_AS(lsoft.forward(x), doctest::Contains("log_softmax: axis -3 is out of range"), ValueError);
  auto gap = graph::compile([](auto a) { return dl::global_avg_pool2d(a); });
  CHECK_THROWS_WITH_AS(gap.forward(x), doctest::Contains("global_avg_pool2d: expected a 4-D input (N, C, H, W), got (3, 4)"),
                       ShapeError);
  auto rs = graph::compile([](auto a) { return dl::reshape(a, {5, 2}); });
  CHECK_THROWS_WITH_AS(rs.forward(x), doctest::Contains("reshape: cannot reshape (3, 4) (12 elements) to (5, 2)"),
                       ShapeError);
  auto rs_infer = graph::compile([](auto a) { return dl::reshape(a, {5, -1}); });
  CHECK_THROWS_WITH_AS(rs_infer.forward(x), doctest::Contains("reshape: cannot infer -1 reshaping (3, 4)"), ShapeError);
  auto perm = graph::compile([](auto a) { return dl::permute(a, {0, 1, 2}); });
  CHECK_THROWS_WITH_AS(perm.forward(x), doctest::Contains("permute: got 3 axes for an input of shape (3, 4)"),
                       ShapeError);
  auto perm_rep = graph::compile([](auto a) { return dl::permute(a, {1, 1}); });
  CHECK_THROWS_WITH_AS(perm_rep.forward(x), doctest::Contains("permute: axis 1 repeated"), ValueError);
  auto tr = graph::compile([](auto a) { return dl::transpose(a, 0, 3); });
  CHECK_THROWS_WITH_AS(tr.forward(x), doctest::Contains("transpose: axis 3 is out of range for an input of shape (3, 4)"),
                       ValueError);
  // A reshape of a strided input (a transposed array passed in) says what it needs.
  auto rs_ok = graph::compile([](auto a) { return dl::reshape(a, {-1}); });
  CHECK_THROWS_WITH_AS(rs_ok.forward(x.transpose()), doctest::Contains("reshape: a compiled reshape needs a contiguous input"),
                       ValueError);
  CHECK(rs_ok.forward(x).shape() == Shape{12});
}

TEST_CASE("compile ops: concat of symbols (a tuple of operands) matches eager") {
  Generator gen(15);
  nn::Dense fc1(4, 3, true, gen), fc2(4, 5, true, gen), head(8, 2, true, gen);
  std::vector<NDArray<float>> params{fc1.weight, fc1.bias, fc2.weight, fc2.bias, head.weight, head.bias};
  check_matches_eager([&](const auto& x) { return head(dl::relu(dl::concat(std::tuple{fc1(x), dl::tanh(fc2(x))}, 1))); },
                      Shape{6, 4}, params, 1e-5);
  check_matches_eager([&](const auto& x) { return dl::concat(std::tuple{x * 2.0f, dl::exp(x), x}, 0); }, Shape{2, 3}, {},
                      1e-6);
  check_matches_eager([&](const auto& x) { return dl::concat(std::tuple{dl::softmax(x, 1), x}, -2); }, Shape{2, 3, 4}, {},
                      1e-6);
  auto two = graph::compile([](auto a, auto b) { return dl::concat(std::tuple{a, b}, 1); });
  auto joined = two.forward(random_input(Shape{3, 2}, 1), random_input(Shape{3, 4}, 2));
  CHECK(joined.shape() == Shape{3, 6});
  CHECK_THROWS_WITH_AS(two.forward(random_input(Shape{3, 4}, 1), random_input(Shape{2, 4}, 2)),
                       doctest::Contains("concat: operand 1 has shape (2, 4), which does not match operand 0's shape (3, 4) "
                                         "outside axis 1"),
                       ShapeError);
  auto bad_axis = graph::compile([](auto a, auto b) { return dl::concat(std::tuple{a, b}, 2); });
  CHECK_THROWS_WITH_AS(bad_axis.forward(random_input(Shape{3, 4}, 1), random_input(Shape{3, 4}, 2)),
                       doctest::Contains("concat: axis 2 is out of range for operand 0 of shape (3, 4)"), ValueError);
}
