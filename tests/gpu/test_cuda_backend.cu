// The GPU suite: every case runs an operation on the GPU and compares it with the CPU result
// (float32: 1e-4 relative, float64: 1e-10 relative; values below 1 compared absolutely), plus
// float64 gradcheck of GPU forward/backward through the library's own gradcheck. Skipped (exit 77)
// without a GPU by main.cpp. Runs on an H100: 18 cases pass (bench/gpu/check.sh).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "gpu_support.hpp"

// Narrow headers, not dl/dl.hpp: graph/exec.hpp does not compile under nvcc 13 yet (docs/gpu.md).
#include "dl/autograd/engine.hpp"
#include "dl/autograd/gradcheck.hpp"
#include "dl/backend/cuda/cuda.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/ops/elementwise.hpp"
#include "dl/ops/conv.hpp"
#include "dl/ops/matmul.hpp"
#include "dl/ops/softmax.hpp"

using dl::Device;
using dl::NDArray;
using dl::Shape;
namespace dc = dl::cuda;

namespace {

using dl_gpu_test::check_close;
using dl_gpu_test::kGpu;
using dl_gpu_test::max_rel_error;
using dl_gpu_test::tolerance;

// Shapes for the property tests: odd sizes (vector tails), size-1 dims, rank 0..4.
std::vector<Shape> test_shapes(uint64_t seed) {
  std::vector<Shape> out{Shape{}, Shape{1}, Shape{7}, Shape{1025}, Shape{3, 5}, Shape{2, 1, 9}, Shape{4, 3, 2, 5}};
  dl::Generator g(seed);
  for (int k = 0; k < 4; ++k) {
    auto v = dl::rand<double>({3}, 1, 40, g).to_vector();
    out.push_back(Shape{static_cast<int64_t>(v[0]), static_cast<int64_t>(v[1]), static_cast<int64_t>(v[2])});
  }
  return out;
}

}  // namespace

TEST_CASE("cuda runtime: devices, streams and errors") {
  CHECK(dc::device_count() >= 1);
  CHECK(dc::is_available());
  CHECK(dc::compiled_with_cuda());
  CHECK(dc::compute_stream(0) != nullptr);
  CHECK(dc::copy_stream(0) != dc::compute_stream(0));
  CHECK_THROWS_WITH_AS(DL_CUDA_CHECK(cudaSetDevice(100000)), doctest::Contains("cudaSetDevice"), dl::DeviceError);
  CHECK_THROWS_WITH_AS(NDArray<float>(Shape{2}).to(Device::cuda(1000)), doctest::Contains("cuda:1000"), dl::DeviceError);
  CHECK_NOTHROW(dc::synchronize(0));
}

TEST_CASE("cuda ndarray: to, cpu, item and to_vector round-trip exactly") {
  dl::manual_seed(1);
  auto a = dl::randn<float>({33, 17});
  auto g = a.to(kGpu);
  CHECK(g.device() == kGpu);
  CHECK(g.to_vector() == a.to_vector());
  CHECK(g.cpu().to_vector() == a.to_vector());
  CHECK(g.to(kGpu).storage() == g.storage());  // already there: the same handle
  // A non-contiguous source is packed on the way.
  auto t = a.transpose().to(kGpu);
  CHECK(t.is_contiguous());
  CHECK(t.to_vector() == a.transpose().to_vector());
  auto s = a.slice(1, 1, 17, 3).cuda();
  CHECK(s.to_vector() == a.slice(1, 1, 17, 3).to_vector());
  CHECK(dl::full<double>({1}, 2.5).cuda().item() == 2.5);
  auto i = dl::arange<int32_t>(0, 100).cuda();
  CHECK(i.to_vector() == dl::arange<int32_t>(0, 100).to_vector());
  // Created on the device, filled by a kernel.
  NDArray<float> z(Shape{5, 5}, kGpu);
  z.assign(3.0f);
  CHECK(z.to_vector() == std::vector<float>(25, 3.0f));
}

