// checkpoint(fn, inputs...): runs fn without keeping its intermediate arrays, records ONE tape
// node, and recomputes fn (with the tape on) during backward. Memory for fn's activations is
// traded for one extra forward pass. The random generator's state is saved and restored around
// the recomputation, so dropout masks are the same in both passes; parameters that fn captures
// receive their gradients from the nested backward. While fn is recomputed, is_recomputing() is
// true: state updates that must happen once per step (batch-norm running statistics) check it.
// During backward the recomputed output's storage is let go before fn's backward runs (it
// duplicates the output kept by forward), so a segment's backward holds only its activations.
//
//   auto y = dl::autograd::checkpoint([&](const auto& h) { return block.forward(h); }, x);
#pragma once
#include <array>
#include <utility>

#include "dl/autograd/engine.hpp"
#include "dl/core/rng.hpp"
#include "dl/ops/elementwise.hpp"

namespace dl::autograd {

namespace detail {
inline bool& recomputing_flag() { thread_local bool on = false; return on; }
}  // namespace detail

// True while checkpoint() recomputes its function during backward (this thread).
inline bool is_recomputing() { return detail::recomputing_flag(); }

// Marks a scope as a recomputation of work already done once in this step (nests).
class recompute_scope {
 public:
  recompute_scope() : prev_(detail::recomputing_flag()) { detail::recomputing_flag() = true; }
  ~recompute_scope() { detail::recomputing_flag() = prev_; }
  recompute_scope(const recompute_scope&) = delete;
  recompute_scope& operator=(const recompute_scope&) = delete;

 private:
  bool prev_;
};

namespace detail {
// The producer of a recomputation's input: backward leaves the input's gradient here (a handle,
// no copy) instead of in a leaf gradient buffer that would be allocated and zeroed up front.
template <class T>
struct GradSink : TypedNode<T> {
  NDArray<T> grad;
  GradSink() { this->name = "checkpoint input"; }
  void apply() override {
    grad = std::move(this->pending);
    this->pending = NDArray<T>();
  }
  void release() override { this->released = true; }
};
}  // namespace detail

template <class Fn, class First, class... Rest>
auto checkpoint(Fn fn, const NDArray<First>& first, const NDArray<Rest>&... rest) {
  using T = First;
  static_assert((std::is_same_v<T, Rest> && ...), "checkpoint: all inputs must have the same element type");
  constexpr size_t N = 1 + sizeof...(Rest);
  std::array<NDArray<T>, N> inputs{first, rest...};
  auto call = [fn](const std::array<NDArray<T>, N>& args) {
    return [&]<size_t... I>(std::index_sequence<I...>) { return NDArray<T>(eval(fn(args[I]...))); }(std::make_index_sequence<N>{});
  };
  const bool train = is_training();
  const PhiloxState rng = default_generator().state();
  NDArray<T> out;
  {
    pause no_tape(train);
    std::array<NDArray<T>, N> detached;
    for (size_t i = 0; i < N; ++i) detached[i] = inputs[i].detach();
    out = call(detached);
  }
  if (!is_recording()) return out;
  // Record even when no input tracks gradients: parameters captured by fn may.
  auto node = std::make_shared<FunctionNode<T>>();
  node->name = "checkpoint";
  for (const auto& x : inputs) {
    node->inputs.push_back(x.tracks_grad() ? x.grad_meta() : nullptr);
    node->shapes.push_back(x.shape());
    if (x.grad_fn()) node->next.push_back(x.grad_fn());
    if (x.tracks_grad()) node->note_input(x.grad_meta());
  }
  node->backward = [call, inputs, train, rng](const NDArray<T>& g) {
    std::array<NDArray<T>, N> leaves;
    std::array<std::shared_ptr<detail::GradSink<T>>, N> sinks;
    for (size_t i = 0; i < N; ++i) {
      leaves[i] = inputs[i].detach();
      if (!inputs[i].tracks_grad()) continue;
      sinks[i] = std::make_shared<detail::GradSink<T>>();
      leaves[i].grad_meta() = std::make_shared<GradMeta<T>>();
      leaves[i].grad_meta()->grad_fn = sinks[i];
    }
    const PhiloxState saved = default_generator().state();
    default_generator().set_state(rng);
    NDArray<T> y;
    {
      record rec(train);
      recompute_scope again;
      y = call(leaves);
    }
    default_generator().set_state(saved);
    if (y.tracks_grad()) {
      // The recomputed output duplicates the one forward kept, and backward reads only its tape:
      // start backward from a handle on the gradient's memory that carries y's tape, and let y's
      // storage go first (a node that needs its output, like exp's, keeps its own handle).
      NDArray<T> root = g.detach();
      root.grad_meta() = std::move(y.grad_meta());
      y = NDArray<T>();
      root.backward(g);
    }
    std::vector<NDArray<T>> grads(N);
    for (size_t i = 0; i < N; ++i)
      if (sinks[i]) grads[i] = std::move(sinks[i]->grad);  // undefined when y does not depend on input i
    return grads;
  };
  out.grad_meta() = std::make_shared<GradMeta<T>>();
  out.grad_meta()->grad_fn = std::move(node);
  return out;
}

}  // namespace dl::autograd
