// Tests for ops/indexing.hpp: take, gather and one_hot against reference loops over random
// shapes, axes and index arrays (negative, repeated, non-contiguous); scatter-add gradients with
// repeated indices; error messages; gradchecks.
#include "dl/ops/indexing.hpp"

#include <random>

#include "support/op_table.hpp"

using namespace dl;
using dl::testing::GradcheckCase;
using V = std::vector<NDArray<double>>;

namespace {

// Calls fn(index) for every multi-index of `shape` in row-major order.
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

Shape random_shape(std::mt19937& rng, int min_rank, int max_rank, int64_t max_dim = 4) {
  int rank = std::uniform_int_distribution<int>(min_rank, max_rank)(rng);
  std::vector<int64_t> d;
  for (int i = 0; i < rank; ++i) d.push_back(std::uniform_int_distribution<int64_t>(1, max_dim)(rng));
  return Shape(d);
}

NDArray<int64_t> random_indices(std::mt19937& rng, const Shape& shape, int64_t lo, int64_t hi) {
  NDArray<int64_t> a(shape);
  std::uniform_int_distribution<int64_t> dist(lo, hi);
  for (int64_t i = 0; i < a.numel(); ++i) a.data()[i] = dist(rng);
  return a;
}

}  // namespace

TEST_CASE("take matches a reference loop over random shapes, axes and index arrays") {
  std::mt19937 rng(3);
  manual_seed(3);
  for (int iter = 0; iter < 60; ++iter) {
    Shape xs = random_shape(rng, 1, 4);
    NDArray<double> x = randn<double>(xs);
    if (rng() % 2) x = dl::testing::non_contiguous(x);
    int axis = static_cast<int>(rng() % static_cast<unsigned>(xs.rank()));
    int64_t n = xs[axis];
    NDArray<int64_t> idx = random_indices(rng, random_shape(rng, 0, 2), -n, n - 1);
    if (rng() % 3 == 0 && idx.rank() == 2) idx = idx.transpose();  // non-contiguous indices
    int passed = rng() % 2 ? axis : axis - xs.rank();
    CAPTURE(xs);
    CAPTURE(idx.shape());
    CAPTURE(passed);
    NDArray<double> out = take(x, idx, passed);
    std::vector<int64_t> want_dims(xs.begin(), xs.begin() + axis);
    want_dims.insert(want_dims.end(), idx.shape().begin(), idx.shape().end());
    want_dims.insert(want_dims.end(), xs.begin() + axis + 1, xs.end());
    REQUIRE(out.shape() == Shape(want_dims));
    bool all_ok = true;
    for_each_index(out.shape(), [&](const std::vector<int64_t>& o) {
      std::vector<int64_t> ii(o.begin() + axis, o.begin() + axis + idx.rank());
      int64_t k = idx.rank() == 0 ? idx.item() : idx.at(ii);
      std::vector<int64_t> xi(o.begin(), o.begin() + axis);
      xi.push_back(k < 0 ? k + n : k);
      xi.insert(xi.end(), o.begin() + axis + idx.rank(), o.end());
      all_ok = all_ok && out.at(o) == x.at(xi);
    });
    CHECK(all_ok);
  }
}

TEST_CASE("take: flattened form, integer arrays, expressions") {
  auto x = from_vector<int64_t>({10, 11, 12, 13, 14, 15}, Shape{2, 3});
  auto idx = from_vector<int64_t>({5, 0, -1, 3}, Shape{2, 2});
  NDArray<int64_t> flat = take(x, idx);
  CHECK(flat.shape() == Shape{2, 2});
  CHECK(flat.to_vector() == std::vector<int64_t>{15, 10, 15, 13});
  NDArray<int64_t> cols = take(x, from_vector<int64_t>({2, -3}), 1);
  CHECK(cols.to_vector() == std::vector<int64_t>{12, 10, 15, 13});
  auto y = tensor<double>({1, 2, 3});
  NDArray<double> z = take(y * 2.0, from_vector<int64_t>({2, 2, 0}), 0);
  CHECK(z.to_vector() == std::vector<double>{6, 6, 2});
  // 0-d index: the axis disappears
  NDArray<int64_t> one = from_vector<int64_t>({1}, Shape{});
  CHECK(take(x, one, 0).to_vector() == std::vector<int64_t>{13, 14, 15});
  CHECK(take(x, one, 0).shape() == Shape{3});
  // empty index array
  CHECK(take(x, NDArray<int64_t>(Shape{0}), 1).shape() == Shape{2, 0});
}

TEST_CASE("take gradient scatter-adds repeated indices") {
  auto x = tensor<double>({{1, 2, 3}, {4, 5, 6}});
  x.attach_grad();
  {
    autograd::record rec;
    NDArray<double> t = take(x, from_vector<int64_t>({2, 0, 2, -1}), 1);
    t.backward(tensor<double>({{1, 2, 3, 4}, {5, 6, 7, 8}}));
  }
  CHECK(x.grad().to_vector() == std::vector<double>{2, 0, 8, 6, 0, 20});
}