TEST_CASE("cuda allocator: reuse, statistics, empty_cache, out of memory") {
  dc::empty_cache(0);
  auto before = dc::memory_stats(0);
  {
    NDArray<float> x(Shape{1 << 20}, kGpu);  // 4 MiB
    auto mid = dc::memory_stats(0);
    CHECK(mid.bytes_in_use >= before.bytes_in_use + (4 << 20));
    CHECK(mid.peak_bytes_in_use >= mid.bytes_in_use);
  }
  auto after = dc::memory_stats(0);
  CHECK(after.bytes_in_use == before.bytes_in_use);
  CHECK(after.bytes_cached >= (4 << 20));
  {
    NDArray<float> y(Shape{1 << 20}, kGpu);  // served from the cache
    CHECK(dc::memory_stats(0).num_system_allocs == after.num_system_allocs);
  }
  dc::empty_cache(0);
  CHECK(dc::memory_stats(0).bytes_cached == 0);
  CHECK_THROWS_WITH_AS(NDArray<float>(Shape{int64_t{1} << 48}, kGpu), doctest::Contains("out of memory allocating"),
                       dl::DeviceError);
  CHECK_THROWS_WITH_AS(NDArray<float>(Shape{int64_t{1} << 48}, kGpu), doctest::Contains("bytes free"), dl::DeviceError);
  dc::PinnedBuffer pinned(1 << 16);
  CHECK(pinned.data() != nullptr);
}

TEST_CASE_TEMPLATE("cuda elementwise: fused expressions match the CPU (broadcast, non-contiguous)", T, float, double) {
  using Fn = std::function<NDArray<T>(const NDArray<T>&, const NDArray<T>&)>;
  std::vector<std::pair<const char*, Fn>> table = {
      {"a + b", [](auto& a, auto& b) { return NDArray<T>(a + b); }},
      {"relu(a * b + 1)", [](auto& a, auto& b) { return NDArray<T>(dl::relu(a * b + T(1))); }},
      {"tanh(a) - sigmoid(b) / 3", [](auto& a, auto& b) { return NDArray<T>(dl::tanh(a) - dl::sigmoid(b) / T(3)); }},
      {"exp(-a*a) * gelu(b)", [](auto& a, auto& b) { return NDArray<T>(dl::exp(-(a * a)) * dl::gelu(b)); }},
      {"sqrt(abs(a)) + log1p(b*b)", [](auto& a, auto& b) { return NDArray<T>(dl::sqrt(dl::abs(a)) + dl::log1p(b * b)); }},
      {"where(a > b, a, b*2)", [](auto& a, auto& b) { return NDArray<T>(dl::where(a > b, a, b * T(2))); }},
      {"maximum(a, b) + softplus(a)", [](auto& a, auto& b) { return NDArray<T>(dl::maximum(a, b) + dl::softplus(a)); }},
      {"clamp(a, -0.5, 0.5) * sin(b) + cos(a)",
       [](auto& a, auto& b) { return NDArray<T>(dl::clamp(a, -0.5, 0.5) * dl::sin(b) + dl::cos(a)); }},
      {"leaky_relu(a) ** 2", [](auto& a, auto& b) { return NDArray<T>(dl::pow(dl::leaky_relu(a), 2.0) + b * T(0)); }},
  };
  dl::Generator gen(42);
  for (const Shape& s : test_shapes(7)) {
    NDArray<T> a = dl::randn<T>(s, 0.0, 1.0, gen);
    // b: the full shape, a broadcast row, and a transposed (non-contiguous) view.
    std::vector<NDArray<T>> bs{dl::randn<T>(s, 0.0, 1.0, gen)};
    if (s.rank() >= 1) bs.push_back(dl::randn<T>(Shape{s[s.rank() - 1]}, 0.0, 1.0, gen));
    if (s.rank() == 2) bs.push_back(dl::randn<T>(Shape{s[1], s[0]}, 0.0, 1.0, gen).transpose());
    for (auto& b : bs) {
      for (auto& [name, fn] : table) {
        NDArray<T> want = fn(a, b);
        NDArray<T> got = fn(a.cuda(), b.cuda());
        check_close(got, want, std::string(name) + " shape " + a.shape().to_string() + " with " + b.shape().to_string());
      }
    }
    if (s.rank() == 2) {  // a non-contiguous GPU operand (a view of a GPU array)
      NDArray<T> bt = dl::randn<T>(Shape{s[1], s[0]}, 0.0, 1.0, gen);
      NDArray<T> want = a * bt.transpose() + T(1);
      NDArray<T> got = a.cuda() * bt.cuda().transpose() + T(1);
      check_close(got, want, "a * b^T (GPU view)");
    }
  }
}

