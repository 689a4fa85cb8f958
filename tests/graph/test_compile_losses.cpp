// graph/loss_ops.hpp (mse, nll, binary_cross_entropy_with_logits), norm_ops.hpp
// (local_response_norm) and dropout_ops.hpp (dropout2d): the symbol forms of the losses and the
// remaining layers' operators, and one step through many of the newer ops. For each, the compiled
// forward and the gradients (parameters, and an input that tracks grad through the graph as one
// tape node) equal eager's (bit for bit where the kernels are the same); a later step allocates
// nothing. (Split from test_compile_ops2.cpp to halve its compile time.)
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
using dl_test::Run;
using dl_test::run_taped;

namespace {

auto dropout2d_of(double p, bool training, Generator& gen) {
  return graph::compile([p, training, &gen](auto a) { return dl::dropout2d(a, p, training, gen); });
}

}  // namespace

TEST_CASE("compile ops2: mse, binary_cross_entropy_with_logits and nll match eager bit for bit") {
  Generator gen(5);
  nn::Dense fc(4, 3, true, gen);
  std::vector<NDArray<float>> params{fc.weight, fc.bias};
  NDArray<float> target = random_input(Shape{6, 3}, 9);
  NDArray<float> probs = dl::sigmoid(random_input(Shape{6, 3}, 10) * 3.0f);
  NDArray<int64_t> labels = from_vector<int64_t>(std::vector<int64_t>{0, 2, 1, 1, 0, 2}, Shape{6});
  for (Reduction red : {Reduction::mean, Reduction::sum, Reduction::none}) {
    CAPTURE(static_cast<int>(red));
    check_matches_eager([&](const auto& x) { return dl::mse(fc(x), target, red); }, Shape{6, 4}, params, 0.0);
    check_matches_eager([&](const auto& x) { return dl::binary_cross_entropy_with_logits(fc(x), probs, red); }, Shape{6, 4},
                        params, 0.0);
    check_matches_eager([&](const auto& x) { return dl::nll(dl::log_softmax(fc(x), 1), labels, red); }, Shape{6, 4}, params,
                        0.0);
  }
  // The target a symbol too: both operands get gradients (mse's target: -2 (p - t) g); x's
  // gradient sums several contributions (in another order than eager's engine: 1e-6).
  check_matches_eager(
      [&](const auto& x) { return dl::mse(dl::tanh(x), x * 0.5f) + dl::binary_cross_entropy_with_logits(x * 4.0f, dl::sigmoid(x)); },
      Shape{3, 4}, {}, 1e-6);
  // Labels as a symbol (a second input), as cross_entropy; nll(log_softmax) == cross_entropy.
  auto two = graph::compile([&](auto a, auto y) { return dl::nll(dl::log_softmax(fc(a), 1), y); });
  auto x = random_input(Shape{6, 4}, 3);
  CHECK(two.forward(x, labels).item() == doctest::Approx(NDArray<float>(dl::cross_entropy(fc(x), labels)).item()).epsilon(1e-6));
  CHECK(two.forward(x, labels).item() == NDArray<float>(dl::nll(dl::log_softmax(fc(x), 1), labels)).item());
  // Errors: eager's messages.
  auto mse_bad = graph::compile([&](auto a) { return dl::mse(a, target); });
  CHECK_THROWS_WITH_AS(mse_bad.forward(random_input(Shape{6, 1}, 1)),
                       doctest::Contains("mse: pred of shape (6, 1) and target of shape (6, 3) differ (mse does not broadcast)"),
                       ShapeError);
  auto bce_bad = graph::compile([&](auto a) { return dl::binary_cross_entropy_with_logits(a, probs); });
  CHECK_THROWS_WITH_AS(bce_bad.forward(random_input(Shape{3}, 1)),
                       doctest::Contains("binary_cross_entropy_with_logits: logits of shape (3,) and targets of shape (6, 3) differ"),
                       ShapeError);
  auto nll_lab = graph::compile([&](auto a) { return dl::nll(a, labels); });
  CHECK_THROWS_WITH_AS(nll_lab.forward(random_input(Shape{6, 2}, 1)),
                       doctest::Contains("nll: label 2 at row 1 is out of range for 2 classes"), ValueError);
  CHECK_THROWS_WITH_AS(nll_lab.forward(random_input(Shape{5, 3}, 1)),
                       doctest::Contains("nll: labels of shape (6,) do not match log_probs of shape (5, 3)"), ShapeError);
  CHECK_THROWS_WITH_AS(nll_lab.forward(random_input(Shape{6}, 1)),
                       doctest::Contains("nll: compiled log_probs must have shape (N, C), got (6,)"), ShapeError);
}

