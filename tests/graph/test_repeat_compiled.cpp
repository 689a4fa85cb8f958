// graph::repeat with compiled blocks (RepeatOptions{.compiled = true}) and the per-call memory of
// graph::compile (CompileOptions{.keep_memory = false}) behind it: gradients under every policy
// bit-identical to the same blocks without checkpointing, dropout masks and batch-norm running
// statistics as eager blocks have them, and memory held only from a block's forward to its backward.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "dl/core/allocator.hpp"
#include "dl/graph/compile.hpp"
#include "dl/graph/repeat.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/ndarray/print.hpp"
#include "dl/nn/batch_norm.hpp"
#include "dl/nn/conv.hpp"
#include "dl/nn/dense.hpp"
#include "dl/nn/dropout.hpp"
#include "dl/ops/elementwise.hpp"
#include "dl/ops/loss.hpp"
#include "dl/ops/reduce.hpp"

#include "support/graph_fixtures.hpp"
#include "support/message_of.hpp"

using namespace dl;
namespace ck = dl::graph::checkpoint;
using dl_test::all_equal;
using dl_test::message_of;
using dl_test::step_results;

namespace {

using MlpBlock = dl_test::ResidualMlp;

// h + relu(bn(conv h)) on (N, C, H, W): batch norm in training mode inside a compiled block.
struct ConvBnBlock : nn::Module {
  nn::Conv2d conv;
  nn::BatchNorm2d bn;
  explicit ConvBnBlock(int64_t channels) : conv(channels, channels, std::array<int64_t, 2>{3, 3}, Conv2dOptions{.padding = {1, 1}}), bn(channels) {
    register_module("conv", &ConvBnBlock::conv);
    register_module("bn", &ConvBnBlock::bn);
  }
  template <class X>
  auto operator()(const X& x) { return x + dl::relu(bn(conv(x))); }
};

// A residual block of the benchmark's form, for the memory checks.
struct SlimBlock : nn::Module {
  nn::Dense fc;
  explicit SlimBlock(int64_t width) : fc(width, width, false) { register_module("fc", &SlimBlock::fc); }
  template <class X>
  auto operator()(const X& x) { return x + 0.25f * dl::relu(fc(x)); }
};

const std::vector<ck::Policy> kPolicies{ck::none{}, ck::sqrt{}, ck::every{1}, ck::every{3}, ck::every{10},
                                        ck::every{20}, ck::budget{1}, ck::budget{3000}, ck::budget{1 << 30}};

template <class MakeBlock>
std::vector<NDArray<float>> results_of(MakeBlock make_block, int64_t n, const ck::Policy& policy, bool compiled,
                                       const Shape& shape) {
  manual_seed(1);
  auto net = graph::repeat(make_block, n, policy, graph::RepeatOptions{.compiled = compiled});
  return step_results(net, shape);
}

}  // namespace

TEST_CASE("repeat compiled: gradients under every policy are bit-identical to eager blocks without checkpointing") {
  for (double p : {0.0, 0.3}) {
    CAPTURE(p);
    auto make = [p] { return MlpBlock(8, p); };
    auto eager = results_of(make, 10, ck::none{}, false, Shape{6, 8});
    if (p > 0) CHECK_FALSE(all_equal(eager, results_of([] { return MlpBlock(8, 0.0); }, 10, ck::none{}, false, Shape{6, 8})));
    for (const auto& policy : kPolicies) {
      CAPTURE(policy.to_string());
      auto got = results_of(make, 10, policy, true, Shape{6, 8});
      REQUIRE(got.size() == eager.size());
      for (size_t i = 0; i < got.size(); ++i) CHECK(array_equal(got[i], eager[i]));
    }
  }
  // The comparison can fail: other data gives other gradients.
  manual_seed(1);
  auto net = graph::repeat([] { return MlpBlock(8, 0.0); }, 10, ck::sqrt{}, graph::RepeatOptions{.compiled = true});
  CHECK_FALSE(all_equal(step_results(net, Shape{6, 8}, 8), results_of([] { return MlpBlock(8, 0.0); }, 10, ck::none{},
                                                                        false, Shape{6, 8})));
}

