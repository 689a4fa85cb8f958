// graph/compile.hpp: a compiled MLP matches eager autograd (loss and every parameter gradient),
// later steps allocate nothing, the plan report's figures, a compiled graph as one tape node
// inside eager code, and the errors for mismatched shapes.
#include <doctest/doctest.h>

#include <cmath>
#include <sstream>
#include <vector>

#include "dl/dl.hpp"
#include "dl/graph/compile.hpp"
#include "support/graph_fixtures.hpp"

// Before `using namespace dl`: operators on a bare symbol must be found by argument-dependent lookup.
static dl::NDArray<float> affine_outside_namespace_dl(const dl::NDArray<float>& x) {
  auto f = dl::graph::compile([](auto s) { return (s - 1.0f) / 2.0f * s + (-s); });
  return f.forward(x).clone();
}

using namespace dl;
using dl_test::check_all_close;
using dl_test::check_close;
using dl_test::grads_of;
using dl_test::random_input;
using dl_test::random_labels;

namespace {

struct Mlp : nn::Module {
  nn::Dense fc1, fc2, fc3;
  Mlp(int64_t in, int64_t h1, int64_t h2, int64_t out, Generator& gen)
      : fc1(in, h1, true, gen), fc2(h1, h2, true, gen), fc3(h2, out, true, gen) {
    register_module("fc1", &Mlp::fc1);
    register_module("fc2", &Mlp::fc2);
    register_module("fc3", &Mlp::fc3);
  }
  template <class X> auto forward(const X& x) { return fc3(dl::tanh(fc2(dl::relu(fc1(x))))); }
};

// LeNet-5's layout, written once for both modes.
struct LeNet : nn::Module {
  nn::Conv2d conv1, conv2;
  nn::MaxPool2d pool{2};
  nn::AvgPool2d avg{std::array<int64_t, 2>{2, 2}};
  nn::Flatten flat;
  nn::Dense fc1, fc2;
  explicit LeNet(Generator& gen)
      : conv1(1, 4, 5, Conv2dOptions{.padding = {2, 2}}, true, gen), conv2(4, 6, 5, Conv2dOptions{}, true, gen),
        fc1(6 * 5 * 5, 32, true, gen), fc2(32, 10, true, gen) {
    register_module("conv1", &LeNet::conv1);
    register_module("conv2", &LeNet::conv2);
    register_module("fc1", &LeNet::fc1);
    register_module("fc2", &LeNet::fc2);
  }
  template <class X> auto forward(const X& x) {
    auto h = pool(dl::relu(conv1(x)));
    auto h2 = avg(dl::relu(conv2(h)));
    return fc2(dl::relu(fc1(flat(h2))));
  }
};

// fc1's output feeds two consumers: the compiled graph computes it once.
struct Shortcut : nn::Module {
  nn::Dense fc1, fc2, fc3;
  explicit Shortcut(Generator& gen) : fc1(8, 6, true, gen), fc2(6, 6, true, gen), fc3(6, 4, true, gen) {
    register_module("fc1", &Shortcut::fc1);
    register_module("fc2", &Shortcut::fc2);
    register_module("fc3", &Shortcut::fc3);
  }
  template <class X> auto forward(const X& x) {
    auto h = dl::relu(fc1(x));
    auto g = fc2(h);
    return fc3(dl::tanh(g) + h * g);  // fc2's output is used twice too
  }
};

// One eager step: cross_entropy(logits(), labels) recorded and differentiated; returns the loss.
template <class Logits>
float eager_backward(Logits&& logits, const NDArray<int64_t>& labels) {
  autograd::record rec;
  auto loss = dl::cross_entropy(logits(), labels);
  loss.backward();
  return loss.item();
}

}  // namespace

TEST_CASE("compile: an MLP's loss and gradients match eager autograd, over several steps and shapes") {
  for (int64_t batch : {1, 7, 32}) {
    CAPTURE(batch);
    Generator gen(42 + static_cast<uint64_t>(batch));
    Mlp net(20, 16, 12, 5, gen);
    auto step = graph::compile([&](auto x, auto y) { return dl::cross_entropy(net.forward(x), y); });
    for (int it = 0; it < 3; ++it) {
      auto x = random_input(Shape{batch, 20}, 100 + static_cast<uint64_t>(it));
      auto y = random_labels(batch, 5, static_cast<uint64_t>(it));
      net.zero_grad();
      float eager_loss = eager_backward([&] { return net.forward(x); }, y);
      auto eager = grads_of(net);
      net.zero_grad();
      float compiled_loss = step.forward_backward(x, y).item();
      auto compiled = grads_of(net);
      CHECK(compiled_loss == doctest::Approx(eager_loss).epsilon(1e-5));
      REQUIRE(compiled.size() == 6);
      check_all_close(compiled, eager, 1e-4);
      // Parameters change between steps (as an optimizer would, in place).
      autograd::pause no_tape;
      for (auto& p : net.parameters()) p -= p.grad() * 0.1f;
    }
  }
}

