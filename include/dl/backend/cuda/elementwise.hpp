// The CUDA executor: ONE generic grid-stride kernel runs any fused elementwise expression, the GPU
// twin of expr/executor.hpp's CPU loop. The host builds the same collapsed LoopLayout as the CPU
// (dims every operand walks contiguously are merged, broadcast dims get stride 0), and the device
// evaluators below apply the same primitives (expr/primitives.hpp, marked DL_HOST_DEVICE):
//
//   y = relu(x * w + b)     x, w: (64, 256) contiguous, b: (256) broadcast
//   layout: dims (64, 256), strides x (256, 1), w (256, 1), b (0, 1), y (256, 1)
//   thread i: (r, c) = (i / 256, i % 256); y[r*256 + c] = relu(x[..] * w[..] + b[c])
//
// When the layout is one dim, every operand has stride 1 (or 0: a broadcast single element) and
// all pointers are 16-byte aligned, each thread moves 16 bytes per operand with one vector load
// and one vector store (float4 / double2), as bandwidth-bound kernels need to reach the copy rate.
//
// The backward of a fused node (FusedNode in expr/assign.hpp) runs as one more kernel: every
// thread recomputes the forward values of its element and pushes the adjoint through the rule
// table into one contiguous gradient buffer per leaf.
// Run on an H100 (tests/gpu, bench/gpu/elementwise.cu: 1.00x of a device-to-device copy's bandwidth).
#pragma once
#include <array>
#include <cstdint>
#include <type_traits>

#include "dl/backend/cuda/runtime.hpp"
#include "dl/core/dtype.hpp"
#include "dl/expr/evaluator.hpp"
#include "dl/expr/expr.hpp"

namespace dl::cuda {

// Element types the CUDA kernels are instantiated for (bfloat16/float16 storage types are not).
template <class T>
inline constexpr bool kernel_type = std::is_same_v<T, float> || std::is_same_v<T, double> ||
                                    std::is_same_v<T, int32_t> || std::is_same_v<T, int64_t> ||
                                    std::is_same_v<T, uint8_t>;

#if defined(DL_CUDA_ENABLED)

// Lanes per 16-byte vector.
template <class T> inline constexpr int kLanes = 16 / static_cast<int>(sizeof(T));
template <class T>
struct alignas(16) Vec {
  T v[kLanes<T>];
};

// The loop nest handed to a kernel: collapsed dims and the output's strides in them. narrow: the
// element count fits 32 bits, so unravel divides in 32 bits (64-bit division is a long software
// sequence on the GPU).
struct KernelLayout {
  int rank = 1;
  bool narrow = false;
  int64_t dims[kMaxRank] = {};
  int64_t out_st[kMaxRank] = {};
};

// Splits the linear index i over the collapsed dims (row-major) into idx[0 .. rank). Every loop
// over dims here runs to kMaxRank, unrolled, with a rank guard: constant indices keep idx[] in
// registers (a loop bounded by the run-time rank put it in local memory).
template <class I>
__device__ inline void unravel_as(const KernelLayout& L, I i, int64_t* idx) {
#pragma unroll
  for (int d = kMaxRank - 1; d > 0; --d) {
    if (d < L.rank) {
      const I dim = static_cast<I>(L.dims[d]);
      idx[d] = static_cast<int64_t>(i % dim);
      i /= dim;
    }
  }
  idx[0] = static_cast<int64_t>(i);
}
__device__ inline void unravel(const KernelLayout& L, int64_t i, int64_t* idx) {
  if (L.narrow) unravel_as<uint32_t>(L, static_cast<uint32_t>(i), idx);
  else unravel_as<int64_t>(L, i, idx);
}
__device__ inline int64_t dot_strides(const int64_t* idx, const int64_t* st, int rank) {
  int64_t off = 0;
#pragma unroll
  for (int d = 0; d < kMaxRank; ++d)
    if (d < rank) off += idx[d] * st[d];
  return off;
}

template <class E> struct DeviceEvaluator;

template <class T>
struct DeviceEvaluator<NDArray<T>> {
  using Cache = T;
  const T* base = nullptr;
  int64_t st[kMaxRank] = {};

