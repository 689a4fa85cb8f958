// What a compiled plan keeps for backward (graph/exec.hpp, graph/memory_plan.hpp): region leaves
// whose values no derivative rule reads (expr/primitives.hpp's grad_reads) are not kept, a relu
// that is a GEMM or conv epilogue keeps a 1-bit mask instead of its output when nothing else reads
// that output in backward, and per-call plans give back their forward-only slots after forward.
// Gradients stay bit-identical to eager in every case.
#include <doctest/doctest.h>

#include <array>
#include <vector>

#include "dl/core/allocator.hpp"
#include "dl/graph/compile.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/nn/conv.hpp"
#include "dl/nn/dense.hpp"
#include "dl/ops/elementwise.hpp"

#include "support/graph_fixtures.hpp"

using namespace dl;
using dl_test::check_close;

namespace {

struct ThreadCount {
  int saved = num_threads();
  explicit ThreadCount(int n) { set_num_threads(n); }
  ~ThreadCount() { set_num_threads(saved); }
};

// The memory benchmark's block (bench/memory.cpp): y = x + s * relu(x W^T); Act picks the activation.
template <int Act>
struct Block : nn::Module {
  nn::Dense fc;
  Block(int64_t width, bool bias) : fc(width, width, bias) { register_module("fc", &Block::fc); }
  template <class X>
  auto operator()(const X& x) {
    if constexpr (Act == 0) return x + 0.25f * dl::relu(fc(x));
    else if constexpr (Act == 1) return x + dl::relu(fc(x)) * x;  // the product reads the relu output
    else return x + 0.25f * dl::tanh(fc(x));
  }
};

// The block's output and gradients through a compiled tape node (per-call memory or kept), against
// eager: bit for bit on one thread (the same kernels, the same order), else to 1e-5 (two threads
// split eager's GEMMs and the compiled GEMM blocks differently, before and after this change).
template <class Model>
void check_block_matches_eager(Model& model, const NDArray<float>& x0, std::vector<NDArray<float>> params, bool per_call) {
  const double tol = num_threads() == 1 ? 0.0 : 1e-5;
  auto graph = graph::compile([&](auto h) { return model(h); }, graph::CompileOptions{.keep_memory = !per_call});
  using G = decltype(graph);
  auto eager = dl_test::run_taped(model, static_cast<G*>(nullptr), x0, params, 5);
  for (int it = 0; it < 2; ++it) {
    auto compiled = dl_test::run_taped(model, &graph, x0, params, 5);
    check_close(compiled.out, eager.out, tol, "output");
    check_close(compiled.input_grad, eager.input_grad, tol, "input gradient");
    for (size_t k = 0; k < params.size(); ++k) check_close(compiled.param_grads[k], eager.param_grads[k], tol, "parameter gradient");
  }
}

// The per-call plan of a block run as a tape node, and the bytes in use after its forward.
template <class Model>
graph::PlanReport per_call_report(Model& model, const NDArray<float>& x, int64_t* held) {
  auto graph = graph::compile([&](auto h) { return model(h); }, graph::CompileOptions{.keep_memory = false});
  NDArray<float> y;
  {  // once: the parameters' gradient buffers exist from here on
    autograd::record rec;
    y = graph(x);
  }
  y.backward(ones<float>(y.shape()));
  y = NDArray<float>();
  const int64_t before = cpu_allocator().stats().bytes_in_use;
  {
    autograd::record rec;
    y = graph(x);
  }
  *held = cpu_allocator().stats().bytes_in_use - before;
  y.backward(ones<float>(y.shape()));
  return graph.plan_report();
}

constexpr int64_t round64(int64_t b) { return (b + 63) / 64 * 64; }

}  // namespace

TEST_CASE("compile memory: relu(matmul) is one region leaf of grad_reads (the GEMM's epilogue)") {
  using A = NDArray<float>;
  using S = ScalarExpr<float>;
  // relu(matmul) inside a region is one leaf (the GEMM's epilogue); tanh(matmul) stays in the region.
  // expr/leaf_reads.hpp counts and reads it as one leaf (tests/expr/test_leaf_reads.cpp: the rest).
  using M = graph::MatmulNode<graph::Input<float, -1, 0>>;
  static_assert(graph::region_leaf_count<BinaryExpr<prim::Mul, S, UnaryExpr<prim::Relu, M>>> == 1);
  static_assert(graph::is_epilogue_leaf<prim::Relu, M> && !graph::is_epilogue_leaf<prim::Tanh, M>);
  // x + s * relu(m) with m = matmul: the epilogue keeps its own bits, so the region reads no leaf;
  // with tanh the region's backward reads the GEMM output.
  static_assert(expr::leaf_values_read<BinaryExpr<prim::Add, A, BinaryExpr<prim::Mul, S, UnaryExpr<prim::Relu, M>>>>() ==
                std::array<bool, 2>{false, false});
  static_assert(expr::leaf_values_read<BinaryExpr<prim::Add, A, BinaryExpr<prim::Mul, S, UnaryExpr<prim::Tanh, M>>>>() ==
                std::array<bool, 2>{false, true});
}

