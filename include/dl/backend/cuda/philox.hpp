// Philox4x32-10 for device code: kernels call core/rng.hpp's functions (DL_HOST_DEVICE), so a seed
// gives the same numbers on the GPU as on the CPU: element i of a draw is a function of
// (seed, offset + i / 4) only.
//
// Uniform draws are integer arithmetic plus one exact scaling, so the GPU gives identical bits;
// normal draws go through log/sin/cos, whose CUDA versions may differ from glibc's by an ulp of
// double (tests/gpu/ compares them with a tolerance).
// Run on an H100: tests/gpu checks the GPU stream equals the CPU's.
#pragma once
#include <cstdint>

#include "dl/backend/cuda/elementwise.hpp"
#include "dl/backend/cuda/runtime.hpp"
#include "dl/core/device.hpp"
#include "dl/core/rng.hpp"

namespace dl::cuda {

// Element i of a uniform [0, 1) draw starting at (seed, offset): dl::philox_uniform.
DL_HOST_DEVICE inline double uniform(uint64_t seed, uint64_t offset, uint64_t i) {
  return philox_uniform(PhiloxState{seed, offset}, i);
}
// Element i of a standard normal draw: dl::philox_normal (Box-Muller on word pairs).
DL_HOST_DEVICE inline double normal(uint64_t seed, uint64_t offset, uint64_t i) {
  return philox_normal(PhiloxState{seed, offset}, i);
}

#if defined(DL_CUDA_ENABLED)

template <class T>
__global__ void rand_kernel(T* out, int64_t n, uint64_t seed, uint64_t offset, double low, double high, bool gaussian) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint64_t u = static_cast<uint64_t>(i);
    out[i] = gaussian ? static_cast<T>(low + high * normal(seed, offset, u))
                      : static_cast<T>(low + (high - low) * uniform(seed, offset, u));
  }
}

// Fills the contiguous device array out with uniform [low, high) numbers from gen: the same values
// dl::rand gives on the CPU for the same generator state.
template <class T>
void rand_fill(NDArray<T>& out, double low, double high, Generator& gen = default_generator()) {
  PhiloxState s = gen.reserve(static_cast<uint64_t>(out.numel()));
  int dev = out.device().index;
  if (out.numel() == 0) return;
  DeviceGuard guard(dev);
  rand_kernel<T><<<grid_size(dev, out.numel(), kThreads), kThreads, 0, compute_stream(dev)>>>(
      out.data(), out.numel(), s.seed, s.offset, low, high, false);
  check_launch("cuda rand kernel");
}
// Normal(mean, stddev) numbers, as dl::randn.
template <class T>
void randn_fill(NDArray<T>& out, double mean, double stddev, Generator& gen = default_generator()) {
  PhiloxState s = gen.reserve(static_cast<uint64_t>(out.numel()));
  int dev = out.device().index;
  if (out.numel() == 0) return;
  DeviceGuard guard(dev);
  rand_kernel<T><<<grid_size(dev, out.numel(), kThreads), kThreads, 0, compute_stream(dev)>>>(
      out.data(), out.numel(), s.seed, s.offset, mean, stddev, true);
  check_launch("cuda randn kernel");
}

#endif  // DL_CUDA_ENABLED

}  // namespace dl::cuda
