// Tests for ops/shaping.hpp: concat, stack, split and pad against reference loops over random
// shapes and axes (non-contiguous and empty inputs included), round trips, error messages and
// gradchecks.
#include "dl/ops/shaping.hpp"

#include <random>

#include "support/op_table.hpp"

using namespace dl;
using dl::testing::GradcheckCase;
using V = std::vector<NDArray<double>>;

namespace {

template <class Fn>
void for_each_index(const Shape& shape, Fn fn) {
  if (shape.numel() == 0) return;
  std::vector<int64_t> idx(static_cast<size_t>(shape.rank()), 0);
  for (int64_t n = 0; n < shape.numel(); ++n) {
    fn(idx);
    for (int d = shape.rank() - 1; d >= 0; --d) {
      if (++idx[static_cast<size_t>(d)] < shape[d]) break;
      idx[static_cast<size_t>(d)] = 0;
    }
  }
}

std::vector<int64_t> random_dims(std::mt19937& rng, int min_rank, int max_rank) {
  int rank = std::uniform_int_distribution<int>(min_rank, max_rank)(rng);
  std::vector<int64_t> d;
  for (int i = 0; i < rank; ++i) d.push_back(std::uniform_int_distribution<int64_t>(1, 4)(rng));
  return d;
}

NDArray<double> maybe_non_contiguous(std::mt19937& rng, const NDArray<double>& x) {
  return rng() % 2 ? dl::testing::non_contiguous(x) : x;
}

}  // namespace

TEST_CASE("concat matches a reference loop") {
  std::mt19937 rng(21);
  manual_seed(21);
  for (int iter = 0; iter < 50; ++iter) {
    auto dims = random_dims(rng, 1, 4);
    int axis = static_cast<int>(rng() % dims.size());
    int count = std::uniform_int_distribution<int>(1, 4)(rng);
    std::vector<NDArray<double>> xs;
    std::vector<int64_t> owner, local;  // for each output position along axis: input and its index
    for (int k = 0; k < count; ++k) {
      auto d = dims;
      d[static_cast<size_t>(axis)] = std::uniform_int_distribution<int64_t>(0, 3)(rng);
      xs.push_back(maybe_non_contiguous(rng, randn<double>(Shape(d))));
      for (int64_t i = 0; i < d[static_cast<size_t>(axis)]; ++i) {
        owner.push_back(k);
        local.push_back(i);
      }
    }
    int passed = rng() % 2 ? axis : axis - static_cast<int>(dims.size());
    CAPTURE(Shape(dims));
    CAPTURE(passed);
    NDArray<double> out = concat(xs, passed);
    auto want = dims;
    want[static_cast<size_t>(axis)] = static_cast<int64_t>(owner.size());
    REQUIRE(out.shape() == Shape(want));
    bool ok = true;
    for_each_index(out.shape(), [&](const std::vector<int64_t>& o) {
      auto i = o;
      size_t p = static_cast<size_t>(o[static_cast<size_t>(axis)]);
      i[static_cast<size_t>(axis)] = local[p];
      ok = ok && out.at(o) == xs[static_cast<size_t>(owner[p])].at(i);
    });
    CHECK(ok);
  }
}

TEST_CASE("stack matches a reference loop") {
  std::mt19937 rng(22);
  manual_seed(22);
  for (int iter = 0; iter < 50; ++iter) {
    auto dims = random_dims(rng, 0, 3);
    int rank = static_cast<int>(dims.size());
    int axis = static_cast<int>(rng() % static_cast<unsigned>(rank + 1));
    int count = std::uniform_int_distribution<int>(1, 4)(rng);
    std::vector<NDArray<double>> xs;
    for (int k = 0; k < count; ++k) xs.push_back(maybe_non_contiguous(rng, randn<double>(Shape(dims))));
    int passed = rng() % 2 ? axis : axis - rank - 1;
    CAPTURE(Shape(dims));
    CAPTURE(passed);
    NDArray<double> out = stack(xs, passed);
    auto want = dims;
    want.insert(want.begin() + axis, count);
    REQUIRE(out.shape() == Shape(want));
    bool ok = true;
    for_each_index(out.shape(), [&](const std::vector<int64_t>& o) {
      auto i = o;
      int64_t k = o[static_cast<size_t>(axis)];
      i.erase(i.begin() + axis);
      ok = ok && out.at(o) == xs[static_cast<size_t>(k)].at(i);
    });
    CHECK(ok);
  }
}

