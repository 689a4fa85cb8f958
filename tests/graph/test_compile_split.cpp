// graph/compile.hpp's batch-parallel training step: a batch-separable graph (graph/sym.hpp's
// per_sample / batch_loss) runs forward_backward as one slice of the batch per thread. Its loss,
// parameter gradients (grad_req write and add) and logits match the unsplit step and eager
// autograd; graphs that mix samples (batch_norm in training, dropout) are not split; later steps
// allocate nothing.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "dl/dl.hpp"
#include "dl/graph/compile.hpp"

using namespace dl;

namespace {

struct Threads {
  int saved = num_threads();
  explicit Threads(int n) { set_num_threads(n); }
  ~Threads() { set_num_threads(saved); }
};

struct Mlp : nn::Module {
  nn::Dense fc1, fc2;
  // Narrow: its slices' activations outweigh its parameters (else the step is not split).
  explicit Mlp(Generator& gen, int64_t hidden = 6) : fc1(12, hidden, true, gen), fc2(hidden, 5, true, gen) {
    register_module("fc1", &Mlp::fc1);
    register_module("fc2", &Mlp::fc2);
  }
  template <class X> auto forward(const X& x) { return fc2(dl::tanh(fc1(x))); }
};

struct LeNet : nn::Module {
  nn::Conv2d conv1, conv2;
  nn::MaxPool2d pool{2};
  nn::Flatten flat;
  nn::Dense fc1, fc2;
  explicit LeNet(Generator& gen)
      : conv1(1, 3, 3, Conv2dOptions{.padding = {1, 1}}, true, gen), conv2(3, 4, 3, Conv2dOptions{}, true, gen),
        fc1(4 * 2 * 2, 12, true, gen), fc2(12, 6, true, gen) {
    register_module("conv1", &LeNet::conv1);
    register_module("conv2", &LeNet::conv2);
    register_module("fc1", &LeNet::fc1);
    register_module("fc2", &LeNet::fc2);
  }
  template <class X> auto forward(const X& x) {
    auto h = pool(dl::relu(conv2(pool(dl::relu(conv1(x))))));  // (N, 1, 12, 12) -> (N, 4, 2, 2)
    return fc2(dl::relu(fc1(flat(h))));
  }
};

NDArray<float> random_input(Shape s, uint64_t seed) {
  Generator gen(seed);
  NDArray<float> x(s);
  nn::init::uniform(x, -1.0, 1.0, gen);
  return x;
}
NDArray<int64_t> random_labels(int64_t n, int64_t classes, uint64_t seed) {
  NDArray<int64_t> y(Shape{n});
  for (int64_t i = 0; i < n; ++i)
    y.data()[i] = static_cast<int64_t>((static_cast<uint64_t>(i) * 7 + seed) % static_cast<uint64_t>(classes));
  return y;
}
std::vector<std::vector<float>> grads_of(const nn::Module& m) {
  std::vector<std::vector<float>> out;
  for (auto& [name, p] : m.named_parameters()) out.push_back(p.grad().to_vector());
  return out;
}
void check_all_close(const std::vector<std::vector<float>>& actual, const std::vector<std::vector<float>>& expected,
                     double tol) {
  REQUIRE(actual.size() == expected.size());
  for (size_t k = 0; k < expected.size(); ++k) {
    REQUIRE(actual[k].size() == expected[k].size());
    for (size_t i = 0; i < expected[k].size(); ++i)
      CHECK(actual[k][i] == doctest::Approx(expected[k][i]).epsilon(tol).scale(1.0));
  }
}

// The loss and parameter gradients of one step: eager, compiled unsplit (1 thread), compiled with
// `threads`; returns the compiled step's plan report.
struct StepResult {
  float loss;
  std::vector<std::vector<float>> grads;
};
template <class Net, class Loss, class Target>
graph::PlanReport compare_step(Net& net, Loss loss_fn, const NDArray<float>& x, const Target& y, int threads) {
  net.zero_grad();
  float eager_loss;
  {
    autograd::record rec;
    auto loss = loss_fn(net.forward(x), y);
    loss.backward();
    eager_loss = loss.item();
  }
  auto eager = grads_of(net);
  auto step = graph::compile([&](auto a, auto b) { return loss_fn(net.forward(a), b); });
  net.zero_grad();
  float unsplit_loss;
  {
    Threads one(1);
    unsplit_loss = step.forward_backward(x, y).item();
    CHECK(step.plan_report().batch_split == 0);
  }
  auto unsplit = grads_of(net);
  net.zero_grad();
  Threads t(threads);
  float split_loss = step.forward_backward(x, y).item();
  auto split = grads_of(net);
  CHECK(split_loss == doctest::Approx(unsplit_loss).epsilon(1e-6));
  CHECK(split_loss == doctest::Approx(eager_loss).epsilon(1e-5));
  check_all_close(split, unsplit, 1e-5);
  check_all_close(split, eager, 1e-4);
  return step.plan_report();
}

auto ce_loss = [](const auto& logits, const auto& labels) { return dl::cross_entropy(logits, labels); };
auto mse_loss = [](const auto& pred, const auto& target) { return dl::mse(pred, target); };
auto nll_sum_loss = [](const auto& logits, const auto& labels) {
  return dl::nll(dl::log_softmax(logits), labels, Reduction::sum);
};

}  // namespace

