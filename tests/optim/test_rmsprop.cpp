// optim::RMSProp: three steps against a double-precision reference of PyTorch's (non-centred)
// formulas with and without momentum and weight decay, defaults, and errors.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "dl/autograd/engine.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/optim/rmsprop.hpp"

using namespace dl;

namespace {
struct Config {
  double lr, alpha, eps, momentum, wd;
};

std::vector<double> reference(std::vector<double> p, const std::vector<std::vector<double>>& grads, const Config& c) {
  std::vector<double> v(p.size(), 0.0), buf(p.size(), 0.0);
  for (const auto& gs : grads)
    for (size_t i = 0; i < p.size(); ++i) {
      double g = gs[i] + c.wd * p[i];
      v[i] = c.alpha * v[i] + (1 - c.alpha) * g * g;
      double d = g / (std::sqrt(v[i]) + c.eps);
      if (c.momentum > 0) {
        buf[i] = c.momentum * buf[i] + d;
        d = buf[i];
      }
      p[i] -= c.lr * d;
    }
  return p;
}
}  // namespace

TEST_CASE("rmsprop: matches the reference over three steps") {
  for (Config c : {Config{1e-2, 0.99, 1e-8, 0.0, 0.0}, Config{5e-2, 0.9, 1e-6, 0.9, 0.0}, Config{1e-2, 0.5, 1e-4, 0.5, 0.1}}) {
    INFO("lr ", c.lr, " alpha ", c.alpha, " eps ", c.eps, " momentum ", c.momentum, " wd ", c.wd);
    Generator gen(9);
    auto p = randn<float>({3, 7}, 0.0, 1.0, gen);
    p.attach_grad();
    auto v0 = p.to_vector();
    std::vector<std::vector<double>> grads;
    optim::RMSProp opt({{"p", p}}, c.lr, c.alpha, c.eps, c.momentum, c.wd);
    for (int t = 0; t < 3; ++t) {
      auto g = randn<float>({3, 7}, 0.0, 1.0, gen);
      p.grad().assign(g);
      auto gv = g.to_vector();
      grads.emplace_back(gv.begin(), gv.end());
      opt.step();
    }
    auto want = reference(std::vector<double>(v0.begin(), v0.end()), grads, c);
    auto got = p.to_vector();
    int bad = 0;
    for (size_t i = 0; i < want.size(); ++i) bad += std::abs(got[i] - want[i]) > 1e-5 * (1 + std::abs(want[i]));
    CHECK(bad == 0);
    CHECK(opt.state_dict().tensors.size() == (c.momentum > 0 ? 2u : 1u));
  }
}

TEST_CASE("rmsprop: defaults and errors") {
  auto p = ones<float>({2});
  p.attach_grad();
  std::vector<NDArray<float>> ps{p};
  optim::RMSProp r(ps);
  CHECK(r.lr() == 1e-2);
  CHECK(r.alpha() == 0.99);
  CHECK(r.eps() == 1e-8);
  CHECK(r.momentum() == 0.0);
  CHECK_THROWS_WITH_AS(optim::RMSProp(ps, 0.01, 1.0), doctest::Contains("rmsprop: alpha must be in [0, 1), got 1"), ValueError);
  CHECK_THROWS_WITH_AS(optim::RMSProp(ps, 0.01, 0.9, -1e-8), doctest::Contains("rmsprop: eps must be non-negative"), ValueError);
  CHECK_THROWS_WITH_AS(optim::RMSProp(ps, 0.01, 0.9, 1e-8, 1.0), doctest::Contains("rmsprop: momentum must be in [0, 1)"),
                       ValueError);
  CHECK_THROWS_WITH_AS(optim::RMSProp(ps, 0.01, 0.9, 1e-8, 0.0, -2.0), doctest::Contains("rmsprop: weight_decay"), ValueError);
  CHECK_THROWS_WITH_AS(optim::RMSProp(ps, -0.01), doctest::Contains("rmsprop: learning rate"), ValueError);
}