TEST_CASE("split into sections and sizes round-trips through concat") {
  std::mt19937 rng(23);
  manual_seed(23);
  for (int iter = 0; iter < 40; ++iter) {
    auto dims = random_dims(rng, 1, 4);
    int axis = static_cast<int>(rng() % dims.size());
    int64_t sections = std::uniform_int_distribution<int64_t>(1, 3)(rng);
    dims[static_cast<size_t>(axis)] *= sections;
    NDArray<double> x = maybe_non_contiguous(rng, randn<double>(Shape(dims)));
    auto parts = split(x, sections, axis);
    REQUIRE(static_cast<int64_t>(parts.size()) == sections);
    for (const auto& p : parts) CHECK(p.shape()[axis] == dims[static_cast<size_t>(axis)] / sections);
    CHECK(array_equal(concat(parts, axis), x.contiguous()));
    // random sizes (zeros allowed) that add up to the axis
    std::vector<int64_t> sizes;
    int64_t left = dims[static_cast<size_t>(axis)];
    while (left > 0) {
      int64_t s = std::uniform_int_distribution<int64_t>(0, left)(rng);
      sizes.push_back(s);
      left -= s;
    }
    auto pieces = split(x, sizes, axis - static_cast<int>(dims.size()));
    REQUIRE(pieces.size() == sizes.size());
    for (size_t k = 0; k < sizes.size(); ++k) CHECK(pieces[k].shape()[axis] == sizes[k]);
    CHECK(array_equal(concat(pieces, axis), x.contiguous()));
  }
  auto y = arange<double>(6).reshape({2, 3});
  auto ab = split(y, {1, 2}, 1);
  CHECK(ab[0].to_vector() == std::vector<double>{0, 3});
  CHECK(ab[1].to_vector() == std::vector<double>{1, 2, 4, 5});
  auto rows = split(y, 2);
  CHECK(rows[1].to_vector() == std::vector<double>{3, 4, 5});
}

TEST_CASE("split outputs are separate tape nodes whose gradients add up") {
  auto x = arange<double>(6).reshape({3, 2});
  x.attach_grad();
  {
    autograd::record rec;
    auto parts = split(x, 3, 0);
    NDArray<double> y = parts[0] * 1.0 + parts[1] * 10.0 + parts[2] * 100.0;
    y.backward(ones<double>({1, 2}));
  }
  CHECK(x.grad().to_vector() == std::vector<double>{1, 1, 10, 10, 100, 100});
}

TEST_CASE("pad matches a reference loop") {
  std::mt19937 rng(24);
  manual_seed(24);
  for (int iter = 0; iter < 50; ++iter) {
    auto dims = random_dims(rng, 1, 4);
    NDArray<double> x = maybe_non_contiguous(rng, randn<double>(Shape(dims)));
    size_t npairs = rng() % (dims.size() + 1);
    std::vector<std::pair<int64_t, int64_t>> pads;
    for (size_t d = 0; d < npairs; ++d)
      pads.push_back({std::uniform_int_distribution<int64_t>(0, 2)(rng), std::uniform_int_distribution<int64_t>(0, 2)(rng)});
    double value = std::uniform_real_distribution<double>(-5, 5)(rng);
    NDArray<double> out = pad(x, pads, value);
    auto want = dims;
    for (size_t d = 0; d < npairs; ++d) want[d] += pads[d].first + pads[d].second;
    REQUIRE(out.shape() == Shape(want));
    bool ok = true;
    for_each_index(out.shape(), [&](const std::vector<int64_t>& o) {
      std::vector<int64_t> i = o;
      bool inside = true;
      for (size_t d = 0; d < npairs; ++d) {
        i[d] -= pads[d].first;
        inside = inside && i[d] >= 0 && i[d] < dims[d];
      }
      ok = ok && out.at(o) == (inside ? x.at(i) : value);
    });
    CHECK(ok);
  }
  auto p = pad(tensor<double>({1, 2}), {{2, 1}}, -1.0);
  CHECK(p.to_vector() == std::vector<double>{-1, -1, 1, 2, -1});
}

