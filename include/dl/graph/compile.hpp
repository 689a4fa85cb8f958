// dl::graph::compile: one model definition, run as a static graph. compile(fn) calls fn with
// placeholder symbols; the returned symbol expression's type is the graph, and Exec<G>
// (graph/exec.hpp) derives from it at compile time the topologically ordered nodes, the backward
// pass (elementwise regions from the rule table in expr/primitives.hpp, op nodes from their
// gradient rules) and the fusion (one loop per maximal elementwise region, the bias inside the
// GEMM). At the first call the plan binds shapes, runs the liveness pass (graph/memory_plan.hpp)
// and allocates its slots; later calls with the same shapes allocate nothing.
//
//   auto step = dl::graph::compile([&](auto x, auto y) { return dl::cross_entropy(net.forward(x), y); });
//   for (auto& [x, y] : loader) {
//     auto loss = step.forward_backward(x, y);   // gradients into the parameters' .grad()
//     opt.step();                                // the imperative optimizer updates them
//   }
//   auto logits = dl::graph::compile([&](auto x) { return net.forward(x); }).forward(x);
//
// Results are views into the plan's memory, valid until the next call: clone() one to keep it.
// Called inside an autograd::record scope (operator()), a compiled graph becomes ONE tape node.
//
// Per-call memory (CompileOptions{.keep_memory = false}) is for many graphs alive at once, e.g. the
// compiled blocks of graph::repeat: each call binds a fresh plan, takes its slots from the pooled
// allocator and gives them back when done: after forward(), or after the tape node's backward
// (slots that only backward uses are taken when it starts). Results are arrays the caller owns.
//
//   auto block = dl::graph::compile([&](auto h) { return h + 0.5f * dl::relu(fc(h)); },
//                                   dl::graph::CompileOptions{.keep_memory = false});
//   { dl::autograd::record rec; y = block(x); }   // holds fc's output and y until backward

// The graph holds the parameters by handle: keep the module (and fn's captures) alive, and
// update parameters in place (optimizers do); recompile after rebinding a parameter handle.
#pragma once
#include <array>
#include <climits>
#include <iosfwd>
#include <memory>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "dl/autograd/engine.hpp"
#include "dl/graph/dropout_ops.hpp"
#include "dl/graph/exec.hpp"
#include "dl/graph/indexing_ops.hpp"
#include "dl/graph/loss_ops.hpp"
#include "dl/graph/matmul_ops.hpp"
#include "dl/graph/norm_ops.hpp"
#include "dl/graph/reduce_ops.hpp"
#include "dl/graph/select_ops.hpp"
#include "dl/graph/shape_ops.hpp"
#include "dl/graph/softmax_ops.hpp"
#include "dl/graph/sym.hpp"
#include "dl/nn/module.hpp"

namespace dl::graph {

struct CompileOptions {
  bool memory_plan = true;  // false: every buffer gets its own memory (for comparison)
  // true: the plan keeps its slots between calls (no allocation after the first call; results are
  // views valid until the next call). false: per-call memory (see above); each call plans afresh.
  bool keep_memory = true;
  // false: forward_backward never runs batch-parallel (Compiled::forward_backward), for comparison.
  bool batch_split = true;
};

// What the plan of a compiled graph holds (plan_report()).
struct PlanReport {
  bool training = false;
  int op_nodes = 0;           // matmul, cross_entropy, ...
  int elementwise_nodes = 0;  // primitives inside fused regions
  int views = 0;              // flatten: no pass, gradient in place
  int shared_uses = 0;        // extra uses of an op node computed once (common subexpressions)
  int fused_kernels = 0;      // elementwise regions: one loop forward (+ one backward) each
  int gemm_epilogues = 0;     // bias adds and activations run inside a GEMM/conv's pass (graph/exec.hpp)
  int recomputed_nodes = 0;   // elementwise values recomputed in registers by backward loops
  int steps = 0;              // forward + backward steps in topological order
  int buffers = 0;            // intermediates (values, gradients, saved statistics)
  int slots = 0;              // memory blocks after liveness
  int64_t bytes_unplanned = 0;
  int64_t bytes_planned = 0;
  // Per-call memory: the slots held from forward until backward (the slots only forward uses go
  // back after forward, the ones only backward uses are taken when it starts).
  int64_t bytes_forward = 0;
  bool per_call = false;
  // forward_backward run batch-parallel (Compiled::forward_backward): the number of slices (one
  // per thread), each slice's rows and planned bytes (the counts above are one slice's, the bytes
  // all slices'); 0 with the reason in batch_split_note when the step runs unsplit.
  int batch_split = 0;
  std::vector<int64_t> slice_rows, slice_bytes;
  std::string batch_split_note;