TEST_CASE("cuda elementwise: in-place updates, aliasing, and the vector path's tails") {
  for (int64_t n : {1, 3, 4, 5, 1023, 4096, 4099}) {
    auto x = dl::randn<float>({n});
    auto y = dl::randn<float>({n});
    auto gx = x.cuda(), gy = y.cuda();
    gx += gy * 2.0f;
    x += y * 2.0f;
    check_close(gx, x, "x += 2y, n = " + std::to_string(n));
    // A misaligned view (offset 1) takes the scalar path.
    if (n > 2) check_close(NDArray<float>(gx.slice(0, 1, n) * 3.0f), NDArray<float>(x.slice(0, 1, n) * 3.0f), "offset view");
  }
  auto m = dl::randn<double>({6, 6});
  auto gm = m.cuda();
  gm.assign(gm.transpose() + 1.0);  // aliasing: evaluated through a temporary
  m.assign(m.transpose() + 1.0);
  check_close(gm, m, "m = m^T + 1");
  CHECK_THROWS_WITH_AS(NDArray<float>(dl::ones<float>({3}) + dl::ones<float>({3}).cuda()),
                       doctest::Contains("different devices"), dl::DeviceError);
}

TEST_CASE_TEMPLATE("cuda fused backward matches the CPU, broadcast operands summed back", T, float, double) {
  dl::Generator gen(3);
  auto a = dl::randn<T>({17, 33}, 0.0, 1.0, gen), b = dl::randn<T>({33}, 0.0, 1.0, gen);
  auto run = [](NDArray<T> x, NDArray<T> y) {
    x.attach_grad();
    y.attach_grad();
    {
      dl::autograd::record rec;
      NDArray<T> out = dl::tanh(x * y + T(0.5)) * dl::sigmoid(y);
      out.backward(dl::ones<T>(out.shape()).to(out.device()));
    }
    return std::pair{x.grad(), y.grad()};
  };
  auto [ga_cpu, gb_cpu] = run(a, b);
  auto [ga_gpu, gb_gpu] = run(a.cuda(), b.cuda());
  check_close(ga_gpu, ga_cpu, "d/da");
  check_close(gb_gpu, gb_cpu, "d/db (broadcast, sum_to on the GPU)");
  // A one-element output: backward() seeds the gradient on the output's device.
  NDArray<T> x = dl::full<T>({1}, T(3), kGpu);
  x.attach_grad();
  {
    dl::autograd::record rec;
    NDArray<T> y = x * x;
    y.backward();
  }
  CHECK(x.grad().device() == kGpu);
  CHECK(x.grad().item() == T(6));
}

TEST_CASE("cuda gradcheck (float64): elementwise and matmul run on the GPU, checked against finite differences") {
  // Inputs stay on the CPU (gradcheck nudges them); fn moves them to the GPU, so both the forward
  // and the backward run there, and to()'s backward brings the gradient home.
  auto fused = dl::autograd::gradcheck(
      [](std::vector<NDArray<double>>& in) {
        auto a = in[0].cuda(), b = in[1].cuda();
        return NDArray<double>(dl::tanh(a * b) + dl::exp(a) / (b * b + 1.0)).cpu();
      },
      {dl::randn<double>({3, 4}), dl::randn<double>({4})});
  INFO(fused.message);
  CHECK(fused.ok);
  auto mm = dl::autograd::gradcheck(
      [](std::vector<NDArray<double>>& in) { return dl::matmul(in[0].cuda(), in[1].cuda().transpose()).cpu(); },
      {dl::randn<double>({3, 5}), dl::randn<double>({4, 5})});
  INFO(mm.message);
  CHECK(mm.ok);
  // Batched with a broadcast rhs (its gradient is summed over the batch on the GPU) and a
  // broadcast_to view (its backward is sum_to on the GPU).
  auto batched = dl::autograd::gradcheck(
      [](std::vector<NDArray<double>>& in) {
        return NDArray<double>(dl::matmul(in[0].cuda(), in[1].cuda()) * in[2].cuda().broadcast_to({2, 3, 5})).cpu();
      },
      {dl::randn<double>({2, 3, 4}), dl::randn<double>({4, 5}), dl::randn<double>({3, 1})});
  INFO(batched.message);
  CHECK(batched.ok);
}

