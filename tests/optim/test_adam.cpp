// optim::Adam and optim::AdamW: three steps against double-precision references of PyTorch's
// formulas (with and without weight decay; AdamW's decay is decoupled), defaults, and errors.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "dl/autograd/engine.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/optim/adam.hpp"

using namespace dl;

namespace {
struct Config {
  double lr, beta1, beta2, eps, wd;
};

std::vector<double> reference(std::vector<double> p, const std::vector<std::vector<double>>& grads, const Config& c,
                              bool decoupled) {
  std::vector<double> m(p.size(), 0.0), v(p.size(), 0.0);
  for (size_t t = 1; t <= grads.size(); ++t)
    for (size_t i = 0; i < p.size(); ++i) {
      double g = grads[t - 1][i];
      if (decoupled) p[i] *= 1 - c.lr * c.wd;
      else g += c.wd * p[i];
      m[i] = c.beta1 * m[i] + (1 - c.beta1) * g;
      v[i] = c.beta2 * v[i] + (1 - c.beta2) * g * g;
      double m_hat = m[i] / (1 - std::pow(c.beta1, t)), v_hat = v[i] / (1 - std::pow(c.beta2, t));
      p[i] -= c.lr * m_hat / (std::sqrt(v_hat) + c.eps);
    }
  return p;
}

template <class Opt>
void run(const Config& c, bool decoupled) {
  INFO("lr ", c.lr, " betas ", c.beta1, ", ", c.beta2, " eps ", c.eps, " wd ", c.wd, " decoupled ", decoupled);
  Generator gen(8);
  auto p = randn<float>({4, 5}, 0.0, 1.0, gen);
  p.attach_grad();
  auto v0 = p.to_vector();
  std::vector<double> p0(v0.begin(), v0.end());
  std::vector<std::vector<double>> grads;
  Opt opt({{"p", p}}, c.lr, c.beta1, c.beta2, c.eps, c.wd);
  for (int t = 0; t < 3; ++t) {
    auto g = randn<float>({4, 5}, 0.0, t == 2 ? 0.01 : 1.0, gen);  // a small gradient: bias correction matters
    p.grad().assign(g);
    auto gv = g.to_vector();
    grads.emplace_back(gv.begin(), gv.end());
    opt.step();
  }
  auto want = reference(p0, grads, c, decoupled);
  auto got = p.to_vector();
  int bad = 0;
  for (size_t i = 0; i < want.size(); ++i) bad += std::abs(got[i] - want[i]) > 1e-5 * (1 + std::abs(want[i]));
  CHECK(bad == 0);
  auto st = opt.state_dict();
  CHECK(st.tensors.count("p.exp_avg") == 1);
  CHECK(st.tensors.count("p.exp_avg_sq") == 1);
  CHECK(st.scalars.at("p.step") == 3);
}
}  // namespace

TEST_CASE("adam: matches the reference over three steps") {
  run<optim::Adam>({1e-2, 0.9, 0.999, 1e-8, 0.0}, false);
  run<optim::Adam>({5e-2, 0.8, 0.99, 1e-6, 0.1}, false);
  run<optim::Adam>({1e-1, 0.0, 0.5, 1e-3, 0.0}, false);
}

TEST_CASE("adamw: decoupled weight decay matches the reference") {
  run<optim::AdamW>({1e-2, 0.9, 0.999, 1e-8, 0.01}, true);
  run<optim::AdamW>({5e-2, 0.8, 0.99, 1e-6, 0.5}, true);
  // AdamW with zero decay is Adam.
  run<optim::AdamW>({1e-2, 0.9, 0.999, 1e-8, 0.0}, false);
}

TEST_CASE("adam: the first step moves every element by about lr") {
  // m_hat / sqrt(v_hat) = g / |g| on step 1, whatever the gradient's size.
  auto p = zeros<float>({6});
  p.attach_grad();
  p.grad().assign(from_vector<float>({1e-3f, -2.0f, 5.0f, -7e-2f, 3.0f, -1.0f}));
  optim::Adam opt(std::vector<NDArray<float>>{p}, 0.01);
  opt.step();
  auto v = p.to_vector();
  for (size_t i = 0; i < v.size(); ++i) CHECK(std::abs(v[i]) == doctest::Approx(0.01).epsilon(1e-3));
  CHECK(v[1] > 0);
  CHECK(v[0] < 0);
}

TEST_CASE("adam: defaults and errors") {
  auto p = ones<float>({2});
  p.attach_grad();
  std::vector<NDArray<float>> ps{p};
  optim::Adam a(ps);
  CHECK(a.lr() == 1e-3);
  CHECK(a.beta1() == 0.9);
  CHECK(a.beta2() == 0.999);
  CHECK(a.eps() == 1e-8);
  CHECK(a.weight_decay() == 0.0);
  optim::AdamW w(ps);
  CHECK(w.weight_decay() == 1e-2);
  CHECK_THROWS_WITH_AS(optim::Adam(ps, 1e-3, 1.0), doctest::Contains("adam: beta1 must be in [0, 1), got 1"), ValueError);
  CHECK_THROWS_WITH_AS(optim::Adam(ps, 1e-3, 0.9, -0.1), doctest::Contains("adam: beta2 must be in [0, 1), got -0.1"),
                       ValueError);
  CHECK_THROWS_WITH_AS(optim::AdamW(ps, 1e-3, 0.9, 1.5), doctest::Contains("adamw: beta2 must be in [0, 1)"), ValueError);
  CHECK_THROWS_WITH_AS(optim::Adam(ps, 1e-3, 0.9, 0.999, -1.0), doctest::Contains("adam: eps must be non-negative"),
                       ValueError);
  CHECK_THROWS_WITH_AS(optim::AdamW(ps, 1e-3, 0.9, 0.999, 1e-8, -0.1), doctest::Contains("adamw: weight_decay must be non-negative"),
                       ValueError);
  CHECK_THROWS_WITH_AS(optim::Adam(ps, -1.0), doctest::Contains("adam: learning rate must be a non-negative"), ValueError);
}