TEST_CASE("repeat compiled: batch norm in training mode updates its running statistics once per step") {
  const Shape shape{4, 3, 5, 5};
  auto make = [] { return ConvBnBlock(3); };
  auto eager = results_of(make, 6, ck::none{}, false, shape);
  auto compiled = results_of(make, 6, ck::none{}, true, shape);
  REQUIRE(compiled.size() == eager.size());
  CHECK(all_equal(compiled, eager));  // conv, batch norm and the fused tail: the same kernels as eager
  auto buffers = [&](const std::vector<NDArray<float>>& r) {  // the 12 running statistics come last
    return std::vector<NDArray<float>>(r.end() - 12, r.end());
  };
  CHECK_FALSE(array_equal(buffers(compiled)[0], zeros<float>({3})));  // updated at all
  for (const auto& policy : kPolicies) {
    CAPTURE(policy.to_string());
    auto got = results_of(make, 6, policy, true, shape);
    CHECK(all_equal(got, compiled));  // gradients and running statistics, bit for bit
  }
  // The compiled executor honours is_recomputing(): a recomputation leaves the statistics alone.
  manual_seed(2);
  ConvBnBlock block(3);
  auto f = graph::compile([&](auto x) { return block(x); });
  auto x = randn<float>(shape);
  {
    autograd::recompute_scope again;
    f.forward(x);
  }
  CHECK(array_equal(block.bn.running_mean, zeros<float>({3})));
  f.forward(x);
  CHECK_FALSE(array_equal(block.bn.running_mean, zeros<float>({3})));
}

TEST_CASE("compile: per-call memory (keep_memory = false) gives its slots back and its results to the caller") {
  manual_seed(3);
  SlimBlock block(64);
  const Shape shape{32, 64};
  const int64_t one = 32 * 64 * 4;
  auto x = randn<float>(shape);
  x.attach_grad();
  auto kept = graph::compile([&](auto h) { return block(h); });
  auto per_call = graph::compile([&](auto h) { return block(h); }, graph::CompileOptions{.keep_memory = false});
  // Forward: only the result stays, and it is the caller's (a second call does not overwrite it).
  NDArray<float> expect = kept.forward(x).clone();
  int64_t before = cpu_allocator().stats().bytes_in_use;
  NDArray<float> y1 = per_call.forward(x);
  CHECK(cpu_allocator().stats().bytes_in_use - before == one);
  CHECK(array_equal(y1, expect));
  NDArray<float> x2 = x * 2.0f;
  NDArray<float> y2 = per_call.forward(x2);
  CHECK(array_equal(y1, expect));
  CHECK_FALSE(array_equal(y2, expect));
  CHECK(y1.storage() != y2.storage());
  y2 = NDArray<float>();
  NDArray<float> y;
  auto tape_step = [&] {
    block.zero_grad();
    x.grad().assign(0.0f);
    {
      autograd::record rec;
      y = per_call(x);
    }
  };
  tape_step();  // the parameters' gradient buffers exist from here on
  y.backward(ones<float>(shape));
  // Under the tape: the slots backward reads (the result, the relu's 1-bit mask: 32 rows of 8
  // bytes) are held until the node's backward, the ones only forward uses (the matmul and relu
  // outputs) go back after forward, the ones only backward uses are taken then, and everything
  // goes back after it.
  y = NDArray<float>();
  block.zero_grad();
  x.grad().assign(0.0f);
  auto head = ones<float>(shape);
  before = cpu_allocator().stats().bytes_in_use;
  {
    autograd::record rec;
    y = per_call(x);
  }
  const auto report = per_call.plan_report();
  CHECK(report.per_call);
  CHECK(report.bytes_forward == one + 32 * 8);
  CHECK(report.bytes_planned > report.bytes_forward);  // gradients, the weight's gradient
  CHECK(cpu_allocator().stats().bytes_in_use - before == report.bytes_forward);
  CHECK(report.str().find("per-call memory: 8448 bytes from forward until backward") != std::string::npos);
  y.backward(head);
  CHECK(cpu_allocator().stats().bytes_in_use - before == one);  // y itself
  CHECK(array_equal(head, ones<float>(shape)));  // the caller's head is never written over
  auto per_call_grads = std::vector<NDArray<float>>{block.fc.weight.grad().clone(), x.grad().clone()};
  // The same gradients as the kept plan.
  block.zero_grad();
  x.grad().assign(0.0f);
  {
    autograd::record rec;
    y = kept(x);
  }
  y.backward(ones<float>(shape));
  CHECK(array_equal(per_call_grads[0], block.fc.weight.grad()));
  CHECK(array_equal(per_call_grads[1], x.grad()));
  // forward_backward per call: the loss is the caller's, the plan is gone after the call.
  auto loss = graph::compile([&](auto h, auto t) { return dl::cross_entropy(block(h), t); },
                             graph::CompileOptions{.keep_memory = false});
  auto labels = zeros<int64_t>({32});
  y = NDArray<float>();
  block.zero_grad();
  before = cpu_allocator().stats().bytes_in_use;
  NDArray<float> l = loss.forward_backward(x, labels);
  CHECK(cpu_allocator().stats().bytes_in_use - before == CpuAllocator::kAlignment);  // the loss
  CHECK(l.numel() == 1);
}

