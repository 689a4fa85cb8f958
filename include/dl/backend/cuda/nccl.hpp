// NCCL collectives for the node-local step of the distributed allreduce: the GPUs of one node
// reduce over NVLink/PCIe with NCCL, then one rank per node joins the inter-node MPI allreduce
// (dist/'s hierarchical allreduce), then NCCL broadcasts the result back inside the node.
//
//   auto id = rank0 ? dl::cuda::NcclCommunicator::unique_id() : ncclUniqueId{};  // share id (e.g. MPI_Bcast)
//   dl::cuda::NcclCommunicator comm(local_size, local_rank, id, /*device=*/local_rank);
//   comm.allreduce_sum(grad);   // in place, asynchronous on the device's compute stream
//
// Needs <nccl.h> and -lnccl (meson: found automatically with -Dcuda=enabled). Not included by
// dl.hpp. Run on one H100 with a one-rank communicator only (tests/gpu); never on several GPUs.
#pragma once
#include <cstdint>
#include <type_traits>

#include "dl/backend/cuda/runtime.hpp"
#include "dl/core/error.hpp"
#include "dl/ndarray/ndarray.hpp"

#if defined(DL_CUDA_ENABLED)
#include <nccl.h>
#endif

namespace dl::cuda {

#if defined(DL_CUDA_ENABLED)

inline void check_nccl(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) [[likely]] return;
  fail<DistributedError>("nccl: ", what, ": ", ncclGetErrorString(r), " (result ", static_cast<int>(r), ")");
}

template <class T>
ncclDataType_t nccl_type() {
  if constexpr (std::is_same_v<T, float>) return ncclFloat32;
  else if constexpr (std::is_same_v<T, double>) return ncclFloat64;
  else if constexpr (std::is_same_v<T, int32_t>) return ncclInt32;
  else if constexpr (std::is_same_v<T, int64_t>) return ncclInt64;
  else if constexpr (std::is_same_v<T, uint8_t>) return ncclUint8;
  else static_assert(sizeof(T) == 0, "nccl: unsupported element type");
}

class NcclCommunicator {
 public:
  // Created by one rank and shared with the others by the caller.
  static ncclUniqueId unique_id() {
    ncclUniqueId id;
    check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    return id;
  }
  // Collective: every one of the `size` ranks calls it with the same id.
  NcclCommunicator(int size, int rank, const ncclUniqueId& id, int device) : size_(size), rank_(rank), device_(device) {
    check<DistributedError>(size > 0 && rank >= 0 && rank < size, "nccl: rank ", rank, " out of range for size ", size);
    require_device(Device::cuda(device), "nccl");
    DeviceGuard guard(device);
    check_nccl(ncclCommInitRank(&comm_, size, id, rank), "ncclCommInitRank");
  }
  ~NcclCommunicator() {
    if (comm_) (void)ncclCommDestroy(comm_);
  }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int size() const { return size_; }
  int rank() const { return rank_; }
  int device() const { return device_; }

  // In-place sum over the ranks of a contiguous array on this communicator's device.
  template <class T>
  void allreduce_sum(NDArray<T>& a) {
    check_array(a, "allreduce");
    DeviceGuard guard(device_);
    check_nccl(ncclAllReduce(a.data(), a.data(), static_cast<size_t>(a.numel()), nccl_type<T>(), ncclSum, comm_,
                             compute_stream(device_)),
               "ncclAllReduce");
  }
  // In-place broadcast from `root`.
  template <class T>
  void broadcast(NDArray<T>& a, int root) {
    check_array(a, "broadcast");
    check<DistributedError>(root >= 0 && root < size_, "nccl broadcast: root ", root, " out of range for size ", size_);
    DeviceGuard guard(device_);
    check_nccl(ncclBroadcast(a.data(), a.data(), static_cast<size_t>(a.numel()), nccl_type<T>(), root, comm_,
                             compute_stream(device_)),
               "ncclBroadcast");
  }
  // In-place sum onto `root` (other ranks' arrays are left as they were).
  template <class T>
  void reduce_sum(NDArray<T>& a, int root) {
    check_array(a, "reduce");
    DeviceGuard guard(device_);
    check_nccl(ncclReduce(a.data(), a.data(), static_cast<size_t>(a.numel()), nccl_type<T>(), ncclSum, root, comm_,
                          compute_stream(device_)),
               "ncclReduce");
  }

 private:
  template <class T>
  void check_array(const NDArray<T>& a, const char* op) const {
    a.require_defined(op);
    check<DistributedError>(a.device() == Device::cuda(device_), "nccl ", op, ": array is on ", a.device(),
                            ", the communicator on cuda:", device_);
    check<DistributedError>(a.is_contiguous(), "nccl ", op, ": array of shape ", a.shape(), " is not contiguous");
  }
  ncclComm_t comm_ = nullptr;
  int size_ = 0, rank_ = 0, device_ = 0;
};

#endif  // DL_CUDA_ENABLED

}  // namespace dl::cuda
