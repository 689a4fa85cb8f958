// optim::Optimizer: the base of SGD, Adam, AdamW and RMSProp. It holds (name, parameter) pairs
// (parameter handles share storage and gradient buffers with the model), per-parameter state
// buffers ("slots", created as zeros on a parameter's first update) and per-parameter step counts.
// step() runs under autograd::pause and calls the subclass's update() once per parameter that has
// a gradient buffer; update() is one pass over memory (param, grad and slots together).
// Parameters on a GPU go to update_device() instead, which subclasses that support devices write
// with elementwise expressions (each one fused kernel on the device); SGD does, the others throw
// DeviceError at construction for device parameters.
//
//   dl::optim::SGD opt(net.named_parameters(), 0.1, /*momentum=*/0.9);
//   opt.zero_grad();  { dl::autograd::record r; loss = ...; }  loss.backward();  opt.step();
//   auto ckpt = opt.state_dict();          // tensors "fc1.weight.momentum_buffer", scalars "lr", "step", ...
#pragma once
#include <cmath>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "dl/autograd/record.hpp"
#include "dl/expr/assign.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/ops/elementwise.hpp"  // the tape accumulates gradients with operator+

namespace dl::optim {

using NamedParameters = std::vector<std::pair<std::string, NDArray<float>>>;

// Optimizer state for checkpoints. tensors: "<param>.<slot>"; scalars: "lr", "step" (number of
// step() calls) and "<param>.step" (updates that parameter received; Adam's bias correction).
// Like Module::state_dict, tensors share storage with the optimizer; clone() for a snapshot.
struct OptimizerState {
  std::map<std::string, NDArray<float>> tensors;
  std::map<std::string, double> scalars;
};

// Parameters without names get "0", "1", ... (their position).
inline NamedParameters name_by_index(const std::vector<NDArray<float>>& params) {
  NamedParameters out;
  for (size_t i = 0; i < params.size(); ++i) out.emplace_back(std::to_string(i), params[i]);
  return out;
}

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // Not copyable: two optimizers stepping the same parameters with copied state is never wanted.
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;
  Optimizer(Optimizer&&) = default;
  Optimizer& operator=(Optimizer&&) = default;

  double lr() const { return lr_; }
  void set_lr(double lr) {
    check_lr(name_, lr);
    lr_ = lr;
  }
  int64_t step_count() const { return steps_; }
  const NamedParameters& named_parameters() const { return params_; }

  // Sets every parameter's gradient buffer to zero.
  void zero_grad() {
    autograd::pause no_tape;
    for (auto& [name, p] : params_)
      if (has_grad(p)) p.grad_meta()->grad.assign(0.0f);
  }

  // One update of every parameter that has a gradient buffer (others are skipped).
  void step() {
    autograd::pause no_tape;
    ++steps_;
    for (size_t i = 0; i < params_.size(); ++i) {
      NDArray<float>& p = params_[i].second;
      if (!has_grad(p)) continue;
      const NDArray<float>& g_buffer = p.grad_meta()->grad;
      check<ShapeError>(g_buffer.shape() == p.shape(), name_, ": gradient of '", params_[i].first, "' has shape ",
                        g_buffer.shape(), ", parameter has ", p.shape());
      check<DeviceError>(g_buffer.device() == p.device(), name_, ": gradient of '", params_[i].first, "' is on ",
                         g_buffer.device(), ", parameter on ", p.device());
      NDArray<float> g = g_buffer.contiguous();
      for (size_t s = 0; s < slot_names_.size(); ++s) slot_array(i, s);  // allocate before the parallel loop
      ++param_steps_[i];
      if (p.numel() == 0) continue;
      if (p.device().is_cuda()) update_device(i, p, g, param_steps_[i]);
      else update(i, p.data(), g.data(), p.numel(), param_steps_[i]);
    }
  }

  OptimizerState state_dict() const {
    OptimizerState st;
    st.scalars["lr"] = lr_;
    st.scalars["step"] = static_cast<double>(steps_);
    for (size_t i = 0; i < params_.size(); ++i) {
      const std::string& name = params_[i].first;
      st.scalars[name + ".step"] = static_cast<double>(param_steps_[i]);
      for (size_t s = 0; s < slot_names_.size(); ++s)
        if (slots_[i][s].defined()) st.tensors[name + "." + slot_names_[s]] = slots_[i][s].detach();
    }
    return st;
  }

