// graph/exec.hpp's fusion paths: activation epilogues (relu, tanh, sigmoid, exp right after a
// dense or conv2d run inside that op's pass, and their backward reads the saved output), GEMMs cut
// into one block per thread, and a layer's input- and weight-gradient GEMMs run side by side.
// Every path is checked against eager autograd (loss and every gradient) at 1, 2 and 3 threads.
// Tolerance: 1e-4 relative (scale 1) for gradients, 1e-5 for losses: the GEMM blocks sum each
// dot product in the same order as eager's, but Eigen's cache blocking depends on the block's
// size, so sums may be reassociated (measured differences ~1e-7).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "dl/dl.hpp"
#include "dl/graph/compile.hpp"
#include "support/graph_fixtures.hpp"

using namespace dl;
using dl_test::check_close;
using dl_test::grads_of;
using dl_test::random_input;
using dl_test::random_labels;

namespace {

void zero_grad(const NDArray<float>& p) {
  NDArray<float> g = p.grad();
  REQUIRE(g.is_contiguous());
  std::fill(g.data(), g.data() + g.numel(), 0.0f);
}

// Restores the thread count when a test case ends.
struct ThreadCount {
  int saved = num_threads();
  explicit ThreadCount(int n) { set_num_threads(n); }
  ~ThreadCount() { set_num_threads(saved); }
};

// Loss and parameter gradients of `model` on (x, y): eager, then compiled, compared.
template <class Net, class Model>
void check_matches_eager(Net& net, Model&& model, const NDArray<float>& x, const NDArray<int64_t>& y) {
  auto step = graph::compile([&](auto a, auto b) { return dl::cross_entropy(model(a), b); });
  dl_test::check_step_matches_eager(net, model, step, x, y, 1e-5, 1e-4);
}

struct Mlp3 : nn::Module {
  nn::Dense fc1, fc2, fc3;
  Mlp3(int64_t in, int64_t h1, int64_t h2, int64_t out, Generator& gen)
      : fc1(in, h1, true, gen), fc2(h1, h2, false, gen), fc3(h2, out, true, gen) {
    register_module("fc1", &Mlp3::fc1);
    register_module("fc2", &Mlp3::fc2);
    register_module("fc3", &Mlp3::fc3);
  }
};

}  // namespace

TEST_CASE("compile fusion: relu, tanh, sigmoid and exp epilogues after dense match eager (random shapes, 1-3 threads)") {
  for (int threads : {1, 2, 3}) {
    ThreadCount tc(threads);
    for (uint64_t seed = 0; seed < 4; ++seed) {
      CAPTURE(threads);
      CAPTURE(seed);
      Generator gen(seed + 10);
      // Large enough (seed 3) for several GEMM blocks per layer; odd sizes split GEMMs unevenly.
      const int64_t batch = seed == 3 ? 96 : 1 + static_cast<int64_t>(seed * 13 % 40),
                    in = seed == 3 ? 300 : 5 + static_cast<int64_t>(seed * 7 % 30), h1 = seed == 3 ? 200 : 17,
                    h2 = seed == 3 ? 70 : 9, classes = 3 + static_cast<int64_t>(seed % 4);
      Mlp3 net(in, h1, h2, classes, gen);
      auto x = random_input(Shape{batch, in}, 100 + seed);
      auto y = random_labels(batch, classes, seed);
      check_matches_eager(net, [&](const auto& a) { return net.fc3(dl::tanh(net.fc2(dl::relu(net.fc1(a))))); }, x, y);
      check_matches_eager(net, [&](const auto& a) { return net.fc3(dl::sigmoid(net.fc2(dl::exp(net.fc1(a) * 0.1f)))); }, x, y);
      check_matches_eager(net, [&](const auto& a) { return net.fc3(dl::relu(net.fc2(dl::sigmoid(net.fc1(a))))); }, x, y);
    }
  }
}

