// graph::repeat: n parameter sets with dotted names, forward in order, and checkpointing that
// changes nothing but memory: gradients bit-identical under every policy, the same dropout masks in
// the recomputation, batch-norm running statistics updated once, a smaller measured peak, and the
// last segment not recomputed. (Compiled blocks: test_repeat_compiled.cpp.)
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "dl/core/allocator.hpp"
#include "dl/graph/repeat.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/ndarray/print.hpp"
#include "dl/nn/batch_norm.hpp"
#include "dl/nn/dense.hpp"
#include "dl/nn/dropout.hpp"
#include "dl/ops/elementwise.hpp"
#include "dl/ops/reduce.hpp"

#include "support/graph_fixtures.hpp"
#include "support/message_of.hpp"

using namespace dl;
namespace ck = dl::graph::checkpoint;
using dl_test::message_of;

namespace {

using ResBlock = dl_test::ResidualMlp;  // h + 0.5 fc2(dropout(relu(fc1 h)))

// h + relu(bn(fc h)) with the batch norm over (N, C, 1, 1).
struct BnBlock : nn::Module {
  nn::Dense fc;
  nn::BatchNorm2d bn;
  explicit BnBlock(int64_t width) : fc(width, width), bn(width) {
    register_module("fc", &BnBlock::fc);
    register_module("bn", &BnBlock::bn);
  }
  template <class X>
  NDArray<float> forward(const X& x) {
    NDArray<float> h = dl::eval(x);
    NDArray<float> z = bn(fc(h).reshape({h.shape(0), h.shape(1), 1, 1}));
    return h + dl::relu(z.reshape({h.shape(0), h.shape(1)}));
  }
  template <class X>
  auto operator()(const X& x) { return forward(x); }
};

// One training step's results (gradients, output, buffers: graph_fixtures' step_results) under a policy.
template <class MakeNet>
std::vector<NDArray<float>> step_gradients(MakeNet make_net, const ck::Policy& policy, uint64_t data_seed = 7) {
  auto net = make_net(policy);
  return dl_test::step_results(net, Shape{6, 8}, data_seed);
}

auto res_net(double dropout) {
  return [dropout](const ck::Policy& policy) {
    manual_seed(1);
    return graph::repeat([dropout] { return ResBlock(8, dropout); }, 10, policy);
  };
}

const std::vector<ck::Policy> kPolicies{ck::sqrt{}, ck::every{1}, ck::every{3}, ck::every{10}, ck::every{20},
                                        ck::budget{1}, ck::budget{3000}, ck::budget{1 << 30}};

}  // namespace

TEST_CASE("repeat: n parameter sets named blocks.i, run in order") {
  manual_seed(3);
  auto net = graph::repeat([](int64_t i) { return ResBlock(4 + 0 * i, 0.0); }, 5);
  CHECK(net.size() == 5);
  auto params = net.named_parameters();
  REQUIRE(params.size() == 20);
  CHECK(params[0].first == "blocks.0.fc1.weight");
  CHECK(params[13].first == "blocks.3.fc1.bias");
  CHECK(net.state_dict().count("blocks.4.fc2.weight") == 1);
  CHECK(net.blocks[2].fc1.weight.storage() != net.blocks[3].fc1.weight.storage());
  // forward = the blocks one after the other
  auto x = randn<float>({3, 4});
  NDArray<float> expect = x;
  for (auto& b : net.blocks) expect = b(expect);
  CHECK(array_equal(net(x), expect));
  // make_block(i) sees the index
  std::vector<int64_t> seen;
  graph::repeat([&](int64_t i) { seen.push_back(i); return ResBlock(2, 0.0); }, 3);
  CHECK(seen == std::vector<int64_t>{0, 1, 2});
}

TEST_CASE("repeat: gradients are bit-identical with and without checkpointing") {
  auto reference = step_gradients(res_net(0.0), ck::none{});
  for (const auto& policy : kPolicies) {
    CAPTURE(policy.to_string());
    auto got = step_gradients(res_net(0.0), policy);
    REQUIRE(got.size() == reference.size());
    for (size_t i = 0; i < got.size(); ++i) CHECK(array_equal(got[i], reference[i]));
  }
  // The comparison can fail: other data gives other gradients.
  CHECK(!array_equal(step_gradients(res_net(0.0), ck::sqrt{}, 8)[0], reference[0]));
}

TEST_CASE("repeat: dropout masks are the same in the recomputation") {
  auto reference = step_gradients(res_net(0.3), ck::none{});
  auto without_dropout = step_gradients(res_net(0.0), ck::none{});
  CHECK(!array_equal(reference[0], without_dropout[0]));  // dropout is active
  for (const auto& policy : kPolicies) {
    CAPTURE(policy.to_string());
    auto got = step_gradients(res_net(0.3), policy);
    for (size_t i = 0; i < got.size(); ++i) CHECK(array_equal(got[i], reference[i]));
  }
  // The probe behind budget() and memory_plan() restores the generator: the next numbers are the same.
  auto net = res_net(0.3)(ck::budget{4096});
  manual_seed(11);
  net.memory_plan(Shape{6, 8});
  auto after_probe = rand<float>({4});
  manual_seed(11);
  CHECK(array_equal(after_probe, rand<float>({4})));
}

