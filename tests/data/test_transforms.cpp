#include <doctest/doctest.h>

#include <numeric>
#include <set>
#include <thread>
#include <vector>

#include "dl/data/transforms.hpp"

using dl::Shape;
using namespace dl::data;

namespace {
std::vector<float> iota_sample(const Shape& s) {
  std::vector<float> v(static_cast<size_t>(s.numel()));
  std::iota(v.begin(), v.end(), 1.0f);  // 1, 2, 3, ...: no element equals the zero padding
  return v;
}
std::vector<float> run(const Transform& t, const std::vector<float>& in, const Shape& s, SampleContext ctx) {
  std::vector<float> out(static_cast<size_t>(t.output_shape(s).numel()), -1.0f);
  t.apply(in.data(), s, out.data(), ctx);
  return out;
}
}  // namespace

TEST_CASE("transforms: Normalize per channel") {
  Shape s{2, 1, 3};
  auto in = iota_sample(s);  // channel 0: 1 2 3, channel 1: 4 5 6
  Normalize n({1.0f, 4.0f}, {2.0f, 0.5f});
  auto out = run(n, in, s, {});
  CHECK(out == std::vector<float>{0.0f, 0.5f, 1.0f, 0.0f, 2.0f, 4.0f});
  Normalize one({1.0f}, {1.0f});  // one value broadcasts over channels
  CHECK(run(one, in, s, {})[5] == 5.0f);

  CHECK_THROWS_WITH_AS(Normalize({0.5f}, {0.0f}), doctest::Contains("std must be positive"), dl::ValueError);
  CHECK_THROWS_WITH_AS(Normalize({0.5f, 0.5f}, {1.0f}), doctest::Contains("same, non-zero number"), dl::ValueError);
  CHECK_THROWS_WITH_AS(Normalize({0.f, 0.f, 0.f}, {1.f, 1.f, 1.f}).output_shape(s),
                       doctest::Contains("3 mean/std values for a sample of shape (2, 1, 3) with 2 channels"),
                       dl::ShapeError);
}

TEST_CASE("transforms: RandomCrop pads with zeros and keeps a window of the input") {
  Shape s{1, 4, 4};
  auto in = iota_sample(s);
  RandomCrop crop(4, 2);
  CHECK(crop.output_shape(s) == Shape{1, 4, 4});
  std::set<std::pair<int, int>> offsets;
  for (int64_t i = 0; i < 200; ++i) {
    auto out = run(crop, in, s, {5, 0, i, 0});
    // Recover the window offset from the first non-zero element; every non-zero must match it.
    int dy = 99, dx = 99;
    for (int y = 0; y < 4 && dy == 99; ++y)
      for (int x = 0; x < 4; ++x)
        if (out[static_cast<size_t>(y * 4 + x)] != 0.0f) {
          int v = static_cast<int>(out[static_cast<size_t>(y * 4 + x)]) - 1;
          dy = v / 4 - y;
          dx = v % 4 - x;
          break;
        }
    REQUIRE(dy != 99);  // with padding 2 a 4x4 window always overlaps the 4x4 input
    CHECK(dy >= -2);
    CHECK(dy <= 2);
    for (int y = 0; y < 4; ++y)
      for (int x = 0; x < 4; ++x) {
        int iy = y + dy, ix = x + dx;
        float expect = (iy >= 0 && iy < 4 && ix >= 0 && ix < 4) ? in[static_cast<size_t>(iy * 4 + ix)] : 0.0f;
        CHECK(out[static_cast<size_t>(y * 4 + x)] == expect);
      }
    offsets.insert({dy, dx});
  }
  CHECK(offsets.size() == 25);  // all 5 x 5 offsets occur in 200 draws

  RandomCrop smaller(2, 3, 0);
  CHECK(smaller.output_shape(Shape{3, 5, 5}) == Shape{3, 2, 3});
  CHECK_THROWS_WITH_AS(RandomCrop(3).output_shape(Shape{9}), doctest::Contains("expected a (C, H, W) sample"),
                       dl::ShapeError);
  CHECK_THROWS_AS(RandomCrop(0), dl::ValueError);
  CHECK_THROWS_AS(RandomCrop(3, -1), dl::ValueError);
}

TEST_CASE("transforms: RandomHorizontalFlip mirrors the last axis with probability p") {
  Shape s{1, 2, 3};
  auto in = iota_sample(s);
  std::vector<float> mirrored{3, 2, 1, 6, 5, 4};
  RandomHorizontalFlip half(0.5);
  int flips = 0;
  for (int64_t i = 0; i < 1000; ++i) {
    auto out = run(half, in, s, {1, 0, i, 0});
    if (out == mirrored) ++flips;
    else CHECK(out == in);
  }
  CHECK(flips > 430);
  CHECK(flips < 570);
  CHECK(run(RandomHorizontalFlip(1.0), in, s, {}) == mirrored);
  CHECK(run(RandomHorizontalFlip(0.0), in, s, {}) == in);
  CHECK_THROWS_WITH_AS(RandomHorizontalFlip(1.5), doctest::Contains("p must be in [0, 1], got 1.5"), dl::ValueError);
}

TEST_CASE("transforms: draws depend on (seed, epoch, index) only, in any thread") {
  Shape s{1, 8, 8};
  auto in = iota_sample(s);
  auto t = make_transform(RandomCrop(6, 3), RandomHorizontalFlip(0.5), Normalize({0.5f}, {2.0f}));
  CHECK(t->output_shape(s) == Shape{1, 6, 6});
  auto a = run(*t, in, s, {42, 3, 17, 0});
  CHECK(a == run(*t, in, s, {42, 3, 17, 0}));
  std::vector<float> from_thread;
  std::thread([&] { from_thread = run(*t, in, s, {42, 3, 17, 0}); }).join();
  CHECK(a == from_thread);
  // Some other epoch, seed or index gives another draw (each alone has a ~1/98 chance to repeat).
  int differ = 0;
  for (int k = 1; k <= 5; ++k) {
    differ += run(*t, in, s, {42, 3 + k, 17, 0}) != a;
    differ += run(*t, in, s, {42 + static_cast<uint64_t>(k), 3, 17, 0}) != a;
    differ += run(*t, in, s, {42, 3, 17 + k, 0}) != a;
  }
  CHECK(differ >= 13);
}

TEST_CASE("transforms: Compose chains shapes and Lambda edits in place") {
  Shape s{1, 3, 3};
  auto in = iota_sample(s);
  auto t = make_transform(Lambda([](float* x, const Shape& sh, const SampleContext&) {
                            for (int64_t i = 0; i < sh.numel(); ++i) x[i] *= 10.0f;
                          }),
                          RandomCrop(1, 1, 0), Normalize({10.0f}, {10.0f}));
  CHECK(t->output_shape(s) == Shape{1, 1, 1});
  auto out = run(*t, in, s, {0, 0, 3, 0});
  REQUIRE(out.size() == 1);
  CHECK(out[0] >= 0.0f);  // (10 * v - 10) / 10 = v - 1 for some v in 1..9
  CHECK(out[0] <= 8.0f);
  CHECK(out[0] == static_cast<float>(static_cast<int>(out[0])));
  using Stages = std::vector<std::shared_ptr<const Transform>>;
  Compose empty(Stages{});
  CHECK(run(empty, in, s, {}) == in);
  CHECK_THROWS_AS(Compose(Stages{nullptr}), dl::ValueError);
  CHECK_THROWS_AS(Lambda(nullptr), dl::ValueError);
}