TEST_CASE("compile split: the trait lists per-sample graphs up to a mean or sum loss") {
  using X = graph::Input<float, 2, 0>;
  using Img = graph::Input<float, 4, 0>;
  using Y = graph::Input<int64_t, 1, 1>;
  using Hidden = UnaryExpr<prim::Relu, graph::MatmulNode<X>>;
  using Conv = graph::FlattenNode<graph::Pool2dNode<graph::Conv2dNode<Img>, true>>;
  static_assert(graph::is_batch_separable_v<graph::CrossEntropyNode<graph::MatmulNode<Hidden>, Y>>);
  static_assert(graph::is_batch_separable_v<graph::CrossEntropyNode<graph::MatmulNode<Conv>, Y>>);
  static_assert(graph::is_batch_separable_v<graph::PointwiseLossNode<graph::MseFormula, graph::MatmulNode<X>, X>>);
  static_assert(graph::is_batch_separable_v<graph::NllNode<graph::SoftmaxNode<X, true>, Y>>);
  // Not: no loss at the root, labels that are not sliced, batch statistics, dropout, a constant target.
  static_assert(!graph::is_batch_separable_v<graph::MatmulNode<X>>);
  static_assert(!graph::is_batch_separable_v<graph::CrossEntropyNode<graph::MatmulNode<X>, NDArray<int64_t>>>);
  static_assert(!graph::is_batch_separable_v<graph::CrossEntropyNode<graph::BatchNormNode<X>, Y>>);
  static_assert(!graph::is_batch_separable_v<graph::CrossEntropyNode<graph::DropoutNode<X>, Y>>);
  static_assert(
      !graph::is_batch_separable_v<graph::PointwiseLossNode<graph::MseFormula, graph::MatmulNode<X>, NDArray<float>>>);
  // Runtime attributes: softmax over axis 0 mixes samples.
  CHECK(graph::per_sample<graph::SoftmaxNode<X, true>>::ok(graph::SoftmaxNode<X, true>{X{}, -1}));
  CHECK_FALSE(graph::per_sample<graph::SoftmaxNode<X, true>>::ok(graph::SoftmaxNode<X, true>{X{}, 0}));
  CHECK_FALSE(graph::per_sample<graph::SoftmaxNode<X, true>>::ok(graph::SoftmaxNode<X, true>{X{}, -2}));
}

TEST_CASE("compile split: LeNet and MLP steps match the unsplit step and eager, odd batches included") {
  for (int threads : {2, 3}) {
    for (int64_t batch : {int64_t{16}, int64_t{33}, int64_t{50}}) {
      CAPTURE(threads);
      CAPTURE(batch);
      Generator gen(5 + static_cast<uint64_t>(batch));
      LeNet lenet(gen);
      auto x = random_input(Shape{batch, 1, 12, 12}, 7);
      auto y = random_labels(batch, 6, 3);
      auto r = compare_step(lenet, ce_loss, x, y, threads);
      const int want = static_cast<int>(std::min<int64_t>(threads, batch / 8));
      CHECK(r.batch_split == want);
      REQUIRE(r.slice_rows.size() == static_cast<size_t>(want));
      int64_t rows = 0, bytes = 0;
      for (size_t i = 0; i < r.slice_rows.size(); ++i) {
        rows += r.slice_rows[i];
        bytes += r.slice_bytes[i];
        CHECK(r.slice_rows[i] >= batch / want);
      }
      CHECK(rows == batch);
      CHECK(bytes == r.bytes_planned);
      CHECK(r.str().find("batch split: " + std::to_string(want) + " slices") != std::string::npos);

      Mlp mlp(gen);
      auto xm = random_input(Shape{batch, 12}, 8);
      auto target = random_input(Shape{batch, 5}, 9);
      CHECK(compare_step(mlp, mse_loss, xm, target, threads).batch_split == want);
    }
  }
}

TEST_CASE("compile split: nll of log_softmax with a sum reduction (slice weights 1)") {
  Generator gen(4);
  Mlp mlp(gen);
  auto x = random_input(Shape{27, 12}, 3);
  auto y = random_labels(27, 5, 2);
  CHECK(compare_step(mlp, nll_sum_loss, x, y, 3).batch_split == 3);
}