TEST_CASE("compile: broadcast parameters inside a fused region get summed gradients (random shapes)") {
  for (uint64_t seed = 0; seed < 6; ++seed) {
    CAPTURE(seed);
    Generator gen(seed);
    const int64_t batch = 1 + static_cast<int64_t>(seed * 5 % 9), in = 3 + static_cast<int64_t>(seed % 4),
                  classes = 2 + static_cast<int64_t>(seed % 3);
    nn::Dense fc(in, classes, seed % 2 == 0, gen);
    NDArray<float> row = random_input(Shape{1, classes}, 10 + seed), shift = random_input(Shape{classes}, 20 + seed),
                   col = random_input(Shape{batch, 1}, 30 + seed);
    for (auto* p : {&row, &shift, &col}) p->attach_grad();
    auto model = [&](const auto& x) { return (dl::tanh(fc(x)) * row + shift) * col - 0.5f * shift; };
    auto x = random_input(Shape{batch, in}, 40 + seed);
    auto y = random_labels(batch, classes, seed);
    std::vector<NDArray<float>> params{row, shift, col, fc.weight};
    auto grads = [&] {
      std::vector<std::vector<float>> g;
      for (auto& p : params) g.push_back(p.grad().to_vector());
      return g;
    };
    float eager_loss = eager_backward([&] { return model(x); }, y);
    auto eager = grads();
    auto step = graph::compile([&](auto a, auto b) { return dl::cross_entropy(model(a), b); });
    CHECK(step.forward_backward(x, y).item() == doctest::Approx(eager_loss).epsilon(1e-5));
    auto compiled = grads();
    check_all_close(compiled, eager, 1e-4);
  }
}

TEST_CASE("compile: dropout draws the same masks as eager from the same generator state") {
  Generator gen(31), drop_gen(99);
  nn::Sequential net{nn::Dense(10, 16, true, gen), nn::ReLU(), nn::Dropout(0.4, drop_gen), nn::Dense(16, 4, true, gen)};
  auto x = random_input(Shape{6, 10}, 5);
  auto y = random_labels(6, 4, 2);
  auto step = graph::compile([&](auto a, auto b) { return dl::cross_entropy(net(a), b); });
  for (int it = 0; it < 2; ++it) {
    auto start = drop_gen.state();
    float eager_loss = eager_backward([&] { return net(x); }, y);
    auto eager = grads_of(net);
    auto after_eager = drop_gen.state();
    drop_gen.set_state(start);
    CHECK(step.forward_backward(x, y).item() == doctest::Approx(eager_loss).epsilon(1e-5));
    CHECK(drop_gen.state().offset == after_eager.offset);  // the stream advances alike
    auto compiled = grads_of(net);
    check_all_close(compiled, eager, 1e-4);
  }
  CHECK(step.plan_report().op_nodes == 4);  // two dense, dropout, cross_entropy
  net.eval();  // traced in eval mode: the identity
  auto infer = graph::compile([&](auto a) { return net(a); });
  NDArray<float> eager_logits = net(x);
  check_close(infer.forward(x).to_vector(), eager_logits.to_vector(), 1e-5);
}

TEST_CASE("compile: a LeNet (conv2d, max/avg pooling, flatten) matches eager autograd") {
  Generator gen(21);
  LeNet net(gen);
  auto step = graph::compile([&](auto x, auto y) { return dl::cross_entropy(net.forward(x), y); });
  for (int it = 0; it < 2; ++it) {
    auto x = random_input(Shape{3, 1, 28, 28}, 50 + static_cast<uint64_t>(it));
    auto y = random_labels(3, 10, static_cast<uint64_t>(it));
    net.zero_grad();
    float eager_loss = eager_backward([&] { return net.forward(x); }, y);
    auto eager = grads_of(net);
    net.zero_grad();
    CHECK(step.forward_backward(x, y).item() == doctest::Approx(eager_loss).epsilon(1e-5));
    auto compiled = grads_of(net);
    REQUIRE(compiled.size() == 8);
    check_all_close(compiled, eager, 1e-3);
  }
  // The conv kernels take their im2col scratch from the allocator's pool: no system allocation.
  auto x = random_input(Shape{3, 1, 28, 28}, 7);
  auto y = random_labels(3, 10, 1);
  step.forward_backward(x, y);
  auto before = cpu_allocator().stats();
  step.forward_backward(x, y);
  CHECK(cpu_allocator().stats().num_system_allocs == before.num_system_allocs);
  CHECK(cpu_allocator().stats().bytes_in_use == before.bytes_in_use);
}