TEST_CASE("compile fusion: inference plans (shorter liveness) with epilogues in many GEMM blocks match eager") {
  // An inference plan reuses a layer's input memory right after the layer: the epilogue's output,
  // written from inside the GEMM's blocks, must not get it (the other blocks still read the input).
  for (int threads : {1, 2, 3}) {
    ThreadCount tc(threads);
    Generator gen(5);
    nn::Dense l1(784, 64, true, gen), l2(64, 32, true, gen), l3(32, 10, true, gen);
    auto f = [&](const auto& x) { return l3(dl::tanh(l2(dl::relu(l1(x))))); };
    auto infer = graph::compile([&](auto x) { return f(x); });
    for (int64_t batch : {500, 100, 37, 1}) {
      CAPTURE(threads);
      CAPTURE(batch);
      auto x = random_input(Shape{batch, 784}, static_cast<uint64_t>(batch));
      NDArray<float> eager = f(x);
      check_close(infer.forward(x).to_vector(), eager.to_vector(), 1e-5);
    }
  }
}

TEST_CASE("compile fusion: the plan report counts activation epilogues; other activations stay fused regions") {
  Generator gen(3);
  Mlp3 net(12, 10, 8, 4, gen);
  auto x = random_input(Shape{6, 12}, 1);
  auto y = random_labels(6, 4, 2);
  auto step = graph::compile([&](auto a, auto b) { return dl::cross_entropy(net.fc3(dl::relu(net.fc2(dl::tanh(net.fc1(a))))), b); });
  step.forward_backward(x, y);
  auto r = step.plan_report();
  CHECK(r.gemm_epilogues == 4);    // fc1's and fc3's bias, tanh, relu (fc2 has no bias)
  CHECK(r.fused_kernels == 2);     // the two activations, one pass each way
  CHECK(r.elementwise_nodes == 2);
  CHECK(r.recomputed_nodes == 0);  // their backward reads the saved outputs
  CHECK(r.str().find("epilogues (bias, activation)") != std::string::npos);
  // leaky_relu (its derivative needs the input's sign and a slope) and an activation of an
  // elementwise expression stay ordinary fused regions, recomputed in backward.
  auto other = graph::compile([&](auto a, auto b) {
    return dl::cross_entropy(net.fc3(dl::relu(net.fc2(dl::leaky_relu(net.fc1(a), 0.1)) * 2.0f)), b);
  });
  other.forward_backward(x, y);
  auto r2 = other.plan_report();
  CHECK(r2.gemm_epilogues == 2);
  CHECK(r2.fused_kernels == 2);
  CHECK(r2.recomputed_nodes == 3);  // leaky_relu; relu and * 2
  check_matches_eager(net, [&](const auto& a) { return net.fc3(dl::relu(net.fc2(dl::leaky_relu(net.fc1(a), 0.1)) * 2.0f)); },
                      x, y);
}

TEST_CASE("compile fusion: an epilogue on a node used elsewhere leaves its pre-activation value intact") {
  for (int threads : {1, 2}) {
    ThreadCount tc(threads);
    CAPTURE(threads);
    Generator gen(8);
    Mlp3 net(40, 64, 64, 5, gen);
    auto x = random_input(Shape{48, 40}, 2);
    auto y = random_labels(48, 5, 1);
    // fc1's output feeds relu (the epilogue, run in fc1's GEMM blocks) and, twice, the sum's
    // region (shared uses that read the pre-activation value).
    auto model = [&](const auto& a) {
      auto h = net.fc1(a);
      return net.fc3(dl::tanh(net.fc2(dl::relu(h))) + h * 0.5f + dl::relu(h));
    };
    check_matches_eager(net, model, x, y);
    auto step = graph::compile([&](auto a, auto b) { return dl::cross_entropy(model(a), b); });
    step.forward_backward(x, y);
    CHECK(step.plan_report().shared_uses == 2);
  }
}