  std::string str() const {
    std::ostringstream o;
    o << "compiled graph (" << (training ? "forward + backward" : "forward") << ")\n"
      << "  nodes: " << op_nodes << " ops, " << elementwise_nodes << " elementwise, " << views << " views, " << shared_uses
      << " shared uses\n"
      << "  fused kernels: " << fused_kernels << " elementwise regions, " << gemm_epilogues << " GEMM/conv epilogues (bias, activation)\n"
      << "  recomputed nodes: " << recomputed_nodes << " (elementwise, in registers during backward)\n"
      << "  memory: " << buffers << " buffers in " << slots << " slots, " << bytes_planned << " bytes planned vs "
      << bytes_unplanned << " bytes unplanned";
    if (bytes_unplanned > 0)
      o << " (" << static_cast<int>(100.0 * static_cast<double>(bytes_planned) / static_cast<double>(bytes_unplanned) + 0.5)
        << "%)";
    if (per_call) o << "\n  per-call memory: " << bytes_forward << " bytes from forward until backward";
    if (batch_split > 0) {
      o << "\n  batch split: " << batch_split << " slices of";
      for (size_t i = 0; i < slice_rows.size(); ++i) o << (i ? ", " : " ") << slice_rows[i];
      o << " rows, planned bytes";
      for (size_t i = 0; i < slice_bytes.size(); ++i) o << (i ? " + " : " ") << slice_bytes[i];
    } else if (!batch_split_note.empty()) {
      o << "\n  batch split: no (" << batch_split_note << ")";
    }
    return o.str();
  }
};
inline std::ostream& operator<<(std::ostream& o, const PlanReport& r) { return o << r.str(); }

class PlanBase {
 public:
  virtual ~PlanBase() = default;
  PlanReport report;
  // Modules' train/eval mode count when traced (dropout and batch norm fix their mode then).
  uint64_t mode_generation = nn::mode_generation();
};

// The logits of a graph that ends in cross_entropy (Compiled::logits()), e.g. for a training accuracy.
template <class T>
class LogitsSource {
 public:
  virtual ~LogitsSource() = default;
  virtual const NDArray<T>& logits() const = 0;
};
template <class G> struct is_cross_entropy_node : std::false_type {};
template <class A, class Labels> struct is_cross_entropy_node<CrossEntropyNode<A, Labels>> : std::true_type {};
// A fused elementwise region at the root: its backward never reads its own value.
template <class G> struct is_region_root : std::false_type {};
template <class Op, class A> struct is_region_root<UnaryExpr<Op, A>> : std::true_type {};
template <class Op, class A, class B> struct is_region_root<BinaryExpr<Op, A, B>> : std::true_type {};
template <class Op, class A, class B, class C> struct is_region_root<TernaryExpr<Op, A, B, C>> : std::true_type {};

// Batch separability (graph/sym.hpp's per_sample / batch_loss) of the nodes of let.hpp and the
// graph/*_ops.hpp headers. Not listed, so never split: batch_norm in training (batch statistics),
// dropout (its mask is indexed by element position in the whole batch), reductions, reshapes,
// concat / transpose, indexing (take), matmul of two symbols.
template <class T, int R> struct per_sample<Ref<T, R>> : per_sample_leaf<Ref<T, R>> {};  // of a per-sample value
template <class X, class Body>
struct per_sample<LetNode<X, Body>> : std::bool_constant<per_sample<X>::value && per_sample<Body>::value> {
  static bool ok(const LetNode<X, Body>& n) { return per_sample<X>::ok(n.bound) && per_sample<Body>::ok(n.body); }
};
template <class X, class Body>
struct per_sample<ChainNode<X, Body>> : std::bool_constant<per_sample<X>::value && per_sample<Body>::value> {
  static bool ok(const ChainNode<X, Body>& n) {
    bool ok = per_sample<X>::ok(n.input);
    for (const auto& b : n.bodies) ok = ok && per_sample<Body>::ok(b);
    return ok;
  }
};
// Over a non-batch axis: axis >= 1, or a negative axis of an operand whose rank is known.
template <class A, bool Log> struct per_sample<SoftmaxNode<A, Log>> : per_sample_unary<A> {
  static bool ok(const SoftmaxNode<A, Log>& n) {
    constexpr int rank = static_rank<A>::value;
    return (n.axis >= 1 || (rank > 0 && n.axis < 0 && n.axis + rank >= 1)) && per_sample<A>::ok(n.a);
  }
};
template <class A> struct per_sample<LocalResponseNormNode<A>> : per_sample_unary<A> {};  // across channels
template <class A, class Label, int R, int I>
struct batch_loss<NllNode<A, Input<Label, R, I>>> : std::bool_constant<per_sample<A>::value> {
  static bool ok(const NllNode<A, Input<Label, R, I>>& n) {
    return n.reduction != Reduction::none && per_sample<A>::ok(n.log_probs);
  }
};
// mse, binary_cross_entropy_with_logits: both operands per-sample symbols (a constant target is
// not sliced); the mean over all elements of (N, ...) is the mean of the per-sample means.
template <class F, class P, class Tg>
struct batch_loss<PointwiseLossNode<F, P, Tg>>
    : std::bool_constant<per_sample<P>::value && per_sample<Tg>::value && is_symbolic<P>::value &&
                         is_symbolic<Tg>::value> {
  static bool ok(const PointwiseLossNode<F, P, Tg>& n) {
    return n.reduction != Reduction::none && per_sample<P>::ok(n.first) && per_sample<Tg>::ok(n.second);
  }
};

// One bound plan: the graph G for arguments NDArray<Args>..., with its memory.
template <class G, class... Args>
class Plan : public PlanBase, public LogitsSource<typename G::value_type> {
 public:
  using T = typename G::value_type;
  static constexpr size_t kInputs = sizeof...(Args);

