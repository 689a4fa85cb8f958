#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "dl/core/parallel.hpp"

using namespace dl;

TEST_CASE("parallel_for: every index exactly once, for many ranges and grains") {
  set_num_threads(3);  // more threads than cores: progress must not depend on every thread running
  for (int64_t n : {1, 7, 1000, 65537}) {
    for (int64_t grain : {1, 10, 4096}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      parallel_for(0, n, grain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
      });
      int bad = 0;
      for (auto& h : hits) bad += h.load() != 1;
      CHECK(bad == 0);
    }
  }
  set_num_threads(2);
}

TEST_CASE("parallel_for: nested calls run serially inside a chunk") {
  std::atomic<int> nested_parallel{0};
  parallel_for(0, 100, 1, [&](int64_t, int64_t) {
    CHECK(in_parallel_region());
    parallel_for(0, 1000, 1, [&](int64_t b, int64_t e) {
      if (b != 0 || e != 1000) nested_parallel++;
    });
  });
  CHECK(nested_parallel.load() == 0);
  CHECK_FALSE(in_parallel_region());
}

TEST_CASE("parallel_for: an exception in a chunk reaches the caller") {
  CHECK_THROWS_WITH_AS(parallel_for(0, 100000, 10, [](int64_t b, int64_t) {
                         if (b > 0) throw ValueError("chunk failed");
                       }),
                       "chunk failed", ValueError);
  // The pool still works afterwards.
  std::atomic<int64_t> sum{0};
  parallel_for(0, 1000, 1, [&](int64_t b, int64_t e) { sum += e - b; });
  CHECK(sum.load() == 1000);
}

TEST_CASE("parallel_for: back-to-back calls (workers still polling) and calls after they went to sleep") {
  for (int threads : {2, 3}) {  // 3: more threads than cores, polling workers must yield
    set_num_threads(threads);
    std::atomic<int64_t> sum{0};
    for (int rep = 0; rep < 2000; ++rep) parallel_for(0, 64, 1, [&](int64_t b, int64_t e) { sum += e - b; });
    CHECK(sum.load() == 2000 * 64);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // far beyond the polling time: workers sleep
    std::vector<std::atomic<int>> hits(1000);
    parallel_for(0, 1000, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
    });
    int bad = 0;
    for (auto& h : hits) bad += h.load() != 1;
    CHECK(bad == 0);
  }
  set_num_threads(2);
}

TEST_CASE("set_num_threads validates") {
  CHECK_THROWS_WITH_AS(set_num_threads(0), doctest::Contains("set_num_threads: thread count must be in [1, 4096], got 0"), ValueError);
}