TEST_CASE("compile fusion: relu epilogues after conv2d (LeNet layout) match eager; inference too") {
  for (int threads : {1, 2}) {
    ThreadCount tc(threads);
    CAPTURE(threads);
    Generator gen(21);
    nn::Conv2d conv1(1, 4, 5, Conv2dOptions{.padding = {2, 2}}, true, gen), conv2(4, 6, 5, Conv2dOptions{}, false, gen);
    nn::MaxPool2d pool{2};
    nn::Flatten flat;
    nn::Dense fc(6 * 5 * 5, 10, true, gen);
    auto model = [&](const auto& a) {
      auto h = pool(dl::relu(conv1(a)));
      return fc(flat(pool(dl::sigmoid(conv2(h)))));
    };
    auto params = std::vector<NDArray<float>>{conv1.weight, conv1.bias, conv2.weight, fc.weight, fc.bias};
    auto x = random_input(Shape{5, 1, 28, 28}, 4);
    auto y = random_labels(5, 10, 3);
    auto grads = [&] {
      std::vector<std::vector<float>> g;
      for (auto& p : params) g.push_back(p.grad().to_vector());
      return g;
    };
    auto zero = [&] {
      for (auto& p : params) zero_grad(p);
    };
    zero();
    float eager_loss;
    {
      autograd::record rec;
      auto loss = dl::cross_entropy(model(x), y);
      loss.backward();
      eager_loss = loss.item();
    }
    auto eager = grads();
    auto step = graph::compile([&](auto a, auto b) { return dl::cross_entropy(model(a), b); });
    zero();
    CHECK(step.forward_backward(x, y).item() == doctest::Approx(eager_loss).epsilon(1e-5));
    auto compiled = grads();
    for (size_t k = 0; k < eager.size(); ++k) check_close(compiled[k], eager[k], 1e-3);
    CHECK(step.plan_report().gemm_epilogues == 4);  // conv1's and fc's bias, relu, sigmoid
    auto infer = graph::compile([&](auto a) { return model(a); });
    NDArray<float> eager_logits = model(x);
    check_close(infer.forward(x).to_vector(), eager_logits.to_vector(), 1e-5);
  }
}

TEST_CASE("compile fusion: GEMM blocks cover the output once, whatever the shape and block count") {
  for (int64_t M : {1, 3, 16, 33, 64}) {
    for (int64_t N : {1, 10, 16, 47, 130}) {
      for (int64_t n : {1, 2, 3, 8}) {
        CAPTURE(M);
        CAPTURE(N);
        CAPTURE(n);
        graph::detail::GemmCall<float> call{{nullptr, M, 4, 4, 1}, {nullptr, 4, N, N, 1}, nullptr, N, false};
        std::vector<int> covered(static_cast<size_t>(M * N), 0);
        for (int64_t i = 0; i < n; ++i) {
          auto k = call.block(i, n);
          CHECK(k.r0 >= 0);
          CHECK(k.r1 <= M);
          CHECK(k.c0 >= 0);
          CHECK(k.c1 <= N);
          if (k.c0 > 0) CHECK(k.c0 % 16 == 0);  // column blocks start on whole SIMD units
          for (int64_t r = k.r0; r < k.r1; ++r)
            for (int64_t c = k.c0; c < k.c1; ++c) ++covered[static_cast<size_t>(r * N + c)];
        }
        bool once = true;
        for (int v : covered) once = once && v == 1;
        CHECK(once);
      }
    }
  }
}

