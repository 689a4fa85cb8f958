// The CUDA caching allocator: one per device (and one for pinned host memory). cudaMalloc and
// cudaFree synchronise the device and cost tens of microseconds, so freed blocks stay in a pool
// and are handed out again; a training loop with fixed shapes stops calling cudaMalloc after its
// first step (as PyTorch's caching allocator does).
//
// Stream-ordered reuse: every kernel and library call that touches device memory runs on the
// device's compute stream (backend/cuda/runtime.hpp), so a block freed by the host while kernels
// still read it can be handed to the next allocation at once: that allocation's writes are queued
// behind those reads on the same stream. Copies on the copy stream make the compute stream wait
// for them before their buffers can be freed (backend/cuda/copy.hpp).
//
// Out of memory: the cache is released (after a synchronize) and the allocation retried once;
// if it still fails, DeviceError names the bytes requested and the bytes the device has free.
//
// The pooling logic is CachingAllocator<Backend>, independent of CUDA, so its promises (reuse,
// statistics, the OOM retry) are tested on the CPU with a fake backend (tests/core/test_device.cpp).
// The CUDA backends below ran on an H100 (tests/gpu: reuse, statistics, empty_cache, out of memory).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "dl/backend/cuda/runtime.hpp"
#include "dl/core/allocator.hpp"  // AllocatorStats, AllocatorBookkeeping
#include "dl/core/error.hpp"

namespace dl::cuda {

// Rounding: small blocks to 512 bytes, blocks of 1 MiB and more to 2 MiB, so that similar sizes
// share blocks. A cached block is reused for a request when it is at most 1/8 larger (bounded waste).
inline size_t round_block_size(size_t bytes) {
  constexpr size_t kSmall = 512, kLarge = size_t{2} << 20, kLargeFrom = size_t{1} << 20;
  size_t b = bytes == 0 ? 1 : bytes;
  size_t unit = b >= kLargeFrom ? kLarge : kSmall;
  return (b + unit - 1) / unit * unit;
}

// Backend: struct { void* malloc(size_t);   // nullptr when out of memory
//                   void free(void*); void synchronize(); size_t free_bytes(); std::string name(); }
template <class Backend>
class CachingAllocator : public dl::detail::AllocatorBookkeeping {
 public:
  explicit CachingAllocator(Backend backend = Backend()) : backend_(std::move(backend)) {}
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;
  // Returns the cached blocks (the per-device instances are never destroyed: arrays may outlive main).
  ~CachingAllocator() {
    for (auto& [size, p] : pool_) backend_.free(p);
  }

  void* allocate(size_t bytes) {
    size_t size = round_block_size(bytes);
    std::lock_guard lock(mutex_);
    ++stats_.num_requests;
    void* p = nullptr;
    size_t got = size;
    const auto it = pool_.lower_bound(size);
    const bool from_pool = it != pool_.end() && it->first <= size + size / 8;
    if (from_pool) {
      got = it->first;
      p = it->second;
      pool_.erase(it);
    } else {
      p = backend_.malloc(size);
      if (!p) {  // free the cache and retry once before giving up
        release_cache_locked();
        p = backend_.malloc(size);
      }
      if (!p)
        fail<DeviceError>(backend_.name(), " allocator: out of memory allocating ", bytes, " bytes (",
                          backend_.free_bytes(), " bytes free on the device, ", stats_.bytes_in_use,
                          " bytes in use by dl, cache emptied)");
    }
    live_.emplace(p, got);
    note_allocated(got, from_pool);
    return p;
  }

  // Returns a block to the pool (stream-ordered: see the header comment).
  void deallocate(void* p) noexcept {
    if (!p) return;
    std::lock_guard lock(mutex_);
    auto it = live_.find(p);
    if (it == live_.end()) return;  // not ours; never happens for Storage-owned blocks
    size_t size = it->second;
    live_.erase(it);
    pool_.emplace(size, p);
    note_pooled(size);
  }

