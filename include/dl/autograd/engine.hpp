// The backward engine: collects the nodes reachable from the output, runs them in reverse
// recording order (a valid topological order) and accumulates into the leaves' grad buffers.
// Also the NDArray members that touch autograd state (attach_grad, grad, backward, cast).
#pragma once
#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "dl/autograd/record.hpp"
#include "dl/expr/assign.hpp"

namespace dl::autograd {

namespace detail {
inline int& backward_depth() { thread_local int depth = 0; return depth; }
}  // namespace detail

template <class T>
void backward(const NDArray<T>& root, const NDArray<T>& head, bool retain_graph) {
  static_assert(FloatingPoint<T>, "backward: gradients need a float or double array");
  root.require_defined("backward");
  check<AutogradError>(root.tracks_grad(),
                       "backward: the array does not require grad; call attach_grad() on its inputs and compute it "
                       "inside an autograd::record scope");
  NDArray<T> g;
  if (head.defined()) {
    check<ShapeError>(head.shape() == root.shape(), "backward: head gradient shape ", head.shape(),
                      " differs from the output shape ", root.shape());
    g = head;
  } else {
    check<AutogradError>(root.numel() == 1, "backward: output of shape ", root.shape(),
                         " is not a scalar; pass a head gradient of that shape");
    g = NDArray<T>(root.shape());
    *g.data() = T(1);
    if (!root.device().is_cpu()) g = g.to(root.device());  // the seed lives where the output does
  }
  pause no_tape;
  // Nested backward (checkpoint recomputation) shares the outer pass's epoch.
  if (detail::backward_depth()++ == 0) dl::autograd::detail::backward_epoch().fetch_add(1);
  struct DepthGuard { ~DepthGuard() { --detail::backward_depth(); } } guard;

  const auto& meta = root.grad_meta();
  if (!meta->grad_fn) {
    accumulate(meta, g);
    if (meta->on_ready) meta->on_ready();
    return;
  }
  std::vector<Node*> order;
  std::unordered_set<Node*> seen;
  std::vector<Node*> stack{meta->grad_fn.get()};
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    if (!seen.insert(n).second) continue;
    check<AutogradError>(!n->released, "backward: the graph through '", n->name,
                         "' was freed by an earlier backward; pass retain_graph=true to the first backward");
    order.push_back(n);
    for (const auto& p : n->next) stack.push_back(p.get());
  }
  std::sort(order.begin(), order.end(), [](Node* a, Node* b) { return a->seq > b->seq; });
  const bool outermost = detail::backward_depth() == 1;
  for (Node* n : order) {
    n->clear_pending();
    // A nested backward (checkpoint recomputation) adds to the outer pass's counts instead.
    if (outermost)
      for (auto& use : n->leaf_uses) *use.uses = 0;
  }
  for (Node* n : order)
    for (auto& use : n->leaf_uses) ++*use.uses;
  meta->grad_fn->pending = g;
  try {
    for (Node* n : order) {
      if (n->has_pending()) n->apply();
      // Nodes run once per pass: free what this one saved now, not at the end, so the peak of a
      // backward holds only the saved tensors of nodes still to run.
      if (!retain_graph) n->release();
      // A leaf whose last producer just ran has its final gradient for this pass.
      for (auto& use : n->leaf_uses)
        if (--*use.uses == 0 && *use.on_ready) (*use.on_ready)();
    }
  } catch (...) {
    for (Node* n : order) n->clear_pending();
    throw;
  }
}

}  // namespace dl::autograd

namespace dl {

template <class T>
NDArray<T>& NDArray<T>::attach_grad(autograd::GradReq req) {
  static_assert(FloatingPoint<T>, "attach_grad: gradients need a float or double array");
  require_defined("attach_grad");
  if (!meta_ || meta_->grad_fn) meta_ = std::make_shared<autograd::GradMeta<T>>();  // becomes a leaf
  meta_->requires_grad = true;
  meta_->req = req;
  if (!meta_->grad.defined() || !(meta_->grad.shape() == shape_)) {
    meta_->grad = NDArray<T>(shape_, device());
    if (numel() && device().is_cpu()) std::memset(meta_->grad.data(), 0, static_cast<size_t>(numel()) * sizeof(T));
    else if (numel()) meta_->grad.assign(T(0));  // device memory: a fill kernel
  }
  return *this;
}

template <class T>
NDArray<T>& NDArray<T>::grad() const {
  check<AutogradError>(meta_ && meta_->requires_grad, "grad: the array has no gradient buffer; call attach_grad() first");
  return meta_->grad;
}

template <class T>
void NDArray<T>::set_grad_req(autograd::GradReq req) {
  if (req == autograd::GradReq::null) {
    if (meta_) meta_->req = req;
    return;
  }
  attach_grad(req);
}

template <class T>
void NDArray<T>::backward(const NDArray& head, bool retain_graph) const {
  autograd::backward(*this, head, retain_graph);
}

namespace autograd {
// Gradient of cast<U>(): cast the incoming gradient back to T.
template <class T, class U>
struct CastNode : TypedNode<U> {
  std::shared_ptr<GradMeta<T>> input;
  void apply() override {
    NDArray<U> g = std::move(this->pending);
    this->pending = NDArray<U>();
    NDArray<T> gt = g.template cast<T>();
    if (is_anomaly_enabled()) detail::anomaly_check_gradient(this->name, gt, 0);
    accumulate(input, gt);
  }
  void release() override { this->released = true; }
};
}  // namespace autograd

template <class T>
template <class U>
NDArray<U> NDArray<T>::cast() const {
  require_defined("cast");
  require_cpu(device(), "cast");
  NDArray<U> out(shape_, device());
  U* o = out.data();
  int64_t i = 0;
  if constexpr (std::is_same_v<T, U>) {
    out.assign(detach());
  } else {
    for_each_element(*this, [&](T* p) {
      if constexpr (std::is_arithmetic_v<U> && std::is_arithmetic_v<T>) o[i++] = static_cast<U>(*p);
      else o[i++] = U(static_cast<float>(*p));
    });
  }
  if constexpr (FloatingPoint<T> && FloatingPoint<U>) {
    if (autograd::needs_grad(*this)) {
      auto node = std::make_shared<autograd::CastNode<T, U>>();
      node->name = "cast";
      node->input = meta_;
      node->note_input(meta_);
      if (meta_->grad_fn) node->next.push_back(meta_->grad_fn);
      out.grad_meta() = std::make_shared<autograd::GradMeta<U>>();
      out.grad_meta()->grad_fn = std::move(node);
    }
  } else if constexpr (std::is_same_v<T, U>) {
    if (autograd::needs_grad(*this)) detail::record_unary(*this, out, "cast", [](const NDArray& g) { return g; });
  }
  return out;
}

}  // namespace dl
