// What the graph tests (tests/graph/test_compile*.cpp, test_repeat*.cpp) share: random data,
// comparisons of float vectors, eager-vs-compiled runs of a model (outputs, the input's gradient
// and every parameter's gradient, through the compiled graph as one tape node), a residual block,
// one training step's results of a net, and the allocator's request count (a later step must
// allocate nothing).
//
//   dl_test::check_matches_eager([&](const auto& x) { return dl::pad(fc(x), {{0, 0}, {1, 1}}); },
//                                Shape{4, 6}, {fc.weight, fc.bias}, 0.0);   // 0: bit for bit
//   CHECK(dl_test::allocations_during([&] { step.forward_backward(x); }) == 0);
#pragma once
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "dl/core/allocator.hpp"
#include "dl/dl.hpp"
#include "dl/graph/compile.hpp"

namespace dl_test {

// Uniform in [-1, 1) from a generator of its own.
inline dl::NDArray<float> random_input(dl::Shape s, uint64_t seed) {
  dl::Generator gen(seed);
  dl::NDArray<float> x(s);
  dl::nn::init::uniform(x, -1.0, 1.0, gen);
  return x;
}
// Labels (n) in [0, classes): a fixed pattern that differs by seed.
inline dl::NDArray<int64_t> random_labels(int64_t n, int64_t classes, uint64_t seed) {
  dl::NDArray<int64_t> y(dl::Shape{n});
  for (int64_t i = 0; i < n; ++i) y.data()[i] = static_cast<int64_t>((i * 7 + seed) % static_cast<uint64_t>(classes));
  return y;
}
// Every parameter's gradient, in named_parameters order.
inline std::vector<std::vector<float>> grads_of(const dl::nn::Module& m) {
  std::vector<std::vector<float>> out;
  for (auto& [name, p] : m.named_parameters()) out.push_back(p.grad().to_vector());
  return out;
}
// a == b element by element: bit for bit when tol is 0, else relative tol (scale 1).
inline void check_close(const std::vector<float>& a, const std::vector<float>& b, double tol, const std::string& what = "") {
  CAPTURE(what);
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    if (tol == 0.0) CHECK(a[i] == b[i]);  // the same kernels: bit-identical
    else CHECK(a[i] == doctest::Approx(b[i]).epsilon(tol).scale(1.0));
  }
}
// Every array of `expected` (parameter gradients, in order) against the same one of `actual`.
inline void check_all_close(const std::vector<std::vector<float>>& actual, const std::vector<std::vector<float>>& expected,
                            double tol) {
  REQUIRE(actual.size() == expected.size());
  for (size_t k = 0; k < expected.size(); ++k) check_close(actual[k], expected[k], tol);
}
inline bool all_equal(const std::vector<dl::NDArray<float>>& a, const std::vector<dl::NDArray<float>>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!dl::array_equal(a[i], b[i])) return false;
  return true;
}

// h + 0.5 fc2(dropout(relu(fc1 h))): a residual MLP block, written once for arrays and symbols
// (graph::repeat's eager and compiled blocks).
struct ResidualMlp : dl::nn::Module {
  dl::nn::Dense fc1, fc2;
  dl::nn::Dropout drop;
  ResidualMlp(int64_t width, double p) : fc1(width, width), fc2(width, width), drop(p) {
    register_module("fc1", &ResidualMlp::fc1);
    register_module("fc2", &ResidualMlp::fc2);
    register_module("drop", &ResidualMlp::drop);
  }
  template <class X>
  auto operator()(const X& x) { return x + 0.5f * fc2(drop(dl::relu(fc1(x)))); }
};

// How many allocations fn makes (the CPU allocator's requests).
template <class F>
int64_t allocations_during(F&& fn) {
  auto before = dl::cpu_allocator().stats().num_requests;
  fn();
  return static_cast<int64_t>(dl::cpu_allocator().stats().num_requests - before);
}

// The allocator's peak during net's second training step on x (a ones head gradient) above the
// bytes in use before it (the first step creates the gradient buffers); *held_after gets the bytes
// still in use after it, above the same base.
template <class Net>
int64_t step_peak_bytes(Net& net, const dl::NDArray<float>& x, int64_t* held_after = nullptr) {
  auto step = [&] {
    dl::NDArray<float> y;
    {
      dl::autograd::record rec;
      y = net(x);
    }
    y.backward(dl::ones<float>(x.shape()));
  };
  step();
  const int64_t base = dl::cpu_allocator().stats().bytes_in_use;
  dl::cpu_allocator().reset_peak();
  step();
  if (held_after) *held_after = dl::cpu_allocator().stats().bytes_in_use - base;
  return dl::cpu_allocator().stats().peak_bytes_in_use - base;
}

// What one run of a model gives: its output, the input's gradient and the parameters' gradients,
// from loss = sum(out * weights) with fixed random weights (every output element has its own slope).
struct Run {
  std::vector<float> out, input_grad;
  std::vector<std::vector<float>> param_grads;
};

