#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <filesystem>
#include <string>

#include "dl/data/mnist.hpp"

#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using dl::data::load_mnist;
using dl::data::Split;

namespace {
using dl_test::TempDir;
dl::NDArray<uint8_t> images(int64_t n, int64_t h = 28, int64_t w = 28) {
  dl::NDArray<uint8_t> a(dl::Shape{n, h, w});
  for (int64_t i = 0; i < a.numel(); ++i) a.data()[i] = static_cast<uint8_t>((i * 13) % 256);
  return a;
}
dl::NDArray<uint8_t> labels(int64_t n, uint8_t bad_at = 255, int64_t bad_index = -1) {
  dl::NDArray<uint8_t> a(dl::Shape{n});
  for (int64_t i = 0; i < n; ++i) a.data()[i] = static_cast<uint8_t>(i % 10);
  if (bad_index >= 0) a.data()[bad_index] = bad_at;
  return a;
}
}  // namespace

TEST_CASE("mnist: synthetic split loads as (N, 1, 28, 28) floats in [0, 1] and int64 labels") {
  TempDir dir;
  // train gzip, test raw: both file forms are found.
  dl::data::write_idx(dir.file("train-images-idx3-ubyte.gz"), images(12), true);
  dl::data::write_idx(dir.file("train-labels-idx1-ubyte.gz"), labels(12), true);
  dl::data::write_idx(dir.file("t10k-images-idx3-ubyte"), images(5), false);
  dl::data::write_idx(dir.file("t10k-labels-idx1-ubyte"), labels(5), false);

  auto train = load_mnist(dir.path.string(), Split::train);
  CHECK(train.images.shape() == dl::Shape{12, 1, 28, 28});
  CHECK(train.labels.shape() == dl::Shape{12});
  CHECK(train.labels.at({11}) == 1);
  CHECK(train.images.at({0, 0, 0, 1}) == doctest::Approx(13.0 / 255.0));
  CHECK(train.images.at({1, 0, 0, 0}) == doctest::Approx(static_cast<double>((784 * 13) % 256) / 255.0));
  float lo = 1, hi = 0;
  for (float v : train.images.to_vector()) { lo = std::min(lo, v); hi = std::max(hi, v); }
  CHECK(lo == 0.0f);
  CHECK(hi <= 1.0f);

  auto test = load_mnist(dir.path.string(), Split::test);
  CHECK(test.images.shape() == dl::Shape{5, 1, 28, 28});
  CHECK(test.labels.to_vector() == std::vector<int64_t>{0, 1, 2, 3, 4});
}

TEST_CASE("mnist: missing directory or files say how to get the data") {
  TempDir dir;
  CHECK_THROWS_WITH_AS(load_mnist(dir.file("nope"), Split::train),
                       doctest::Contains("apt-get install dataset-fashion-mnist"), dl::IoError);
  CHECK_THROWS_WITH_AS(load_mnist(dir.file("nope"), Split::train), doctest::Contains("--data-dir"), dl::IoError);
  CHECK_THROWS_WITH_AS(load_mnist(dir.path.string(), Split::test),
                       doctest::Contains("t10k-images-idx3-ubyte.gz' (or 't10k-images-idx3-ubyte') not found"),
                       dl::IoError);
  dl::data::write_idx(dir.file("t10k-images-idx3-ubyte.gz"), images(3), true);
  CHECK_THROWS_WITH_AS(load_mnist(dir.path.string(), Split::test),
                       doctest::Contains("t10k-labels-idx1-ubyte.gz' (or 't10k-labels-idx1-ubyte') not found"),
                       dl::IoError);
}

TEST_CASE("mnist: inconsistent files are rejected") {
  TempDir dir;
  std::string d = dir.path.string();
  dl::data::write_idx(dir.file("train-images-idx3-ubyte.gz"), images(6), true);
  dl::data::write_idx(dir.file("train-labels-idx1-ubyte.gz"), labels(5), true);
  CHECK_THROWS_WITH_AS(load_mnist(d, Split::train), doctest::Contains("holds 6 images but"), dl::IoError);
  CHECK_THROWS_WITH_AS(load_mnist(d, Split::train), doctest::Contains("holds 5 labels"), dl::IoError);

  dl::data::write_idx(dir.file("train-labels-idx1-ubyte.gz"), labels(6, 10, 4), true);
  CHECK_THROWS_WITH_AS(load_mnist(d, Split::train), doctest::Contains("has label 10 at index 4; labels must be 0 to 9"),
                       dl::IoError);

  dl::data::write_idx(dir.file("train-labels-idx1-ubyte.gz"), labels(6), true);
  dl::data::write_idx(dir.file("train-images-idx3-ubyte.gz"), images(6, 32, 32), true);
  CHECK_THROWS_WITH_AS(load_mnist(d, Split::train), doctest::Contains("has shape (6, 32, 32), expected (N, 28, 28)"),
                       dl::IoError);

  dl::data::write_idx(dir.file("train-images-idx3-ubyte.gz"), labels(6), true);  // 1-D "images"
  CHECK_THROWS_AS(load_mnist(d, Split::train), dl::IoError);
}

TEST_CASE("mnist: the installed Fashion-MNIST loads (skipped when not installed)") {
  std::string dir = dl::data::kFashionMnistDir;
  if (!fs::exists(dir + "/train-images-idx3-ubyte.gz")) {
    MESSAGE("skipped: Fashion-MNIST not installed in " << dir << " (apt-get install dataset-fashion-mnist)");
    return;
  }
  auto t0 = std::chrono::steady_clock::now();
  auto train = load_mnist(dir, Split::train);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("load_mnist(train): 60000 images in " << seconds << " s");
  CHECK(train.images.shape() == dl::Shape{60000, 1, 28, 28});
  std::array<int64_t, 10> counts{};
  for (int64_t y : train.labels.to_vector()) ++counts[static_cast<size_t>(y)];
  for (int64_t c : counts) CHECK(c == 6000);  // Fashion-MNIST (and MNIST-style) balanced train split
  auto test = load_mnist(dir, Split::test);
  CHECK(test.images.shape() == dl::Shape{10000, 1, 28, 28});
}
