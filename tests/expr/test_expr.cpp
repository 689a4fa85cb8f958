#include <doctest/doctest.h>

#include <random>

#include "dl/dl.hpp"

using namespace dl;

namespace {
// Reference: apply f elementwise over broadcast operands with explicit index arithmetic.
template <class F>
std::vector<float> reference2(const NDArray<float>& a, const NDArray<float>& b, const Shape& out, F f) {
  std::vector<float> r;
  std::vector<int64_t> idx(static_cast<size_t>(out.rank()), 0);
  auto get = [&](const NDArray<float>& x) {
    std::vector<int64_t> ix;
    for (int d = 0; d < x.rank(); ++d) {
      int od = d + out.rank() - x.rank();
      ix.push_back(x.shape()[d] == 1 ? 0 : idx[static_cast<size_t>(od)]);
    }
    return x.at(ix);
  };
  for (int64_t i = 0; i < out.numel(); ++i) {
    r.push_back(f(get(a), get(b)));
    for (int d = out.rank() - 1; d >= 0; --d) {
      if (++idx[static_cast<size_t>(d)] < out[d]) break;
      idx[static_cast<size_t>(d)] = 0;
    }
  }
  return r;
}
}  // namespace

TEST_CASE("expr: expressions are lazy and evaluate in one pass on assignment") {
  auto a = tensor<float>({1, 2, 3});
  auto e = a * 2.0f + 1.0f;  // nothing computed yet
  CHECK(is_expr_node_v<decltype(e)>);
  CHECK(e.shape() == Shape{3});
  auto before = cpu_allocator().stats().num_requests;
  NDArray<float> y = e;
  CHECK(cpu_allocator().stats().num_requests - before == 1);  // only the output was allocated
  CHECK(y.to_vector() == std::vector<float>{3, 5, 7});
  CHECK(e.eval().to_vector() == y.to_vector());
  CHECK(NDArray<float>(2.0f - a).to_vector() == std::vector<float>{1, 0, -1});
  CHECK(NDArray<float>(6.0f / a).to_vector() == std::vector<float>{6, 3, 2});
}

TEST_CASE("expr: broadcasting matches a reference over random shapes (property test)") {
  manual_seed(3);
  std::mt19937 rng(5);
  for (int trial = 0; trial < 40; ++trial) {
    int rank = 1 + static_cast<int>(rng() % 4);
    std::vector<int64_t> out, sa, sb;
    for (int d = 0; d < rank; ++d) out.push_back(1 + static_cast<int64_t>(rng() % 5));
    for (int d = 0; d < rank; ++d) {
      sa.push_back(rng() % 3 == 0 ? 1 : out[static_cast<size_t>(d)]);
      sb.push_back(rng() % 3 == 0 ? 1 : out[static_cast<size_t>(d)]);
    }
    if (rng() % 2) sb.erase(sb.begin());  // lower-rank operand
    auto a = randn<float>(Shape(sa)), b = randn<float>(Shape(sb));
    if (rng() % 2 && a.rank() >= 2) a = a.transpose().contiguous().transpose();  // non-contiguous operand
    Shape os = broadcast_shapes(a.shape(), b.shape(), "test");
    NDArray<float> y = maximum(a, b) * 2.0f - b;
    auto ref = reference2(a, b, os, [](float x, float z) { return std::max(x, z) * 2.0f - z; });
    REQUIRE(y.shape() == os);
    auto got = y.to_vector();
    for (size_t i = 0; i < ref.size(); ++i) CHECK(got[i] == doctest::Approx(ref[i]));
  }
}

TEST_CASE("expr: large arrays use all threads and agree with a serial loop") {
  auto a = randn<float>({1000, 513}), b = randn<float>({513});
  set_num_threads(2);
  NDArray<float> y = tanh(a) * b + sigmoid(a - b);
  set_num_threads(1);
  NDArray<float> z = tanh(a) * b + sigmoid(a - b);
  set_num_threads(2);
  CHECK(array_equal(y, z));
}

TEST_CASE("expr: every primitive computes the expected value") {
  auto x = tensor<double>({-1.5, 0.25, 2.0});
  auto v = [](const auto& e) { return NDArray<double>(e).to_vector(); };
  CHECK(v(abs(x)) == std::vector<double>{1.5, 0.25, 2.0});
  CHECK(v(relu(x)) == std::vector<double>{0, 0.25, 2.0});
  CHECK(v(leaky_relu(x, 0.1))[0] == doctest::Approx(-0.15));
  CHECK(v(clamp(x, -1.0, 1.0)) == std::vector<double>{-1.0, 0.25, 1.0});
  CHECK(v(square(x))[0] == doctest::Approx(2.25));
  CHECK(v(sqrt(abs(x)))[2] == doctest::Approx(std::sqrt(2.0)));
  CHECK(v(rsqrt(abs(x)))[1] == doctest::Approx(2.0));
  CHECK(v(exp(x))[1] == doctest::Approx(std::exp(0.25)));
  CHECK(v(log(abs(x)))[2] == doctest::Approx(std::log(2.0)));
  CHECK(v(log1p(abs(x)))[1] == doctest::Approx(std::log1p(0.25)));
  CHECK(v(expm1(x))[0] == doctest::Approx(std::expm1(-1.5)));
  CHECK(v(sigmoid(x))[0] == doctest::Approx(1.0 / (1.0 + std::exp(1.5))));
  CHECK(v(softplus(x))[2] == doctest::Approx(std::log1p(std::exp(2.0))));
  CHECK(v(NDArray<double>(softplus(tensor<double>({1000.0}))))[0] == doctest::Approx(1000.0));  // no overflow
  CHECK(v(gelu(x))[2] == doctest::Approx(1.9545976).epsilon(1e-6));
  CHECK(v(sin(x))[1] == doctest::Approx(std::sin(0.25)));
  CHECK(v(cos(x))[1] == doctest::Approx(std::cos(0.25)));
  CHECK(v(pow(abs(x), 3.0))[2] == doctest::Approx(8.0));
  CHECK(v(pow(2.0, x))[2] == doctest::Approx(4.0));
  CHECK(v(minimum(x, 0.0)) == std::vector<double>{-1.5, 0.0, 0.0});
  CHECK(v(greater(x, 0.0)) == std::vector<double>{0, 1, 1});
  CHECK(v(x < 0.0) == std::vector<double>{1, 0, 0});
  CHECK(v(x >= 0.25) == std::vector<double>{0, 1, 1});
  CHECK(v(equal(x, 2.0)) == std::vector<double>{0, 0, 1});
  CHECK(v(not_equal(x, 2.0)) == std::vector<double>{1, 1, 0});
  CHECK(v(where(x > 0.0, x, -x)) == std::vector<double>{1.5, 0.25, 2.0});
  auto i = tensor<int32_t>({1, -2, 3});
  CHECK(NDArray<int32_t>(i * 2 + abs(i)).to_vector() == std::vector<int32_t>{3, -2, 9});
}