TEST_CASE("repeat compiled: blocks hold their memory from forward to backward, and sqrt lowers the peak") {
  const Shape shape{64, 32};
  const int64_t one = 64 * 32 * 4;
  auto peak_of_step = [&](const ck::Policy& policy, bool compiled, int64_t depth) {
    manual_seed(2);
    auto net = graph::repeat([] { return SlimBlock(32); }, depth, policy, graph::RepeatOptions{.compiled = compiled});
    int64_t held = -1;
    const int64_t peak = dl_test::step_peak_bytes(net, randn<float>(shape), &held);
    CHECK(held == 0);  // nothing held after the step
    return peak;
  };
  manual_seed(2);
  auto net = graph::repeat([] { return SlimBlock(32); }, 64, ck::sqrt{}, graph::RepeatOptions{.compiled = true});
  auto bytes = net.block_bytes(shape);
  CHECK(bytes.output == one);
  CHECK(bytes.activation == one + 64 * 4);  // the block's output and the relu's mask (64 rows of 4 bytes)
  net.set_compiled(false);
  CHECK(net.block_bytes(shape).activation == 2 * one);
  const int64_t eager = peak_of_step(ck::none{}, false, 64), compiled = peak_of_step(ck::none{}, true, 64);
  const int64_t sqrt = peak_of_step(ck::sqrt{}, true, 64);
  MESSAGE("peak of a step, depth 64: eager ", eager, " B, compiled ", compiled, " B, compiled + sqrt ", sqrt, " B");
  CHECK(compiled <= eager + 4 * one);  // not 64 plans' slots held for good
  CHECK(compiled >= 64 * one);
  CHECK(compiled * 10 < eager * 6);  // eager keeps two arrays per block
  CHECK(sqrt * 3 < compiled);
}

namespace {
struct EagerOnly : nn::Module {
  nn::Dense fc{4, 4};
  EagerOnly() { register_module("fc", &EagerOnly::fc); }
  NDArray<float> operator()(const NDArray<float>& x) { return fc(x); }
};
}  // namespace

TEST_CASE("repeat compiled: errors") {
  static_assert(graph::runs_on_symbols<SlimBlock>::value);
  static_assert(!graph::runs_on_symbols<EagerOnly>::value);
  auto net = graph::repeat([] { return EagerOnly(); }, 2);
  CHECK(message_of<ValueError>([&] { net.set_compiled(true); }).find("repeat: compiled blocks need the RepeatOptions constructor") !=
        std::string::npos);
  auto ok = graph::repeat([] { return SlimBlock(4); }, 2, ck::none{}, graph::RepeatOptions{.compiled = true});
  CHECK(ok.compiled());
  ok.set_compiled(false);
  CHECK_FALSE(ok.compiled());
}