  DeviceEvaluator(const NDArray<T>& a, const expr::LoopLayout& L) : base(a.numel() ? a.data() : nullptr) {
    Strides s = L.collapse(expr::broadcast_strides(a.shape(), a.strides(), L.shape));
    for (int d = 0; d < kMaxRank; ++d) st[d] = s[static_cast<size_t>(d)];
  }
  // Host: may the vector path read this leaf (rank-1 layout)?
  bool vectorizable() const {
    return st[0] == 0 || (st[0] == 1 && reinterpret_cast<uintptr_t>(base) % 16 == 0);
  }
  __device__ T at(const int64_t* idx, int rank) const { return base[dot_strides(idx, st, rank)]; }
  __device__ Vec<T> vec(int64_t i) const {  // lanes i .. i + kLanes - 1 of a rank-1 layout
    if (st[0] == 1) return *reinterpret_cast<const Vec<T>*>(base + i);
    Vec<T> r;
#pragma unroll
    for (int k = 0; k < kLanes<T>; ++k) r.v[k] = base[0];
    return r;
  }
  __device__ Cache cache(const int64_t* idx, int rank) const { return at(idx, rank); }
  template <int Leaf> __device__ void backprop(const Cache&, T adj, T* const* grads, int64_t pos) const {
    if (grads[Leaf]) grads[Leaf][pos] = adj;
  }
};

template <class T>
struct DeviceEvaluator<ScalarExpr<T>> {
  using Cache = T;
  T value;
  DeviceEvaluator(const ScalarExpr<T>& s, const expr::LoopLayout&) : value(s.value) {}
  bool vectorizable() const { return true; }
  __device__ T at(const int64_t*, int) const { return value; }
  __device__ Vec<T> vec(int64_t) const {
    Vec<T> r;
#pragma unroll
    for (int k = 0; k < kLanes<T>; ++k) r.v[k] = value;
    return r;
  }
  __device__ Cache cache(const int64_t*, int) const { return value; }
  template <int Leaf> __device__ void backprop(const Cache&, T, T* const*, int64_t) const {}
};

template <class C>
__device__ auto device_cache_value(const C& c) {
  if constexpr (std::is_arithmetic_v<C>) return c;
  else return c.v;
}

template <class Op, class A>
struct DeviceEvaluator<UnaryExpr<Op, A>> {
  using T = typename A::value_type;
  struct Cache { T v; typename DeviceEvaluator<A>::Cache a; };
  Op op;
  DeviceEvaluator<A> a;
  DeviceEvaluator(const UnaryExpr<Op, A>& e, const expr::LoopLayout& L) : op(e.op), a(e.a, L) {}
  bool vectorizable() const { return a.vectorizable(); }
  __device__ T at(const int64_t* idx, int rank) const { return op(a.at(idx, rank)); }
  __device__ Vec<T> vec(int64_t i) const {
    Vec<T> x = a.vec(i), r;
#pragma unroll
    for (int k = 0; k < kLanes<T>; ++k) r.v[k] = op(x.v[k]);
    return r;
  }
  __device__ Cache cache(const int64_t* idx, int rank) const {
    auto ca = a.cache(idx, rank);
    return {op(device_cache_value(ca)), ca};
  }
  template <int Leaf> __device__ void backprop(const Cache& c, T adj, T* const* grads, int64_t pos) const {
    a.template backprop<Leaf>(c.a, adj * op.d(device_cache_value(c.a), c.v), grads, pos);
  }
};

template <class Op, class A, class B>
struct DeviceEvaluator<BinaryExpr<Op, A, B>> {
  using T = typename A::value_type;
  struct Cache { T v; typename DeviceEvaluator<A>::Cache a; typename DeviceEvaluator<B>::Cache b; };
  Op op;
  DeviceEvaluator<A> a;
  DeviceEvaluator<B> b;
  DeviceEvaluator(const BinaryExpr<Op, A, B>& e, const expr::LoopLayout& L) : op(e.op), a(e.a, L), b(e.b, L) {}
  bool vectorizable() const { return a.vectorizable() && b.vectorizable(); }
  __device__ T at(const int64_t* idx, int rank) const { return op(a.at(idx, rank), b.at(idx, rank)); }
  __device__ Vec<T> vec(int64_t i) const {
    Vec<T> x = a.vec(i), y = b.vec(i), r;
#pragma unroll
    for (int k = 0; k < kLanes<T>; ++k) r.v[k] = op(x.v[k], y.v[k]);
    return r;
  }
  __device__ Cache cache(const int64_t* idx, int rank) const {
    auto ca = a.cache(idx, rank);
    auto cb = b.cache(idx, rank);
    return {op(device_cache_value(ca), device_cache_value(cb)), ca, cb};
  }
  template <int Leaf> __device__ void backprop(const Cache& c, T adj, T* const* grads, int64_t pos) const {
    T va = device_cache_value(c.a), vb = device_cache_value(c.b);
    if constexpr (leaf_count<A>::value > 0) a.template backprop<Leaf>(c.a, adj * op.da(va, vb, c.v), grads, pos);
    if constexpr (leaf_count<B>::value > 0)
      b.template backprop<Leaf + leaf_count<A>::value>(c.b, adj * op.db(va, vb, c.v), grads, pos);
  }
};

template <class Op, class A, class B, class C>
struct DeviceEvaluator<TernaryExpr<Op, A, B, C>> {
  using T = typename A::value_type;
  struct Cache {
    T v;
    typename DeviceEvaluator<A>::Cache a;
    typename DeviceEvaluator<B>::Cache b;
    typename DeviceEvaluator<C>::Cache c;
  };
  Op op;
  DeviceEvaluator<A> a;
  DeviceEvaluator<B> b;
  DeviceEvaluator<C> c;
  DeviceEvaluator(const TernaryExpr<Op, A, B, C>& e, const expr::LoopLayout& L)
      : op(e.op), a(e.a, L), b(e.b, L), c(e.c, L) {}
  bool vectorizable() const { return a.vectorizable() && b.vectorizable() && c.vectorizable(); }
  __device__ T at(const int64_t* idx, int rank) const { return op(a.at(idx, rank), b.at(idx, rank), c.at(idx, rank)); }
  __device__ Vec<T> vec(int64_t i) const {
    Vec<T> x = a.vec(i), y = b.vec(i), z = c.vec(i), r;
#pragma unroll
    for (int k = 0; k < kLanes<T>; ++k) r.v[k] = op(x.v[k], y.v[k], z.v[k]);
    return r;
  }
  __device__ Cache cache(const int64_t* idx, int rank) const {
    auto ca = a.cache(idx, rank);
    auto cb = b.cache(idx, rank);
    auto cc = c.cache(idx, rank);
    return {op(device_cache_value(ca), device_cache_value(cb), device_cache_value(cc)), ca, cb, cc};
  }
  template <int Leaf> __device__ void backprop(const Cache& k, T adj, T* const* grads, int64_t pos) const {
    T va = device_cache_value(k.a), vb = device_cache_value(k.b), vc = device_cache_value(k.c);
    if constexpr (leaf_count<A>::value > 0) a.template backprop<Leaf>(k.a, adj * op.d0(va, vb, vc, k.v), grads, pos);
    if constexpr (leaf_count<B>::value > 0)
      b.template backprop<Leaf + leaf_count<A>::value>(k.b, adj * op.d1(va, vb, vc, k.v), grads, pos);
    if constexpr (leaf_count<C>::value > 0)
      c.template backprop<Leaf + leaf_count<A>::value + leaf_count<B>::value>(k.c, adj * op.d2(va, vb, vc, k.v),
                                                                             grads, pos);
  }
};

// ---- kernels -----------------------------------------------------------------------------------

// The strided kernels take kUnroll elements per thread per step (i, i + stride, ...): all their
// loads are issued before the first store, so a thread keeps kUnroll loads in flight instead of
// waiting for one at a time (the vector kernel gets the same from its 16-byte loads).
inline constexpr int kUnroll = 4;

template <class T, class E>
__global__ void assign_strided_kernel(T* out, KernelLayout L, DeviceEvaluator<E> ev, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  for (; i + (kUnroll - 1) * stride < n; i += kUnroll * stride) {
    T v[kUnroll];
    int64_t off[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      int64_t idx[kMaxRank];
      unravel(L, i + u * stride, idx);
      off[u] = dot_strides(idx, L.out_st, L.rank);
      v[u] = ev.at(idx, L.rank);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) out[off[u]] = v[u];
  }
  for (; i < n; i += stride) {
    int64_t idx[kMaxRank];
    unravel(L, i, idx);
    out[dot_strides(idx, L.out_st, L.rank)] = ev.at(idx, L.rank);
  }
}

// Contiguous, aligned: 16 bytes per operand per step, then a scalar tail.
template <class T, class E>
__global__ void assign_vector_kernel(T* out, DeviceEvaluator<E> ev, int64_t n) {
  constexpr int V = kLanes<T>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t nvec = n / V;
  for (int64_t i = tid; i < nvec; i += stride) *reinterpret_cast<Vec<T>*>(out + i * V) = ev.vec(i * V);
  for (int64_t j = nvec * V + tid; j < n; j += stride) {
    int64_t idx = j;
    out[j] = ev.at(&idx, 1);
  }
}

template <class T, int Leaves>
struct GradPointers {
  T* p[Leaves > 0 ? Leaves : 1];
};

template <class T, class E, int Leaves>
__global__ void backward_kernel(DeviceEvaluator<E> ev, DeviceEvaluator<NDArray<T>> gout, GradPointers<T, Leaves> grads,
                                KernelLayout L, int64_t n) {
  // The gradient buffers are contiguous in the output's shape, so element i sits at offset i.
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  for (; i + (kUnroll - 1) * stride < n; i += kUnroll * stride) {
    typename DeviceEvaluator<E>::Cache c[kUnroll];
    T g[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      int64_t idx[kMaxRank];
      unravel(L, i + u * stride, idx);
      c[u] = ev.cache(idx, L.rank);
      g[u] = gout.at(idx, L.rank);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) ev.template backprop<0>(c[u], g[u], grads.p, i + u * stride);
  }
  for (; i < n; i += stride) {
    int64_t idx[kMaxRank];
    unravel(L, i, idx);
    ev.template backprop<0>(ev.cache(idx, L.rank), gout.at(idx, L.rank), grads.p, i);
  }
}

// Blocks for a grid-stride loop over `work` items: enough to fill every SM several times over.
inline unsigned grid_size(int device, int64_t work, int threads) {
  int64_t want = (work + threads - 1) / threads;
  int64_t cap = static_cast<int64_t>(context(device).multiprocessors) * 32;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(want, cap)));
}