TEST_CASE("expr: compound assignment is in place and alias-safe") {
  auto a = arange<float>(9).reshape({3, 3});
  auto storage = a.storage();
  a += a.transpose();  // reads elements the loop also writes
  CHECK(a.storage() == storage);
  CHECK(a.to_vector() == std::vector<float>{0, 4, 8, 4, 8, 12, 8, 12, 16});
  auto b = arange<float>(6);
  b.slice(0, 1, 6).assign(b.slice(0, 0, 5));  // overlapping shifted copy
  CHECK(b.to_vector() == std::vector<float>{0, 0, 1, 2, 3, 4});
  auto c = ones<float>({2, 3});
  c *= tensor<float>({1, 2, 3});  // broadcast right-hand side
  c -= 1.0f;
  c /= 2.0f;
  CHECK(c.to_vector() == std::vector<float>{0, 0.5f, 1, 0, 0.5f, 1});
  auto t = zeros<float>({3, 2}).transpose();  // write into a non-contiguous destination
  t.assign(tensor<float>({{1, 2, 3}, {4, 5, 6}}));
  CHECK(t.to_vector() == std::vector<float>{1, 2, 3, 4, 5, 6});
}

TEST_CASE("expr: errors") {
  auto a = ones<float>({2, 3});
  auto b = ones<float>({4});
  CHECK_THROWS_WITH_AS(NDArray<float>(a + b), doctest::Contains("add: shapes (2, 3) and (4,) cannot be broadcast"), ShapeError);
  CHECK_THROWS_WITH_AS(NDArray<float>(a * b - 1.0f), doctest::Contains("mul:"), ShapeError);
  CHECK_THROWS_WITH_AS(a += ones<float>({3, 3}), doctest::Contains("assign:"), ShapeError);
  CHECK_THROWS_WITH_AS(a.assign(ones<float>({2, 1, 3})), doctest::Contains("assign: cannot write shape (2, 1, 3)"), ShapeError);
  CHECK_THROWS_WITH_AS(clamp(a, 1.0, 0.0), doctest::Contains("clamp: lower bound"), ValueError);
}

TEST_CASE("matmul: shapes, transposes without copies, errors") {
  auto a = randn<float>({5, 7}), b = randn<float>({7, 3});
  auto c = matmul(a, b);
  CHECK(c.shape() == Shape{5, 3});
  double ref = 0;
  for (int k = 0; k < 7; ++k) ref += a.at({2, k}) * b.at({k, 1});
  CHECK(c.at({2, 1}) == doctest::Approx(ref).epsilon(1e-5));
  auto before = cpu_allocator().stats().num_requests;
  auto ct = matmul(b.transpose(), a.transpose());  // (3, 7) x (7, 5): read as column-major
  CHECK(cpu_allocator().stats().num_requests - before == 1);  // the output only
  CHECK(allclose(ct, c.transpose().contiguous(), 1e-5, 1e-5));
  CHECK(matmul(randn<float>({4, 5, 7}), b).shape() == Shape{4, 5, 3});
  CHECK(matmul(randn<float>({2, 1, 5, 7}), randn<float>({3, 7, 2})).shape() == Shape{2, 3, 5, 2});
  CHECK(matmul(randn<float>({7}), b).shape() == Shape{3});
  CHECK(matmul(a, randn<float>({7})).shape() == Shape{5});
  CHECK(matmul(randn<float>({7}), randn<float>({7})).shape() == Shape{});
  CHECK_THROWS_WITH_AS(matmul(randn<float>({32, 784}), randn<float>({256, 10})),
                       doctest::Contains("matmul: inner dimensions differ: lhs (32, 784) vs rhs (256, 10)"), ShapeError);
  CHECK_THROWS_WITH_AS(matmul(randn<float>({2, 3, 4}), randn<float>({3, 4, 5})), doctest::Contains("matmul: shapes (2,) and (3,)"), ShapeError);
  CHECK(matmul(zeros<float>({3, 0}), zeros<float>({0, 2})).to_vector() == std::vector<float>(6, 0.0f));
}
