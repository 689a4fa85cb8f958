// Copies between host and device memory, and between devices. All device-side work is issued on
// the compute stream of the device that owns the memory, so it is ordered with kernels and with
// the caching allocator's stream-ordered reuse (backend/cuda/allocator.hpp):
//
//   host -> device   asynchronous: from pageable memory CUDA stages the source before the call
//                    returns, so the host buffer may be freed at once; from pinned memory the DMA
//                    runs later and the caller keeps the buffer alive (to_device_async).
//   device -> host   waits: the host is about to read the data (the one place dl synchronises).
//   device -> device asynchronous on the destination's stream; across devices it first waits for
//                    the source's queued work, and the source then waits for the copy (so the
//                    source block is not reused while it is read).
// Run on an H100 by tests/gpu (round trips, item, to_vector).
#pragma once
#include <cstddef>
#include <cstring>

#include "dl/backend/cuda/allocator.hpp"
#include "dl/backend/cuda/runtime.hpp"
#include "dl/core/device.hpp"

namespace dl::cuda {

#if defined(DL_CUDA_ENABLED)

// dst (on dst_dev) <- src (on src_dev), `bytes` bytes, both contiguous.
inline void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (bytes == 0) return;
  if (dst_dev.is_cuda() && src_dev.is_cpu()) {
    DeviceGuard guard(dst_dev.index);
    DL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, compute_stream(dst_dev.index)));
  } else if (dst_dev.is_cpu() && src_dev.is_cuda()) {
    DeviceGuard guard(src_dev.index);
    cudaStream_t s = compute_stream(src_dev.index);
    DL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
    DL_CUDA_CHECK(cudaStreamSynchronize(s));
  } else if (dst_dev.is_cuda() && src_dev.is_cuda()) {
    if (dst_dev.index == src_dev.index) {
      DeviceGuard guard(dst_dev.index);
      DL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, compute_stream(dst_dev.index)));
    } else {
      cudaStream_t ds = compute_stream(dst_dev.index), ss = compute_stream(src_dev.index);
      {
        DeviceGuard guard(src_dev.index);
        DL_CUDA_CHECK(cudaStreamSynchronize(ss));  // the source's producers are done
      }
      DeviceGuard guard(dst_dev.index);
      DL_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_dev.index, src, src_dev.index, bytes, ds));
      DL_CUDA_CHECK(cudaStreamSynchronize(ds));  // the source block may be reused once we return
    }
  } else {
    std::memcpy(dst, src, bytes);
  }
}

// Host (pinned) -> device on the copy stream, overlapping compute; the compute stream waits for
// it before any later kernel. The caller keeps `src` alive until synchronize() or a later read.
inline void to_device_async(void* dst, int index, const PinnedBuffer& src, size_t bytes) {
  DeviceGuard guard(index);
  DL_CUDA_CHECK(cudaMemcpyAsync(dst, src.data(), bytes, cudaMemcpyHostToDevice, copy_stream(index)));
  stream_wait(compute_stream(index), copy_stream(index));
}

// Sets `bytes` bytes of device memory to zero (asynchronous).
inline void zero_bytes(void* dst, int index, size_t bytes) {
  if (bytes == 0) return;
  DeviceGuard guard(index);
  DL_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, compute_stream(index)));
}

#endif  // DL_CUDA_ENABLED

}  // namespace dl::cuda
