// graph/matmul_ops.hpp, reduce_ops.hpp (max, min, prod, var, logsumexp), loss_ops.hpp (mse, nll,
// binary_cross_entropy_with_logits), norm_ops.hpp (local_response_norm), dropout_ops.hpp
// (dropout2d) and indexing_ops.hpp (take): the symbol forms of the remaining eager operators. For each, the compiled forward and the
// gradients (parameters, and an input that tracks grad through the graph as one tape node) equal
// eager's (bit for bit where the kernels are the same); errors name the op and the values; a later
// step allocates nothing.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "dl/dl.hpp"
#include "dl/graph/compile.hpp"

using namespace dl;

namespace {

NDArray<float> random_input(Shape s, uint64_t seed) {
  Generator gen(seed);
  NDArray<float> x(s);
  nn::init::uniform(x, -1.0, 1.0, gen);
  return x;
}
void check_close(const std::vector<float>& a, const std::vector<float>& b, double tol, const std::string& what = "") {
  CAPTURE(what);
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    if (tol == 0.0) CHECK(a[i] == b[i]);  // the same kernels: bit-identical
    else CHECK(a[i] == doctest::Approx(b[i]).epsilon(tol).scale(1.0));
  }
}

struct Run {
  std::vector<float> out, input_grad;
  std::vector<std::vector<float>> param_grads;
};

// The model on x, eagerly (compiled = nullptr) or through the compiled graph as one tape node;
// loss = sum(out * fixed random weights).
template <class Model, class Graph>
Run run_taped(Model& model, Graph* compiled, const NDArray<float>& x0, std::vector<NDArray<float>> params, uint64_t seed) {
  for (auto& p : params) p.grad().assign(0.0f);
  x0.grad().assign(0.0f);
  Run r;
  NDArray<float> loss;
  {
    autograd::record rec;
    NDArray<float> x = x0 * 1.0f;
    NDArray<float> out = compiled ? (*compiled)(x) : NDArray<float>(model(x));
    r.out = out.to_vector();
    loss = dl::sum(out * random_input(out.shape(), seed));
  }
  loss.backward();
  r.input_grad = x0.grad().to_vector();
  for (auto& p : params) r.param_grads.push_back(p.grad().to_vector());
  return r;
}

// Compiled vs eager: outputs, the input's gradient, every parameter's gradient; then inference.
template <class Model>
void check_matches_eager(Model model, const NDArray<float>& x_in, std::vector<NDArray<float>> params, double tol,
                         uint64_t seed = 1) {
  NDArray<float> x0 = x_in.detach().clone();
  x0.attach_grad();
  auto graph = graph::compile([&](auto x) { return model(x); });
  using G = decltype(graph);
  Run eager = run_taped(model, static_cast<G*>(nullptr), x0, params, seed + 100);
  for (int it = 0; it < 2; ++it) {  // the second call reuses the plan
    Run compiled = run_taped(model, &graph, x0, params, seed + 100);
    check_close(compiled.out, eager.out, tol, "output");
    check_close(compiled.input_grad, eager.input_grad, tol, "input gradient");
    REQUIRE(compiled.param_grads.size() == eager.param_grads.size());
    for (size_t k = 0; k < eager.param_grads.size(); ++k)
      check_close(compiled.param_grads[k], eager.param_grads[k], tol, "parameter gradient");
  }
  NDArray<float> eager_out = model(x0.detach());
  check_close(graph.forward(x0).to_vector(), eager_out.to_vector(), tol, "inference output");
  auto before = cpu_allocator().stats();  // a later inference call allocates nothing
  graph.forward(x0);
  CHECK(cpu_allocator().stats().num_requests == before.num_requests);
}
template <class Model>
void check_matches_eager(Model model, Shape in_shape, std::vector<NDArray<float>> params, double tol, uint64_t seed = 1) {
  check_matches_eager(model, random_input(in_shape, seed), params, tol, seed);
}

// Graphs of one type with different settings (one instantiation: keeps this file's compile time down).
auto max_over(int axis) {
  return graph::compile([axis](auto a) { return dl::max(a, axis); });
}
auto var_over(int axis, int ddof) {
  return graph::compile([axis, ddof](auto a) { return dl::var(a, axis, false, ddof); });
}
auto dropout2d_of(double p, bool training, Generator& gen) {
  return graph::compile([p, training, &gen](auto a) { return dl::dropout2d(a, p, training, gen); });
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
  auto before = cpu_allocator().stats();
  step.forward_backward(x);
  step.forward(x);
  CHECK(cpu_allocator().stats().num_requests == before.num_requests);
}

TEST_CASE("compile ops2: take (repeated and negative indices) matches eager bit for bit") {
  NDArray<int64_t> idx = from_vector<int64_t>(std::vector<int64_t>{2, -1, 0, 2, 3, 2}, Shape{2, 3});
  check_matches_eager([&](const auto& x) { return dl::take(dl::tanh(x), idx, 1); }, Shape{2, 4, 3}, {}, 0.0);
  auto bad = graph::compile([&](auto a) { return dl::take(a, idx, -1); });
  CHECK(bad.forward(random_input(Shape{5, 4}, 1)).shape() == Shape{5, 2, 3});
  CHECK_THROWS_WITH_AS(bad.forward(random_input(Shape{4, 3}, 1)),
                       doctest::Contains("take: index 3 is out of range for axis -1 of size 3"), ValueError);
}
