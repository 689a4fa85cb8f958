// graph::repeat(make_block, n, policy): a deep stack of n blocks of one type, each with its own
// parameters, run in order. Under a checkpoint policy (graph/checkpoint_policy.hpp) the stack is
// cut into segments and each segment runs under autograd::checkpoint: only segment outputs stay
// alive until backward, which recomputes one segment at a time. Gradients are the same, bit for
// bit, with and without checkpointing; dropout masks are the same in the recomputation (the RNG
// state is restored) and batch norm does not update its running statistics twice.
//
//   auto body = dl::graph::repeat([] { return ResidualBlock(64); }, 1000, dl::graph::checkpoint::sqrt{});
//   auto y = body(x);                     // (128, 64) -> (128, 64); parameters "blocks.7.fc1.weight", ...
//   std::puts(body.memory_plan(x.shape()).to_string().c_str());   // examples/train_deep.cpp's blocks:
//   // 1000 blocks, 32 segments: keeps 1.0 MiB of segment outputs + recomputes at most 6.0 MiB = 7.0 MiB planned
//
// Blocks must keep the shape of their input (the output of one is the input of the next), so one
// block measured once stands for all: the memory plan probes block 0 (its activations, measured
// with the allocator's bytes in use while its tape is alive) and caches the figure per input shape.
// The probe restores the RNG state and runs as a recomputation, so it changes nothing a step sees.
// Checkpointing only acts while recording (autograd::record); otherwise the blocks just run.
// Like PyTorch's checkpoint_sequential, the last segment is not recomputed: it runs with the tape
// (its backward comes first, so the peak is the same and one segment's recomputation is saved).
// The tape refers to the module: keep it alive until backward has run.
//
// Compiled blocks (RepeatOptions{.compiled = true}): each block runs as a graph::compile graph
// with per-call memory (CompileOptions::keep_memory = false), under the tape ONE node per block,
// inside the same segments and checkpoints, so every policy works for them. The block's forward
// must be a template that runs on symbols as well as on arrays (no dl::eval inside):
//
//   struct Block : dl::nn::Module {
//     dl::nn::Dense fc{512, 512, false};
//     template <class X> auto forward(const X& x) { return x + 0.5f * dl::relu(fc(x)); }
//     template <class X> auto operator()(const X& x) { return forward(x); }
//   };
//   auto body = dl::graph::repeat([] { return Block(); }, 1024, dl::graph::checkpoint::sqrt{},
//                                 dl::graph::RepeatOptions{.compiled = true});
//
// A block's plan holds its memory only from its forward to its backward (a tape node) or for its
// call (no tape): n compiled blocks hold what n eager blocks hold, not n plans' slots for good.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "dl/autograd/checkpoint.hpp"
#include "dl/core/allocator.hpp"
#include "dl/graph/checkpoint_policy.hpp"
#include "dl/graph/compile.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/nn/module.hpp"
#include "dl/nn/module_list.hpp"

namespace dl::graph {

struct RepeatOptions {
  // Run each block as a compiled graph (one tape node per block); the block's forward must run on
  // symbols. Switchable later (set_compiled) when constructed with RepeatOptions.
  bool compiled = false;
};

// Whether Block's operator() builds a graph from a symbol (what compiled blocks need).
template <class Block, class = void>
struct runs_on_symbols : std::false_type {};
template <class Block>
struct runs_on_symbols<Block, std::void_t<decltype(std::declval<Block&>()(std::declval<const Input<float, -1, 0>&>()))>>
    : std::bool_constant<is_symbolic_v<decltype(std::declval<Block&>()(std::declval<const Input<float, -1, 0>&>()))>> {};

template <class Block>
class Repeat : public nn::Module {
  static_assert(std::is_base_of_v<nn::Module, Block>, "repeat: the block type must derive from dl::nn::Module");

 public:
  nn::ModuleList<Block> blocks;