TEST_CASE("compile split: inputs of different batch sizes run unsplit and fail as the unsplit step does") {
  Threads t(2);
  Generator gen(9);
  Mlp mlp(gen);
  auto step = graph::compile([&](auto a, auto b) { return dl::cross_entropy(mlp.forward(a), b); });
  CHECK_THROWS_WITH_AS(step.forward_backward(random_input(Shape{32, 12}, 1), random_labels(30, 5, 1)),
                       doctest::Contains("cross_entropy: labels of shape (30,) do not match logits of shape (32, 5)"),
                       ShapeError);
}

TEST_CASE("compile split: small batches and one thread run unsplit and still match") {
  Generator gen(3);
  Mlp mlp(gen);
  for (int64_t batch : {int64_t{2}, int64_t{7}, int64_t{15}}) {
    CAPTURE(batch);
    auto x = random_input(Shape{batch, 12}, 8);
    auto y = random_labels(batch, 5, 1);
    auto r = compare_step(mlp, ce_loss, x, y, 3);
    CHECK(r.batch_split == 0);
    CHECK(r.batch_split_note.find("rows per thread") != std::string::npos);
  }
}

TEST_CASE("compile split: parameters that outweigh a slice's activations keep the step unsplit") {
  Generator gen(7);
  Mlp wide(gen, 256);  // 4.4k parameters, 8-row slices: each slice would re-read them all
  auto x = random_input(Shape{16, 12}, 8);
  auto y = random_labels(16, 5, 1);
  auto r = compare_step(wide, ce_loss, x, y, 2);
  CHECK(r.batch_split == 0);
  CHECK(r.batch_split_note.find("smaller than the parameters") != std::string::npos);
}

TEST_CASE("compile split: grad_req add accumulates across two split steps") {
  Threads t(2);
  Generator gen(11);
  LeNet net(gen);
  auto x = random_input(Shape{20, 1, 12, 12}, 4);
  auto y = random_labels(20, 6, 2);
  for (auto& p : net.parameters()) p.set_grad_req(autograd::GradReq::add);
  net.zero_grad();
  {
    autograd::record rec;
    auto loss = dl::cross_entropy(net.forward(x), y);
    loss.backward();
  }
  auto once = grads_of(net);
  net.zero_grad();
  auto step = graph::compile([&](auto a, auto b) { return dl::cross_entropy(net.forward(a), b); });
  step.forward_backward(x, y);
  step.forward_backward(x, y);
  CHECK(step.plan_report().batch_split == 2);
  auto twice = grads_of(net);
  for (auto& g : once)
    for (auto& v : g) v *= 2;
  check_all_close(twice, once, 1e-4);
}

TEST_CASE("compile split: logits() returns the whole batch's logits") {
  Threads t(3);
  Generator gen(13);
  LeNet net(gen);
  auto x = random_input(Shape{29, 1, 12, 12}, 6);
  auto y = random_labels(29, 6, 5);
  auto step = graph::compile([&](auto a, auto b) { return dl::cross_entropy(net.forward(a), b); });
  step.forward_backward(x, y);
  CHECK(step.plan_report().batch_split == 3);
  auto logits = step.logits();
  NDArray<float> eager = net.forward(x);
  REQUIRE(logits.shape() == eager.shape());
  check_all_close({logits.to_vector()}, {eager.to_vector()}, 1e-5);
  // The next step's logits, after the parameters changed.
  {
    autograd::pause no_tape;
    for (auto& p : net.parameters()) p -= p.grad() * 0.5f;
  }
  step.forward_backward(x, y);
  NDArray<float> eager2 = net.forward(x);
  check_all_close({step.logits().to_vector()}, {eager2.to_vector()}, 1e-5);
}