TEST_CASE("compile memory: x + s * relu(x W^T) keeps the block output and a 1-bit relu mask") {
  // 164 columns: two GEMM column blocks on two threads ([0, 80), [80, 164)) and a last mask byte
  // of 4 bits; 64 * 164 * 164 * 2 flops is above the GEMM's one-block threshold.
  const int64_t rows = 64, width = 164;
  const int64_t one = rows * width * 4, mask = round64(rows * ((width + 7) / 8));
  for (bool bias : {false, true}) {
    for (int threads : {1, 2}) {
      CAPTURE(bias);
      CAPTURE(threads);
      ThreadCount tc(threads);
      manual_seed(11);
      Block<0> block(width, bias);
      auto x = dl_test::random_input(Shape{rows, width}, 3);
      x.attach_grad();
      std::vector<NDArray<float>> params{block.fc.weight};
      if (bias) params.push_back(block.fc.bias);
      check_block_matches_eager(block, x, params, true);
      check_block_matches_eager(block, x, params, false);
      // forward_backward of a loss (kept memory; the reduction sums in another order than eager's),
      // and no allocation after the first step.
      dl_test::check_loss_matches_eager([&](const auto& h) { return dl::mean(dl::square(block(h))); }, x, params, 1e-5);
      auto step = graph::compile([&](auto h) { return dl::mean(dl::square(block(h))); });
      step.forward_backward(x);
      CHECK(dl_test::allocations_during([&] { step.forward_backward(x); }) == 0);
      // Per call under the tape: the block output and the mask stay until backward (the GEMM and
      // relu outputs go back after forward): 0.52x of the two arrays it kept before.
      int64_t held = -1;
      const auto report = per_call_report(block, x, &held);
      CHECK(report.gemm_epilogues == 1 + (bias ? 1 : 0));  // the relu (and the bias) in the GEMM's blocks
      CHECK(report.fused_kernels == 2);                      // the epilogue and the region x + s * r
      CHECK(report.bytes_forward == one + mask);
      CHECK(held == report.bytes_forward);
    }
  }
}

TEST_CASE("compile memory: a relu output read again in backward is kept, gradients still bit-identical") {
  const int64_t rows = 48, width = 40;
  const int64_t one = rows * width * 4;
  manual_seed(12);
  auto x = dl_test::random_input(Shape{rows, width}, 4);
  x.attach_grad();
  // x + relu(x W^T) * x: the product's partial for x reads the relu output.
  Block<1> product(width, false);
  check_block_matches_eager(product, x, {product.fc.weight}, true);
  check_block_matches_eager(product, x, {product.fc.weight}, false);
  int64_t held = -1;
  auto report = per_call_report(product, x, &held);
  CHECK(report.bytes_forward == 2 * one);  // the output and the relu output, no mask
  CHECK(held == report.bytes_forward);
  // fc2(relu(fc1 x)): the second GEMM's weight gradient reads the relu output.
  nn::Dense fc1(width, width), fc2(width, width);
  auto mlp = [&](const auto& h) { return fc2(dl::relu(fc1(h))); };
  check_block_matches_eager(mlp, x, {fc1.weight, fc1.bias, fc2.weight, fc2.bias}, true);
  report = per_call_report(mlp, x, &held);
  CHECK(report.bytes_forward == 2 * one);  // the relu output and the result
  CHECK(held == report.bytes_forward);
  // tanh(matmul) stays inside the region, which keeps the GEMM output.
  Block<2> tanh_block(width, false);
  check_block_matches_eager(tanh_block, x, {tanh_block.fc.weight}, true);
  report = per_call_report(tanh_block, x, &held);
  CHECK(report.gemm_epilogues == 0);
  CHECK(report.fused_kernels == 1);
  CHECK(report.bytes_forward == 2 * one);
}

TEST_CASE("compile memory: a conv relu epilogue inside a region keeps a mask (after the conv's pass)") {
  // 594 elements: 75 mask bytes, the last of 2 bits; 38880: 2430 16-column words, two chunks on two threads.
  for (const Shape& shape : {Shape{2, 3, 9, 11}, Shape{6, 3, 48, 45}}) {
    for (int threads : {1, 2}) {
      CAPTURE(shape);
      CAPTURE(threads);
      ThreadCount tc(threads);
      manual_seed(13);
      nn::Conv2d conv(3, 3, 3, Conv2dOptions{.padding = {1, 1}});
      auto block = [&](const auto& h) { return h + 0.5f * dl::relu(conv(h)); };
      auto x = dl_test::random_input(shape, 5);
      x.attach_grad();
      check_block_matches_eager(block, x, {conv.weight, conv.bias}, true);
      check_block_matches_eager(block, x, {conv.weight, conv.bias}, false);
      int64_t held = -1;
      const auto report = per_call_report(block, x, &held);
      const int64_t n = shape.numel();
      CHECK(report.bytes_forward == round64(n * 4) + round64((n + 7) / 8));
      CHECK(held == report.bytes_forward);
    }
  }
}