  // batch_slice: one slice of a batch-parallel step (SplitPlan): parameter gradients stay here.
  Plan(const G& graph, const CompileOptions& options, bool training, bool tape, bool batch_slice,
       const NDArray<Args>&... args)
      : root_(graph), training_(training), per_call_(!options.keep_memory) {
    ctx_.training = training;
    ctx_.tape = tape;
    ctx_.batch_slice = batch_slice;
    shapes_ = {args.shape()...};
    tracked_ = {args.tracks_grad()...};
    set_inputs(args...);
    root_.plan_forward(ctx_);
    const int forward_steps = ctx_.memory.steps();
    ctx_.backward_from = forward_steps;
    // The result (and the logits) outlive the forward pass: known before backward is planned, so
    // a node deciding what to keep for backward (EpilogueExec's mask) sees that they stay anyway.
    ctx_.memory.use(root_.value_id(), forward_steps);
    if constexpr (is_cross_entropy_node<G>::value) ctx_.memory.use(root_.a.value_id(), forward_steps);
    if (training && root_.needs_grad) {
      grad_id_ = root_.grad_id;
      root_.plan_backward(ctx_);
    }
    ctx_.memory.use(root_.value_id(), ctx_.memory.steps());  // the result outlives the call
    // Per call, the result goes to the caller: a slot of its own (live from the first step, it
    // shares with nothing), which the caller keeps when the plan goes.
    if (per_call_) {
      ctx_.memory.use(root_.value_id(), 0);
      // An input's gradient is collected in the buffer of its first gradient (backward order),
      // which then lives to the end and goes to the caller: no separate accumulator, no copy out.
      root_.for_each_input([&](auto& in) {
        if (in.needs_grad && in.first) ctx_.memory.use(in.grad_id, ctx_.memory.steps());
      });
    }
    if constexpr (is_cross_entropy_node<G>::value)  // and so do the logits (logits())
      ctx_.memory.use(root_.a.value_id(), ctx_.memory.steps());
    for (const auto& sg : ctx_.slice_grads) ctx_.memory.use(sg.temp_id, ctx_.memory.steps());  // until combined
    ctx_.memory.assign(options.memory_plan, per_call_ ? forward_steps : INT_MAX);
    root_.bind(ctx_);
    if (!per_call_) allocate_input_grads();  // per call: when backward starts
    report.training = training;
    report.op_nodes = ctx_.op_nodes;
    report.elementwise_nodes = ctx_.elementwise_nodes;
    report.views = ctx_.views;
    report.shared_uses = ctx_.shared_uses;
    report.fused_kernels = ctx_.regions;
    report.gemm_epilogues = ctx_.epilogues;
    report.recomputed_nodes = ctx_.recomputed;
    report.steps = ctx_.memory.steps();
    report.buffers = ctx_.memory.num_buffers();
    report.slots = ctx_.memory.num_slots();
    report.bytes_unplanned = ctx_.memory.unplanned_bytes();
    report.bytes_planned = ctx_.memory.planned_bytes();
    report.bytes_forward = ctx_.memory.held_bytes();
    report.per_call = per_call_;
  }

