// Learning-rate schedules: values at chosen steps against the closed forms, warmup wrapping,
// applying to an optimizer, and errors.
#include <doctest/doctest.h>

#include <cmath>
#include <numbers>

#include "dl/autograd/engine.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/optim/schedule.hpp"
#include "dl/optim/sgd.hpp"

using namespace dl;
using namespace dl::optim;

TEST_CASE("StepLR") {
  StepLR s(0.1, 3, 0.5);
  CHECK(s.lr(0) == doctest::Approx(0.1));
  CHECK(s.lr(2) == doctest::Approx(0.1));
  CHECK(s.lr(3) == doctest::Approx(0.05));
  CHECK(s.lr(8) == doctest::Approx(0.025));
  CHECK(s.lr(9) == doctest::Approx(0.0125));
  CHECK_THROWS_WITH_AS(StepLR(0.1, 0), doctest::Contains("StepLR: step_size must be positive, got 0"), ValueError);
  CHECK_THROWS_WITH_AS(StepLR(-0.1, 2), doctest::Contains("StepLR: base learning rate must be non-negative"), ValueError);
  CHECK_THROWS_WITH_AS(s.lr(-1), doctest::Contains("StepLR: step must be non-negative, got -1"), ValueError);
}

TEST_CASE("MultiStepLR") {
  MultiStepLR s(1.0, {2, 5, 6}, 0.1);
  CHECK(s.lr(0) == doctest::Approx(1.0));
  CHECK(s.lr(1) == doctest::Approx(1.0));
  CHECK(s.lr(2) == doctest::Approx(0.1));
  CHECK(s.lr(4) == doctest::Approx(0.1));
  CHECK(s.lr(5) == doctest::Approx(0.01));
  CHECK(s.lr(6) == doctest::Approx(0.001));
  CHECK(s.lr(100) == doctest::Approx(0.001));
  CHECK(MultiStepLR(0.5, {}).lr(10) == doctest::Approx(0.5));
  CHECK_THROWS_WITH_AS(MultiStepLR(1.0, {3, 3}), doctest::Contains("MultiStepLR: milestones must be strictly increasing, got 3 then 3"),
                       ValueError);
  CHECK_THROWS_WITH_AS(MultiStepLR(1.0, {-1}), doctest::Contains("MultiStepLR: milestone -1 is negative"), ValueError);
}

TEST_CASE("CosineAnnealing") {
  CosineAnnealing s(0.1, 10, 0.01);
  CHECK(s.lr(0) == doctest::Approx(0.1));
  CHECK(s.lr(5) == doctest::Approx(0.055));
  for (int t = 0; t <= 10; ++t)
    CHECK(s.lr(t) == doctest::Approx(0.01 + 0.09 * (1 + std::cos(std::numbers::pi * t / 10)) / 2));
  CHECK(s.lr(10) == doctest::Approx(0.01));
  CHECK(s.lr(25) == doctest::Approx(0.01));
  for (int t = 1; t <= 10; ++t) CHECK(s.lr(t) < s.lr(t - 1));
  CHECK_THROWS_WITH_AS(CosineAnnealing(0.1, 0), doctest::Contains("CosineAnnealing: t_max must be positive"), ValueError);
  CHECK_THROWS_WITH_AS(CosineAnnealing(0.1, 5, 0.2), doctest::Contains("CosineAnnealing: eta_min must be in [0, base_lr"),
                       ValueError);
}

TEST_CASE("LinearWarmup wraps another schedule") {
  LinearWarmup w(CosineAnnealing(0.1, 10), 4);
  CHECK(w.lr(0) == doctest::Approx(0.0));
  CHECK(w.lr(1) == doctest::Approx(0.025));
  CHECK(w.lr(3) == doctest::Approx(0.075));
  CHECK(w.lr(4) == doctest::Approx(0.1));                   // the inner schedule's step 0
  CHECK(w.lr(9) == doctest::Approx(CosineAnnealing(0.1, 10).lr(5)));
  CHECK(w.lr(14) == doctest::Approx(0.0));

  LinearWarmup w2(StepLR(1.0, 2, 0.5), 2, 0.5);
  CHECK(w2.lr(0) == doctest::Approx(0.5));
  CHECK(w2.lr(1) == doctest::Approx(0.75));
  CHECK(w2.lr(2) == doctest::Approx(1.0));
  CHECK(w2.lr(4) == doctest::Approx(0.5));
  CHECK(LinearWarmup(StepLR(1.0, 2), 0).lr(0) == doctest::Approx(1.0));  // no warmup
  CHECK_THROWS_WITH_AS(LinearWarmup(StepLR(1.0, 2), -1), doctest::Contains("LinearWarmup: warmup_steps must be non-negative"),
                       ValueError);
  CHECK_THROWS_WITH_AS(LinearWarmup(StepLR(1.0, 2), 3, 1.5), doctest::Contains("LinearWarmup: start_factor must be in [0, 1]"),
                       ValueError);
  // Nesting another warmup.
  LinearWarmup nested(LinearWarmup(StepLR(1.0, 100), 2), 2);
  CHECK(nested.lr(3) == doctest::Approx(0.5));
}

TEST_CASE("schedules set an optimizer's learning rate") {
  auto p = ones<float>({1});
  p.attach_grad();
  SGD opt(std::vector<NDArray<float>>{p}, 1.0);
  StepLR s(0.2, 1, 0.5);
  const LrSchedule& any = s;
  CHECK(any.apply(opt, 2) == doctest::Approx(0.05));
  CHECK(opt.lr() == doctest::Approx(0.05));
  p.grad().assign(1.0f);
  opt.step();
  CHECK(p.item() == doctest::Approx(0.95));
}
