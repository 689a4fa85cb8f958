// optim::SGD: three steps against a hand-written double-precision reference of PyTorch's formulas
// (plain, momentum, nesterov, weight decay), hyper-parameter errors, and an end-to-end fit of
// y = 3x + 1 with a Dense layer.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "dl/autograd/engine.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/nn/dense.hpp"
#include "dl/ops/matmul.hpp"
#include "dl/optim/sgd.hpp"

using namespace dl;

namespace {
struct Config {
  double lr, momentum;
  bool nesterov;
  double wd;
};

// PyTorch's SGD (dampening 0) in double.
std::vector<double> reference(std::vector<double> p, const std::vector<std::vector<double>>& grads, const Config& c) {
  std::vector<double> buf(p.size(), 0.0);
  for (size_t t = 0; t < grads.size(); ++t)
    for (size_t i = 0; i < p.size(); ++i) {
      double g = grads[t][i] + c.wd * p[i];
      if (c.momentum > 0) {
        buf[i] = t == 0 ? g : c.momentum * buf[i] + g;
        g = c.nesterov ? g + c.momentum * buf[i] : buf[i];
      }
      p[i] -= c.lr * g;
    }
  return p;
}
}  // namespace

TEST_CASE("sgd: matches the reference formulas over three steps") {
  for (Config c : {Config{0.1, 0.0, false, 0.0}, Config{0.05, 0.9, false, 0.0}, Config{0.05, 0.9, true, 0.0},
                   Config{0.1, 0.0, false, 0.01}, Config{0.02, 0.5, true, 0.1}}) {
    INFO("lr ", c.lr, " momentum ", c.momentum, " nesterov ", c.nesterov, " wd ", c.wd);
    Generator gen(6);
    auto w = randn<float>({2, 3}, 0.0, 1.0, gen);
    auto b = randn<float>({3}, 0.0, 1.0, gen);
    w.attach_grad();
    b.attach_grad();
    auto to_d = [](const NDArray<float>& a) {
      auto v = a.to_vector();
      return std::vector<double>(v.begin(), v.end());
    };
    auto w0 = to_d(w), b0 = to_d(b);
    std::vector<std::vector<double>> gw, gb;
    optim::SGD opt({{"w", w}, {"b", b}}, c.lr, c.momentum, c.nesterov, c.wd);
    for (int t = 0; t < 3; ++t) {
      auto g1 = randn<float>({2, 3}, 0.0, 1.0, gen), g2 = randn<float>({3}, 0.0, 1.0, gen);
      w.grad().assign(g1);
      b.grad().assign(g2);
      gw.push_back(to_d(g1));
      gb.push_back(to_d(g2));
      opt.step();
    }
    auto rw = reference(w0, gw, c), rb = reference(b0, gb, c);
    auto vw = w.to_vector(), vb = b.to_vector();
    for (size_t i = 0; i < rw.size(); ++i) CHECK(vw[i] == doctest::Approx(rw[i]).epsilon(1e-5));
    for (size_t i = 0; i < rb.size(); ++i) CHECK(vb[i] == doctest::Approx(rb[i]).epsilon(1e-5));
    CHECK(opt.step_count() == 3);
    CHECK(opt.state_dict().tensors.size() == (c.momentum > 0 ? 2u : 0u));
  }
}

TEST_CASE("sgd: large parameters are updated by the parallel loop like small ones") {
  int saved = num_threads();
  set_num_threads(2);
  auto p = ones<float>({100000});
  p.attach_grad();
  p.grad().assign(2.0f);
  optim::SGD opt(std::vector<NDArray<float>>{p}, 0.5, 0.9, true);
  opt.step();
  set_num_threads(saved);
  // buf = 2, d = 2 + 0.9 * 2 = 3.8, p = 1 - 0.5 * 3.8
  int bad = 0;
  for (float v : p.to_vector()) bad += std::abs(v - (1.0f - 1.9f)) > 1e-6f;
  CHECK(bad == 0);
}

TEST_CASE("sgd: hyper-parameter errors") {
  auto p = ones<float>({2});
  p.attach_grad();
  std::vector<NDArray<float>> ps{p};
  CHECK_THROWS_WITH_AS(optim::SGD(ps, -0.1), doctest::Contains("sgd: learning rate must be a non-negative finite number, got -0.1"),
                       ValueError);
  CHECK_THROWS_WITH_AS(optim::SGD(ps, 0.1, 1.0), doctest::Contains("sgd: momentum must be in [0, 1), got 1"), ValueError);
  CHECK_THROWS_WITH_AS(optim::SGD(ps, 0.1, -0.5), doctest::Contains("sgd: momentum must be in [0, 1)"), ValueError);
  CHECK_THROWS_WITH_AS(optim::SGD(ps, 0.1, 0.0, true), doctest::Contains("sgd: nesterov needs a positive momentum"), ValueError);
  CHECK_THROWS_WITH_AS(optim::SGD(ps, 0.1, 0.0, false, -1.0), doctest::Contains("sgd: weight_decay must be non-negative"),
                       ValueError);
  optim::SGD opt(ps, 0.1);
  CHECK_THROWS_WITH_AS(opt.set_lr(NAN), doctest::Contains("sgd: learning rate"), ValueError);
  CHECK(opt.lr() == 0.1);
}

TEST_CASE("sgd: fits y = 3x + 1 with a Dense layer") {
  Generator gen(10);
  nn::Dense fc(1, 1, true, gen);
  const int64_t n = 32;
  auto x = rand<float>({n, 1}, -1.0, 1.0, gen);
  NDArray<float> target = x * 3.0f + 1.0f;
  auto sum_rows = ones<float>({1, n});
  optim::SGD opt(fc.named_parameters(), 0.1, 0.9);
  double loss_value = 0;
  for (int it = 0; it < 300; ++it) {
    opt.zero_grad();
    NDArray<float> loss;
    {
      autograd::record rec;
      loss = matmul(sum_rows, square(fc(x) - target)) * (1.0f / n);  // mean squared error, (1, 1)
    }
    loss.backward();
    opt.step();
    loss_value = loss.item();
  }
  CHECK(loss_value < 1e-6);
  CHECK(fc.weight.item() == doctest::Approx(3.0).epsilon(1e-2));
  CHECK(fc.bias.item() == doctest::Approx(1.0).epsilon(1e-2));
  CHECK(std::abs(fc.weight.item() - 3.0f) < 1e-2f);
  CHECK(std::abs(fc.bias.item() - 1.0f) < 1e-2f);
}