  // Same shapes, same inputs tracking grad (tape mode) and same parameter gradient settings.
  bool matches(const NDArray<Args>&... args) const {
    size_t i = 0;
    bool same = true;
    ((same = same && args.shape() == shapes_[i] && (!ctx_.tape || args.tracks_grad() == tracked_[i]), ++i), ...);
    for (const auto& p : ctx_.params) same = same && p.unchanged(p.meta, p.requires_grad, p.req);
    return same;
  }
  const NDArray<T>& forward(const NDArray<Args>&... args) {
    set_inputs(args...);
    ++generation_;
    root_.forward();
    // Per call, the result is the caller's; a region's backward does not read it, so the plan
    // lets go of it (at the rebinding when backward starts), as eager autograd keeps no output.
    if constexpr (is_region_root<G>::value)
      if (per_call_) ctx_.memory.drop(root_.value_id());
    return root_.value;
  }
  // Per call, after forward: gives back the slots only forward used (the GEMM output under
  // relu(x W^T), a value whose readers' backward does not read it) and rebinds the views, so the
  // plan holds only what backward reads until backward runs.
  void release_forward() {
    if (!per_call_) return;
    ctx_.memory.release_forward();
    root_.bind(ctx_);
  }
  // Backward from a head gradient (null: 1 for a one-element output). Per call, a head that only
  // the caller and the engine hold may be written over (it becomes the output gradient).
  void backward(const NDArray<T>* head) {
    check<AutogradError>(root_.needs_grad,
                         "compile: nothing to differentiate (no parameter requires grad and no input tracks grad)");
    bool in_head = false;  // the output gradient's buffer is the head's memory (no copy)
    if (per_call_) {  // the slots only backward uses, and the inputs' gradients
      // A head that nobody else reads any more (the tape node's incoming gradient: the engine's
      // handle and the caller's) becomes the output gradient's slot, as eager backward reuses it.
      if (head && head->shape() == root_.grad.shape() && head->is_contiguous() && head->offset() == 0 &&
          head->storage().use_count() <= 2)
        in_head = ctx_.memory.adopt(root_.grad_id, head->storage());
      ctx_.memory.release_forward();  // (forward_backward: not released yet)
      ctx_.memory.allocate_deferred();
      root_.bind(ctx_);
      allocate_input_grads();
    }
    NDArray<T>& g = root_.grad;
    if (head) {
      check<ShapeError>(head->shape() == g.shape(), "compiled graph: head gradient of shape ", head->shape(),
                        " differs from the output shape ", g.shape());
      if (!in_head) expr::run_assign(g, *head);
    } else {
      check<AutogradError>(g.numel() == 1, "forward_backward: the output of shape ", g.shape(),
                           " is not a scalar loss; use forward() or call the graph inside autograd::record");
      *g.data() = T(1);
    }
    root_.backward();
  }
  const NDArray<T>& logits() const override {
    if constexpr (is_cross_entropy_node<G>::value) return root_.a.value;
    else fail<ValueError>("logits: the compiled graph does not end in cross_entropy");
  }
  uint64_t generation() const { return generation_; }
  const NDArray<T>& forward_result() const { return root_.value; }
  const Shape& logits_shape() const { return root_.a.shape; }  // a graph that ends in cross_entropy
  const std::vector<PlanContext::SliceGrad>& slice_grads() const { return ctx_.slice_grads; }
  const NDArray<T>& input_grad(size_t i) const { return input_grads_[i]; }
  // Per call: hands input i's gradient to the caller (the plan goes after its backward).
  NDArray<T> take_input_grad(size_t i) { return std::move(input_grads_[i]); }
  bool per_call() const { return per_call_; }
  bool needs_grad() const { return root_.needs_grad; }

 private:
  // Gradients of inputs (tape mode): one buffer per float input that tracks grad (per call: the
  // planned buffer of the input's first gradient, bound by now).
  void allocate_input_grads() {
    root_.for_each_input([&](auto& in) {
      using In = std::remove_cvref_t<decltype(in)>;
      if constexpr (FloatingPoint<typename In::value_type> && std::is_same_v<typename In::value_type, T>) {
        if (in.needs_grad) {
          auto& acc = input_grads_[static_cast<size_t>(In::index)];
          if (per_call_) {
            if (in.first) acc = in.grad;
          } else if (!acc.defined()) {
            acc = NDArray<T>(in.shape);
          }
          in.accumulator = &acc;
        }
      }
    });
  }
  void set_inputs(const NDArray<Args>&... args) {
    auto tuple = std::forward_as_tuple(args...);
    root_.for_each_input([&](auto& in) {
      using In = std::remove_cvref_t<decltype(in)>;
      constexpr size_t i = static_cast<size_t>(In::index);
      static_assert(i < kInputs, "compile: the graph uses more inputs than the call passes");
      using Given = std::remove_cvref_t<std::tuple_element_t<i, std::tuple<NDArray<Args>...>>>;
      static_assert(std::is_same_v<Given, NDArray<typename In::value_type>>,
                    "compile: an argument's element type differs from its symbol's");
      in.value = std::get<i>(tuple);
      in.value.require_defined("compile");
    });
  }

  Exec<G> root_;
  PlanContext ctx_;
  bool training_;
  bool per_call_;
  int grad_id_ = -1;
  std::array<Shape, kInputs> shapes_{};
  std::array<bool, kInputs> tracked_{};
  std::array<NDArray<T>, kInputs> input_grads_{};
  uint64_t generation_ = 0;
};

// Rows [r0, r1) of a along axis 0: a view (no copy, no tape).
template <class A>
NDArray<A> batch_rows(const NDArray<A>& a, int64_t r0, int64_t r1) {
  Shape s = a.shape();
  s[0] = r1 - r0;
  return NDArray<A>(a.storage(), s, a.strides(), a.offset() + r0 * a.strides()[0]);
}

// The batch-parallel training step of a batch-separable graph (is_batch_separable_v): the batch
// is cut into `slices` fixed row ranges, one per thread, and each runs forward and backward as a
// plan of its own (Plan with batch_slice, single-threaded inside one parallel_for chunk, its
// activations in its own cache), so a step forks and joins once instead of once per kernel (~40
// for LeNet, each ~10-30 us at batch 32). Slice i's backward starts from the head n_i / N (mean
// loss; 1 for a sum), so its parameter gradients are its share of the batch's; they stay in the
// slice's planned buffers and are summed into param.grad() in slice order after the join,
// following grad_req as the unsplit step does. The loss is the same weighted sum. Fixed slices
// and a fixed order: the same result on every run with the same thread count; against the
// unsplit step only float reassociation (~1e-6 relative).
template <class G, class... Args>
class SplitPlan : public PlanBase, public LogitsSource<typename G::value_type> {
 public:
  using T = typename G::value_type;
  using Slice = Plan<G, Args...>;