TEST_CASE("integer arrays and expressions") {
  auto a = from_vector<int64_t>({1, 2, 3, 4}, Shape{2, 2});
  auto b = from_vector<int64_t>({5, 6}, Shape{1, 2});
  CHECK(concat({a, b}, 0).to_vector() == std::vector<int64_t>{1, 2, 3, 4, 5, 6});
  CHECK(stack({a, a}, 2).shape() == Shape{2, 2, 2});
  CHECK(stack({a, a}, 2).to_vector() == std::vector<int64_t>{1, 1, 2, 2, 3, 3, 4, 4});
  CHECK(pad(a, {{0, 0}, {1, 0}}, int64_t{9}).to_vector() == std::vector<int64_t>{9, 1, 2, 9, 3, 4});
  auto parts = split(a, 2, 1);
  CHECK(parts[1].to_vector() == std::vector<int64_t>{2, 4});
  auto f = tensor<double>({1, 2});
  CHECK(split(f * 2.0, 2)[1].item() == 4.0);
  CHECK(pad(f + 1.0, {{1, 1}}).to_vector() == std::vector<double>{0, 2, 3, 0});
  // stacking 0-d arrays gives a vector
  NDArray<double> s0 = f.slice(0, 0, 1).reshape(Shape{}), s1 = f.slice(0, 1, 2).reshape(Shape{});
  CHECK(stack({s0, s1}).to_vector() == std::vector<double>{1, 2});
}

