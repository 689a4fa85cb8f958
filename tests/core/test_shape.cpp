#include <doctest/doctest.h>

#include "dl/core/shape.hpp"

using dl::Shape;

TEST_CASE("shape: rank, numel, printing") {
  Shape s{2, 3, 4};
  CHECK(s.rank() == 3);
  CHECK(s.numel() == 24);
  CHECK(s.to_string() == "(2, 3, 4)");
  CHECK(Shape{5}.to_string() == "(5,)");
  CHECK(Shape{}.numel() == 1);
  CHECK(Shape{3, 0}.numel() == 0);
}

TEST_CASE("shape: bad dims are rejected with dl errors") {
  CHECK_THROWS_AS(Shape({1, 2, 3, 4, 5, 6, 7, 8, 9}), dl::ShapeError);
  CHECK_THROWS_WITH_AS(Shape({2, -1}), doctest::Contains("negative"), dl::ShapeError);
  CHECK_THROWS_WITH_AS(Shape({int64_t(1) << 40, int64_t(1) << 40}), doctest::Contains("overflows"), dl::ShapeError);
  // Zero elements, but the strides of the other dims would overflow (found by fuzzing).
  CHECK_THROWS_WITH_AS(Shape({0, int64_t(1) << 40, int64_t(1) << 40}), doctest::Contains("strides would overflow"),
                       dl::ShapeError);
}

TEST_CASE("shape: broadcasting follows NumPy") {
  CHECK(dl::broadcast_shapes(Shape{3, 1}, Shape{4}, "add") == Shape{3, 4});
  CHECK(dl::broadcast_shapes(Shape{}, Shape{2, 2}, "add") == Shape{2, 2});
  CHECK_THROWS_WITH_AS(dl::broadcast_shapes(Shape{3}, Shape{4}, "add"),
                       doctest::Contains("add: shapes (3,) and (4,) cannot be broadcast"), dl::ShapeError);
}

TEST_CASE("shape: normalize_axis") {
  CHECK(dl::normalize_axis(-1, 3, "sum") == 2);
  CHECK_THROWS_WITH_AS(dl::normalize_axis(3, 3, "sum"), doctest::Contains("sum: axis 3 is out of range"), dl::ValueError);
}