  SplitPlan(const G& graph, const CompileOptions& options, int64_t rows, int slices, const NDArray<Args>&... args)
      : rows_(rows), args_(static_cast<size_t>(slices)), heads_(static_cast<size_t>(slices)),
        gather_(static_cast<size_t>(slices)), scratch_(static_cast<size_t>(slices)) {
    for (int i = 0; i <= slices; ++i) bounds_.push_back(rows * i / slices);
    set_slices(args...);
    const bool mean = graph.reduction == Reduction::mean;
    for (size_t i = 0; i < args_.size(); ++i) {
      const int64_t n = bounds_[i + 1] - bounds_[i];
      weights_.push_back(mean ? static_cast<double>(n) / static_cast<double>(rows) : 1.0);
      heads_[i] = NDArray<T>(Shape{});
      *heads_[i].data() = static_cast<T>(weights_[i]);
      slices_.push_back(std::apply(
          [&](const auto&... a) { return std::make_unique<Slice>(graph, options, true, false, true, a...); }, args_[i]));
      check<ValueError>(slices_[i]->slice_grads().size() == slices_[0]->slice_grads().size(),
                        "compile: batch slices planned different parameter gradients");
    }
    loss_ = NDArray<T>(Shape{});
    if constexpr (is_cross_entropy_node<G>::value) logits_ = NDArray<T>(Shape{rows, slices_[0]->logits_shape()[1]});
    for (const auto& g : slices_[0]->slice_grads()) param_bytes_ += g.bytes;
    report = slices_[0]->report;
    report.batch_split = slices;
    report.bytes_planned = report.bytes_unplanned = 0;
    for (size_t i = 0; i < slices_.size(); ++i) {
      report.slice_rows.push_back(bounds_[i + 1] - bounds_[i]);
      report.slice_bytes.push_back(slices_[i]->report.bytes_planned);
      report.bytes_planned += slices_[i]->report.bytes_planned;
      report.bytes_unplanned += slices_[i]->report.bytes_unplanned;
    }
  }

  int slices() const { return static_cast<int>(slices_.size()); }
  // Each slice reads every parameter again (a GEMM packs its weights, a slice writes a whole
  // weight gradient, which the step then sums): worth it when a slice's own memory traffic
  // (activations and their gradients) is at least that. LeNet is; the 784-256-128-10 MLP is not
  // (many times more parameter bytes). Split, that MLP ran 0.7-0.8x as fast as unsplit at batch
  // 16-32 when only one core was free, 1.2-1.3x when two were: a conservative rule.
  bool pays() const { return slices_[0]->report.bytes_planned - param_bytes_ >= param_bytes_; }
  // Same batch, and every slice matches its rows of these arguments (they become the slices' inputs).
  bool matches(const NDArray<Args>&... args) {
    int64_t rows = -1;
    bool same = ((args.rank() >= 1 && (rows = args.shape(0)) == rows_) && ...);
    if (!same) return false;
    set_slices(args...);
    for (size_t i = 0; i < slices_.size(); ++i)
      if (!std::apply([&](const auto&... a) { return slices_[i]->matches(a...); }, args_[i])) return false;
    return true;
  }
  // One step on the arguments matches() was given: the loss (a view, valid until the next step).
  NDArray<T> step() {
    check<AutogradError>(slices_[0]->needs_grad(),
                         "compile: nothing to differentiate (no parameter requires grad and no input tracks grad)");
    parallel_for(0, slices(), 1, [&](int64_t i0, int64_t i1) {
      for (auto i = static_cast<size_t>(i0); i < static_cast<size_t>(i1); ++i) {
        cpu::ScratchScope scratch(&scratch_[i]);  // conv scratch: the same blocks every step, whichever thread runs it
        std::apply([&](const auto&... a) { slices_[i]->forward(a...); }, args_[i]);
        slices_[i]->backward(&heads_[i]);
      }
    });
    double loss = 0;
    for (size_t i = 0; i < slices_.size(); ++i)
      loss += weights_[i] * static_cast<double>(*slices_[i]->forward_result().data());
    *loss_.data() = static_cast<T>(loss);
    const auto& grads = slices_[0]->slice_grads();
    for (size_t j = 0; j < grads.size(); ++j) {
      for (size_t i = 0; i < slices_.size(); ++i) gather_[i] = slices_[i]->slice_grads()[j].grad;
      grads[j].combine(gather_.data(), gather_.size());
    }
    ++generation_;
    return loss_;
  }
  // The whole batch's logits: the slices' rows, copied into one array when asked for.
  const NDArray<T>& logits() const override {
    if constexpr (is_cross_entropy_node<G>::value) {
      if (logits_generation_ != generation_) {
        for (size_t i = 0; i < slices_.size(); ++i) {
          NDArray<T> dst = batch_rows(logits_, bounds_[i], bounds_[i + 1]);
          expr::run_assign(dst, slices_[i]->logits());
        }
        logits_generation_ = generation_;
      }
      return logits_;
    } else {
      fail<ValueError>("logits: the compiled graph does not end in cross_entropy");
    }
  }

