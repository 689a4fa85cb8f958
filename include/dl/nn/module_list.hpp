// nn::ModuleList<M>: a run-time list of modules of one type, named by index ("0", "1", ...), for
// stacks whose depth is a run-time value. It has no forward: the owner loops over it.
//
//   dl::nn::ModuleList<dl::nn::Dense> blocks;
//   for (int i = 0; i < depth; ++i) blocks.emplace_back(64, 64);
//   for (auto& b : blocks) h = dl::relu(b(h));              // parameters: "0.weight", "0.bias", ...
#pragma once
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "dl/nn/module.hpp"

namespace dl::nn {

template <class M>
class ModuleList : public Module {
  static_assert(std::is_base_of_v<Module, M>, "ModuleList: the element type must derive from dl::nn::Module");

 public:
  ModuleList() = default;
  explicit ModuleList(std::vector<M> items) {
    for (auto& m : items) push_back(std::move(m));
  }
  // Children are reached by index, not by pointer, so copies and moves (and the vector's own
  // reallocations) never leave a registration pointing at another object.
  ModuleList(const ModuleList&) = default;
  ModuleList(ModuleList&&) noexcept = default;
  ModuleList& operator=(const ModuleList&) = default;
  ModuleList& operator=(ModuleList&&) noexcept = default;

  // Appends a module; it takes the list's train/eval mode.
  M& push_back(M module) {
    items_.push_back(std::move(module));
    std::size_t i = items_.size() - 1;
    register_module_accessor(std::to_string(i),
                             [i](Module& self) -> Module& { return static_cast<ModuleList&>(self).items_[i]; });
    items_[i].train(is_training());
    return items_[i];
  }
  template <class... Args>
  M& emplace_back(Args&&... args) { return push_back(M(std::forward<Args>(args)...)); }

  std::size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  M& operator[](std::size_t i) { return items_[checked(i)]; }
  const M& operator[](std::size_t i) const { return items_[checked(i)]; }
  auto begin() { return items_.begin(); }
  auto end() { return items_.end(); }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  std::size_t checked(std::size_t i) const {
    check<ValueError>(i < items_.size(), "ModuleList: index ", i, " is out of range for size ", items_.size());
    return i;
  }
  std::vector<M> items_;
};

}  // namespace dl::nn
