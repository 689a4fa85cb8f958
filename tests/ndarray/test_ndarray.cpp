#include <doctest/doctest.h>

#include "dl/dl.hpp"

using namespace dl;

TEST_CASE("ndarray: creation functions") {
  CHECK(zeros<float>({2, 3}).to_vector() == std::vector<float>(6, 0.0f));
  CHECK(ones<double>({4}).to_vector() == std::vector<double>(4, 1.0));
  CHECK(full<int32_t>({2}, 7).to_vector() == std::vector<int32_t>{7, 7});
  CHECK(arange<float>(0, 5).to_vector() == std::vector<float>{0, 1, 2, 3, 4});
  CHECK(arange<float>(1, 2, 0.25).numel() == 4);
  CHECK(linspace<double>(0, 1, 5).to_vector() == std::vector<double>{0, 0.25, 0.5, 0.75, 1});
  auto m = tensor<float>({{1, 2}, {3, 4}});
  CHECK(m.shape() == Shape{2, 2});
  CHECK(m.at({1, 0}) == 3.0f);
  CHECK(m.at({-1, -1}) == 4.0f);
  CHECK_THROWS_WITH_AS(m.at({2, 0}), doctest::Contains("at: index 2 is out of range for axis 0"), ValueError);
  CHECK_THROWS_AS(tensor<float>({{1, 2}, {3}}), ShapeError);
  CHECK_THROWS_WITH_AS(from_vector<float>({1, 2, 3}, Shape{2, 2}), doctest::Contains("from_vector: 3 values"), ShapeError);
  CHECK_THROWS_AS(arange<float>(0, 1, 0), ValueError);
}

TEST_CASE("ndarray: rand and randn are seeded and independent of the thread count") {
  manual_seed(7);
  set_num_threads(1);
  auto a = randn<float>({1000});
  manual_seed(7);
  set_num_threads(2);
  auto b = randn<float>({1000});
  CHECK(array_equal(a, b));
  auto c = randn<float>({1000});  // the generator advanced
  CHECK_FALSE(array_equal(b, c));
  auto v = randn<double>({200000}).to_vector();
  double mean = 0, sq = 0;
  for (double x : v) { mean += x; sq += x * x; }
  mean /= static_cast<double>(v.size());
  double var = sq / static_cast<double>(v.size()) - mean * mean;
  CHECK(std::abs(mean) < 0.01);
  CHECK(std::abs(var - 1.0) < 0.02);
  auto u = rand<float>({100000}, 2.0, 3.0).to_vector();
  CHECK(*std::min_element(u.begin(), u.end()) >= 2.0f);
  CHECK(*std::max_element(u.begin(), u.end()) < 3.0f);
}

TEST_CASE("ndarray: views share storage and never copy") {
  auto a = arange<float>(12).reshape({3, 4});
  auto t = a.transpose();
  CHECK(t.shape() == Shape{4, 3});
  CHECK(t.storage() == a.storage());
  CHECK_FALSE(t.is_contiguous());
  CHECK(t.at({3, 2}) == 11.0f);
  auto s = a.slice(1, 1, 4, 2);  // columns 1 and 3
  CHECK(s.storage() == a.storage());
  CHECK(s.to_vector() == std::vector<float>{1, 3, 5, 7, 9, 11});
  auto neg = a.slice(0, -2, 100);  // negative start, stop past the end clamps
  CHECK(neg.shape() == Shape{2, 4});
  auto b = a.broadcast_to({2, 3, 4});
  CHECK(b.strides()[0] == 0);
  CHECK(b.at({1, 2, 3}) == 11.0f);
  auto u = a.unsqueeze(0).unsqueeze(-1);
  CHECK(u.shape() == Shape{1, 3, 4, 1});
  CHECK(u.squeeze().shape() == Shape{3, 4});
  CHECK(a.expand_dims(1).shape() == Shape{3, 1, 4});
  CHECK(a.permute({1, 0}).to_vector() == t.to_vector());
  s.at({0, 0}) = 100.0f;  // writes through the view
  CHECK(a.at({0, 1}) == 100.0f);
  CHECK(a.reshape({-1}).shape() == Shape{12});
  CHECK(a.flatten(0).shape() == Shape{12});
}

TEST_CASE("ndarray: copies") {
  auto a = arange<float>(6).reshape({2, 3});
  auto c = a.clone();
  CHECK(c.storage() != a.storage());
  c.at({0, 0}) = 5.0f;
  CHECK(a.at({0, 0}) == 0.0f);
  auto t = a.transpose();
  auto tc = t.contiguous();
  CHECK(tc.is_contiguous());
  CHECK(tc.to_vector() == std::vector<float>{0, 3, 1, 4, 2, 5});
  CHECK(a.contiguous().storage() == a.storage());
  auto r = t.reshape({6});  // non-contiguous reshape copies
  CHECK(r.to_vector() == std::vector<float>{0, 3, 1, 4, 2, 5});
  auto i = a.cast<int32_t>();
  CHECK(i.to_vector() == std::vector<int32_t>{0, 1, 2, 3, 4, 5});
  auto h = tensor<float>({1.5f, -2.25f, 65504.0f}).cast<float16>().cast<float>();
  CHECK(h.to_vector() == std::vector<float>{1.5f, -2.25f, 65504.0f});
  auto bf = tensor<float>({1.0f, 3.140625f}).cast<bfloat16>().cast<float>();
  CHECK(bf.to_vector() == std::vector<float>{1.0f, 3.140625f});
}