 private:
  void set_slices(const NDArray<Args>&... args) {
    for (size_t i = 0; i < args_.size(); ++i) args_[i] = {batch_rows(args, bounds_[i], bounds_[i + 1])...};
  }

  int64_t rows_;
  std::vector<int64_t> bounds_;
  std::vector<std::tuple<NDArray<Args>...>> args_;  // each slice's inputs: views of the step's
  std::vector<double> weights_;
  std::vector<NDArray<T>> heads_;  // n_i / N
  std::vector<std::unique_ptr<Slice>> slices_;
  std::vector<void*> gather_;  // one parameter's gradient in every slice
  std::vector<cpu::ScratchCache> scratch_;  // each slice's conv scratch blocks
  int64_t param_bytes_ = 0;    // of the parameters that get gradients
  NDArray<T> loss_;
  mutable NDArray<T> logits_;
  uint64_t generation_ = 0;
  mutable uint64_t logits_generation_ = UINT64_MAX;
};

template <class Fn, class... Syms>
class Compiled {
  template <size_t I>
  static constexpr int symbol_rank() {
    if constexpr (I < sizeof...(Syms)) return std::tuple_element_t<I, std::tuple<Syms...>>::rank;
    else return -1;
  }
  template <class... Args, size_t... I>
  static auto trace_type(std::index_sequence<I...>) -> decltype(std::declval<Fn&>()(
      Input<Args, symbol_rank<I>(), static_cast<int>(I)>{}...));
  template <class... Args>
  using graph_raw_t = decltype(trace_type<Args...>(std::index_sequence_for<Args...>{}));
  template <class... Args>
  static constexpr bool types_match() {
    if constexpr (sizeof...(Syms) != sizeof...(Args)) return true;  // reported below
    else return (std::is_same_v<typename Syms::value_type, Args> && ...);
  }
  template <class... Args>
  struct graph_check {
    static_assert(types_match<Args...>(), "compile: an argument's element type differs from its dl::sym declaration");
    using type = std::remove_cvref_t<graph_raw_t<Args...>>;
    static_assert(is_symbolic_v<type>, "compile: the function must return a symbol expression built from its arguments");
    static_assert(sizeof...(Syms) == 0 || sizeof...(Syms) == sizeof...(Args),
                  "compile: the call passes a different number of arrays than the symbols declared");
  };
  template <class... Args>
  using graph_t = typename graph_check<Args...>::type;


 public:
  Compiled(Fn fn, const CompileOptions& options, Syms... syms) : fn_(std::move(fn)), options_(options), syms_(syms...) {}

  // Runs forward and backward of a scalar loss; gradients go into the parameters' .grad()
  // following their grad_req. Returns the loss (a view, valid until the next call).
  //
  // A batch-separable graph (graph/sym.hpp's per_sample: every node per-sample up to a mean or sum
  // loss) with num_threads() >= 2, at least kMinSliceRows rows per thread and slices whose
  // activations outweigh the parameters (SplitPlan::pays) runs batch-parallel: one slice of the
  // batch per thread, each slice's whole step on its thread (SplitPlan above).
  template <class... Args>
  NDArray<typename graph_t<Args...>::value_type> forward_backward(const NDArray<Args>&... args) {
    if constexpr (is_batch_separable_v<graph_t<Args...>>) {
      if (auto* split = split_for<Args...>(args...)) {
        autograd::pause no_tape;
        last_split_ = true;
        return split->step();
      }
    } else {
      split_note_ = "the graph is not batch-separable (a node outside the per-sample list, e.g. batch_norm in "
                    "training, dropout, a reduction or reshape, or a loss without a mean or sum)";
    }
    auto plan = plan_for<Args...>(train_, true, false, args...);
    if (last_split_) split_.reset();  // one training plan's memory at a time
    last_split_ = false;
    const char* note = split_note_ ? split_note_ : "";
    if (plan->report.batch_split_note != note) plan->report.batch_split_note = note;
    autograd::pause no_tape;
    NDArray<typename graph_t<Args...>::value_type> out = plan->forward(args...);
    plan->backward(nullptr);
    return out;
  }
  // Fewest rows per slice of a batch-parallel step: below this a slice's step is too short for a
  // worker's wake-up to pay (a choice, not yet tuned on a quiet machine).
  static constexpr int64_t kMinSliceRows = 8;

