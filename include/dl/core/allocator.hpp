// The CPU allocator: 64-byte-aligned blocks kept in a size-keyed pool after they are freed, so a
// training loop with fixed shapes stops calling the system allocator after its first step.
// Statistics (bytes in use, peak, cached, system allocations) back the memory tests and benchmarks.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>

#include "dl/core/error.hpp"

namespace dl {

struct AllocatorStats {
  int64_t bytes_in_use = 0;       // bytes handed out and not yet returned
  int64_t peak_bytes_in_use = 0;  // high-water mark of bytes_in_use since the last reset_peak()
  int64_t bytes_cached = 0;       // freed bytes kept in the pool for reuse
  int64_t num_requests = 0;       // allocate() calls
  int64_t num_system_allocs = 0;  // requests that went to the system allocator (pool misses)
};

namespace detail {

// What the pooling allocators (CpuAllocator here, cuda::CachingAllocator) share: the lock and the
// statistics, with their bookkeeping. The note_* calls are made with mutex_ held.
class AllocatorBookkeeping {
 public:
  AllocatorStats stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
  }
  void reset_peak() {
    std::lock_guard lock(mutex_);
    stats_.peak_bytes_in_use = stats_.bytes_in_use;
  }

 protected:
  // A block of `size` bytes was handed out, taken from the pool or just got from the system.
  void note_allocated(size_t size, bool from_pool) {
    if (from_pool) stats_.bytes_cached -= static_cast<int64_t>(size);
    else ++stats_.num_system_allocs;
    stats_.bytes_in_use += static_cast<int64_t>(size);
    if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
  }
  // A block of `size` bytes came back and was put in the pool.
  void note_pooled(size_t size) {
    stats_.bytes_in_use -= static_cast<int64_t>(size);
    stats_.bytes_cached += static_cast<int64_t>(size);
  }
  mutable std::mutex mutex_;
  AllocatorStats stats_;
};

}  // namespace detail

class CpuAllocator : public detail::AllocatorBookkeeping {
 public:
  static constexpr size_t kAlignment = 64;

  void* allocate(size_t bytes) {
    size_t size = round_up(bytes);
    std::lock_guard lock(mutex_);
    ++stats_.num_requests;
    void* p = nullptr;
    const auto it = pool_.find(size);
    const bool from_pool = it != pool_.end();
    if (from_pool) {
      p = it->second;
      pool_.erase(it);
    } else {
      p = std::aligned_alloc(kAlignment, size);
      if (!p) {  // free the cache and retry once before giving up
        release_cache_locked();
        p = std::aligned_alloc(kAlignment, size);
      }
      if (!p) fail<Error>("cpu allocator: out of memory allocating ", bytes, " bytes");
    }
    note_allocated(size, from_pool);
    return p;
  }

  void deallocate(void* p, size_t bytes) noexcept {
    if (!p) return;
    size_t size = round_up(bytes);
    std::lock_guard lock(mutex_);
    pool_.emplace(size, p);
    note_pooled(size);
  }

  // Returns every cached block to the system.
  void empty_cache() {
    std::lock_guard lock(mutex_);
    release_cache_locked();
  }
  ~CpuAllocator() { release_cache_locked(); }

 private:
  static size_t round_up(size_t bytes) {
    size_t b = bytes == 0 ? kAlignment : bytes;
    return (b + kAlignment - 1) / kAlignment * kAlignment;
  }
  void release_cache_locked() {
    for (auto& [size, p] : pool_) std::free(p);
    pool_.clear();
    stats_.bytes_cached = 0;
  }
  std::multimap<size_t, void*> pool_;
};

inline CpuAllocator& cpu_allocator() {
  static CpuAllocator* instance = new CpuAllocator();  // never destroyed: arrays may outlive main()
  return *instance;
}

}  // namespace dl
