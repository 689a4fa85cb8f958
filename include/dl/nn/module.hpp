// nn::Module: the base of every layer. A module owns its parameters (trainable NDArray<float>
// leaves with attach_grad()), buffers (state that is saved but not trained, e.g. batch-norm
// running statistics) and child modules, all registered under names; nested names are dotted
// (`fc1.weight`). forward is NOT virtual: each module defines `template <class X> auto
// forward(const X& x)` and an operator() that calls it, so the same module accepts NDArrays now
// and graph symbols later.
//
//   struct Mlp : dl::nn::Module {
//     dl::nn::Dense fc1{784, 256}, fc2{256, 10};
//     Mlp() { register_module("fc1", &Mlp::fc1); register_module("fc2", &Mlp::fc2); }
//     template <class X> auto forward(const X& x) { return fc2(dl::relu(fc1(x))); }
//     template <class X> auto operator()(const X& x) { return forward(x); }
//   };
//   Mlp net;
//   for (auto& [name, p] : net.named_parameters()) ...   // fc1.weight, fc1.bias, fc2.weight, ...
//
// Copy and move safety: registrations are pointers-to-member (or index-based accessors in
// containers), never raw pointers, so they resolve against whichever object they are asked about;
// a copied or moved module can never reach into another module. A copy shares parameter storage
// with the original (like copying an NDArray handle); nn::clone(m) makes an independent copy.
// Inside a module's member functions write dl::eval(x): the member Module::eval() hides it.
#pragma once
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "dl/autograd/engine.hpp"
#include "dl/autograd/record.hpp"
#include "dl/backend/cuda/runtime.hpp"  // cuda::require_device (throws in a CPU-only build)
#include "dl/ndarray/ndarray.hpp"

namespace dl::nn {

using NamedArrays = std::vector<std::pair<std::string, NDArray<float>>>;
using StateDict = std::map<std::string, NDArray<float>>;

// Counts train/eval mode changes of any module (Module::train). graph::compile compares it with the
// count its plan was traced under.
inline std::atomic<uint64_t>& mode_generation_counter() {
  static std::atomic<uint64_t> generation{0};
  return generation;
}
inline uint64_t mode_generation() { return mode_generation_counter().load(std::memory_order_relaxed); }

class Module {
 public:
  Module() = default;
  Module(const Module&) = default;
  Module(Module&&) noexcept = default;
  Module& operator=(const Module&) = default;
  Module& operator=(Module&&) noexcept = default;
  virtual ~Module() = default;  // polymorphic: registration checks the member's class with dynamic_cast

  // ---- parameters, buffers, children (registration order, depth first) ----------------------
  NamedArrays named_parameters() const {
    NamedArrays out;
    collect(out, "", /*buffers=*/false);
    return out;
  }
  std::vector<NDArray<float>> parameters() const {
    std::vector<NDArray<float>> out;
    for (auto& [name, p] : named_parameters()) out.push_back(p);
    return out;
  }
  NamedArrays named_buffers() const {
    NamedArrays out;
    collect(out, "", /*buffers=*/true);
    return out;
  }
  // Direct children with their names.
  std::vector<std::pair<std::string, Module*>> named_children() {
    std::vector<std::pair<std::string, Module*>> out;
    for (auto& c : children_) out.emplace_back(c.name, &c.get(*this));
    return out;
  }

  // ---- train / eval mode (propagated to every descendant) ----------------------------------
  // A change bumps mode_generation(): compiled graphs fix dropout's and batch norm's mode when
  // they are traced, so graph::compile re-traces a graph whose plan predates the change.
  void train(bool on = true) {
    if (training_ != on) mode_generation_counter().fetch_add(1, std::memory_order_relaxed);
    training_ = on;
    for (auto& c : children_) c.get(*this).train(on);
  }
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Sets every parameter's gradient buffer to zero.
  void zero_grad() {
    for (auto& [name, p] : named_parameters()) {
      const auto& meta = p.grad_meta();
      if (!meta || !meta->requires_grad || !meta->grad.defined()) continue;
      autograd::pause no_tape;
      meta->grad.assign(0.0f);
    }
  }