TEST_CASE("repeat: batch-norm running statistics are updated once per step") {
  auto make = [](const ck::Policy& policy) {
    manual_seed(5);
    return graph::repeat([] { return BnBlock(8); }, 9, policy);
  };
  auto grads_none = step_gradients(make, ck::none{});
  auto stats = [&](const ck::Policy& policy) {
    auto net = make(policy);
    manual_seed(7);
    auto x = randn<float>({6, 8});
    NDArray<float> y;
    {
      autograd::record rec;
      y = net(x);
    }
    y.backward(ones<float>({6, 8}));
    std::vector<NDArray<float>> out;
    for (auto& [name, b] : net.named_buffers()) out.push_back(b.clone());
    return out;
  };
  auto reference = stats(ck::none{});
  REQUIRE(reference.size() == 18);
  CHECK(!array_equal(reference[0], zeros<float>({8})));  // updated at all
  for (const auto& policy : kPolicies) {
    CAPTURE(policy.to_string());
    auto got = stats(policy);
    for (size_t i = 0; i < got.size(); ++i) CHECK(array_equal(got[i], reference[i]));
    auto grads = step_gradients(make, policy);
    for (size_t i = 0; i < grads.size(); ++i) CHECK(array_equal(grads[i], grads_none[i]));
  }
  // recompute_scope is what keeps them: outside it a second run would update them again.
  nn::BatchNorm2d bn(2);
  auto x = randn<float>({4, 2, 1, 1});
  {
    autograd::recompute_scope again;
    bn(x);
  }
  CHECK(array_equal(bn.running_mean, zeros<float>({2})));
  bn(x);
  CHECK(!array_equal(bn.running_mean, zeros<float>({2})));
}

TEST_CASE("repeat: planned memory, and checkpointing lowers the measured peak") {
  const Shape shape{64, 32};
  auto peak_of_step = [&](const ck::Policy& policy, int64_t depth) {
    manual_seed(2);
    auto net = graph::repeat([] { return ResBlock(32, 0.0); }, depth, policy);
    return dl_test::step_peak_bytes(net, randn<float>(shape));
  };
  manual_seed(2);
  auto net = graph::repeat([] { return ResBlock(32, 0.0); }, 64, ck::sqrt{});
  auto bytes = net.block_bytes(shape);
  const int64_t one = 64 * 32 * 4;
  CHECK(bytes.output == one);
  CHECK(bytes.activation >= 3 * one);  // fc1 output, relu output, fc2 output, the sum, ...
  CHECK(bytes.activation <= 8 * one);
  auto planned = net.memory_plan(shape);
  CHECK(planned.num_segments() == 8);
  CHECK(planned.kept_bytes == 8 * one);
  CHECK(planned.segment_bytes == 8 * bytes.activation);
  net.set_policy(ck::none{});
  CHECK(net.memory_plan(shape).planned_bytes() == 64 * bytes.activation);

  const int64_t eager = peak_of_step(ck::none{}, 64), sqrt = peak_of_step(ck::sqrt{}, 64);
  MESSAGE("peak of a step, depth 64: none ", eager, " B, sqrt ", sqrt, " B; planned none ", 64 * bytes.activation,
          ", sqrt ", planned.planned_bytes());
  CHECK(eager >= 64 * bytes.activation);
  CHECK(sqrt * 3 < eager);
  CHECK(sqrt < 2 * planned.planned_bytes() + 8 * one);
}

namespace {
// Counts its forward passes.
struct CountBlock : nn::Module {
  nn::Dense fc{4, 4};
  int* calls;
  explicit CountBlock(int* c) : calls(c) { register_module("fc", &CountBlock::fc); }
  NDArray<float> operator()(const NDArray<float>& x) {
    ++*calls;
    return x + fc(x);
  }
};
}  // namespace

TEST_CASE("repeat: the last segment runs with the tape, the others are recomputed once") {
  int calls = 0;
  auto net = graph::repeat([&] { return CountBlock(&calls); }, 10);
  auto x = randn<float>({2, 4});
  auto forward_passes = [&](const ck::Policy& policy, bool recording) {
    net.set_policy(policy);
    calls = 0;
    NDArray<float> y;
    {
      autograd::record rec(recording);
      y = net(x);
    }
    if (recording) y.backward(ones<float>({2, 4}));
    return calls;
  };
  CHECK(forward_passes(ck::none{}, true) == 10);
  CHECK(forward_passes(ck::every{3}, true) == 10 + 9);  // segments 0-2, 3-5, 6-8 recomputed; block 9 not
  CHECK(forward_passes(ck::every{4}, true) == 10 + 8);  // 0-3, 4-7 recomputed; 8-9 not
  CHECK(forward_passes(ck::every{1}, true) == 10 + 9);
  CHECK(forward_passes(ck::every{20}, true) == 10);     // one segment: nothing recomputed
  CHECK(forward_passes(ck::sqrt{}, false) == 10);       // no tape: no checkpointing
}

namespace {
struct Shrink : nn::Module {
  nn::Dense fc{4, 3};
  Shrink() { register_module("fc", &Shrink::fc); }
  template <class X>
  NDArray<float> operator()(const X& x) { return fc(x); }
};
}  // namespace

TEST_CASE("repeat: errors") {
  auto net = graph::repeat([] { return Shrink(); }, 2);
  CHECK(message_of<ShapeError>([&] { net(ones<float>({2, 4})); })
            .find("repeat: block 0 maps (2, 4) to (2, 3); repeated blocks must keep the shape") != std::string::npos);
  CHECK(message_of<ValueError>([] { graph::repeat([] { return Shrink(); }, -1); })
            .find("repeat: number of blocks must be non-negative, got -1") != std::string::npos);
  auto empty = graph::repeat([] { return Shrink(); }, 0, ck::sqrt{});
  auto x = ones<float>({2, 4});
  CHECK(array_equal(empty(x), x));
  CHECK(empty.memory_plan(Shape{2, 4}).planned_bytes() == 0);
  CHECK(message_of<ValueError>([&] { empty.block_bytes(Shape{2, 4}); }).find("needs at least one block") != std::string::npos);
}
