// nn::Sequential<Layers...>: a compile-time chain of modules; forward(x) is
// layer_{n-1}(...layer_1(layer_0(x))). Children are named "0", "1", ..., so parameters read
// "0.weight", "2.bias". The layer types are part of the type, so the chain is inlined and a
// mismatch between layers is a compile error (or a ShapeError naming the layer's op at run time).
//
//   dl::nn::Sequential net{dl::nn::Dense(784, 256), dl::nn::ReLU(), dl::nn::Dense(256, 10)};
//   auto logits = net(x);                  // (batch, 10)
//   net.get<0>().weight;                   // the first layer, with its type
#pragma once
#include <cstddef>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "dl/nn/module.hpp"

namespace dl::nn {

template <class... Layers>
class Sequential : public Module {
  static_assert(sizeof...(Layers) > 0, "Sequential: needs at least one layer");
  static_assert((std::is_base_of_v<Module, Layers> && ...), "Sequential: every layer must derive from dl::nn::Module");

 public:
  Sequential()
    requires(std::is_default_constructible_v<Layers> && ...)
  { register_layers(std::index_sequence_for<Layers...>{}); }
  explicit Sequential(Layers... layers) : layers_(std::move(layers)...) {
    register_layers(std::index_sequence_for<Layers...>{});
  }
  // The registrations are index-based accessors (no pointers into *this), so the defaults are safe.
  Sequential(const Sequential&) = default;
  Sequential(Sequential&&) noexcept = default;
  Sequential& operator=(const Sequential&) = default;
  Sequential& operator=(Sequential&&) noexcept = default;

  static constexpr std::size_t size() { return sizeof...(Layers); }
  template <std::size_t I> auto& get() { return std::get<I>(layers_); }
  template <std::size_t I> const auto& get() const { return std::get<I>(layers_); }

  template <class X>
  auto forward(const X& x) { return chain<0>(x); }
  template <class X>
  auto operator()(const X& x) { return forward(x); }

 private:
  template <std::size_t I, class X>
  auto chain(const X& x) {
    if constexpr (I + 1 == sizeof...(Layers)) return std::get<I>(layers_).forward(x);
    else return chain<I + 1>(std::get<I>(layers_).forward(x));
  }

  template <std::size_t... I>
  void register_layers(std::index_sequence<I...>) {
    (register_module_accessor(std::to_string(I),
                              [](Module& self) -> Module& { return std::get<I>(static_cast<Sequential&>(self).layers_); }),
     ...);
  }

  std::tuple<Layers...> layers_;
};

template <class... Layers>
Sequential(Layers...) -> Sequential<Layers...>;

}  // namespace dl::nn