TEST_CASE("gather matches a reference loop (PyTorch semantics)") {
  std::mt19937 rng(5);
  manual_seed(5);
  for (int iter = 0; iter < 60; ++iter) {
    Shape xs = random_shape(rng, 1, 4);
    NDArray<double> x = randn<double>(xs);
    if (rng() % 2) x = dl::testing::non_contiguous(x);
    int axis = static_cast<int>(rng() % static_cast<unsigned>(xs.rank()));
    std::vector<int64_t> is;
    for (int d = 0; d < xs.rank(); ++d)
      is.push_back(d == axis ? std::uniform_int_distribution<int64_t>(0, 5)(rng)
                             : std::uniform_int_distribution<int64_t>(1, xs[d])(rng));
    NDArray<int64_t> idx = random_indices(rng, Shape(is), 0, xs[axis] - 1);
    CAPTURE(xs);
    CAPTURE(idx.shape());
    CAPTURE(axis);
    NDArray<double> out = gather(x, rng() % 2 ? axis : axis - xs.rank(), idx);
    REQUIRE(out.shape() == idx.shape());
    bool all_ok = true;
    for_each_index(out.shape(), [&](const std::vector<int64_t>& o) {
      std::vector<int64_t> xi = o;
      xi[static_cast<size_t>(axis)] = idx.at(o);
      all_ok = all_ok && out.at(o) == x.at(xi);
    });
    CHECK(all_ok);
  }
}

TEST_CASE("gather: fixed example, gradient with repeats, integer input") {
  auto x = tensor<double>({{1, 2}, {3, 4}});
  auto idx = from_vector<int64_t>({0, 0, 1, 0}, Shape{2, 2});
  NDArray<double> g1 = gather(x, 1, idx);
  CHECK(g1.to_vector() == std::vector<double>{1, 1, 4, 3});
  NDArray<double> g0 = gather(x, 0, idx);
  CHECK(g0.to_vector() == std::vector<double>{1, 2, 3, 2});
  // transposed input: reads follow the view's strides
  NDArray<double> gt = gather(x.transpose(), 1, idx);
  CHECK(gt.to_vector() == std::vector<double>{1, 1, 4, 2});
  x.attach_grad();
  {
    autograd::record rec;
    NDArray<double> y = gather(x, 1, idx);
    y.backward(tensor<double>({{1, 10}, {100, 1000}}));
  }
  CHECK(x.grad().to_vector() == std::vector<double>{11, 0, 1000, 100});
  auto xi = from_vector<int32_t>({7, 8, 9}, Shape{3});
  CHECK(gather(xi, 0, from_vector<int64_t>({2, 2, 0, 1}, Shape{4})).to_vector() == std::vector<int32_t>{9, 9, 7, 8});
}

TEST_CASE("one_hot") {
  NDArray<float> a = one_hot(from_vector<int64_t>({1, 0, 2}, Shape{3}), 3);
  CHECK(a.shape() == Shape{3, 3});
  CHECK(a.to_vector() == std::vector<float>{0, 1, 0, 1, 0, 0, 0, 0, 1});
  auto labels = from_vector<int32_t>({3, 0, 1, 3}, Shape{2, 2});
  NDArray<double> b = one_hot<double>(labels, 4);
  CHECK(b.shape() == Shape{2, 2, 4});
  CHECK(b.to_vector() == std::vector<double>{0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1});
  // non-contiguous labels follow their logical order
  NDArray<int64_t> c = one_hot<int64_t>(labels.transpose(), 4);
  CHECK(c.to_vector() == std::vector<int64_t>{0, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1});
  CHECK(one_hot(NDArray<int64_t>(Shape{0}), 5).shape() == Shape{0, 5});
  // row sums are 1 for random labels
  std::mt19937 rng(9);
  NDArray<int64_t> r = random_indices(rng, Shape{50}, 0, 9);
  NDArray<float> h = one_hot(r, 10);
  for (int64_t i = 0; i < 50; ++i) {
    float s = 0;
    for (int64_t k = 0; k < 10; ++k) s += h.at({i, k});
    CHECK(s == 1.0f);
    CHECK(h.at({i, r.at({i})}) == 1.0f);
  }
}

