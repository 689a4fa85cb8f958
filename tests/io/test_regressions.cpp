// Replays every input in tests/fixtures/regressions/<target>/ (crashes found by the fuzzers in
// fuzz/, plus hand-made hostile files) and the fuzz seed corpora through the matching reader.
// Each must load or throw a dl::Error: never crash, hang or allocate what a header promises.
// To add a fuzzer crash: copy fuzz/build/crash-<target>-* into tests/fixtures/regressions/<target>/.
#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "dl/data/idx.hpp"
#include "dl/io/npy.hpp"
#include "dl/io/safetensors.hpp"
#include "io_test_util.hpp"

using namespace dl_test_io;

namespace {

// Runs `read` on every file under each folder; returns how many files were replayed.
template <class Read>
int replay(const std::string& target, Read read) {
  int count = 0;
  for (const std::string& base : {std::string(DL_SOURCE_DIR) + "/tests/fixtures/regressions/",
                                  std::string(DL_SOURCE_DIR) + "/fuzz/corpus/"}) {
    fs::path dir = fs::path(base) / target;
    if (!fs::is_directory(dir)) continue;
    for (auto& e : fs::directory_iterator(dir)) {
      if (!e.is_regular_file()) continue;
      std::string path = e.path().string();
      INFO("replaying ", path);
      try {
        read(path);
      } catch (const dl::Error&) {
        // expected for hostile inputs
      }
      ++count;
    }
  }
  return count;
}

}  // namespace

TEST_CASE("regressions: safetensors inputs load or throw dl::Error") {
  int n = replay("safetensors", [](const std::string& p) {
    auto f = dl::io::load_safetensors(p);
    for (auto& [name, t] : f.tensors) (void)t.numel();
  });
  CHECK(n > 0);
}

TEST_CASE("regressions: npy inputs load or throw dl::Error") {
  int n = replay("npy", [](const std::string& p) { (void)dl::io::load_npy_any(p).numel(); });
  CHECK(n > 0);
}

TEST_CASE("regressions: idx inputs load or throw dl::Error") {
  // The same 64 MiB cap as the fuzz target.
  int n = replay("idx", [](const std::string& p) { (void)dl::data::read_idx(p, uint64_t(64) << 20); });
  CHECK(n > 0);
}

TEST_CASE("regressions: the hand-made hostile files are rejected with the right error") {
  auto dir = std::string(DL_SOURCE_DIR) + "/tests/fixtures/regressions/";
  CHECK_THROWS_WITH_AS(dl::io::load_safetensors(dir + "safetensors/header-len-2e64.bin"),
                       doctest::Contains("larger than the limit"), dl::IoError);
  CHECK_THROWS_WITH_AS(dl::io::load_safetensors(dir + "safetensors/deep-nesting.bin"),
                       doctest::Contains("nesting deeper"), dl::IoError);
  CHECK_THROWS_WITH_AS(dl::io::load_safetensors(dir + "safetensors/offsets-overflow.bin"),
                       doctest::Contains("overflows"), dl::IoError);
  CHECK_THROWS_WITH_AS(dl::io::load_safetensors(dir + "safetensors/int64-min-offset.bin"),
                       doctest::Contains("non-negative"), dl::IoError);
  CHECK_THROWS_WITH_AS(dl::io::load_safetensors(dir + "safetensors/overlap-zero-size.bin"),
                       doctest::Contains("overlap"), dl::IoError);
  CHECK_THROWS_WITH_AS(dl::io::load_npy_any(dir + "npy/huge-shape.bin"), doctest::Contains("overflows int64"), dl::IoError);
  CHECK_THROWS_WITH_AS(dl::io::load_npy_any(dir + "npy/header-len-4g.bin"), doctest::Contains("larger than the limit"),
                       dl::IoError);
  CHECK_THROWS_WITH_AS(dl::io::load_npy_any(dir + "npy/ubsan-zero-dim-stride-overflow.bin"),
                       doctest::Contains("strides would overflow"), dl::IoError);
  auto z = dl::io::load_npy<float>(dir + "npy/fortran-zero-dim.bin");
  CHECK(z.shape() == dl::Shape{0, 3, 2});
  CHECK_THROWS_WITH_AS(dl::data::read_idx(dir + "idx/gzip-promises-4g.bin", uint64_t(64) << 20),
                       doctest::Contains("more than the limit"), dl::IoError);
  CHECK_THROWS_AS(dl::data::read_idx(dir + "idx/truncated-gzip.bin"), dl::IoError);
  CHECK_THROWS_WITH_AS(dl::data::read_idx(dir + "idx/rank-255.bin"), doctest::Contains("255 dimensions"), dl::IoError);
}