TEST_CASE("compile: a node used twice is computed once and its gradients are summed") {
  Generator gen(17);
  Shortcut net(gen);
  auto x = random_input(Shape{5, 8}, 4);
  auto y = random_labels(5, 4, 3);
  net.zero_grad();
  float eager_loss = eager_backward([&] { return net.forward(x); }, y);
  auto eager = grads_of(net);
  auto step = graph::compile([&](auto a, auto b) { return dl::cross_entropy(net.forward(a), b); });
  for (int it = 0; it < 2; ++it) {
    net.zero_grad();
    CHECK(step.forward_backward(x, y).item() == doctest::Approx(eager_loss).epsilon(1e-5));
    auto compiled = grads_of(net);
    check_all_close(compiled, eager, 1e-4);
  }
  auto r = step.plan_report();
  CHECK(r.op_nodes == 4);     // fc1, fc2, fc3, cross_entropy: each once
  CHECK(r.shared_uses == 2);  // the second uses of fc1 and fc2 (in the sum)
}

TEST_CASE("compile: BasicBlocks (batch norm, identity and projection shortcuts) match eager") {
  Generator gen(23);
  nn::Sequential net{nn::Conv2d(2, 4, 3, 1, 1, true, gen), nn::BasicBlock(4, 4, 1, gen), nn::BasicBlock(4, 6, 2, gen),
                     nn::Flatten(), nn::Dense(6 * 3 * 3, 3, true, gen)};
  auto x = random_input(Shape{4, 2, 6, 6}, 8);
  auto y = random_labels(4, 3, 1);
  auto run_eager = [&] {
    net.zero_grad();
    return eager_backward([&] { return net(x); }, y);
  };
  auto bn_state = [&] { return net.get<1>().bn1.running_mean.to_vector(); };
  auto state0 = nn::clone(net).state_dict();
  float eager_loss = run_eager();
  auto eager = grads_of(net);
  auto eager_running = bn_state();
  net.load_state_dict(state0);  // the running statistics back to where they were
  auto step = graph::compile([&](auto a, auto b) { return dl::cross_entropy(net(a), b); });
  net.zero_grad();
  CHECK(step.forward_backward(x, y).item() == doctest::Approx(eager_loss).epsilon(1e-5));
  auto compiled = grads_of(net);
  REQUIRE(compiled.size() == eager.size());
  check_all_close(compiled, eager, 1e-3);
  check_close(bn_state(), eager_running, 1e-5);  // running statistics updated once, as eagerly
  // Eval mode (traced after net.eval()): running statistics, no update.
  net.eval();
  auto infer = graph::compile([&](auto a) { return net(a); });
  NDArray<float> eager_logits = net(x);
  check_close(infer.forward(x).to_vector(), eager_logits.to_vector(), 1e-4);
  check_close(bn_state(), eager_running, 1e-5);
}

TEST_CASE("compile: a Sequential with ReLU and Flatten modules runs unchanged on symbols") {
  Generator gen(3);
  nn::Sequential net{nn::Flatten(), nn::Dense(12, 8, true, gen), nn::ReLU(), nn::Dense(8, 4, true, gen)};
  auto x = random_input(Shape{6, 3, 4}, 9);
  auto y = random_labels(6, 4, 1);
  auto step = graph::compile([&](auto a, auto b) { return dl::cross_entropy(net(a), b); });
  dl_test::check_step_matches_eager(net, [&](const auto& a) { return net.forward(a); }, step, x, y, 1e-5, 1e-4);
  // Inference: the same logits as eager.
  auto infer = graph::compile([&](auto a) { return net(a); });
  NDArray<float> logits = net(x);
  check_close(infer.forward(x).to_vector(), logits.to_vector(), 1e-5);
}

