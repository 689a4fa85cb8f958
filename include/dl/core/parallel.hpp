// parallel_for over an index range with a fixed, configurable thread count. The range is cut
// into equal static chunks (deterministic), and nested calls run serially in the calling thread.
// Thread count: set_num_threads(n), else the DL_NUM_THREADS environment variable, else all cores.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <thread>

#include "dl/core/error.hpp"
#ifdef _OPENMP
#include <omp.h>
#endif

namespace dl {

namespace detail {
inline std::atomic<int>& thread_setting() {
  static std::atomic<int> n{[] {
    if (const char* env = std::getenv("DL_NUM_THREADS")) {
      char* end = nullptr;
      long v = std::strtol(env, &end, 10);
      if (end != env && *end == '\0' && v > 0 && v <= 4096) return static_cast<int>(v);
      fail<ValueError>("DL_NUM_THREADS: expected a positive integer, got '", env, "'");
    }
    return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }()};
  return n;
}
}  // namespace detail

inline int num_threads() { return detail::thread_setting().load(std::memory_order_relaxed); }
inline void set_num_threads(int n) {
  check<ValueError>(n > 0, "set_num_threads: thread count must be positive, got ", n);
  detail::thread_setting().store(n);
}

inline bool in_parallel_region() {
#ifdef _OPENMP
  return omp_in_parallel();
#else
  return false;
#endif
}

// Calls fn(chunk_begin, chunk_end) over [begin, end). Runs serially when the range is smaller
// than `grain` elements per thread or when already inside a parallel region.
template <class Fn>
void parallel_for(int64_t begin, int64_t end, int64_t grain, Fn&& fn) {
  int64_t n = end - begin;
  if (n <= 0) return;
  int threads = num_threads();
  int64_t max_useful = std::max<int64_t>(1, n / std::max<int64_t>(grain, 1));
  threads = static_cast<int>(std::min<int64_t>(threads, max_useful));
#ifdef _OPENMP
  if (threads > 1 && !omp_in_parallel()) {
    int64_t chunk = (n + threads - 1) / threads;
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int t = 0; t < threads; ++t) {
      int64_t b = begin + t * chunk, e = std::min(end, b + chunk);
      if (b < e) fn(b, e);
    }
    return;
  }
#endif
  fn(begin, end);
}

}  // namespace dl