  // Restores lr, step counts and slot buffers (copied into fresh storage). Every key must belong
  // to this optimizer and every shape must match; a parameter that has taken steps needs all its
  // slots. Nothing changes unless everything checks out.
  void load_state_dict(const OptimizerState& st) {
    std::set<std::string> known_scalars{"lr", "step"};
    for (auto& [name, p] : params_) known_scalars.insert(name + ".step");
    for (auto& [key, v] : st.scalars) {
      check<ValueError>(known_scalars.count(key) > 0, name_, ": load_state_dict: unexpected scalar '", key, "'");
      check<ValueError>(std::isfinite(v), name_, ": load_state_dict: scalar '", key, "' is not finite (", v, ")");
      check<ValueError>(key == "lr" || (v >= 0 && v == std::floor(v)), name_, ": load_state_dict: step count '", key,
                        "' must be a non-negative integer, got ", v);
    }
    if (auto it = st.scalars.find("lr"); it != st.scalars.end()) check_lr(name_, it->second);
    std::map<std::string, std::pair<size_t, size_t>> slot_keys;  // key -> (param, slot)
    for (size_t i = 0; i < params_.size(); ++i)
      for (size_t s = 0; s < slot_names_.size(); ++s) slot_keys[params_[i].first + "." + slot_names_[s]] = {i, s};
    for (auto& [key, t] : st.tensors) {
      auto it = slot_keys.find(key);
      check<ValueError>(it != slot_keys.end(), name_, ": load_state_dict: unexpected tensor '", key, "'");
      const NDArray<float>& p = params_[it->second.first].second;
      check<ValueError>(t.defined() && t.shape() == p.shape(), name_, ": load_state_dict: shape mismatch for '", key,
                        "': parameter has ", p.shape(), ", state has ",
                        t.defined() ? t.shape().to_string() : std::string("undefined"));
    }
    auto scalar_or = [&](const std::string& key, double fallback) {
      auto it = st.scalars.find(key);
      return it == st.scalars.end() ? fallback : it->second;
    };
    for (size_t i = 0; i < params_.size(); ++i) {
      if (scalar_or(params_[i].first + ".step", 0) == 0) continue;
      for (size_t s = 0; s < slot_names_.size(); ++s) {
        std::string key = params_[i].first + "." + slot_names_[s];
        check<ValueError>(st.tensors.count(key) > 0, name_, ": load_state_dict: missing tensor '", key, "'");
      }
    }
    autograd::pause no_tape;
    lr_ = scalar_or("lr", lr_);
    steps_ = static_cast<int64_t>(scalar_or("step", 0));
    for (size_t i = 0; i < params_.size(); ++i) {
      param_steps_[i] = static_cast<int64_t>(scalar_or(params_[i].first + ".step", 0));
      for (size_t s = 0; s < slot_names_.size(); ++s) {
        auto it = st.tensors.find(params_[i].first + "." + slot_names_[s]);
        slots_[i][s] = it == st.tensors.end() ? NDArray<float>() : it->second.detach().clone();
      }
    }
  }

 protected:
  // `slot_names`: the per-parameter state buffers this optimizer keeps (e.g. {"exp_avg", "exp_avg_sq"}).
  // device_ok: the subclass implements update_device (parameters may live on a GPU).
  Optimizer(const char* name, NamedParameters params, double lr, std::vector<std::string> slot_names,
            bool device_ok = false)
      : name_(name), params_(std::move(params)), slot_names_(std::move(slot_names)), lr_(lr) {
    check_lr(name_, lr);
    std::set<std::string> seen;
    for (auto& [pname, p] : params_) {
      check<ValueError>(seen.insert(pname).second, name_, ": parameter name '", pname, "' appears twice");
      check<ValueError>(p.defined(), name_, ": parameter '", pname, "' is undefined");
      if (!device_ok) require_cpu(p.device(), name_);
      check<ValueError>(p.is_leaf(), name_, ": parameter '", pname, "' is not a leaf (it is the result of an operation)");
      check<ValueError>(p.is_contiguous(), name_, ": parameter '", pname, "' of shape ", p.shape(),
                        " is not contiguous; pass the array that owns the storage");
    }
    slots_.assign(params_.size(), std::vector<NDArray<float>>(slot_names_.size()));
    param_steps_.assign(params_.size(), 0);
  }

  // Updates parameter `index` in place: param and grad have n contiguous elements; `step` counts
  // this parameter's updates including this one. Runs under autograd::pause; must not throw.
  virtual void update(size_t index, float* param, const float* grad, int64_t n, int64_t step) = 0;

  // The same update for a parameter on a GPU: param, grad and the slots (slot_array) are device
  // arrays; write it with elementwise expressions. Runs under autograd::pause.
  virtual void update_device(size_t, NDArray<float>& param, const NDArray<float>&, int64_t) {
    fail<DeviceError>(name_, ": has no GPU update; parameter on ", param.device());
  }

  // State buffer `s` of parameter `index`, on the parameter's device (zeros until first written).
  NDArray<float>& slot_array(size_t index, size_t s) {
    NDArray<float>& buf = slots_[index][s];
    const NDArray<float>& p = params_[index].second;
    if (!buf.defined()) buf = zeros<float>(p.shape(), p.device());
    return buf;
  }
  float* slot(size_t index, size_t s) {
    NDArray<float>& buf = slot_array(index, s);
    return buf.numel() ? buf.data() : nullptr;
  }

  static void check_lr(const char* op, double lr) {
    check<ValueError>(lr >= 0 && std::isfinite(lr), op, ": learning rate must be a non-negative finite number, got ", lr);
  }

  const char* name_;

 private:
  static bool has_grad(const NDArray<float>& p) {
    const auto& m = p.grad_meta();
    return m && m->requires_grad && m->req != autograd::GradReq::null && m->grad.defined();
  }

  NamedParameters params_;
  std::vector<std::string> slot_names_;
  std::vector<std::vector<NDArray<float>>> slots_;
  std::vector<int64_t> param_steps_;
  int64_t steps_ = 0;
  double lr_;
};

}  // namespace dl::optim