TEST_CASE_TEMPLATE("cuda matmul (cuBLAS) matches the CPU: plain, transposed, batched, vectors", T, float, double) {
  dc::set_allow_tf32(false);
  dl::Generator gen(11);
  struct Case { Shape a, b; bool ta, tb; };
  std::vector<Case> cases = {{{1, 1}, {1, 1}, false, false}, {{7, 13}, {13, 5}, false, false},
                             {{64, 784}, {784, 256}, false, false}, {{13, 7}, {5, 13}, true, true},
                             {{31, 17}, {31, 9}, true, false}, {{2, 3, 8, 6}, {6, 4}, false, false},
                             {{5}, {5, 3}, false, false}, {{4, 5}, {5}, false, false}, {{0, 3}, {3, 2}, false, false}};
  for (auto& c : cases) {
    NDArray<T> a = dl::randn<T>(c.a, 0.0, 1.0, gen), b = dl::randn<T>(c.b, 0.0, 1.0, gen);
    if (c.ta) a = a.transpose();
    if (c.tb) b = b.transpose();
    NDArray<T> want = dl::matmul(a, b);
    NDArray<T> got = dl::matmul(a.cuda(), b.cuda());
    check_close(got, want, "matmul " + a.shape().to_string() + " x " + b.shape().to_string());
  }
  // A view with no BLAS layout (a strided slice) is packed first.
  NDArray<T> a = dl::randn<T>({8, 12}, 0.0, 1.0, gen), b = dl::randn<T>({6, 5}, 0.0, 1.0, gen);
  check_close(dl::matmul(a.cuda().slice(1, 0, 12, 2), b.cuda()), dl::matmul(a.slice(1, 0, 12, 2), b), "strided slice");
}

TEST_CASE("cuda matmul: TF32 is opt-in") {
  dl::Generator gen(5);
  auto a = dl::randn<float>({256, 512}, 0.0, 1.0, gen), b = dl::randn<float>({512, 128}, 0.0, 1.0, gen);
  NDArray<float> want = dl::matmul(a, b);
  CHECK(!dc::allow_tf32());
  double exact = max_rel_error(dl::matmul(a.cuda(), b.cuda()).cpu(), want);
  dc::set_allow_tf32(true);
  double tf32 = max_rel_error(dl::matmul(a.cuda(), b.cuda()).cpu(), want);
  dc::set_allow_tf32(false);
  INFO("fp32 error " << exact << ", tf32 error " << tf32);
  CHECK(exact <= 1e-4);
  CHECK(tf32 <= 5e-2);  // 10-bit mantissa products over K = 512
}

TEST_CASE_TEMPLATE("cuda reductions (CUB and sum_to) match the CPU", T, float, double) {
  dl::Generator gen(9);
  for (int64_t n : {1, 100, 1 << 20}) {
    auto x = dl::rand<T>({n}, -1, 1, gen);
    auto gx = x.cuda();
    NDArray<T> out(Shape{1}, kGpu);
    dc::sum_all(gx.data(), n, out.data(), 0);
    double want = 0;
    for (T v : x.to_vector()) want += v;
    INFO("n = " << n);
    CHECK(std::abs(out.item() - want) <= tolerance<T>() * std::max(1.0, std::abs(want)) * (std::is_same_v<T, float> ? 10 : 1));
  }
  auto g = dl::randn<T>({5, 7, 9}, 0.0, 1.0, gen);
  for (Shape target : {Shape{9}, Shape{7, 1}, Shape{5, 1, 9}, Shape{1}, Shape{}}) {
    check_close(dc::sum_to(g.cuda(), target), dl::detail::sum_to(g, target), "sum_to " + target.to_string());
  }
  check_close(dc::sum_to(g.cuda().transpose(0, 2), Shape{9, 1, 1}), dl::detail::sum_to(g.transpose(0, 2), Shape{9, 1, 1}),
              "sum_to of a transposed view");
  // Each partial-reduction kernel: column sums in one chunk and in many (partial rows added in
  // chunk order), row sums (one warp per output), reduced dims that merge and dims that do not.
  struct Case { Shape from, to; };
  for (const Case& c : {Case{{4096, 33}, {33}}, Case{{1024, 1024}, {1024}}, Case{{64, 256}, {256}},
                        Case{{33, 4096}, {33, 1}}, Case{{6, 300, 7}, {1, 300, 1}}, Case{{2, 3, 5000}, {2, 1, 1}},
                        Case{{3, 1, 70000}, {1}}, Case{{0, 5}, {5}}}) {
    auto big = dl::randn<T>(c.from, 0.0, 1.0, gen);
    check_close(dc::sum_to(big.cuda(), c.to), dl::detail::sum_to(big, c.to),
                "sum_to " + c.from.to_string() + " -> " + c.to.to_string());
  }
  auto wide = dl::randn<T>({300, 512}, 0.0, 1.0, gen);
  check_close(dc::sum_to(wide.cuda().transpose(0, 1), Shape{512, 1}), dl::detail::sum_to(wide.transpose(0, 1), Shape{512, 1}),
              "row sums of a transposed view (column reads)");
  // The order of additions is fixed: the same reduction twice gives the same bits.
  auto twice = dl::randn<T>({8192, 40}, 0.0, 1.0, gen).cuda();
  CHECK(dc::sum_to(twice, Shape{40}).cpu().to_vector() == dc::sum_to(twice, Shape{40}).cpu().to_vector());
}

