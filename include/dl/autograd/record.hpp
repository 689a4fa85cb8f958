// Recording operations on the tape. `record` and `pause` are RAII scopes (thread-local) that
// turn taping on and off; record_op() is how an operator registers its backward function:
//
//   auto out = compute(a, b);
//   autograd::record_op<T>("matmul", {a, b}, out, [a, b](const NDArray<T>& g) {
//     return std::vector<NDArray<T>>{matmul(g, b.transpose()), matmul(a.transpose(), g)};
//   });
//
// Gradients returned for broadcast inputs may have the output's shape: they are summed back to
// the input's shape (sum_to) before being accumulated. Closures must capture inputs, never `out`
// itself (capture out.detach() when the output value is needed), or the graph would own itself.
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <vector>

#include "dl/autograd/anomaly.hpp"
#include "dl/autograd/node.hpp"
#include "dl/backend/cpu/reduce.hpp"
#include "dl/expr/expr.hpp"
#include "dl/ndarray/ndarray.hpp"
#if defined(DL_CUDA_ENABLED)
#include "dl/backend/cuda/reduce.hpp"  // sum_to of a device gradient
#endif

// Tells autograd/anomaly.hpp's users (and its tests) that the tape calls the anomaly checks.
#define DL_ANOMALY_HOOKS 1

namespace dl::autograd {

namespace detail {
inline bool& recording_flag() { thread_local bool on = false; return on; }
inline bool& training_flag() { thread_local bool on = false; return on; }
inline std::atomic<uint64_t>& backward_epoch() { static std::atomic<uint64_t> e{0}; return e; }
}  // namespace detail

inline bool is_recording() { return detail::recording_flag(); }
// Train mode (dropout active, batch norm uses batch statistics); set by record(train_mode).
inline bool is_training() { return detail::training_flag(); }

// Records operations on arrays that require grad while in scope (MXNet's autograd.record()).
class record {
 public:
  explicit record(bool train_mode = true)
      : prev_rec_(detail::recording_flag()), prev_train_(detail::training_flag()) {
    detail::recording_flag() = true;
    detail::training_flag() = train_mode;
  }
  ~record() { detail::recording_flag() = prev_rec_; detail::training_flag() = prev_train_; }
  record(const record&) = delete;
  record& operator=(const record&) = delete;

 private:
  bool prev_rec_, prev_train_;
};

// Stops recording while in scope (MXNet's autograd.pause()).
class pause {
 public:
  explicit pause(bool train_mode = false)
      : prev_rec_(detail::recording_flag()), prev_train_(detail::training_flag()) {
    detail::recording_flag() = false;
    detail::training_flag() = train_mode;
  }
  ~pause() { detail::recording_flag() = prev_rec_; detail::training_flag() = prev_train_; }
  pause(const pause&) = delete;
  pause& operator=(const pause&) = delete;

 private:
  bool prev_rec_, prev_train_;
};

// True when an operation on x would be recorded.
template <class T>
bool needs_grad(const NDArray<T>& x) { return is_recording() && x.tracks_grad(); }

// Adds g into the gradient that flows to the array described by m: the pending gradient of its
// producing node, or the leaf's grad buffer according to its grad_req.
template <class T>
void accumulate(const std::shared_ptr<GradMeta<T>>& m, const NDArray<T>& g) {
  if (m->grad_fn) {
    auto& p = m->grad_fn->pending;
    // Out of place: p or g may be shared with another node's pending gradient.
    if (p.defined()) p = dl::detail::evaluate(BinaryExpr<prim::Add, NDArray<T>, NDArray<T>>{{}, p, g});
    else p = g;
    return;
  }
  if (!m->requires_grad || m->req == GradReq::null) return;
  uint64_t epoch = detail::backward_epoch().load();
  if (m->req == GradReq::write && m->grad_epoch != epoch) {
    m->grad.assign(g);
    m->grad_epoch = epoch;
  } else {
    m->grad += g;
  }
}

// A recorded operation whose backward is a closure returning one gradient per input.
template <class T>
struct FunctionNode : TypedNode<T> {
  using Backward = std::function<std::vector<NDArray<T>>(const NDArray<T>&)>;
  std::vector<std::shared_ptr<GradMeta<T>>> inputs;  // null for inputs that need no gradient
  std::vector<Shape> shapes;
  Backward backward;

  void apply() override {
    NDArray<T> g = std::move(this->pending);
    this->pending = NDArray<T>();
    std::vector<NDArray<T>> grads = backward(g);
    check<AutogradError>(grads.size() == inputs.size(), this->name, ": backward returned ", grads.size(),
                         " gradients for ", inputs.size(), " inputs");
    if (is_anomaly_enabled())
      for (size_t i = 0; i < grads.size(); ++i)
        if (inputs[i] && grads[i].defined()) detail::anomaly_check_gradient(this->name, grads[i], i);
    for (size_t i = 0; i < inputs.size(); ++i)
      if (inputs[i] && grads[i].defined()) accumulate(inputs[i], dl::detail::sum_to(grads[i], shapes[i]));
  }
  void release() override {
    backward = nullptr;
    this->released = true;
  }
};

// Makes `out` the result of a recorded node when recording and some input tracks gradients.
template <class T, class Fn>
void record_op(const char* name, const std::vector<NDArray<T>>& inputs, NDArray<T>& out, Fn&& backward) {
  if (!is_recording()) return;
  bool any = false;
  for (const auto& x : inputs) any = any || x.tracks_grad();
  if (!any) return;
  if (is_anomaly_enabled()) detail::anomaly_check_forward(name, out, inputs);
  auto node = std::make_shared<FunctionNode<T>>();
  node->name = name;
  for (const auto& x : inputs) {
    node->inputs.push_back(x.tracks_grad() ? x.grad_meta() : nullptr);
    node->shapes.push_back(x.shape());
    if (x.grad_fn()) node->next.push_back(x.grad_fn());
    if (x.tracks_grad()) node->note_input(x.grad_meta());
  }
  node->backward = std::forward<Fn>(backward);
  out.grad_meta() = std::make_shared<GradMeta<T>>();
  out.grad_meta()->grad_fn = std::move(node);
}

}  // namespace dl::autograd

namespace dl::detail {

template <class T, class Backward>
void record_unary(const NDArray<T>& in, NDArray<T>& out, const char* name, Backward backward) {
  if (!autograd::needs_grad(in)) return;
  autograd::record_op<T>(name, {in}, out, [backward](const NDArray<T>& g) { return std::vector<NDArray<T>>{backward(g)}; });
}

// Sums a gradient of a broadcast result back to the shape of the operand that was broadcast.
template <class T>
NDArray<T> sum_to(const NDArray<T>& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  const Shape& gs = g.shape();
  const std::array<bool, kMaxRank> mask = sum_to_axes(gs, shape);
#if defined(DL_CUDA_ENABLED)
  if constexpr (cuda::kernel_type<T>)
    if (g.device().is_cuda()) return cuda::sum_to(g, shape);
#endif
  NDArray<T> out(shape);
  autograd::pause no_tape;
  cpu::sum_reduce(g.data(), gs, g.strides(), mask, out.data());
  return out;
}

}  // namespace dl::detail