TEST_CASE("compile fusion: concurrent input- and weight-gradient GEMMs equal the serial products") {
  ThreadCount tc(2);
  for (int64_t M : {32, 200}) {
    CAPTURE(M);
    const int64_t K = 400, N = 90;
    auto g = random_input(Shape{M, N}, 1), w = random_input(Shape{N, K}, 2), a = random_input(Shape{M, K}, 3);
    NDArray<float> dx(Shape{M, K}), dw(Shape{N, K}), dx_ref(Shape{M, K}), dw_ref(Shape{N, K}), db(Shape{N});
    std::array<graph::detail::GemmCall<float>, 2> calls{};
    calls[0] = {{g.data(), M, N, N, 1}, {w.data(), N, K, K, 1}, dx.data(), K, false};
    calls[1] = {{g.data(), N, M, 1, N}, {a.data(), M, K, K, 1}, dw.data(), K, false};
    bool extra_ran = false;
    graph::detail::run_gemm_tasks(calls, 2, [&] { extra_ran = true; }, true);
    CHECK(extra_ran);
    cpu::gemm_serial(calls[0].a, calls[0].b, dx_ref.data(), K);
    cpu::gemm_serial(calls[1].a, calls[1].b, dw_ref.data(), K);
    check_close(dx.to_vector(), dx_ref.to_vector(), 1e-5);
    check_close(dw.to_vector(), dw_ref.to_vector(), 1e-5);
    CHECK(graph::detail::gemm_blocks(2.0 * M * N * K * 2, 2) >= 2);
  }
  CHECK(graph::detail::gemm_blocks(1e5, 2) == 1);  // small: no hand-off
  CHECK(graph::detail::gemm_blocks(1e9, 2) == 8);  // large: four per thread
  CHECK(graph::detail::gemm_blocks(1e9, 1) == 1);
}

TEST_CASE("compile fusion: a plain matmul (weight not transposed) with a relu epilogue matches eager") {
  ThreadCount tc(2);
  Generator gen(5);
  NDArray<float> w = random_input(Shape{64, 48}, 9), w2 = random_input(Shape{48, 7}, 12),
                 bias = random_input(Shape{7}, 10);
  for (auto* p : {&w, &w2, &bias}) p->attach_grad();
  auto x = random_input(Shape{80, 64}, 11);
  auto y = random_labels(80, 7, 1);
  auto model = [&](const auto& a) { return dl::matmul(dl::relu(dl::matmul(a, w)), w2) + bias; };
  float eager_loss;
  {
    autograd::record rec;
    auto loss = dl::cross_entropy(model(x), y);
    loss.backward();
    eager_loss = loss.item();
  }
  auto gw = w.grad().to_vector(), gw2 = w2.grad().to_vector(), gb = bias.grad().to_vector();
  for (auto* p : {&w, &w2, &bias}) zero_grad(*p);
  auto step = graph::compile([&](auto a, auto b) { return dl::cross_entropy(model(a), b); });
  CHECK(step.forward_backward(x, y).item() == doctest::Approx(eager_loss).epsilon(1e-5));
  check_close(w.grad().to_vector(), gw, 1e-4);
  check_close(w2.grad().to_vector(), gw2, 1e-4);
  check_close(bias.grad().to_vector(), gb, 1e-4);
  // The relu is the first matmul's epilogue; `+ bias` is a region of its own.
  CHECK(step.plan_report().gemm_epilogues == 1);
  CHECK(step.plan_report().fused_kernels == 2);
  // A relu inside a larger region, relu(matmul) * 0.5, is still the GEMM's epilogue (it keeps a
  // 1-bit mask for backward: graph/exec.hpp's is_epilogue_leaf); the `* 0.5` is a region of its own.
  auto inner = graph::compile([&](auto a, auto b) { return dl::cross_entropy(dl::relu(dl::matmul(a, w)) * 0.5f, b); });
  inner.forward_backward(x, random_labels(80, 48, 2));
  CHECK(inner.plan_report().gemm_epilogues == 1);
  CHECK(inner.plan_report().fused_kernels == 2);
}

// ---- named values: let and chain (graph/let.hpp) -----------------------------------------------

