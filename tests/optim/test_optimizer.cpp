// optim::Optimizer (through SGD and Adam): parameters without gradients are skipped, zero_grad,
// step under a recording scope, state_dict round trip (a resumed run equals an uninterrupted one),
// load_state_dict errors, and parameter checks at construction.
#include <doctest/doctest.h>

#include <vector>

#include "dl/autograd/engine.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/nn/dense.hpp"
#include "dl/optim/adam.hpp"
#include "dl/optim/sgd.hpp"

using namespace dl;

namespace {
// Deterministic pseudo-gradients for step t.
void set_grads(const optim::NamedParameters& params, int t) {
  Generator gen(100 + static_cast<uint64_t>(t));
  for (auto& [name, p] : params) p.grad().assign(randn<float>(p.shape(), 0.0, 1.0, gen));
}
}  // namespace

TEST_CASE("optimizer: parameters without a gradient buffer are skipped") {
  auto a = ones<float>({3}), b = ones<float>({3}), c = ones<float>({3});
  a.attach_grad();
  c.attach_grad();
  c.set_grad_req(autograd::GradReq::null);
  a.grad().assign(1.0f);
  optim::SGD opt({{"a", a}, {"b", b}, {"c", c}}, 0.5, 0.9);
  opt.step();
  CHECK(a.to_vector() == std::vector<float>{0.5f, 0.5f, 0.5f});
  CHECK(b.to_vector() == std::vector<float>{1.0f, 1.0f, 1.0f});
  CHECK(c.to_vector() == std::vector<float>{1.0f, 1.0f, 1.0f});
  auto st = opt.state_dict();
  CHECK(st.tensors.size() == 1);  // only a has a momentum buffer
  CHECK(st.scalars.at("a.step") == 1);
  CHECK(st.scalars.at("b.step") == 0);
  CHECK(st.scalars.at("step") == 1);
}

TEST_CASE("optimizer: zero_grad, step inside a record scope, set_lr") {
  nn::Dense fc(3, 2);
  optim::SGD opt(fc.named_parameters(), 0.1);
  set_grads(opt.named_parameters(), 0);
  auto before = fc.weight.to_vector();
  {
    autograd::record rec;  // the update itself is never recorded
    opt.step();
  }
  CHECK(fc.weight.to_vector() != before);
  CHECK(fc.weight.is_leaf());
  opt.zero_grad();
  for (auto& p : fc.parameters())
    for (float g : p.grad().to_vector()) CHECK(g == 0.0f);
  opt.set_lr(0.25);
  CHECK(opt.lr() == 0.25);
  CHECK(opt.state_dict().scalars.at("lr") == 0.25);
}

TEST_CASE("optimizer: a run resumed from state_dict equals an uninterrupted run") {
  Generator g1(3), g2(3);
  nn::Dense a(4, 3, true, g1), b(4, 3, true, g2);
  optim::Adam opt_a(a.named_parameters(), 0.05, 0.9, 0.99, 1e-8, 0.01);
  for (int t = 0; t < 2; ++t) {
    set_grads(opt_a.named_parameters(), t);
    opt_a.step();
  }
  // Checkpoint: snapshot the module and optimizer state.
  nn::StateDict model;
  for (auto& [k, v] : a.state_dict()) model[k] = v.clone();
  optim::OptimizerState st = opt_a.state_dict();
  for (auto& [k, v] : st.tensors) v = v.clone();
  CHECK(st.tensors.size() == 4);
  CHECK(st.tensors.count("weight.exp_avg_sq") == 1);
  CHECK(st.scalars.at("step") == 2);

  for (int t = 2; t < 4; ++t) {
    set_grads(opt_a.named_parameters(), t);
    opt_a.step();
  }

  b.load_state_dict(model);
  optim::Adam opt_b(b.named_parameters(), 0.5, 0.9, 0.99, 1e-8, 0.01);  // lr comes from the state
  opt_b.load_state_dict(st);
  CHECK(opt_b.lr() == 0.05);
  CHECK(opt_b.step_count() == 2);
  for (int t = 2; t < 4; ++t) {
    set_grads(opt_b.named_parameters(), t);
    opt_b.step();
  }
  CHECK(a.weight.to_vector() == b.weight.to_vector());
  CHECK(a.bias.to_vector() == b.bias.to_vector());
  // The loaded buffers are copies: stepping b did not touch the snapshot.
  CHECK(st.tensors.at("bias.exp_avg").storage() != opt_b.state_dict().tensors.at("bias.exp_avg").storage());
}

