// clip_grad_norm: the global L2 norm over all gradients, scaling only above max_norm, skipped
// parameters, named parameters, and errors.
#include <doctest/doctest.h>

#include <cmath>

#include "dl/autograd/engine.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/optim/clip.hpp"

using namespace dl;

TEST_CASE("clip_grad_norm: global norm and scaling") {
  Generator gen(4);
  auto a = zeros<float>({3, 4}), b = zeros<float>({5}), c = zeros<float>({2});
  a.attach_grad();
  b.attach_grad();  // c has no gradient buffer
  a.grad().assign(randn<float>({3, 4}, 0.0, 1.0, gen));
  b.grad().assign(randn<float>({5}, 0.0, 3.0, gen));
  double want = 0;
  for (float g : a.grad().to_vector()) want += double(g) * g;
  for (float g : b.grad().to_vector()) want += double(g) * g;
  want = std::sqrt(want);
  auto ga = a.grad().to_vector();

  // Above the norm: nothing changes.
  double norm = optim::clip_grad_norm({a, b, c}, want * 2);
  CHECK(norm == doctest::Approx(want));
  CHECK(a.grad().to_vector() == ga);

  // Below: every gradient is scaled by the same factor, to a norm of max_norm.
  norm = optim::clip_grad_norm({a, b, c}, 1.0);
  CHECK(norm == doctest::Approx(want));
  double after = 0;
  for (float g : a.grad().to_vector()) after += double(g) * g;
  for (float g : b.grad().to_vector()) after += double(g) * g;
  CHECK(std::sqrt(after) == doctest::Approx(1.0).epsilon(1e-5));
  auto ga2 = a.grad().to_vector();
  for (size_t i = 0; i < ga.size(); ++i) CHECK(ga2[i] == doctest::Approx(ga[i] / want).epsilon(1e-5));

  // Named parameters and zero max_norm.
  double n2 = optim::clip_grad_norm(std::vector<std::pair<std::string, NDArray<float>>>{{"a", a}, {"b", b}}, 0.0);
  CHECK(n2 == doctest::Approx(1.0).epsilon(1e-5));
  for (float g : a.grad().to_vector()) CHECK(g == 0.0f);
}

TEST_CASE("clip_grad_norm: non-finite norm is returned without scaling; errors") {
  auto a = zeros<float>({2});
  a.attach_grad();
  a.grad().assign(from_vector<float>({INFINITY, 1.0f}));
  double n = optim::clip_grad_norm({a}, 1.0);
  CHECK(std::isinf(n));
  CHECK(a.grad().to_vector()[1] == 1.0f);
  CHECK(optim::clip_grad_norm(std::vector<NDArray<float>>{}, 1.0) == 0.0);
  CHECK_THROWS_WITH_AS(optim::clip_grad_norm({a}, -1.0),
                       doctest::Contains("clip_grad_norm: max_norm must be non-negative and finite, got -1"), ValueError);
  CHECK_THROWS_WITH_AS(optim::clip_grad_norm({a}, NAN), doctest::Contains("clip_grad_norm: max_norm"), ValueError);
}