TEST_CASE("compile: gradients follow grad_req (add accumulates across steps, null skips)") {
  Generator gen(5);
  Mlp net(10, 8, 8, 3, gen);
  auto x = random_input(Shape{4, 10}, 1);
  auto y = random_labels(4, 3, 2);
  auto step = graph::compile([&](auto a, auto b) { return dl::cross_entropy(net.forward(a), b); });
  net.zero_grad();
  step.forward_backward(x, y);
  auto once = net.fc1.weight.grad().to_vector();
  net.fc1.weight.set_grad_req(autograd::GradReq::add);
  net.fc3.bias.set_grad_req(autograd::GradReq::null);
  net.fc3.bias.grad().assign(0.0f);
  // The same graph notices the changed settings and plans again.
  step.forward_backward(x, y);
  step.forward_backward(x, y);
  auto twice = net.fc1.weight.grad().to_vector();
  for (size_t i = 0; i < once.size(); ++i) CHECK(twice[i] == doctest::Approx(3 * once[i]).epsilon(1e-4).scale(1.0));
  for (float v : net.fc3.bias.grad().to_vector()) CHECK(v == 0.0f);
  // Nothing to differentiate: forward_backward says so; under record no tape node is made.
  for (auto& p : net.parameters()) p.set_grad_req(autograd::GradReq::null);
  CHECK_THROWS_WITH_AS(step.forward_backward(x, y), doctest::Contains("compile: nothing to differentiate"),
                       AutogradError);
  auto logits = graph::compile([&](auto a) { return net.forward(a); });
  autograd::record rec;
  CHECK_FALSE(logits(x).tracks_grad());
}

TEST_CASE("compile: the second step with the same shapes allocates nothing") {
  Generator gen(7);
  Mlp net(64, 32, 32, 10, gen);
  auto x = random_input(Shape{16, 64}, 3);
  auto y = random_labels(16, 10, 4);
  auto step = graph::compile([&](auto a, auto b) { return dl::cross_entropy(net.forward(a), b); });
  step.forward_backward(x, y);  // binds shapes, allocates the plan
  auto before = cpu_allocator().stats();
  for (int i = 0; i < 3; ++i) step.forward_backward(x, y);
  auto after = cpu_allocator().stats();
  CHECK(after.num_requests == before.num_requests);
  CHECK(after.bytes_in_use == before.bytes_in_use);
  // A new batch size re-plans once, then again allocates nothing.
  auto x2 = random_input(Shape{5, 64}, 4);
  auto y2 = random_labels(5, 10, 5);
  step.forward_backward(x2, y2);
  CHECK(dl_test::allocations_during([&] { step.forward_backward(x2, y2); }) == 0);
  // Inference too.
  auto infer = graph::compile([&](auto a) { return net.forward(a); });
  infer.forward(x);
  CHECK(dl_test::allocations_during([&] { infer.forward(x); }) == 0);
}

TEST_CASE("compile: plan_report counts nodes, fused kernels and planned bytes") {
  Generator gen(9);
  Mlp net(784, 256, 128, 10, gen);
  auto x = random_input(Shape{32, 784}, 3);
  auto y = random_labels(32, 10, 4);
  auto step = graph::compile([&](auto a, auto b) { return dl::cross_entropy(net.forward(a), b); });
  CHECK_THROWS_WITH_AS(step.plan_report(), doctest::Contains("plan_report: the graph has not run yet"), ValueError);
  step.forward_backward(x, y);
  auto r = step.plan_report();
  CHECK(r.training);
  CHECK(r.op_nodes == 4);            // 3 dense + cross_entropy
  CHECK(r.elementwise_nodes == 2);   // relu, tanh
  CHECK(r.fused_kernels == 2);
  CHECK(r.gemm_epilogues == 5);     // 3 biases + relu and tanh as activation epilogues
  CHECK(r.recomputed_nodes == 0);   // the epilogues' backward reads their saved outputs
  CHECK(r.bytes_planned < r.bytes_unplanned);
  CHECK(r.slots < r.buffers);
  std::ostringstream os;
  os << r;
  CHECK(os.str().find("bytes planned vs") != std::string::npos);
  // With planning off every buffer has its own memory.
  auto unplanned = graph::compile([&](auto a, auto b) { return dl::cross_entropy(net.forward(a), b); },
                                  graph::CompileOptions{.memory_plan = false});
  unplanned.forward_backward(x, y);
  CHECK(unplanned.plan_report().bytes_planned == r.bytes_unplanned);
  // Inference plans need less than training plans.
  auto infer = graph::compile([&](auto a) { return net.forward(a); });
  infer.forward(x);
  CHECK(infer.plan_report().bytes_planned < r.bytes_planned);
  CHECK_FALSE(infer.plan_report().training);
}