inline constexpr int kThreads = 256;

// Checks that every leaf of e lives on `device`.
template <class E>
void require_same_device(const E& e, Device device, const char* op) {
  for_each_leaf(e, [&](const auto& leaf) {
    check<DeviceError>(leaf.device() == device, op, ": operands are on different devices (", leaf.device(), " and ",
                       device, "); move one with .to()");
  });
}

// dst[i] = e[i] on dst's device (e already checked to broadcast to dst's shape).
template <class T, class E>
void run_assign(NDArray<T>& dst, const E& e) {
  static_assert(kernel_type<T>, "cuda elementwise: element type has no CUDA kernels");
  require_same_device(e, dst.device(), "elementwise");
  const int64_t n = dst.numel();
  if (n == 0) return;
  const int dev = dst.device().index;
  std::array<Strides, leaf_count<E>::value + 1> operands{};
  operands[0] = dst.strides();
  size_t li = 1;
  for_each_leaf(e, [&](const auto& leaf) { operands[li++] = expr::broadcast_strides(leaf.shape(), leaf.strides(), dst.shape()); });
  expr::LoopLayout L = expr::make_layout(dst.shape(), operands.data(), static_cast<int>(operands.size()));
  DeviceEvaluator<E> ev(e, L);
  KernelLayout K;
  K.rank = L.rank;
  K.narrow = n <= int64_t{0xFFFFFFFF};
  Strides ost = L.collapse(dst.strides());
  for (int d = 0; d < L.rank; ++d) {
    K.dims[d] = L.dims[static_cast<size_t>(d)];
    K.out_st[d] = ost[static_cast<size_t>(d)];
  }
  DeviceGuard guard(dev);
  cudaStream_t s = compute_stream(dev);
  T* out = dst.data();
  if (L.rank == 1 && K.out_st[0] == 1 && reinterpret_cast<uintptr_t>(out) % 16 == 0 && ev.vectorizable()) {
    assign_vector_kernel<T, E><<<grid_size(dev, n / kLanes<T> + 1, kThreads), kThreads, 0, s>>>(out, ev, n);
  } else {
    assign_strided_kernel<T, E><<<grid_size(dev, n, kThreads), kThreads, 0, s>>>(out, K, ev, n);
  }
  check_launch("cuda elementwise kernel");
}

