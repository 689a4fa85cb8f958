// The tape's building blocks, kept below NDArray so that every array handle can carry them:
// GradMeta<T> (an array's autograd state: leaf gradient, grad_req, producing node) and Node (one
// recorded operation with its backward function). Every node has exactly one output; an operator
// with several outputs (split) records one node per output. The engine is autograd/engine.hpp.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace dl {
template <class T> class NDArray;
}

namespace dl::autograd {

// How backward treats a leaf's gradient buffer: overwrite it once per backward, add to it, or skip.
enum class GradReq : uint8_t { null, write, add };

struct Node {
  std::string name;                         // the operator, for error messages and anomaly mode
  uint64_t seq = 0;                         // recording order: reverse seq is a topological order
  std::vector<std::shared_ptr<Node>> next;  // the nodes that produced this node's inputs
  bool released = false;                    // saved tensors freed by a backward without retain_graph

  // The leaves this node sends gradients to, so backward can tell a leaf "your gradient is
  // complete" (GradMeta::on_ready) as soon as the last node feeding it has run.
  struct LeafUse {
    int* uses;
    std::function<void()>* on_ready;
  };
  std::vector<LeafUse> leaf_uses;
  template <class Meta>
  void note_input(const std::shared_ptr<Meta>& m) {
    if (m && !m->grad_fn && m->requires_grad) leaf_uses.push_back({&m->uses, &m->on_ready});
  }

  Node() {
    static std::atomic<uint64_t> counter{0};
    seq = counter.fetch_add(1, std::memory_order_relaxed);
  }
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  virtual ~Node() = default;
  virtual bool has_pending() const = 0;
  virtual void apply() = 0;    // sends the pending output gradient to the inputs, then clears it
  virtual void release() = 0;  // frees what apply() needs (saved inputs)
  virtual void clear_pending() = 0;
};

// A node whose output has element type T: the gradient flowing into it accumulates in `pending`.
template <class T>
struct TypedNode : Node {
  NDArray<T> pending;
  bool has_pending() const override { return pending.defined(); }
  void clear_pending() override { pending = NDArray<T>(); }
};

template <class T>
struct GradMeta {
  bool requires_grad = false;                 // a leaf whose gradient is collected in `grad`
  GradReq req = GradReq::write;
  NDArray<T> grad;                            // leaf gradient buffer (same shape as the array)
  uint64_t grad_epoch = 0;                    // the backward pass that last wrote `grad`
  std::shared_ptr<TypedNode<T>> grad_fn;      // producing node, for non-leaves
  // Called during backward once this leaf's gradient for the pass is complete (data-parallel
  // training starts communicating it while backward goes on). `uses` is the engine's counter.
  std::function<void()> on_ready;
  int uses = 0;
};

}  // namespace dl::autograd