TEST_CASE("indexing errors name the op, the index and the size") {
  auto x = randn<double>({2, 3});
  CHECK_THROWS_WITH_AS(take(x, from_vector<int64_t>({0, 3}), 1),
                       doctest::Contains("take: index 3 is out of range for axis 1 of size 3"), dl::ValueError);
  CHECK_THROWS_WITH_AS(take(x, from_vector<int64_t>({-4}), -1),
                       doctest::Contains("take: index -4 is out of range for axis -1 of size 3"), dl::ValueError);
  CHECK_THROWS_WITH_AS(take(x, from_vector<int64_t>({6})), doctest::Contains("take: index 6 is out of range"),
                       dl::ValueError);
  CHECK_THROWS_WITH_AS(take(x, from_vector<int64_t>({0}), 2), doctest::Contains("take: axis 2 is out of range"),
                       dl::ValueError);
  CHECK_THROWS_WITH_AS(take(x, NDArray<int64_t>(), 0), doctest::Contains("take: the array is undefined"), dl::ValueError);
  CHECK_THROWS_WITH_AS(gather(x, 1, from_vector<int64_t>({0, 1}, Shape{2})),
                       doctest::Contains("gather: index rank 1 differs from input rank 2"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(gather(x, 1, zeros<int64_t>({3, 1})), doctest::Contains("gather: index shape (3, 1) exceeds input shape (2, 3) at axis 0"),
                       dl::ShapeError);
  CHECK_THROWS_WITH_AS(gather(x, 0, from_vector<int64_t>({0, 2}, Shape{1, 2})),
                       doctest::Contains("gather: index 2 is out of range for axis 0 of size 2"), dl::ValueError);
  CHECK_THROWS_WITH_AS(gather(x, 1, from_vector<int64_t>({-1}, Shape{1, 1})),
                       doctest::Contains("gather: index -1 is out of range for axis 1 of size 3"), dl::ValueError);
  CHECK_THROWS_WITH_AS(gather(x, -3, zeros<int64_t>({1, 1})), doctest::Contains("gather: axis -3 is out of range"),
                       dl::ValueError);
  CHECK_THROWS_WITH_AS(one_hot(from_vector<int64_t>({0, 3}), 3),
                       doctest::Contains("one_hot: label 3 is out of range for 3 classes"), dl::ValueError);
  CHECK_THROWS_WITH_AS(one_hot(from_vector<int32_t>({-1}), 3), doctest::Contains("one_hot: label -1 is out of range"),
                       dl::ValueError);
  CHECK_THROWS_WITH_AS(one_hot(from_vector<int64_t>({0}), 0),
                       doctest::Contains("one_hot: num_classes must be positive, got 0"), dl::ValueError);
}

TEST_CASE("take/gather scatter gradients are deterministic across thread counts") {
  int saved = num_threads();
  manual_seed(1);
  // 20000 columns: enough for the scatter to split across threads
  auto x = randn<double>({16, 20000});
  std::mt19937 rng(2);
  NDArray<int64_t> idx = random_indices(rng, Shape{100}, 0, 15);
  NDArray<double> head = randn<double>({100, 20000});
  std::vector<std::vector<double>> grads;
  for (int threads : {1, 2, 4}) {
    set_num_threads(threads);
    x.attach_grad();
    {
      autograd::record rec;
      NDArray<double> t = take(x, idx, 0);
      t.backward(head);
    }
    grads.push_back(x.grad().to_vector());
  }
  set_num_threads(saved);
  CHECK(grads[0] == grads[1]);
  CHECK(grads[0] == grads[2]);
}

TEST_CASE("gradcheck: indexing op table") {
  std::vector<GradcheckCase> cases = {
      {"take axis 0 repeated", [] { return V{randn<double>({4, 3})}; },
       [](V& x) { return take(x[0], from_vector<int64_t>({3, 0, 3, -1}), 0); }},
      {"take axis 1, 2-D index", [] { return V{randn<double>({2, 5, 2})}; },
       [](V& x) { return take(x[0], from_vector<int64_t>({4, 1, 1, -5, 0, 2}, Shape{2, 3}), 1); }},
      {"take non-contiguous", [] { return V{dl::testing::non_contiguous(randn<double>({3, 4}))}; },
       [](V& x) { return take(x[0], from_vector<int64_t>({1, 1, 2}), -1); }},
      {"take flattened transposed", [] { return V{randn<double>({3, 4})}; },
       [](V& x) { return take(x[0].transpose(), from_vector<int64_t>({0, 11, 5, 5})); }},
      {"take of broadcast expression", [] { return V{randn<double>({3, 4}), randn<double>({4})}; },
       [](V& x) { return take(x[0] + x[1], from_vector<int64_t>({2, 0}), 0); }},
      {"gather axis 1", [] { return V{randn<double>({3, 4})}; },
       [](V& x) { return gather(x[0], 1, from_vector<int64_t>({0, 0, 3, 1, 2, 2}, Shape{2, 3})); }},
      {"gather axis 0 non-contiguous", [] { return V{dl::testing::non_contiguous(randn<double>({3, 4}))}; },
       [](V& x) { return gather(x[0], 0, from_vector<int64_t>({2, 0, 1, 2, 2, 2, 0, 0}, Shape{2, 4})); }},
      {"gather 3-D transposed", [] { return V{randn<double>({2, 3, 4})}; },
       [](V& x) { return gather(x[0].permute({2, 0, 1}), 2, from_vector<int64_t>({0, 2, 1, 1, 0, 0, 2, 2}, Shape{2, 2, 2})); }},
  };
  dl::testing::run_gradcheck_table(cases);
}