TEST_CASE("compile let: a value read twice through Refs is computed once; gradients match eager") {
  for (int threads : {1, 2}) {
    ThreadCount tc(threads);
    CAPTURE(threads);
    Generator gen(4);
    Mlp3 net(10, 12, 12, 4, gen);
    auto x = random_input(Shape{7, 10}, 5);
    auto y = random_labels(7, 4, 1);
    // Eager: the same formula with h used twice.
    auto eager_model = [&](const NDArray<float>& a) {
      NDArray<float> h = net.fc1(a);
      return net.fc3(dl::tanh(net.fc2(dl::relu(h))) + h * 0.5f);
    };
    auto step = graph::compile([&](auto a, auto b) {
      auto body = graph::let(net.fc1(a), [&](const auto& h) { return net.fc3(dl::tanh(net.fc2(dl::relu(h))) + h * 0.5f); });
      static_assert(std::is_same_v<std::remove_cvref_t<decltype(body.body)>,
                                   std::remove_cvref_t<decltype(net.fc3(dl::tanh(net.fc2(dl::relu(graph::Ref<float, 2>{}))) +
                                                                        graph::Ref<float, 2>{} * 0.5f))>>,
                    "the body's type reads the bound value through Refs");
      return dl::cross_entropy(body, b);
    });
    dl_test::check_step_matches_eager(net, eager_model, step, x, y, 1e-5, 1e-4);
    auto r = step.plan_report();
    CHECK(r.op_nodes == 4);  // fc1 once, fc2, fc3, cross_entropy
    CHECK(r.shared_uses == 1);
  }
}

namespace {
// y = relu(fc(x)) + x, written once for arrays and symbols.
struct Block : nn::Module {
  nn::Dense fc;
  Block(int64_t w, Generator& gen) : fc(w, w, true, gen) { register_module("fc", &Block::fc); }
  template <class X> auto forward(const X& x) {
    if constexpr (graph::is_symbolic_v<X>) return graph::let(x, [this](const auto& in) { return dl::relu(fc(in)) + in; });
    else return NDArray<float>(dl::relu(fc(x)) + x);
  }
};
}  // namespace

TEST_CASE("compile chain: a run-time number of residual blocks is one graph of one block's type") {
  for (int n : {0, 1, 5}) {
    CAPTURE(n);
    Generator gen(static_cast<uint64_t>(n) + 1);
    nn::Dense head(6, 3, true, gen);
    nn::ModuleList<Block> blocks;
    for (int i = 0; i < n; ++i) blocks.push_back(Block(6, gen));
    auto x = random_input(Shape{9, 6}, 3);
    auto y = random_labels(9, 3, 2);
    std::vector<NDArray<float>> params{head.weight, head.bias};
    for (auto& b : blocks) {
      params.push_back(b.fc.weight);
      params.push_back(b.fc.bias);
    }
    for (auto& p : params) zero_grad(p);
    float eager_loss;
    {
      autograd::record rec;
      NDArray<float> h = x;
      for (auto& b : blocks) h = b.forward(h);
      auto loss = dl::cross_entropy(head(h), y);
      loss.backward();
      eager_loss = loss.item();
    }
    std::vector<std::vector<float>> eager;
    for (auto& p : params) eager.push_back(p.grad().to_vector());
    for (auto& p : params) zero_grad(p);
    auto step = graph::compile([&](auto a, auto b) {
      return dl::cross_entropy(head(graph::chain(a, blocks, [](Block& blk, const auto& in) { return blk.forward(in); })), b);
    });
    CHECK(step.forward_backward(x, y).item() == doctest::Approx(eager_loss).epsilon(1e-5));
    for (size_t k = 0; k < params.size(); ++k) check_close(params[k].grad().to_vector(), eager[k], 1e-4);
    CHECK(step.plan_report().op_nodes == n + 2);
  }
}