  // make_block(i) or make_block() is called n times, in order.
  template <class MakeBlock>
  Repeat(MakeBlock&& make_block, int64_t n, checkpoint::Policy policy = checkpoint::none{}) : policy_(std::move(policy)) {
    check<ValueError>(n >= 0, "repeat: number of blocks must be non-negative, got ", n);
    for (int64_t i = 0; i < n; ++i) {
      if constexpr (std::is_invocable_v<MakeBlock&, int64_t>) blocks.push_back(make_block(i));
      else blocks.push_back(make_block());
    }
    register_module("blocks", &Repeat::blocks);
  }
  // The same with options (compiled blocks: Block's forward must run on symbols).
  template <class MakeBlock>
  Repeat(MakeBlock&& make_block, int64_t n, checkpoint::Policy policy, RepeatOptions options)
      : Repeat(std::forward<MakeBlock>(make_block), n, std::move(policy)) {
    static_assert(runs_on_symbols<Block>::value,
                  "repeat: RepeatOptions (compiled blocks) needs a block whose operator() is a template that runs on "
                  "graph symbols and returns a symbol expression (no dl::eval inside)");
    run_compiled_ = [](Block& block, const NDArray<float>& x, PlanReport* report) {
      Compiled<BlockGraph> graph(BlockGraph{&block}, CompileOptions{.keep_memory = false});
      NDArray<float> y = graph(x);
      if (report) *report = graph.plan_report();
      return y;
    };
    set_compiled(options.compiled);
  }

  int64_t size() const { return static_cast<int64_t>(blocks.size()); }
  const checkpoint::Policy& policy() const { return policy_; }
  void set_policy(checkpoint::Policy policy) { policy_ = std::move(policy); }
  bool compiled() const { return compiled_; }
  void set_compiled(bool compiled) {
    check<ValueError>(!compiled || run_compiled_, "repeat: compiled blocks need the RepeatOptions constructor "
                                                   "(graph::repeat(make_block, n, policy, RepeatOptions{.compiled = true}))");
    if (compiled != compiled_) probe_.reset();
    compiled_ = compiled;
  }

  // Activation bytes of one block (what it keeps alive for backward, output included) and its
  // output bytes, for an input of this shape in the module's current train/eval mode. Measured
  // once per shape and mode; compiled blocks take the figure from the block's plan (the slots it
  // holds from forward to backward).
  struct BlockBytes {
    int64_t activation = 0;
    int64_t output = 0;
  };
  BlockBytes block_bytes(const Shape& input_shape) {
    check<ValueError>(size() > 0, "repeat: block_bytes needs at least one block");
    if (probe_ && probe_->shape == input_shape && probe_->training == is_training()) return probe_->bytes;
    return probe(zeros<float>(input_shape));
  }

  // The plan of the current policy for an input of this shape (probes one block if needed).
  checkpoint::Plan memory_plan(const Shape& input_shape) {
    if (size() == 0) return checkpoint::plan(policy_, 0, 0, 0);
    BlockBytes b = block_bytes(input_shape);
    return checkpoint::plan(policy_, size(), b.activation, b.output);
  }

  template <class X>
  NDArray<float> forward(const X& x) {
    static_assert(ArrayLike<X>, "repeat: input must be an NDArray or an elementwise expression");
    static_assert(std::is_same_v<value_type_t<X>, float>, "repeat: input must be float, like the parameters");
    NDArray<float> h = dl::eval(x);
    h.require_defined("repeat");
    const int64_t n = size();
    if (n == 0) return h;
    if (policy_.is_none() || !autograd::is_recording()) return run_range(0, n, h);
    std::vector<int64_t> starts;
    if (policy_.holds<checkpoint::budget>()) {
      if (!(probe_ && probe_->shape == h.shape() && probe_->training == is_training())) probe(h);
      starts = checkpoint::segment_starts(policy_, std::vector<int64_t>(static_cast<size_t>(n), probe_->bytes.activation));
    } else {
      starts = checkpoint::segment_starts(policy_, std::vector<int64_t>(static_cast<size_t>(n), 0));
    }
    for (size_t s = 0; s < starts.size(); ++s) {
      const int64_t begin = starts[s], end = s + 1 < starts.size() ? starts[s + 1] : n;
      if (s + 1 == starts.size()) return run_range(begin, end, std::move(h));  // the last: with the tape
      h = autograd::checkpoint([this, begin, end](const NDArray<float>& in) { return run_range(begin, end, in); }, h);
    }
    return h;
  }
  template <class X>
  auto operator()(const X& x) { return forward(x); }