TEST_CASE("ndarray: shape errors name the operation and the values") {
  auto a = arange<float>(6).reshape({2, 3});
  CHECK_THROWS_WITH_AS(a.reshape({4, 2}), doctest::Contains("reshape: cannot reshape (2, 3) (6 elements) to (4, 2)"), ShapeError);
  CHECK_THROWS_WITH_AS(a.reshape({-1, -1}), doctest::Contains("more than one -1"), ShapeError);
  CHECK_THROWS_WITH_AS(a.broadcast_to({3, 3}), doctest::Contains("broadcast_to: cannot broadcast (2, 3) to (3, 3)"), ShapeError);
  CHECK_THROWS_WITH_AS(a.squeeze(0), doctest::Contains("squeeze: axis 0 has size 2"), ShapeError);
  CHECK_THROWS_WITH_AS(a.permute({0, 0}), doctest::Contains("permute: axis 0 repeated"), ValueError);
  CHECK_THROWS_WITH_AS(a.slice(2, 0, 1), doctest::Contains("slice: axis 2 is out of range for rank 2"), ValueError);
  CHECK_THROWS_WITH_AS(a.slice(0, 0, 1, 0), doctest::Contains("slice: step must be positive"), ValueError);
  CHECK_THROWS_WITH_AS(a.item(), doctest::Contains("item: array of shape (2, 3) has 6 elements"), ShapeError);
  CHECK_THROWS_WITH_AS(NDArray<float>(Shape{2}, Device::cuda(0)), doctest::Contains("built without CUDA"), DeviceError);
  CHECK_THROWS_WITH_AS(a.to(Device::cuda(1)), doctest::Contains("cuda:1"), DeviceError);
  NDArray<float> undefined;
  CHECK_THROWS_WITH_AS(undefined.reshape({1}), doctest::Contains("undefined"), ValueError);
}

TEST_CASE("ndarray: printing is NumPy-like") {
  CHECK(to_string(tensor<float>({{1, 2.5f}, {3, 4}})) == "[[1, 2.5],\n [3, 4]]");
  CHECK(to_string(tensor<int32_t>({1, 2, 3})) == "[1, 2, 3]");
  CHECK(to_string(ones<float>({}).reshape({})) == "1");
  std::string big = to_string(arange<float>(2000));
  CHECK(big.find("...") != std::string::npos);
  CHECK(big.size() < 100);
}

TEST_CASE("ndarray: allclose and array_equal") {
  auto a = tensor<double>({1.0, 2.0});
  CHECK(allclose(a, tensor<double>({1.0 + 1e-9, 2.0})));
  CHECK_FALSE(allclose(a, tensor<double>({1.1, 2.0})));
  CHECK_FALSE(allclose(a, tensor<double>({1.0, 2.0, 3.0})));
  CHECK(array_equal(a, a.clone()));
}

TEST_CASE("allocator: pooled blocks are reused and statistics add up") {
  auto& alloc = cpu_allocator();
  { NDArray<float> warm(Shape{1000}); }
  auto before = alloc.stats();
  for (int i = 0; i < 10; ++i) { NDArray<float> x(Shape{1000}); }
  auto after = alloc.stats();
  CHECK(after.num_requests - before.num_requests == 10);
  CHECK(after.num_system_allocs == before.num_system_allocs);  // served from the pool
  NDArray<float> held(Shape{1 << 20});
  CHECK(alloc.stats().bytes_in_use >= before.bytes_in_use + (4 << 20));
  CHECK(alloc.stats().peak_bytes_in_use >= alloc.stats().bytes_in_use);
  CHECK(reinterpret_cast<uintptr_t>(held.data()) % 64 == 0);
  alloc.empty_cache();
  CHECK(alloc.stats().bytes_cached == 0);
}

TEST_CASE("rng: Philox is counter-based") {
  Generator g(99);
  auto s1 = g.reserve(10);  // 3 blocks
  auto s2 = g.reserve(1);
  CHECK(s2.offset == s1.offset + 3);
  CHECK(philox_uniform(s1, 5) == philox_uniform(PhiloxState{99, s1.offset + 1}, 1));
  CHECK(philox4x32(1, 2) != philox4x32(1, 3));
}

TEST_CASE("parallel_for covers the range exactly once") {
  set_num_threads(2);
  std::vector<int> hits(100003, 0);
  parallel_for(0, static_cast<int64_t>(hits.size()), 1000, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
  });
  CHECK(std::count(hits.begin(), hits.end(), 1) == static_cast<long>(hits.size()));
  CHECK_THROWS_AS(set_num_threads(0), ValueError);
}