TEST_CASE("cuda random numbers: the same Philox stream as the CPU") {
  dl::Generator cpu_gen(77), gpu_gen(77);
  auto want = dl::rand<float>({1000}, -2, 3, cpu_gen);
  NDArray<float> got(Shape{1000}, kGpu);
  dc::rand_fill(got, -2, 3, gpu_gen);
  CHECK(got.to_vector() == want.to_vector());  // integer arithmetic and exact scaling: identical bits
  CHECK(cpu_gen.state() == gpu_gen.state());
  auto wantn = dl::randn<double>({1001}, 0.5, 2.0, cpu_gen);
  NDArray<double> gotn(Shape{1001}, kGpu);
  dc::randn_fill(gotn, 0.5, 2.0, gpu_gen);
  CHECK(max_rel_error(gotn.cpu(), wantn) <= 1e-12);  // device log/sin/cos may differ by an ulp
}

#if defined(DL_HAVE_NCCL)
TEST_CASE("nccl: a one-rank communicator's allreduce leaves the array as it is") {
  auto id = dc::NcclCommunicator::unique_id();
  dc::NcclCommunicator comm(1, 0, id, 0);
  auto x = dl::randn<float>({1000});
  auto gx = x.cuda();
  comm.allreduce_sum(gx);
  CHECK(gx.to_vector() == x.to_vector());
  auto t = dl::randn<float>({4, 4}).cuda().transpose();
  CHECK_THROWS_WITH_AS(comm.allreduce_sum(t), doctest::Contains("not contiguous"), dl::DistributedError);
}
#endif

#if defined(DL_HAVE_CUDNN)
TEST_CASE_TEMPLATE("cudnn conv2d and softmax match the CPU", T, float, double) {
  dc::set_allow_tf32(false);
  dl::Generator gen(21);
  struct Case { Shape x, w; dl::Conv2dOptions o; };
  std::vector<Case> cases = {
      {{2, 3, 9, 9}, {4, 3, 3, 3}, {}},
      {{1, 4, 12, 10}, {6, 2, 3, 3}, {.stride = {2, 1}, .padding = {1, 2}, .groups = 2}},
      {{3, 2, 11, 11}, {5, 2, 3, 2}, {.padding = {2, 2}, .dilation = {2, 3}}},
  };
  for (auto& c : cases) {
    NDArray<T> x = dl::randn<T>(c.x, 0.0, 1.0, gen), w = dl::randn<T>(c.w, 0.0, 1.0, gen);
    NDArray<T> want = dl::conv2d(x, w, NDArray<T>(), c.o);
    for (int repeat = 0; repeat < 2; ++repeat)  // the second call takes the cached algorithm
      check_close(dc::conv2d_forward(x.cuda(), w.cuda(), c.o), want, "conv2d " + c.x.to_string() + " * " + c.w.to_string());
  }
  NDArray<T> logits = dl::randn<T>({7, 13}, 0.0, 3.0, gen);
  check_close(dc::softmax_forward(logits.cuda()), dl::softmax(logits), "softmax (7, 13)");
  CHECK_THROWS_WITH_AS(dc::conv2d_forward(dl::ones<T>({1, 3, 4, 4}).cuda(), dl::ones<T>({2, 2, 3, 3}).cuda()),
                       doctest::Contains("do not match groups"), dl::ShapeError);
}
#endif