  // Returns every cached block to the system (waits for queued work first).
  void empty_cache() {
    std::lock_guard lock(mutex_);
    release_cache_locked();
  }
  Backend& backend() { return backend_; }

 private:
  void release_cache_locked() {
    if (pool_.empty()) return;
    backend_.synchronize();  // queued kernels may still read cached blocks
    for (auto& [size, p] : pool_) backend_.free(p);
    pool_.clear();
    stats_.bytes_cached = 0;
  }
  Backend backend_;
  std::multimap<size_t, void*> pool_;
  std::unordered_map<void*, size_t> live_;
};

#if defined(DL_CUDA_ENABLED)

// Device memory of one GPU.
struct DeviceMemoryBackend {
  int index = 0;
  void* malloc(size_t bytes) {
    DeviceGuard guard(index);
    void* p = nullptr;
    cudaError_t s = cudaMalloc(&p, bytes);
    if (s == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      return nullptr;
    }
    check_status(s, "cudaMalloc");
    return p;
  }
  void free(void* p) {
    DeviceGuard guard(index);
    (void)cudaFree(p);
  }
  void synchronize() { dl::cuda::synchronize(index); }
  size_t free_bytes() {
    DeviceGuard guard(index);
    size_t free = 0, total = 0;
    if (cudaMemGetInfo(&free, &total) != cudaSuccess) (void)cudaGetLastError();
    return free;
  }
  std::string name() const { return "cuda:" + std::to_string(index); }
};

// Page-locked host memory: the only host memory a copy can be truly asynchronous from.
struct PinnedMemoryBackend {
  void* malloc(size_t bytes) {
    void* p = nullptr;
    cudaError_t s = cudaMallocHost(&p, bytes);
    if (s == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      return nullptr;
    }
    check_status(s, "cudaMallocHost");
    return p;
  }
  void free(void* p) { (void)cudaFreeHost(p); }
  void synchronize() {
    for (int i = 0; i < device_count(); ++i) dl::cuda::synchronize(i);
  }
  size_t free_bytes() { return 0; }  // not known for host memory
  std::string name() const { return "pinned host"; }
};

using DeviceAllocator = CachingAllocator<DeviceMemoryBackend>;

// The allocator of device `index` (created on first use, never destroyed: arrays may outlive main).
inline DeviceAllocator& device_allocator(int index) {
  static std::array<DeviceAllocator*, kMaxDevices> instances{};
  static std::mutex mutex;
  check<DeviceError>(index >= 0 && index < kMaxDevices, "cuda allocator: device index ", index, " out of range");
  std::lock_guard lock(mutex);
  auto& a = instances[static_cast<size_t>(index)];
  if (!a) {
    require_device(Device::cuda(index), "cuda allocator");
    a = new DeviceAllocator(DeviceMemoryBackend{index});
  }
  return *a;
}

inline CachingAllocator<PinnedMemoryBackend>& pinned_allocator() {
  static auto* instance = new CachingAllocator<PinnedMemoryBackend>();
  return *instance;
}

// A pinned host buffer from the pinned pool; returned to the pool when it goes out of scope.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t bytes) : data_(pinned_allocator().allocate(bytes)), bytes_(bytes) {}
  PinnedBuffer(PinnedBuffer&& o) noexcept : data_(o.data_), bytes_(o.bytes_) { o.data_ = nullptr; }
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  ~PinnedBuffer() { pinned_allocator().deallocate(data_); }
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Statistics and cache control of device `index` (the names PyTorch users look for).
inline AllocatorStats memory_stats(int index = 0) { return device_allocator(index).stats(); }
inline void empty_cache(int index = 0) { device_allocator(index).empty_cache(); }
inline void reset_peak_memory_stats(int index = 0) { device_allocator(index).reset_peak(); }

#endif  // DL_CUDA_ENABLED

}  // namespace dl::cuda
