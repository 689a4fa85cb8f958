// Learning-rate schedules: stateless objects mapping a step (or epoch) count t = 0, 1, ... to a
// learning rate, and setting it on an optimizer. Being stateless, a resumed run only needs t.
//
//   StepLR(base, step_size, gamma)          base * gamma^floor(t / step_size)
//   MultiStepLR(base, {m1, m2, ...}, gamma)  base * gamma^(number of milestones <= t)
//   CosineAnnealing(base, t_max, eta_min)    eta_min + (base - eta_min) * (1 + cos(pi * t / t_max)) / 2,
//                                            then eta_min for t >= t_max
//   LinearWarmup(inner, warmup, start)       t < warmup: inner.lr(0) * (start + (1 - start) * t / warmup);
//                                            then inner.lr(t - warmup) (the inner schedule starts after warmup)
//
//   dl::optim::LinearWarmup sched(dl::optim::CosineAnnealing(0.1, 1000), 100);
//   for (int64_t t = 0; t < 1100; ++t) { sched.apply(opt, t); ...; opt.step(); }
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <utility>
#include <vector>

#include "dl/optim/optimizer.hpp"

namespace dl::optim {

// The shared interface: lr(t) and apply(opt, t).
class LrSchedule {
 public:
  virtual ~LrSchedule() = default;
  virtual double lr(int64_t t) const = 0;
  // Sets opt's learning rate to lr(t) and returns it.
  double apply(Optimizer& opt, int64_t t) const {
    double v = lr(t);
    opt.set_lr(v);
    return v;
  }

 protected:
  static void check_t(const char* op, int64_t t) { check<ValueError>(t >= 0, op, ": step must be non-negative, got ", t); }
  static void check_base(const char* op, double base) {
    check<ValueError>(base >= 0 && std::isfinite(base), op, ": base learning rate must be non-negative, got ", base);
  }
};

class StepLR : public LrSchedule {
 public:
  StepLR(double base_lr, int64_t step_size, double gamma = 0.1) : base_(base_lr), step_size_(step_size), gamma_(gamma) {
    check_base("StepLR", base_lr);
    check<ValueError>(step_size > 0, "StepLR: step_size must be positive, got ", step_size);
    check<ValueError>(gamma >= 0 && std::isfinite(gamma), "StepLR: gamma must be non-negative, got ", gamma);
  }
  double lr(int64_t t) const override {
    check_t("StepLR", t);
    return base_ * std::pow(gamma_, static_cast<double>(t / step_size_));
  }

 private:
  double base_;
  int64_t step_size_;
  double gamma_;
};

class MultiStepLR : public LrSchedule {
 public:
  MultiStepLR(double base_lr, std::vector<int64_t> milestones, double gamma = 0.1)
      : base_(base_lr), milestones_(std::move(milestones)), gamma_(gamma) {
    check_base("MultiStepLR", base_lr);
    check<ValueError>(gamma >= 0 && std::isfinite(gamma), "MultiStepLR: gamma must be non-negative, got ", gamma);
    for (size_t i = 0; i < milestones_.size(); ++i) {
      check<ValueError>(milestones_[i] >= 0, "MultiStepLR: milestone ", milestones_[i], " is negative");
      check<ValueError>(i == 0 || milestones_[i] > milestones_[i - 1], "MultiStepLR: milestones must be strictly increasing, got ",
                        milestones_[i - (i > 0)], " then ", milestones_[i]);
    }
  }
  double lr(int64_t t) const override {
    check_t("MultiStepLR", t);
    auto passed = std::upper_bound(milestones_.begin(), milestones_.end(), t) - milestones_.begin();
    return base_ * std::pow(gamma_, static_cast<double>(passed));
  }

 private:
  double base_;
  std::vector<int64_t> milestones_;
  double gamma_;
};

class CosineAnnealing : public LrSchedule {
 public:
  CosineAnnealing(double base_lr, int64_t t_max, double eta_min = 0.0) : base_(base_lr), t_max_(t_max), eta_min_(eta_min) {
    check_base("CosineAnnealing", base_lr);
    check<ValueError>(t_max > 0, "CosineAnnealing: t_max must be positive, got ", t_max);
    check<ValueError>(eta_min >= 0 && eta_min <= base_lr, "CosineAnnealing: eta_min must be in [0, base_lr = ", base_lr,
                      "], got ", eta_min);
  }
  double lr(int64_t t) const override {
    check_t("CosineAnnealing", t);
    if (t >= t_max_) return eta_min_;  // no restart: stays at the floor
    double c = std::cos(std::numbers::pi * static_cast<double>(t) / static_cast<double>(t_max_));
    return eta_min_ + (base_ - eta_min_) * (1.0 + c) / 2.0;
  }

 private:
  double base_;
  int64_t t_max_;
  double eta_min_;
};

// Wraps another schedule (held by value) with a linear ramp over the first warmup_steps steps.
template <class Inner>
class LinearWarmup : public LrSchedule {
  static_assert(std::is_base_of_v<LrSchedule, Inner>, "LinearWarmup: the inner schedule must derive from LrSchedule");

 public:
  LinearWarmup(Inner inner, int64_t warmup_steps, double start_factor = 0.0)
      : inner_(std::move(inner)), warmup_(warmup_steps), start_(start_factor) {
    check<ValueError>(warmup_steps >= 0, "LinearWarmup: warmup_steps must be non-negative, got ", warmup_steps);
    check<ValueError>(start_factor >= 0 && start_factor <= 1, "LinearWarmup: start_factor must be in [0, 1], got ",
                      start_factor);
  }
  double lr(int64_t t) const override {
    check_t("LinearWarmup", t);
    if (t >= warmup_) return inner_.lr(t - warmup_);
    double frac = static_cast<double>(t) / static_cast<double>(warmup_);
    return inner_.lr(0) * (start_ + (1.0 - start_) * frac);
  }
  const Inner& inner() const { return inner_; }

 private:
  Inner inner_;
  int64_t warmup_;
  double start_;
};

}  // namespace dl::optim