TEST_CASE("compile chain: a ResNet-20 (stem, 9 BasicBlocks with projections, pooling, dense) as ONE graph matches eager") {
  Generator gen(12);
  nn::Conv2d stem(1, 4, 3, 1, 1, false, gen);
  nn::BatchNorm2d bn(4);
  nn::ModuleList<nn::BasicBlock> blocks;
  for (int stage = 0; stage < 3; ++stage)
    for (int i = 0; i < 3; ++i) {
      const int64_t out = 4 << stage, in = i == 0 && stage > 0 ? out / 2 : out;
      blocks.push_back(nn::BasicBlock(in, out, i == 0 && stage > 0 ? 2 : 1, gen));
    }
  nn::AvgPool2d pool{std::array<int64_t, 2>{2, 2}};
  nn::Flatten flat;
  nn::Dense fc(16 * 1 * 1, 5, true, gen);
  auto x = random_input(Shape{3, 1, 8, 8}, 6);
  auto y = random_labels(3, 5, 4);
  std::vector<NDArray<float>> params;
  auto collect = [&](nn::Module& m) {
    for (auto& [name, p] : m.named_parameters()) params.push_back(p);
  };
  collect(stem);
  collect(bn);
  for (auto& b : blocks) collect(b);
  collect(fc);
  float eager_loss;  // (training-mode batch norm: gradients do not depend on the running statistics)
  for (auto& p : params) zero_grad(p);
  {
    autograd::record rec;
    NDArray<float> h = dl::relu(bn(stem(x)));
    for (auto& b : blocks) h = b(h);
    auto loss = dl::cross_entropy(fc(flat(pool(h))), y);
    loss.backward();
    eager_loss = loss.item();
  }
  std::vector<std::vector<float>> eager;
  for (auto& p : params) eager.push_back(p.grad().to_vector());
  for (auto& p : params) zero_grad(p);
  auto step = graph::compile([&](auto a, auto b) {
    auto h = graph::chain(dl::relu(bn(stem(a))), blocks, [](nn::BasicBlock& blk, const auto& in) { return blk(in); });
    return dl::cross_entropy(fc(flat(pool(h))), b);
  });
  CHECK(step.forward_backward(x, y).item() == doctest::Approx(eager_loss).epsilon(1e-4));
  REQUIRE(params.size() == eager.size());
  for (size_t k = 0; k < params.size(); ++k) check_close(params[k].grad().to_vector(), eager[k], 1e-3);
  auto r = step.plan_report();
  CHECK(r.op_nodes == 2 + 9 * 4 + 2 * 2 + 3);  // stem conv+bn, 4 per block, 2 projections' conv+bn, pool, fc, loss
  CHECK(r.shared_uses == 9);                   // each block's input: read by conv1 and by the shortcut
}

TEST_CASE("compile let: a Ref outside its let is an error naming the problem") {
  auto f = graph::compile([](auto a) { return a + graph::Ref<float, -1>{987654321}; });
  CHECK_THROWS_WITH_AS(f.forward(random_input(Shape{2, 2}, 1)), doctest::Contains("used outside its body"), ValueError);
}

TEST_CASE("compile let: a compiled BasicBlock as one tape node passes the summed input gradient to eager code") {
  Generator gen(31);
  for (bool projection : {false, true}) {
    CAPTURE(projection);
    nn::Conv2d stem(2, 4, 3, 1, 1, false, gen);
    nn::BasicBlock block(4, projection ? 6 : 4, projection ? 2 : 1, gen);
    nn::Flatten flat;
    const int64_t out_hw = projection ? 3 : 6, out_c = projection ? 6 : 4;
    nn::Dense fc(out_c * out_hw * out_hw, 3, true, gen);
    auto x = random_input(Shape{2, 2, 6, 6}, 3);
    auto y = random_labels(2, 3, 1);
    std::vector<NDArray<float>> params{stem.weight, fc.weight, fc.bias};
    for (auto& [name, p] : block.named_parameters()) params.push_back(p);
    auto run = [&](auto&& block_fn) {
      for (auto& p : params) zero_grad(p);
      autograd::record rec;
      auto loss = dl::cross_entropy(fc(flat(block_fn(NDArray<float>(stem(x))))), y);
      loss.backward();
      std::vector<std::vector<float>> g;
      for (auto& p : params) g.push_back(p.grad().to_vector());
      return std::pair{loss.item(), g};
    };
    auto [eager_loss, eager] = run([&](const NDArray<float>& h) { return NDArray<float>(block(h)); });
    auto graph = graph::compile([&](auto h) { return block(h); });
    auto [compiled_loss, compiled] = run([&](const NDArray<float>& h) { return graph(h); });
    CHECK(compiled_loss == doctest::Approx(eager_loss).epsilon(1e-5));
    for (size_t k = 0; k < eager.size(); ++k) check_close(compiled[k], eager[k], 1e-3);  // stem's: through the summed input gradient
  }
}