TEST_CASE("shaping errors") {
  auto a = randn<double>({2, 3}), b = randn<double>({2, 4}), c = randn<double>({2, 3, 1});
  CHECK_THROWS_WITH_AS(concat(std::vector<NDArray<double>>{}), doctest::Contains("concat: needs at least one array"),
                       dl::ValueError);
  CHECK_THROWS_WITH_AS(concat({a, b}, 0),
                       doctest::Contains("concat: array 1 has shape (2, 4), which does not match array 0's shape (2, 3) outside axis 0"),
                       dl::ShapeError);
  CHECK_THROWS_WITH_AS(concat({a, c}, 1), doctest::Contains("concat: array 1 has shape (2, 3, 1)"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(concat({a, a}, 2), doctest::Contains("concat: axis 2 is out of range for rank 2"), dl::ValueError);
  NDArray<double> s = a.slice(0, 0, 1).slice(1, 0, 1).reshape(Shape{});
  CHECK_THROWS_WITH_AS(concat({s, s}), doctest::Contains("concat: cannot concatenate 0-d arrays"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(concat({a, NDArray<double>()}), doctest::Contains("concat: the array is undefined"), dl::ValueError);
  CHECK_THROWS_WITH_AS(stack({a, b}), doctest::Contains("stack: array 1 has shape (2, 4), which differs from array 0's shape (2, 3)"),
                       dl::ShapeError);
  CHECK_THROWS_WITH_AS(stack({a, a}, 3), doctest::Contains("stack: axis 3 is out of range for rank 3"), dl::ValueError);
  CHECK_THROWS_WITH_AS(stack(std::vector<NDArray<double>>{}), doctest::Contains("stack: needs at least one array"),
                       dl::ValueError);
  CHECK_THROWS_WITH_AS(split(a, 2, 1), doctest::Contains("split: axis 1 of size 3 cannot be split into 2 equal sections"),
                       dl::ValueError);
  CHECK_THROWS_WITH_AS(split(a, 0, 1), doctest::Contains("split: number of sections must be positive, got 0"),
                       dl::ValueError);
  CHECK_THROWS_WITH_AS(split(a, {1, 1}, 1), doctest::Contains("split: section sizes add up to 2 but axis 1 has size 3"),
                       dl::ValueError);
  CHECK_THROWS_WITH_AS(split(a, {4, -1}, 1), doctest::Contains("split: section sizes must be non-negative, got -1"),
                       dl::ValueError);
  CHECK_THROWS_WITH_AS(split(a, 1, -3), doctest::Contains("split: axis -3 is out of range"), dl::ValueError);
  CHECK_THROWS_WITH_AS(split(s, 1), doctest::Contains("split: cannot split a 0-d array"), dl::ValueError);
  CHECK_THROWS_WITH_AS(pad(a, {{0, 1}, {-1, 0}}), doctest::Contains("pad: padding must be non-negative, got (-1, 0) for axis 1"),
                       dl::ValueError);
  CHECK_THROWS_WITH_AS(pad(a, {{0, 1}, {0, 0}, {1, 1}}), doctest::Contains("pad: got 3 (before, after) pairs for an array of rank 2"),
                       dl::ValueError);
}

TEST_CASE("gradcheck: shaping op table") {
  auto nc = [](Shape s) { return dl::testing::non_contiguous(randn<double>(s)); };
  std::vector<GradcheckCase> cases = {
      {"concat axis 0", [nc] { return V{randn<double>({2, 3}), nc({1, 3}), randn<double>({3, 3})}; },
       [](V& x) { return concat(x, 0); }},
      {"concat axis -1 with expression", [nc] { return V{nc({2, 3}), randn<double>({2, 2}), randn<double>({2})}; },
       [](V& x) { return concat({x[0], NDArray<double>(x[1] * x[2])}, -1); }},
      {"concat same input twice", [] { return V{randn<double>({2, 2})}; }, [](V& x) { return concat({x[0], x[0]}, 1); }},
      {"concat transposed", [] { return V{randn<double>({3, 2}), randn<double>({2, 2})}; },
       [](V& x) { return concat({x[0].transpose(), x[1]}, 1); }},
      {"stack axis 0", [nc] { return V{randn<double>({2, 3}), nc({2, 3})}; }, [](V& x) { return stack(x, 0); }},
      {"stack axis 1", [] { return V{randn<double>({2, 3}), randn<double>({2, 3}), randn<double>({2, 3})}; },
       [](V& x) { return stack(x, 1); }},
      {"stack last axis transposed", [] { return V{randn<double>({3, 2}), randn<double>({2, 3})}; },
       [](V& x) { return stack({x[0].transpose(), x[1]}, -1); }},
      {"split sections", [nc] { return V{nc({4, 3})}; },
       [](V& x) { auto p = split(x[0], 2, 0); return NDArray<double>(p[0] * p[1] + p[1]); }},
      {"split sizes reordered", [] { return V{randn<double>({2, 6})}; },
       [](V& x) { auto p = split(x[0], {1, 3, 2}, 1); return concat({p[2], p[0], NDArray<double>(p[1] * 2.0)}, 1); }},
      {"pad", [] { return V{randn<double>({2, 3})}; }, [](V& x) { return pad(x[0], {{1, 2}, {0, 1}}, 3.0); }},
      {"pad non-contiguous first axis only", [nc] { return V{nc({3, 2})}; }, [](V& x) { return pad(x[0], {{2, 0}}); }},
      {"pad transposed", [] { return V{randn<double>({2, 3, 2})}; },
       [](V& x) { return NDArray<double>(pad(x[0].permute({2, 0, 1}), {{0, 1}, {1, 1}, {2, 0}}) * 2.0); }},
  };
  dl::testing::run_gradcheck_table(cases);
}
