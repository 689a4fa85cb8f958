#include <doctest/doctest.h>

#include <thread>

#include "dl/util/metrics.hpp"

using dl::NDArray;
using dl::Shape;

namespace {
NDArray<float> logits(std::vector<float> v, int64_t n, int64_t c) {
  NDArray<float> a(Shape{n, c});
  for (size_t i = 0; i < v.size(); ++i) a.data()[i] = v[i];
  return a;
}
NDArray<int64_t> labels(std::vector<int64_t> v) {
  NDArray<int64_t> a(Shape{static_cast<int64_t>(v.size())});
  for (size_t i = 0; i < v.size(); ++i) a.data()[i] = v[i];
  return a;
}
}  // namespace

TEST_CASE("metrics: Accuracy counts arg-max hits over updates") {
  auto x = logits({0.1f, 0.7f, 0.2f,    // -> 1
                   2.0f, -1.0f, 0.0f,   // -> 0
                   0.3f, 0.3f, 0.1f},   // tie -> first maximum, 0
                  3, 3);
  dl::util::Accuracy acc;
  CHECK(acc.value() == 0.0);
  acc.update(x, labels({1, 2, 0}));
  CHECK(acc.correct() == 2);
  CHECK(acc.total() == 3);
  CHECK(acc.value() == doctest::Approx(2.0 / 3.0));
  acc.update(x, labels({0, 0, 1}));
  CHECK(acc.correct() == 3);
  CHECK(acc.value() == doctest::Approx(0.5));
  acc.reset();
  CHECK(acc.total() == 0);

  // A transposed view (strides (1, 3)) is read without a copy: columns become rows.
  NDArray<float> t(x.storage(), Shape{3, 3}, dl::Strides{1, 3}, 0);  // rows: (0.1 2 0.3) (0.7 -1 0.3) (0.2 0 0.1)
  CHECK(dl::util::count_correct(t, labels({1, 0, 0})) == 3);

  CHECK_THROWS_WITH_AS(acc.update(x, labels({0, 3, 0})), doctest::Contains("label 3 at index 1 is out of range for 3 classes"),
                       dl::ValueError);
  CHECK_THROWS_WITH_AS(acc.update(x, labels({0, 1})), doctest::Contains("do not match logits of shape (3, 3)"),
                       dl::ShapeError);
  CHECK_THROWS_WITH_AS(acc.update(NDArray<float>(Shape{9}), labels({0})), doctest::Contains("logits must be (N, C)"),
                       dl::ShapeError);
}

TEST_CASE("metrics: RunningMean weights values") {
  dl::util::RunningMean m;
  CHECK(m.value() == 0.0);
  m.update(1.0, 3);
  m.update(3.0, 1);
  CHECK(m.value() == doctest::Approx(1.5));
  CHECK(m.last() == 3.0);
  CHECK(m.weight() == 4.0);
  m.reset();
  m.update(2.0);
  CHECK(m.value() == 2.0);
  CHECK_THROWS_AS(m.update(1.0, -1.0), dl::ValueError);
}

TEST_CASE("metrics: Throughput measures samples per second") {
  dl::util::Throughput tp;
  tp.update(1000);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  double rate = tp.samples_per_second();
  CHECK(tp.samples() == 1000);
  CHECK(rate > 0.0);
  CHECK(rate < 1000 / 0.05 * 1.01);  // at least 50 ms have passed
  tp.reset();
  CHECK(tp.samples() == 0);
}