 private:
  // Compiled blocks trace the block with a pointer to it: a fresh graph per call (per-call memory
  // keeps nothing between calls), so copies and moves of the module need nothing rebuilt.
  struct BlockGraph {
    Block* block;
    template <class X>
    auto operator()(const X& x) const { return (*block)(x); }
  };
  NDArray<float> run_block(int64_t i, const NDArray<float>& h, PlanReport* report = nullptr) {
    Block& block = blocks[static_cast<size_t>(i)];
    if (compiled_) return run_compiled_(block, h, report);
    return dl::eval(block(h));
  }

  NDArray<float> run_range(int64_t begin, int64_t end, NDArray<float> h) {
    for (int64_t i = begin; i < end; ++i) {
      NDArray<float> out = run_block(i, h);
      check<ShapeError>(out.shape() == h.shape(), "repeat: block ", i, " maps ", h.shape(), " to ", out.shape(),
                        "; repeated blocks must keep the shape of their input");
      h = std::move(out);
    }
    return h;
  }

  // Runs block 0 on x under the tape and measures what stays allocated while its result lives.
  BlockBytes probe(const NDArray<float>& x) {
    const PhiloxState rng = default_generator().state();
    BlockBytes b;
    {
      autograd::recompute_scope no_state_updates;  // batch norm keeps its running statistics
      NDArray<float> leaf = x.detach();
      leaf.attach_grad();  // allocated before the measurement: an input's gradient is not the block's
      const int64_t before = cpu_allocator().stats().bytes_in_use;
      NDArray<float> y;
      PlanReport report;
      {
        autograd::record rec(true);
        y = run_block(0, leaf, &report);
      }
      b.activation = compiled_ ? report.bytes_forward : cpu_allocator().stats().bytes_in_use - before;
      b.output = static_cast<int64_t>((static_cast<size_t>(y.numel()) * sizeof(float) + CpuAllocator::kAlignment - 1) /
                                      CpuAllocator::kAlignment * CpuAllocator::kAlignment);
      if (b.activation < b.output) b.activation = b.output;  // another thread freed memory meanwhile
    }
    default_generator().set_state(rng);
    probe_ = Probe{x.shape(), is_training(), b};
    return b;
  }

  struct Probe {
    Shape shape;
    bool training = true;
    BlockBytes bytes;
  };
  checkpoint::Policy policy_;
  std::optional<Probe> probe_;
  bool compiled_ = false;
  NDArray<float> (*run_compiled_)(Block&, const NDArray<float>&, PlanReport*) = nullptr;  // set by RepeatOptions
};

// repeat(make_block, n, policy): a Repeat of the type make_block returns.
template <class MakeBlock>
auto repeat(MakeBlock&& make_block, int64_t n, checkpoint::Policy policy = checkpoint::none{}) {
  using F = std::remove_reference_t<MakeBlock>&;
  using Block = std::decay_t<typename std::conditional_t<std::is_invocable_v<F, int64_t>, std::invoke_result<F, int64_t>,
                                                         std::invoke_result<F>>::type>;
  return Repeat<Block>(std::forward<MakeBlock>(make_block), n, std::move(policy));
}
// repeat(make_block, n, policy, options): the same with options (RepeatOptions{.compiled = true}).
template <class MakeBlock>
auto repeat(MakeBlock&& make_block, int64_t n, checkpoint::Policy policy, RepeatOptions options) {
  using F = std::remove_reference_t<MakeBlock>&;
  using Block = std::decay_t<typename std::conditional_t<std::is_invocable_v<F, int64_t>, std::invoke_result<F, int64_t>,
                                                         std::invoke_result<F>>::type>;
  return Repeat<Block>(std::forward<MakeBlock>(make_block), n, std::move(policy), options);
}

}  // namespace dl::graph
