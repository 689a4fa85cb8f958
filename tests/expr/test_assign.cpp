#include <doctest/doctest.h>

#include "dl/dl.hpp"

using namespace dl;

TEST_CASE("assign: a fused node keeps only the leaves whose values its backward reads") {
  // h = matmul(x, w) + b as nn::Dense computes it: add reads neither operand, so once the caller
  // drops the matmul output its memory is free (the broadcast bias is kept); a * c reads a.
  auto x = randn<float>({64, 32}).attach_grad();
  auto w = randn<float>({32, 256}).attach_grad();
  auto b = randn<float>({256}).attach_grad();
  auto c = randn<float>({64, 256}).attach_grad();
  const int64_t matmul_bytes = 64 * 256 * static_cast<int64_t>(sizeof(float));
  autograd::record rec;
  // Bytes still in use once h = formula(a) is recorded and a's handle dropped, beyond h itself.
  auto kept = [&](auto formula) {
    NDArray<float> a = matmul(x, w);
    const int64_t with_a = cpu_allocator().stats().bytes_in_use;
    NDArray<float> h = formula(a);
    a = NDArray<float>();
    return cpu_allocator().stats().bytes_in_use - with_a;
  };
  CHECK(kept([&](const NDArray<float>& a) { return NDArray<float>(a + b); }) == 0);
  CHECK(kept([&](const NDArray<float>& a) { return NDArray<float>(b - a * 2.0f); }) == 0);
  CHECK(kept([&](const NDArray<float>& a) { return NDArray<float>(a * c); }) == matmul_bytes);
  CHECK(kept([&](const NDArray<float>& a) { return NDArray<float>(relu(a + b)); }) == matmul_bytes);
}

TEST_CASE("assign: backward with stand-ins runs twice (retain_graph) and under anomaly mode") {
  // h = x w + b keeps the broadcast bias but not the matmul output; y = relu(h) + 0.5 h keeps h for
  // relu and takes a stand-in for the second h. dy/dh = (h > 0) + 0.5.
  manual_seed(3);
  auto x = randn<double>({5, 3}).attach_grad(autograd::GradReq::add);
  auto w = randn<double>({3, 4}).attach_grad(autograd::GradReq::add);
  auto b = randn<double>({4}).attach_grad(autograd::GradReq::add);
  NDArray<double> y, h;
  autograd::detect_anomaly_scope anomaly;
  {
    autograd::record rec;
    h = matmul(x, w) + b;
    y = relu(h) + h * 0.5;
  }
  y.backward(ones<double>(y.shape()), true);
  y.backward(ones<double>(y.shape()));
  for (int i = 0; i < 5; ++i) {
    for (int k = 0; k < 3; ++k) {
      double gx = 0;
      for (int j = 0; j < 4; ++j) gx += ((h.at({i, j}) > 0 ? 1.0 : 0.0) + 0.5) * w.at({k, j});
      CHECK(x.grad().at({i, k}) == doctest::Approx(2 * gx));
    }
  }
  for (int j = 0; j < 4; ++j) {
    double gb = 0;
    for (int i = 0; i < 5; ++i) gb += (h.at({i, j}) > 0 ? 1.0 : 0.0) + 0.5;
    CHECK(b.grad().at({j}) == doctest::Approx(2 * gb));
  }
}
