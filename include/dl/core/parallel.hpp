// parallel_for over an index range on dl's own thread pool, with a configurable thread count:
// set_num_threads(n), else the DL_NUM_THREADS environment variable, else all cores.
//
// Why not an OpenMP fork/join: an OpenMP region ends in a barrier that waits for every thread,
// so on a busy machine one descheduled thread stalls every small operation (an MLP step has
// dozens) by a scheduler time slice; 2 threads then ran 40x slower than 1. Here the range is cut
// into fixed chunks (boundaries depend only on the range, the grain and the thread count, so
// results are deterministic), the calling thread takes chunks itself, and it waits only for
// chunks a worker has actually started: a worker that wakes late finds nothing left and no one
// waits for it. Nested calls (from inside a chunk) run serially in the calling thread. An
// exception thrown by a chunk is rethrown in the caller after the other chunks finish.
//
// Waking a worker from its condition variable takes tens of microseconds, far more on a busy
// machine, and an operation split into one chunk per thread (a convolution) then runs its second
// chunk late or, once the caller has taken it, serially: back-to-back calls of 2 chunks x 500 us
// at 2 threads, load 1.9, took 1000 us each (522 us with the polling below). So a worker that
// finishes a job polls for the next one for a short bounded time (kSpin, yielding its core to
// other runnable threads between polls) before it sleeps, and a caller waiting for a worker's
// chunk polls as long before it sleeps; a training step's operations follow each other closely
// enough that the next one usually arrives within it.
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "dl/core/error.hpp"

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
inline bool& inside_chunk() { thread_local bool inside = false; return inside; }
}  // namespace detail

inline int num_threads() { return detail::thread_setting().load(std::memory_order_relaxed); }
inline void set_num_threads(int n) {
  check<ValueError>(n > 0 && n <= 4096, "set_num_threads: thread count must be in [1, 4096], got ", n);
  detail::thread_setting().store(n);
}

// True while running inside a parallel_for chunk (nested parallel_for calls run serially).
inline bool in_parallel_region() { return detail::inside_chunk(); }

namespace detail {

class ThreadPool {
 public:
  // One parallel_for: chunks are claimed with an atomic counter; `done` counts finished ones.
  struct Job {
    void (*run)(void* ctx, int64_t chunk) = nullptr;
    void* ctx = nullptr;
    int64_t chunks = 0;
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::exception_ptr error;
    std::mutex error_mutex;
  };

  static ThreadPool& instance() {
    static ThreadPool* pool = new ThreadPool();  // never destroyed: workers may outlive main()'s statics
    return *pool;
  }

  void run(int threads, int64_t chunks, void (*fn)(void*, int64_t), void* ctx) {
    ensure_workers(threads - 1);
    auto job = std::make_shared<Job>();
    job->run = fn;
    job->ctx = ctx;
    job->chunks = chunks;
    {
      std::lock_guard lock(mutex_);
      current_ = job;
      ++generation_;
      wanted_ = threads - 1;
      posted_.store(generation_, std::memory_order_release);
    }
    wake_.notify_all();
    work_on(*job);
    // Wait only for chunks that workers have claimed and not yet finished.
    spin_until([&] { return job->done.load(std::memory_order_acquire) == chunks; });
    if (job->done.load(std::memory_order_acquire) != chunks) {
      std::unique_lock lock(mutex_);
      finished_.wait(lock, [&] { return job->done.load(std::memory_order_acquire) == chunks; });
    }
    {
      std::lock_guard lock(mutex_);
      if (current_ == job) current_.reset();
    }
    if (job->error) std::rethrow_exception(job->error);
  }

 private:
  ThreadPool() = default;

  // Polls `ready` for up to kSpin, yielding the core between polls; true once it holds.
  static constexpr std::chrono::microseconds kSpin{50};
  template <class Ready>
  static bool spin_until(Ready&& ready) {
    const auto until = std::chrono::steady_clock::now() + kSpin;
    for (int i = 0;; ++i) {
      if (ready()) return true;
      if ((i & 15) == 15) {
        if (std::chrono::steady_clock::now() >= until) return false;
        std::this_thread::yield();
      }
    }
  }

  void work_on(Job& job) {
    bool& inside = inside_chunk();
    bool was_inside = inside;
    inside = true;
    for (;;) {
      int64_t c = job.next.fetch_add(1, std::memory_order_relaxed);
      if (c >= job.chunks) break;
      try {
        job.run(job.ctx, c);
      } catch (...) {
        std::lock_guard lock(job.error_mutex);
        if (!job.error) job.error = std::current_exception();
      }
      if (job.done.fetch_add(1, std::memory_order_acq_rel) + 1 == job.chunks) {
        std::lock_guard lock(mutex_);
        finished_.notify_all();
      }
    }
    inside = was_inside;
  }

  void ensure_workers(int n) {
    std::lock_guard lock(mutex_);
    while (static_cast<int>(workers_.size()) < n) {
      int index = static_cast<int>(workers_.size());
      workers_.emplace_back([this, index] { worker_loop(index); });
      workers_.back().detach();
    }
  }

  void worker_loop(int index) {
    uint64_t seen = 0;
    for (;;) {
      std::shared_ptr<Job> job;
      spin_until([&] { return posted_.load(std::memory_order_acquire) != seen; });
      {
        std::unique_lock lock(mutex_);
        // Workers beyond the current thread count stay asleep.
        wake_.wait(lock, [&] { return generation_ != seen && index < wanted_; });
        seen = generation_;
        job = current_;
      }
      if (job) work_on(*job);
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_, finished_;
  std::vector<std::thread> workers_;
  std::shared_ptr<Job> current_;
  uint64_t generation_ = 0;
  std::atomic<uint64_t> posted_{0};  // generation_, readable without the mutex (for spinning workers)
  int wanted_ = 0;
};

}  // namespace detail

// Calls fn(chunk_begin, chunk_end) over [begin, end) in chunks of at least `grain` elements.
// Runs serially when the range is small, one thread is configured, or inside another chunk.
template <class Fn>
void parallel_for(int64_t begin, int64_t end, int64_t grain, Fn&& fn) {
  int64_t n = end - begin;
  if (n <= 0) return;
  int threads = num_threads();
  grain = std::max<int64_t>(grain, 1);
  if (threads <= 1 || n < 2 * grain || detail::inside_chunk()) {
    fn(begin, end);
    return;
  }
  // A few chunks per thread, so a slow or late thread holds up at most a small piece.
  int64_t chunks = std::min<int64_t>(n / grain, int64_t{4} * threads);
  struct Ctx {
    Fn* fn;
    int64_t begin, n, chunks;
  } ctx{&fn, begin, n, chunks};
  auto run_chunk = [](void* p, int64_t c) {
    auto* x = static_cast<Ctx*>(p);
    int64_t b = x->begin + x->n * c / x->chunks, e = x->begin + x->n * (c + 1) / x->chunks;
    if (b < e) (*x->fn)(b, e);
  };
  detail::ThreadPool::instance().run(static_cast<int>(std::min<int64_t>(threads, chunks)), chunks, run_chunk, &ctx);
}

}  // namespace dl