TEST_CASE("compile ops2: local_response_norm and dropout2d match eager") {
  check_matches_eager([](const auto& x) { return dl::local_response_norm(dl::tanh(x) * 2.0f, 3, 0.1, 0.75, 1.0); },
                      Shape{2, 5, 3, 3}, {}, 0.0);
  auto lrn2 = graph::compile([](auto a) { return dl::local_response_norm(a, 5); });
  CHECK_THROWS_WITH_AS(lrn2.forward(random_input(Shape{3, 4}, 1)),
                       doctest::Contains("local_response_norm: expected an input (N, C, ...) of rank >= 3, got (3, 4)"),
                       ShapeError);
  CHECK_THROWS_WITH_AS(dl::local_response_norm(graph::Input<float, 4, 0>{}, 0),
                       doctest::Contains("local_response_norm: size must be positive, got 0"), ValueError);
  CHECK_THROWS_WITH_AS(dl::dropout2d(graph::Input<float, 4, 0>{}, 1.5, true),
                       doctest::Contains("dropout2d: probability p must be in [0, 1], got 1.5"), ValueError);
  // dropout2d: the same generator state gives the same channel masks, call after call.
  Generator g_eager(42), g_graph(42);
  auto x0 = random_input(Shape{4, 6, 2, 3}, 3);
  x0.attach_grad();
  auto eager = [&](const auto& x) { return dl::dropout2d(dl::tanh(x), 0.5, true, g_eager) * 2.0f; };
  auto graph = graph::compile([&](auto x) { return dl::dropout2d(dl::tanh(x), 0.5, true, g_graph) * 2.0f; });
  using G = decltype(graph);
  for (int it = 0; it < 3; ++it) {
    Run e = run_taped(eager, static_cast<G*>(nullptr), x0, {}, 7);
    Run c = run_taped(eager, &graph, x0, {}, 7);
    check_close(c.out, e.out, 0.0, "output");
    check_close(c.input_grad, e.input_grad, 0.0, "input gradient");
    int64_t zeros = std::count(c.out.begin(), c.out.end(), 0.0f);
    CHECK(zeros % 6 == 0);  // whole (2, 3) planes
    CHECK(zeros > 0);
  }
  CHECK(g_eager.state().offset == g_graph.state().offset);
  // Eval mode (and p = 0): the identity, no draw.
  auto eval = dropout2d_of(0.5, false, g_graph);
  CHECK(eval.forward(x0).to_vector() == x0.to_vector());
  auto none = dropout2d_of(1.0, true, g_graph);
  auto dropped = none.forward(x0).to_vector();
  CHECK(std::all_of(dropped.begin(), dropped.end(), [](float v) { return v == 0.0f; }));
}

TEST_CASE("compile ops2: one step with many new ops: the loss matches eager, a later step allocates nothing") {
  Generator gen(13);
  nn::Dense fc(4, 3, true, gen);
  std::vector<NDArray<float>> params{fc.weight, fc.bias};
  NDArray<float> target = random_input(Shape{3, 3}, 2);
  NDArray<float> probs = dl::sigmoid(random_input(Shape{6, 3}, 3));
  NDArray<int64_t> labels = from_vector<int64_t>(std::vector<int64_t>{0, 2, 1, 1, 0, 2}, Shape{6});
  NDArray<int64_t> flat_idx = from_vector<int64_t>(std::vector<int64_t>{17, 4, 4, -2}, Shape{4});
  auto loss_fn = [&](const auto& a) {
    auto h = dl::tanh(fc(a));  // (6, 3)
    auto gram = dl::matmul(dl::transpose(h), h);
    return dl::mse(gram, target) + dl::sum(dl::max(h, 1)) + dl::mean(dl::logsumexp(h, 0)) + dl::var(h) +
           dl::sum(dl::prod(h, 0)) + dl::nll(dl::log_softmax(h, 1), labels) +
           dl::binary_cross_entropy_with_logits(h, probs) + dl::sum(dl::take(h, flat_idx));  // take's flat form
  };
  auto x = random_input(Shape{6, 4}, 4);
  NDArray<float> eager_loss;
  for (auto& p : params) p.grad().assign(0.0f);
  {
    autograd::record rec;
    eager_loss = NDArray<float>(loss_fn(x));
  }
  eager_loss.backward();
  std::vector<std::vector<float>> eager_grads;
  for (auto& p : params) eager_grads.push_back(p.grad().to_vector());
  auto step = graph::compile([&](auto a) { return loss_fn(a); });
  for (int it = 0; it < 2; ++it) {
    for (auto& p : params) p.grad().assign(0.0f);
    CHECK(step.forward_backward(x).item() == doctest::Approx(eager_loss.item()).epsilon(1e-6));
    for (size_t k = 0; k < params.size(); ++k) check_close(params[k].grad().to_vector(), eager_grads[k], 1e-5);
  }
  CHECK(step.plan_report().op_nodes == 16);  // tanh runs in the dense's epilogue
  step.forward(x);                            // the inference plan
  CHECK(dl_test::allocations_during([&] {
          step.forward_backward(x);
          step.forward(x);
        }) == 0);
}