  // ---- state_dict ---------------------------------------------------------------------------
  // Parameters and buffers by dotted name. The arrays are detached handles that SHARE storage with
  // the module (like PyTorch): clone() them for a snapshot that later training does not change.
  StateDict state_dict() const {
    StateDict out;
    NamedArrays all;
    collect(all, "", false);
    collect(all, "", true);
    for (auto& [name, a] : all) out.emplace(name, a.detach());
    return out;
  }

  // Copies values into the existing arrays (storage and gradient buffers stay where they are, so
  // optimizers holding the parameters keep working). Everything is checked before anything is
  // written: a shape mismatch is always an error; with strict, so are missing and unexpected keys.
  void load_state_dict(const StateDict& state, bool strict = true) {
    NamedArrays all;
    collect(all, "", false);
    collect(all, "", true);
    std::set<std::string> own;
    for (auto& [name, a] : all) {
      own.insert(name);
      auto it = state.find(name);
      if (it == state.end()) {
        check<ValueError>(!strict, "load_state_dict: missing key '", name, "' (shape ", a.shape(), ")");
        continue;
      }
      check<ValueError>(it->second.defined(), "load_state_dict: key '", name, "' holds an undefined array");
      check<ValueError>(it->second.shape() == a.shape(), "load_state_dict: shape mismatch for '", name,
                        "': module has ", a.shape(), ", state_dict has ", it->second.shape());
    }
    if (strict)
      for (auto& [name, a] : state)
        check<ValueError>(own.count(name) > 0, "load_state_dict: unexpected key '", name, "' (shape ",
                          a.defined() ? a.shape().to_string() : std::string("undefined"), ")");
    autograd::pause no_tape;
    for (auto& [name, a] : all) {
      auto it = state.find(name);
      if (it == state.end()) continue;
      NDArray<float> dst = a.detach();
      dst.assign(it->second.detach());
    }
  }

  // Moves every parameter and buffer to `device` (a copy each; parameters get a gradient buffer
  // there). Optimizers hold the arrays they were given: make them after the move. A failed move
  // (no such device) throws before anything changed.
  void to(Device device) {
    autograd::pause no_tape;
    if (device.is_cuda()) ::dl::cuda::require_device(device, "Module::to");
    for_each_array_slot([device](NDArray<float>& a, bool buffer) {
      if (!a.defined() || a.device() == device) return;
      const bool had_grad = a.grad_meta() && a.grad_meta()->requires_grad;
      a = a.detach().to(device);
      if (!buffer && had_grad) a.attach_grad();
    });
  }

  // Visits every parameter and buffer slot (by reference, so the handle itself can be rebound).
  template <class Fn>
  void for_each_array_slot(Fn&& fn) {
    for (auto& e : params_) fn(e.get(*this), /*buffer=*/false);
    for (auto& e : buffers_) fn(e.get(*this), /*buffer=*/true);
    for (auto& c : children_) c.get(*this).for_each_array_slot(fn);
  }

