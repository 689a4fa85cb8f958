// Storage: one ref-counted block of device memory. NDArray handles share it through a shared_ptr;
// the block goes back to its allocator when the last handle lets go.
#pragma once
#include <cstddef>
#include <functional>
#include <memory>

#include "dl/core/allocator.hpp"
#include "dl/core/device.hpp"
#if defined(DL_CUDA_ENABLED)
#include "dl/backend/cuda/allocator.hpp"  // CUDA blocks come from the per-device caching allocator
#endif

namespace dl {

class Storage {
 public:
  Storage(size_t bytes, Device device) : bytes_(bytes), device_(device) {
    if (device.is_cuda()) {
#if defined(DL_CUDA_ENABLED)
      data_ = cuda::device_allocator(device.index).allocate(bytes);
      return;
#else
      cuda_unavailable("storage", device);
#endif
    }
    data_ = cpu_allocator().allocate(bytes);
  }
  // Wraps memory owned elsewhere; `release` runs when the storage dies (may be empty).
  Storage(void* data, size_t bytes, Device device, std::function<void(void*)> release)
      : data_(data), bytes_(bytes), device_(device), release_(std::move(release)), owned_(false) {}
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage() {
#if defined(DL_CUDA_ENABLED)
    if (owned_ && device_.is_cuda()) {
      cuda::device_allocator(device_.index).deallocate(data_);
      return;
    }
#endif
    if (owned_) cpu_allocator().deallocate(data_, bytes_);
    else if (release_) release_(data_);
  }

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

  static std::shared_ptr<Storage> allocate(size_t bytes, Device device = Device::cpu()) {
    return std::make_shared<Storage>(bytes, device);
  }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
  std::function<void(void*)> release_;
  bool owned_ = true;
};

}  // namespace dl