TEST_CASE("optimizer: load_state_dict errors change nothing") {
  nn::Dense fc(2, 2);
  optim::SGD opt(fc.named_parameters(), 0.1, 0.9);
  set_grads(opt.named_parameters(), 0);
  opt.step();
  auto good = opt.state_dict();

  auto extra = good;
  extra.tensors["weight.exp_avg"] = zeros<float>({2, 2});
  CHECK_THROWS_WITH_AS(opt.load_state_dict(extra), doctest::Contains("sgd: load_state_dict: unexpected tensor 'weight.exp_avg'"),
                       ValueError);
  auto wrong = good;
  wrong.tensors["bias.momentum_buffer"] = zeros<float>({3});
  CHECK_THROWS_WITH_AS(opt.load_state_dict(wrong),
                       doctest::Contains("shape mismatch for 'bias.momentum_buffer': parameter has (2,), state has (3,)"),
                       ValueError);
  auto missing = good;
  missing.tensors.erase("weight.momentum_buffer");
  CHECK_THROWS_WITH_AS(opt.load_state_dict(missing), doctest::Contains("missing tensor 'weight.momentum_buffer'"), ValueError);
  auto scalar = good;
  scalar.scalars["momentum"] = 0.5;
  CHECK_THROWS_WITH_AS(opt.load_state_dict(scalar), doctest::Contains("unexpected scalar 'momentum'"), ValueError);
  auto lr = good;
  lr.scalars["lr"] = -1;
  CHECK_THROWS_WITH_AS(opt.load_state_dict(lr), doctest::Contains("sgd: learning rate"), ValueError);
  auto step = good;
  step.scalars["step"] = 1.5;
  CHECK_THROWS_WITH_AS(opt.load_state_dict(step), doctest::Contains("step count 'step' must be a non-negative integer"),
                       ValueError);
  CHECK(opt.step_count() == 1);
  CHECK(opt.lr() == 0.1);

  // A fresh state (no steps, no buffers) loads and resets.
  optim::SGD fresh(fc.named_parameters(), 0.3, 0.9);
  opt.load_state_dict(fresh.state_dict());
  CHECK(opt.step_count() == 0);
  CHECK(opt.state_dict().tensors.empty());
  CHECK(opt.lr() == 0.3);
}

TEST_CASE("optimizer: parameter checks at construction") {
  auto p = ones<float>({2, 3});
  p.attach_grad();
  CHECK_THROWS_WITH_AS(optim::SGD({{"p", p}, {"p", p}}, 0.1), doctest::Contains("sgd: parameter name 'p' appears twice"),
                       ValueError);
  CHECK_THROWS_WITH_AS(optim::SGD({{"q", NDArray<float>()}}, 0.1), doctest::Contains("sgd: parameter 'q' is undefined"),
                       ValueError);
  CHECK_THROWS_WITH_AS(optim::SGD({{"t", p.transpose()}}, 0.1),
                       doctest::Contains("sgd: parameter 't' of shape (3, 2) is not contiguous"), ValueError);
  NDArray<float> derived;
  {
    autograd::record rec;
    derived = p * 2.0f;
  }
  CHECK_THROWS_WITH_AS(optim::Adam({{"d", derived}}, 0.1), doctest::Contains("adam: parameter 'd' is not a leaf"), ValueError);
  // Unnamed parameters are named by position.
  optim::SGD opt(std::vector<NDArray<float>>{p, ones<float>({1})}, 0.1);
  CHECK(opt.named_parameters()[1].first == "1");
}