TEST_CASE("compile: inside autograd::record a compiled graph is one tape node") {
  Generator gen(11);
  Mlp net(6, 8, 8, 4, gen);
  nn::Dense head(4, 3, true, gen);
  auto x0 = random_input(Shape{5, 6}, 2);
  x0.attach_grad();
  auto body = graph::compile([&](auto a) { return net.forward(a); });
  auto run = [&](bool compiled) {
    net.zero_grad();
    head.zero_grad();
    x0.grad().assign(0.0f);
    autograd::record rec;
    NDArray<float> x = x0 * 2.0f;  // eager code feeds the compiled graph
    NDArray<float> h = compiled ? body(x) : net.forward(x);
    auto loss = dl::mean(dl::square(head(h)));
    loss.backward();
    std::vector<std::vector<float>> g = grads_of(net);
    g.push_back(head.weight.grad().to_vector());
    g.push_back(x0.grad().to_vector());
    return std::make_pair(loss.item(), g);
  };
  auto [eager_loss, eager] = run(false);
  auto [compiled_loss, compiled] = run(true);
  CHECK(compiled_loss == doctest::Approx(eager_loss).epsilon(1e-5));
  REQUIRE(compiled.size() == eager.size());
  check_all_close(compiled, eager, 1e-4);
}

TEST_CASE("compile: shape mismatches name the op and the shapes") {
  Generator gen(13);
  Mlp net(20, 16, 12, 5, gen);
  auto step = graph::compile([&](auto x, auto y) { return dl::cross_entropy(net.forward(x), y); },
                             dl::sym<float, 2>("x"), dl::sym<int64_t, 1>("labels"));
  auto y = random_labels(8, 5, 0);
  CHECK_THROWS_WITH_AS(step.forward_backward(random_input(Shape{8, 19}, 1), y),
                       doctest::Contains("dense: input of shape (8, 19) does not match weight of shape (16, 20)"),
                       ShapeError);
  CHECK_THROWS_WITH_AS(step.forward_backward(random_input(Shape{8, 4, 5}, 1), y),
                       doctest::Contains("compile: input 0 ('x') must have rank 2, got shape (8, 4, 5)"), ShapeError);
  CHECK_THROWS_WITH_AS(step.forward_backward(random_input(Shape{8, 20}, 1), random_labels(7, 5, 0)),
                       doctest::Contains("cross_entropy: labels of shape (7,) do not match logits of shape (8, 5)"),
                       ShapeError);
  auto bad = random_labels(8, 5, 0);
  bad.data()[3] = 9;
  CHECK_THROWS_WITH_AS(step.forward_backward(random_input(Shape{8, 20}, 1), bad),
                       doctest::Contains("cross_entropy: label 9 at row 3 is out of range for 5 classes"), ValueError);
  // forward_backward needs a scalar loss.
  auto logits = graph::compile([&](auto x) { return net.forward(x); });
  CHECK_THROWS_WITH_AS(logits.forward_backward(random_input(Shape{8, 20}, 1)),
                       doctest::Contains("forward_backward: the output of shape (8, 5) is not a scalar loss"),
                       AutogradError);
  // A tape node whose plan ran again before its backward.
  auto x0 = random_input(Shape{8, 20}, 1);
  x0.attach_grad();
  NDArray<float> first, second;
  {
    autograd::record rec;
    first = dl::sum(logits(x0));
    second = dl::sum(logits(x0));
  }
  CHECK_THROWS_WITH_AS(first.backward(), doctest::Contains("compiled graph: it ran again before the backward"),
                       AutogradError);
  // After errors the graph still works.
  CHECK(std::isfinite(step.forward_backward(random_input(Shape{8, 20}, 1), y).item()));
}

TEST_CASE("compile: operators on bare symbols outside namespace dl") {
  auto x = rand<float>({3, 5});
  auto y = affine_outside_namespace_dl(x);
  REQUIRE(y.shape() == x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) {
    float v = x.data()[i];
    CHECK(y.data()[i] == doctest::Approx((v - 1.0f) / 2.0f * v - v));
  }
}