 protected:
  // register_parameter("weight", &Dense::weight): the member must be a defined NDArray<float>
  // of this module's class; it becomes a leaf with a gradient buffer.
  template <class Derived>
  NDArray<float>& register_parameter(const std::string& name, NDArray<float> Derived::*member) {
    auto& slot = add_array(params_, name, member, "register_parameter");
    if (!slot.tracks_grad() || !slot.grad_meta()->requires_grad) slot.attach_grad();
    return slot;
  }
  // register_buffer("running_mean", &BatchNorm::running_mean): saved in state_dict, not trained.
  template <class Derived>
  NDArray<float>& register_buffer(const std::string& name, NDArray<float> Derived::*member) {
    return add_array(buffers_, name, member, "register_buffer");
  }
  // register_module("fc1", &Mlp::fc1): a child whose parameters appear as "fc1.<name>".
  template <class Derived, class Child>
  Child& register_module(const std::string& name, Child Derived::*member) {
    static_assert(std::is_base_of_v<Module, Child>, "register_module: the child must derive from dl::nn::Module");
    check_member_of<Derived>("register_module", name);
    return static_cast<Child&>(register_module_accessor(
        name, [member](Module& self) -> Module& { return static_cast<Derived&>(self).*member; }));
  }
  // For containers: `get` maps this module to the child; it must not capture `this` (a copy of the
  // module would then reach into the original), only values such as an index.
  Module& register_module_accessor(const std::string& name, std::function<Module&(Module&)> get) {
    check_name("register_module", name);
    children_.push_back({name, std::move(get)});
    return children_.back().get(*this);
  }

 private:
  struct ArraySlot {
    std::string name;
    NDArray<float> Module::*member;
    NDArray<float>& get(Module& self) const { return self.*member; }
    const NDArray<float>& get(const Module& self) const { return self.*member; }
  };
  struct ChildSlot {
    std::string name;
    std::function<Module&(Module&)> get_fn;
    Module& get(Module& self) const { return get_fn(self); }
    const Module& get(const Module& self) const { return get_fn(const_cast<Module&>(self)); }
  };

  template <class Derived>
  void check_member_of(const char* op, const std::string& name) {
    static_assert(std::is_base_of_v<Module, Derived>, "register: the member pointer's class must derive from dl::nn::Module");
    check<ValueError>(dynamic_cast<Derived*>(this) != nullptr, op, ": '", name,
                      "' is a member of a class this module is not");
  }

  void check_name(const char* op, const std::string& name) const {
    check<ValueError>(!name.empty() && name.find('.') == std::string::npos, op, ": name '", name,
                      "' must be non-empty and contain no '.'");
    auto taken = [&](const auto& slots) {
      for (const auto& s : slots)
        if (s.name == name) return true;
      return false;
    };
    check<ValueError>(!taken(params_) && !taken(buffers_) && !taken(children_), op, ": name '", name,
                      "' is already registered");
  }

  template <class Derived>
  NDArray<float>& add_array(std::vector<ArraySlot>& slots, const std::string& name, NDArray<float> Derived::*member,
                            const char* op) {
    check_member_of<Derived>(op, name);
    check_name(op, name);
    // Base-class pointer-to-member: valid for every object whose dynamic type derives from Derived.
    auto base_member = static_cast<NDArray<float> Module::*>(member);
    check<ValueError>((this->*base_member).defined(), op, ": '", name, "' is an undefined array; create it first");
    slots.push_back({name, base_member});
    return this->*base_member;
  }

  void collect(NamedArrays& out, const std::string& prefix, bool buffers) const {
    for (const auto& e : buffers ? buffers_ : params_) out.emplace_back(prefix + e.name, e.get(*this));
    for (const auto& c : children_) c.get(*this).collect(out, prefix + c.name + ".", buffers);
  }

  std::vector<ArraySlot> params_, buffers_;
  std::vector<ChildSlot> children_;
  bool training_ = true;
};

// An independent copy of a module: parameters and buffers get their own storage (and gradient
// buffers where the original has them), so training one leaves the other unchanged.
template <class M>
M clone(const M& module) {
  static_assert(std::is_base_of_v<Module, M>, "nn::clone: needs a dl::nn::Module");
  M copy = module;
  autograd::pause no_tape;
  copy.for_each_array_slot([](NDArray<float>& a, bool buffer) {
    bool had_grad = a.grad_meta() && a.grad_meta()->requires_grad;
    a = a.detach().clone();
    if (!buffer && had_grad) a.attach_grad();
  });
  return copy;
}

}  // namespace dl::nn