// The model on x0, eagerly (compiled = nullptr) or through the compiled graph as one tape node.
template <class Model, class Graph>
Run run_taped(Model& model, Graph* compiled, const dl::NDArray<float>& x0, std::vector<dl::NDArray<float>> params,
              uint64_t seed) {
  for (auto& p : params) p.grad().assign(0.0f);
  x0.grad().assign(0.0f);
  Run r;
  dl::NDArray<float> loss;
  {
    dl::autograd::record rec;
    dl::NDArray<float> x = x0 * 1.0f;  // eager code feeds the graph
    dl::NDArray<float> out = compiled ? (*compiled)(x) : dl::NDArray<float>(model(x));
    r.out = out.to_vector();
    loss = dl::sum(out * random_input(out.shape(), seed));
  }
  loss.backward();
  r.input_grad = x0.grad().to_vector();
  for (auto& p : params) r.param_grads.push_back(p.grad().to_vector());
  return r;
}

// Compiled vs eager: outputs, the input's gradient and every parameter's gradient (twice: the
// second call reuses the plan); then inference, and a later inference call allocates nothing.
template <class Model>
void check_matches_eager(Model model, const dl::NDArray<float>& x_in, std::vector<dl::NDArray<float>> params, double tol,
                         uint64_t seed = 1) {
  dl::NDArray<float> x0 = x_in.detach().clone();
  x0.attach_grad();
  auto graph = dl::graph::compile([&](auto x) { return model(x); });
  using G = decltype(graph);
  Run eager = run_taped(model, static_cast<G*>(nullptr), x0, params, seed + 100);
  for (int it = 0; it < 2; ++it) {
    Run compiled = run_taped(model, &graph, x0, params, seed + 100);
    check_close(compiled.out, eager.out, tol, "output");
    check_close(compiled.input_grad, eager.input_grad, tol, "input gradient");
    REQUIRE(compiled.param_grads.size() == eager.param_grads.size());
    for (size_t k = 0; k < eager.param_grads.size(); ++k)
      check_close(compiled.param_grads[k], eager.param_grads[k], tol, "parameter gradient");
  }
  dl::NDArray<float> eager_out = model(x0.detach());
  check_close(graph.forward(x0).to_vector(), eager_out.to_vector(), tol, "inference output");
  CHECK(allocations_during([&] { graph.forward(x0); }) == 0);
}
template <class Model>
void check_matches_eager(Model model, dl::Shape in_shape, std::vector<dl::NDArray<float>> params, double tol,
                         uint64_t seed = 1) {
  check_matches_eager(model, random_input(in_shape, seed), params, tol, seed);
}

// forward_backward of a scalar loss against eager record + backward: the loss and the gradients.
template <class Loss>
void check_loss_matches_eager(Loss loss_fn, const dl::NDArray<float>& x, std::vector<dl::NDArray<float>> params, double tol) {
  for (auto& p : params) p.grad().assign(0.0f);
  dl::NDArray<float> eager_loss;
  {
    dl::autograd::record rec;
    eager_loss = dl::NDArray<float>(loss_fn(x));
  }
  eager_loss.backward();
  std::vector<std::vector<float>> eager;
  for (auto& p : params) eager.push_back(p.grad().to_vector());
  auto step = dl::graph::compile([&](auto a) { return loss_fn(a); });
  for (int it = 0; it < 2; ++it) {
    for (auto& p : params) p.grad().assign(0.0f);
    CHECK(step.forward_backward(x).item() == doctest::Approx(eager_loss.item()).epsilon(tol));
    for (size_t k = 0; k < params.size(); ++k) check_close(params[k].grad().to_vector(), eager[k], tol);
  }
}

// cross_entropy(eager_model(x), y) recorded and differentiated, against step.forward_backward(x, y)
// (a compiled step of the same loss; twice: the second call reuses the bound plan): the loss and
// every parameter gradient of net.
template <class Net, class EagerModel, class Step>
void check_step_matches_eager(Net& net, EagerModel&& eager_model, Step& step, const dl::NDArray<float>& x,
                              const dl::NDArray<int64_t>& y, double loss_tol, double grad_tol) {
  net.zero_grad();
  float eager_loss;
  {
    dl::autograd::record rec;
    auto loss = dl::cross_entropy(eager_model(x), y);
    loss.backward();
    eager_loss = loss.item();
  }
  auto eager = grads_of(net);
  for (int it = 0; it < 2; ++it) {
    net.zero_grad();
    CHECK(step.forward_backward(x, y).item() == doctest::Approx(eager_loss).epsilon(loss_tol));
    check_all_close(grads_of(net), eager, grad_tol);
  }
}

// One training step of net on randn data of `shape` (seeded) with a randn head gradient: the
// parameters' gradients, the input's gradient, the output, then the buffers (running statistics).
template <class Net>
std::vector<dl::NDArray<float>> step_results(Net& net, const dl::Shape& shape, uint64_t data_seed = 7) {
  dl::manual_seed(data_seed);
  auto x = dl::randn<float>(shape);
  auto head = dl::randn<float>(shape);
  x.attach_grad();
  dl::NDArray<float> y;
  {
    dl::autograd::record rec;
    y = net(x);
  }
  y.backward(head);
  std::vector<dl::NDArray<float>> out;
  for (auto& [name, p] : net.named_parameters()) out.push_back(p.grad().clone());
  out.push_back(x.grad().clone());
  out.push_back(y.detach().clone());
  for (auto& [name, b] : net.named_buffers()) out.push_back(b.clone());
  return out;
}

}  // namespace dl_test