  // Inference: forward only (no gradient buffers, shorter liveness). A view, valid until the next call.
  template <class... Args>
  NDArray<typename graph_t<Args...>::value_type> forward(const NDArray<Args>&... args) {
    auto plan = plan_for<Args...>(infer_, false, false, args...);
    autograd::pause no_tape;
    return plan->forward(args...);
  }

  // Inside an autograd::record scope with something to differentiate: the whole graph is ONE tape
  // node (eager code backpropagates through it into its inputs and parameters); the result is a
  // fresh array. Otherwise the same as forward().
  template <class... Args>
  NDArray<typename graph_t<Args...>::value_type> operator()(const NDArray<Args>&... args) {
    using T = typename graph_t<Args...>::value_type;
    if (!autograd::is_recording()) return forward(args...);
    auto p = plan_for<Args...>(tape_, true, true, args...);
    NDArray<T> out;
    {
      autograd::pause no_tape;
      out = p->forward(args...);
      if (!p->per_call()) out = out.clone();  // the plan's own memory is overwritten by the next call
      else p->release_forward();
    }
    if (!p->needs_grad()) return out;  // nothing to differentiate: no tape node
    auto node = std::make_shared<autograd::FunctionNode<T>>();
    node->name = "compiled_graph";
    std::vector<size_t> float_inputs;
    size_t i = 0;
    auto add_input = [&](const auto& a) {
      using A = std::remove_cvref_t<decltype(a)>;
      if constexpr (std::is_same_v<A, NDArray<T>>) {
        node->inputs.push_back(a.tracks_grad() ? a.grad_meta() : nullptr);
        node->shapes.push_back(a.shape());
        if (a.grad_fn()) node->next.push_back(a.grad_fn());
        if (a.tracks_grad()) node->note_input(a.grad_meta());
        float_inputs.push_back(i);
      }
      ++i;
    };
    (add_input(args), ...);
    // The node owns the plan: per call, its slots go back when the engine releases the node.
    node->backward = [p, gen = p->generation(), float_inputs](const NDArray<T>& g) {
      check<AutogradError>(p->generation() == gen,
                           "compiled graph: it ran again before the backward of an earlier call; "
                           "call backward first (the plan's saved activations were overwritten)");
      NDArray<T> head = g.contiguous();  // per call: with g, the only handles on it (backward may write into it)
      p->backward(&head);
      std::vector<NDArray<T>> grads;
      for (size_t k : float_inputs) {
        if (!p->input_grad(k).defined()) grads.emplace_back();
        else grads.push_back(p->per_call() ? p->take_input_grad(k) : p->input_grad(k).clone());
      }
      return grads;
    };
    out.grad_meta() = std::make_shared<autograd::GradMeta<T>>();
    out.grad_meta()->grad_fn = std::move(node);
    return out;
  }

  // After forward_backward of a graph that ends in cross_entropy: the logits it took (a view,
  // valid until the next call), e.g. for the training accuracy without a second forward pass.
  template <class T = float>
  NDArray<T> logits() const {
    check<ValueError>(options_.keep_memory, "logits: a graph with per-call memory (keep_memory = false) keeps no logits");
    auto* p = dynamic_cast<const LogitsSource<T>*>(last_split_ ? split_.get() : train_.get());
    check<ValueError>(p != nullptr, "logits: no forward_backward has run yet (or its loss is not of this element type)");
    return p->logits();
  }

  // The plan of the last forward_backward (else forward, else tape) call: nodes, fusion, memory.
  PlanReport plan_report() const {
    if (!options_.keep_memory && last_report_) return *last_report_;
    if (last_split_ && split_) return split_->report;
    if (train_) return train_->report;
    if (infer_) return infer_->report;
    if (tape_) return tape_->report;
    fail<ValueError>("plan_report: the graph has not run yet (shapes are bound at the first call)");
  }

 private:
  template <class... Args, size_t... I>
  auto trace(std::index_sequence<I...>) {
    return fn_(Input<Args, symbol_rank<I>(), static_cast<int>(I)>{}...);
  }

  template <class... Args>
  void check_ranks(const NDArray<Args>&... args) {
    size_t i = 0;
    auto one = [&](const auto& a) {
      int want = -1;
      const char* name = nullptr;
      if constexpr (sizeof...(Syms) > 0) {
        std::apply([&](const auto&... s) {
          size_t k = 0;
          ((k++ == i ? (want = s.rank, name = s.name, 0) : 0), ...);
        }, syms_);
      }
      if (want >= 0)
        check<ShapeError>(a.rank() == want, "compile: input ", i, name ? " ('" : "", name ? name : "", name ? "')" : "",
                          " must have rank ", want, ", got shape ", a.shape());
      ++i;
    };
    (one(args), ...);
  }