// Backward of a fused expression on the device (see expr/executor.hpp's run_backward).
template <class T, class E>
void run_backward(const E& e, const Shape& shape, const NDArray<T>& gout, const std::array<T*, leaf_count<E>::value>& grads) {
  static_assert(kernel_type<T>, "cuda elementwise: element type has no CUDA kernels");
  const Device device = gout.device();
  require_same_device(e, device, "elementwise backward");
  const int64_t n = shape.numel();
  if (n == 0) return;
  std::array<Strides, leaf_count<E>::value + 2> operands{};
  operands[0] = contiguous_strides(shape);
  operands[1] = expr::broadcast_strides(gout.shape(), gout.strides(), shape);
  size_t li = 2;
  for_each_leaf(e, [&](const auto& leaf) { operands[li++] = expr::broadcast_strides(leaf.shape(), leaf.strides(), shape); });
  expr::LoopLayout L = expr::make_layout(shape, operands.data(), static_cast<int>(operands.size()));
  KernelLayout K;
  K.rank = L.rank;
  K.narrow = n <= int64_t{0xFFFFFFFF};
  for (int d = 0; d < L.rank; ++d) K.dims[d] = L.dims[static_cast<size_t>(d)];
  constexpr int kLeaves = leaf_count<E>::value;
  GradPointers<T, kLeaves> gp{};
  for (int l = 0; l < kLeaves; ++l) gp.p[l] = grads[static_cast<size_t>(l)];
  const int dev = device.index;
  DeviceGuard guard(dev);
  backward_kernel<T, E, kLeaves><<<grid_size(dev, n, kThreads), kThreads, 0, compute_stream(dev)>>>(
      DeviceEvaluator<E>(e, L), DeviceEvaluator<NDArray<T>>(gout, L), gp, K, n);
  check_launch("cuda elementwise backward kernel");
}

#endif  // DL_CUDA_ENABLED

}  // namespace dl::cuda
