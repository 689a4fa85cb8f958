// CUDA reductions. A full reduction of a contiguous array uses CUB's DeviceReduce (temporary
// storage from the caching allocator); a partial one (sum over some dims, as sum_to needs for the
// gradient of a broadcast operand) uses the same ReducePlan as the CPU kernel
// (backend/cpu/reduce.hpp): one thread per output walks the reduced dims.
//
//   g: (64, 256), reduce dim 0 -> out (256): thread c adds g[0, c], g[1, c], ..., g[63, c]
//
// NOTE: compiled with nvcc but not yet run on a GPU (issue #8).
#pragma once
#include <array>
#include <cstdint>

#include "dl/backend/cpu/reduce.hpp"
#include "dl/backend/cuda/allocator.hpp"
#include "dl/backend/cuda/copy.hpp"
#include "dl/backend/cuda/elementwise.hpp"
#include "dl/backend/cuda/runtime.hpp"
#include "dl/ndarray/ndarray.hpp"

#if defined(DL_CUDA_ENABLED)
#include <cub/device/device_reduce.cuh>
#endif

namespace dl::cuda {

#if defined(DL_CUDA_ENABLED)

struct DeviceReducePlan {
  int nkept = 0, nred = 0;
  int64_t kept_dims[kMaxRank] = {}, kept_strides[kMaxRank] = {}, red_dims[kMaxRank] = {}, red_strides[kMaxRank] = {};
  int64_t outputs = 1, reduced = 1;
  explicit DeviceReducePlan(const cpu::ReducePlan& p) : nkept(p.nkept), nred(p.nred), outputs(p.outputs), reduced(p.reduced) {
    for (int d = 0; d < kMaxRank; ++d) {
      kept_dims[d] = p.kept_dims[static_cast<size_t>(d)];
      kept_strides[d] = p.kept_strides[static_cast<size_t>(d)];
      red_dims[d] = p.red_dims[static_cast<size_t>(d)];
      red_strides[d] = p.red_strides[static_cast<size_t>(d)];
    }
  }
};

template <class T>
__global__ void sum_reduce_kernel(const T* base, DeviceReducePlan p, T* out) {
  for (int64_t o = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; o < p.outputs;
       o += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t off = 0, rest = o;
    for (int d = p.nkept - 1; d >= 0; --d) {
      off += (rest % p.kept_dims[d]) * p.kept_strides[d];
      rest /= p.kept_dims[d];
    }
    T acc = T(0);
    for (int64_t r = 0; r < p.reduced; ++r) {
      int64_t roff = 0, rr = r;
      for (int d = p.nred - 1; d >= 0; --d) {
        roff += (rr % p.red_dims[d]) * p.red_strides[d];
        rr /= p.red_dims[d];
      }
      acc += base[off + roff];
    }
    out[o] = acc;
  }
}

// out[0] = sum of n contiguous elements (CUB; asynchronous).
template <class T>
void sum_all(const T* in, int64_t n, T* out, int dev) {
  DeviceGuard guard(dev);
  cudaStream_t s = compute_stream(dev);
  size_t temp_bytes = 0;
  DL_CUDA_CHECK(cub::DeviceReduce::Sum(nullptr, temp_bytes, in, out, n, s));
  DeviceAllocator& alloc = device_allocator(dev);
  void* temp = alloc.allocate(temp_bytes);
  cudaError_t st = cub::DeviceReduce::Sum(temp, temp_bytes, in, out, n, s);
  alloc.deallocate(temp);  // stream-ordered: later users of the block queue behind this reduction
  check_status(st, "cub::DeviceReduce::Sum");
}

// Sums base (shape, strides) over the dims where mask is true into the contiguous out.
template <class T>
void sum_reduce(const T* base, const Shape& shape, const Strides& strides, const std::array<bool, kMaxRank>& mask,
                T* out, int dev) {
  cpu::ReducePlan p(shape, strides, mask);
  if (p.outputs == 0) return;
  DeviceGuard guard(dev);
  if (p.outputs == 1 && p.reduced > 0) {
    bool contiguous = true;  // reduced dims in row-major order with contiguous strides
    int64_t expect = 1;
    for (int d = p.nred - 1; d >= 0; --d) {
      if (p.red_dims[static_cast<size_t>(d)] != 1 && p.red_strides[static_cast<size_t>(d)] != expect) contiguous = false;
      expect *= p.red_dims[static_cast<size_t>(d)];
    }
    if (contiguous) return sum_all(base, p.reduced, out, dev);
  }
  sum_reduce_kernel<T><<<grid_size(dev, p.outputs, kThreads), kThreads, 0, compute_stream(dev)>>>(base, DeviceReducePlan(p), out);
  check_launch("cuda sum_reduce kernel");
}

// The device twin of dl::detail::sum_to (autograd/record.hpp): a broadcast gradient summed back.
template <class T>
NDArray<T> sum_to(const NDArray<T>& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  const Shape& gs = g.shape();
  const std::array<bool, kMaxRank> mask = sum_to_axes(gs, shape);
  NDArray<T> out(shape, g.device());
  if (g.numel() == 0) {
    zero_bytes(out.data(), g.device().index, static_cast<size_t>(out.numel()) * sizeof(T));
    return out;
  }
  sum_reduce(g.data(), gs, g.strides(), mask, out.data(), g.device().index);
  return out;
}

#endif  // DL_CUDA_ENABLED

}  // namespace dl::cuda