  // The plan for these arguments: the kept one if it matches, else a fresh one (kept in `slot`
  // unless memory is per call: then the caller's handle is the only one).
  template <class... Args>
  std::shared_ptr<Plan<graph_t<Args...>, Args...>> plan_for(std::shared_ptr<PlanBase>& slot, bool training, bool tape,
                                                            const NDArray<Args>&... args) {
    using P = Plan<graph_t<Args...>, Args...>;
    if (auto p = std::dynamic_pointer_cast<P>(slot); p && p->matches(args...) && p->mode_generation == nn::mode_generation()) return p;
    check_ranks(args...);
    slot.reset();  // free the old plan's memory before binding the new one
    auto graph = [&] {
      autograd::pause no_tape;
      return trace<Args...>(std::index_sequence_for<Args...>{});
    }();
    auto fresh = std::make_shared<P>(graph, options_, training, tape, false, args...);
    if (options_.keep_memory) slot = fresh;
    else last_report_ = fresh->report;
    return fresh;
  }

  // The batch-parallel step for these arguments, or null (why in split_note_): the kept one if it
  // matches, else a fresh one (the unsplit training plan goes, one training plan at a time).
  template <class... Args>
  SplitPlan<graph_t<Args...>, Args...>* split_for(const NDArray<Args>&... args) {
    using S = SplitPlan<graph_t<Args...>, Args...>;
    int64_t rows = -1;
    bool batched = ((args.rank() >= 1 && (rows < 0 || args.shape(0) == rows) && (rows = args.shape(0), true)) && ...);
    const int threads = num_threads();
    const int slices = batched ? static_cast<int>(std::min<int64_t>(threads, rows / kMinSliceRows)) : 0;
    const uint64_t mode = nn::mode_generation();
    split_note_ = nullptr;
    if (!options_.batch_split) split_note_ = "CompileOptions::batch_split is off";
    else if (!options_.keep_memory) split_note_ = "per-call memory";
    else if (threads < 2) split_note_ = "1 thread";
    else if (in_parallel_region()) split_note_ = "called inside a parallel region";
    else if (!batched) split_note_ = "the inputs do not share a batch axis 0";
    else if (slices < 2) split_note_ = "fewer than kMinSliceRows (8) rows per thread";
    else if (refused_.why && refused_.rows == rows && refused_.slices == slices && refused_.mode == mode)
      split_note_ = refused_.why;
    if (split_note_) return nullptr;
    if (auto p = std::dynamic_pointer_cast<S>(split_);
        p && p->slices() == slices && p->mode_generation == mode && p->matches(args...))
      return p.get();
    check_ranks(args...);
    split_.reset();
    auto graph = [&] {
      autograd::pause no_tape;
      return trace<Args...>(std::index_sequence_for<Args...>{});
    }();
    refused_ = {rows, slices, mode, nullptr};
    if (!batch_loss<graph_t<Args...>>::ok(graph)) {
      refused_.why = split_note_ = "a node works across the batch (flatten or softmax over axis 0, or an unreduced loss)";
      return nullptr;
    }
    std::shared_ptr<S> fresh;
    try {
      fresh = std::make_shared<S>(graph, options_, rows, slices, args...);
    } catch (const detail::NotBatchSeparable& e) {
      refused_.why = split_note_ = e.why;
      return nullptr;
    }
    if (!fresh->pays()) {
      refused_.why = split_note_ = "a slice's activations are smaller than the parameters it re-reads";
      return nullptr;
    }
    train_.reset();
    split_ = fresh;
    return fresh.get();
  }

  Fn fn_;
  CompileOptions options_;
  std::tuple<Syms...> syms_;
  std::shared_ptr<PlanBase> train_, infer_, tape_;
  std::shared_ptr<PlanBase> split_;  // the batch-parallel training step (train_ when unsplit)
  bool last_split_ = false;          // the last forward_backward ran split_
  const char* split_note_ = nullptr;  // why the last forward_backward ran unsplit
  struct Refusal {
    int64_t rows = -1;
    int slices = 0;
    uint64_t mode = 0;
    const char* why = nullptr;
  } refused_;  // planning found the graph mixes samples, or that splitting does not pay: not retried each step
  std::optional<PlanReport> last_report_;  // per-call memory: the report of the last call's plan
};

// compile(fn): fn takes one symbol per input (generic lambda) and returns a symbol expression.
// Optional dl::sym<T, Rank>("name") declarations fix each input's rank and name it in errors.
template <class S> struct is_sym : std::false_type {};
template <class T, int R> struct is_sym<sym<T, R>> : std::true_type {};

template <class Fn, class... Syms>
  requires(is_sym<Syms>::value && ...)
auto compile(Fn fn, Syms... syms) {
  return Compiled<Fn, Syms...>(std::move(fn), CompileOptions{}, syms...);
}
template <class Fn, class... Syms>
  requires(is_sym<Syms>::value && ...)
auto compile(Fn fn, const CompileOptions& options, Syms... syms) {
  return Compiled<Fn, Syms...>(std::move(fn), options, syms...);
}

}  // namespace dl::graph