TEST_CASE("compile split: batch_norm in training and dropout are not split and match eager") {
  Threads t(2);
  Generator gen(17), drop_gen(23);
  auto x = random_input(Shape{32, 12}, 2);
  auto y = random_labels(32, 4, 1);
  SUBCASE("batch_norm") {
    nn::Dense fc(12, 4, true, gen);
    NDArray<float> gamma = random_input(Shape{4}, 5), beta = random_input(Shape{4}, 6);
    NDArray<float> running_mean(Shape{4}), running_var(Shape{4});
    running_mean.assign(0.0f);
    running_var.assign(1.0f);
    auto model = [&](const auto& a) { return dl::batch_norm(fc(a), gamma, beta, running_mean, running_var, true); };
    float eager_loss;
    {
      autograd::record rec;
      auto loss = dl::cross_entropy(model(x), y);
      loss.backward();
      eager_loss = loss.item();
    }
    auto eager = fc.weight.grad().to_vector();
    fc.zero_grad();
    auto step = graph::compile([&](auto a, auto b) { return dl::cross_entropy(model(a), b); });
    CHECK(step.forward_backward(x, y).item() == doctest::Approx(eager_loss).epsilon(1e-5));
    check_all_close({fc.weight.grad().to_vector()}, {eager}, 1e-4);
    CHECK(step.plan_report().batch_split == 0);
    CHECK(step.plan_report().str().find("not batch-separable") != std::string::npos);
  }
  SUBCASE("dropout") {
    nn::Dense fc(12, 4, true, gen);
    nn::Dropout drop(0.3, drop_gen);
    auto model = [&](const auto& a) { return drop(fc(a)); };
    auto start = drop_gen.state();
    float eager_loss;
    {
      autograd::record rec;
      auto loss = dl::cross_entropy(model(x), y);
      loss.backward();
      eager_loss = loss.item();
    }
    auto eager = fc.weight.grad().to_vector();
    fc.zero_grad();
    drop_gen.set_state(start);
    auto step = graph::compile([&](auto a, auto b) { return dl::cross_entropy(model(a), b); });
    CHECK(step.forward_backward(x, y).item() == doctest::Approx(eager_loss).epsilon(1e-5));
    check_all_close({fc.weight.grad().to_vector()}, {eager}, 1e-4);
    CHECK(step.plan_report().batch_split == 0);
    CHECK(step.plan_report().batch_split_note.find("not batch-separable") != std::string::npos);
  }
}

TEST_CASE("compile split: a parameter spanning the batch axis keeps the step unsplit") {
  Threads t(2);
  Generator gen(19);
  nn::Dense fc(12, 4, true, gen);
  NDArray<float> col = random_input(Shape{24, 1}, 3);  // one scale per row: not per-sample
  col.attach_grad();
  auto x = random_input(Shape{24, 12}, 4);
  auto y = random_labels(24, 4, 2);
  auto model = [&](const auto& a) { return fc(a) * col; };
  {
    autograd::record rec;
    dl::cross_entropy(model(x), y).backward();
  }
  auto eager = col.grad().to_vector();
  col.grad().assign(0.0f);
  auto step = graph::compile([&](auto a, auto b) { return dl::cross_entropy(model(a), b); });
  step.forward_backward(x, y);
  CHECK(step.plan_report().batch_split == 0);
  CHECK(step.plan_report().batch_split_note.find("batch axis") != std::string::npos);
  check_all_close({col.grad().to_vector()}, {eager}, 1e-4);
  step.forward_backward(x, y);  // the refusal is remembered: still unsplit, still right
  check_all_close({col.grad().to_vector()}, {eager}, 1e-4);
}

TEST_CASE("compile split: the second split step allocates nothing and repeats bit for bit") {
  Threads t(2);
  Generator gen(29);
  Mlp net(gen);
  auto x = random_input(Shape{40, 12}, 5);
  auto y = random_labels(40, 5, 4);
  auto step = graph::compile([&](auto a, auto b) { return dl::cross_entropy(net.forward(a), b); });
  float first = step.forward_backward(x, y).item();
  auto grads = grads_of(net);
  CHECK(step.plan_report().batch_split == 2);
  auto before = cpu_allocator().stats();
  for (int i = 0; i < 3; ++i) CHECK(step.forward_backward(x, y).item() == first);
  auto after = cpu_allocator().stats();
  CHECK(after.num_requests == before.num_requests);
  CHECK(after.bytes_in_use == before.bytes_in_use);
  CHECK(grads_of(net) == grads);
  // LeNet's conv kernels take scratch blocks each call: in a split step from the slice's own
  // cpu::ScratchCache (kept by the step), so later steps ask the allocator for nothing, whether
  // the slices ran one after the other or side by side (the shared pool would need a second
  // block of a size the first time they overlap).
  LeNet lenet(gen);
  auto xi = random_input(Shape{24, 1, 12, 12}, 6);
  auto yi = random_labels(24, 6, 2);
  auto lstep = graph::compile([&](auto a, auto b) { return dl::cross_entropy(lenet.forward(a), b); });
  lstep.forward_backward(xi, yi);
  CHECK(lstep.plan_report().batch_split == 2);
  before = cpu_allocator().stats();
  for (int i = 0; i < 3; ++i) lstep.forward_backward(xi, yi);
  CHECK(cpu_allocator().stats().num_requests == before.num_requests);
  CHECK(cpu_allocator().stats().bytes_in_use == before.bytes_in_use);
  CHECK(cpu_allocator().stats().num_system_allocs == before.num_system_allocs);
}
