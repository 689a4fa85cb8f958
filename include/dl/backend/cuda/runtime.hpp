// The CUDA runtime layer: error checking, device count, the current-device guard, and the two
// streams every device gets (compute: kernels and library calls, in issue order; copy: host <->
// device transfers that may overlap compute). Work is asynchronous; the host waits only when it
// reads data (NDArray::to(cpu), item(), to_vector()).
//
// Compiled only when DL_CUDA_ENABLED (nvcc with -DDL_WITH_CUDA, see core/device.hpp). Without it
// device_count() is 0 and is_available() is false, and every use of a CUDA device throws
// dl::DeviceError saying how to enable CUDA. Run on an H100 (tests/gpu).
#pragma once
#include <array>
#include <cstdint>
#include <mutex>
#include <vector>

#include "dl/core/device.hpp"
#include "dl/core/error.hpp"

#if defined(DL_CUDA_ENABLED)
#include <cuda_runtime.h>
#endif

namespace dl::cuda {

#if defined(DL_CUDA_ENABLED)

// Throws DeviceError "cuda: <call>: <message> (<name>)" when status is not cudaSuccess.
inline void check_status(cudaError_t status, const char* what) {
  if (status == cudaSuccess) [[likely]] return;
  (void)cudaGetLastError();  // clear the sticky-free error so later calls are not blamed for it
  fail<DeviceError>("cuda: ", what, ": ", cudaGetErrorString(status), " (", cudaGetErrorName(status), ")");
}
#define DL_CUDA_CHECK(call) ::dl::cuda::check_status((call), #call)

// Number of visible CUDA devices; 0 when there is no device or no driver (not an error).
// Asked once (every kernel launch checks its device index against it).
inline int device_count() {
  static const int count = [] {
    int n = 0;
    cudaError_t s = cudaGetDeviceCount(&n);
    if (s == cudaErrorNoDevice || s == cudaErrorInsufficientDriver || s == cudaErrorInitializationError) {
      (void)cudaGetLastError();
      return 0;
    }
    check_status(s, "cudaGetDeviceCount");
    return n;
  }();
  return count;
}

// Checks that `d` names an existing CUDA device.
inline void require_device(const Device& d, const char* op) {
  int n = device_count();
  check<DeviceError>(d.is_cuda() && d.index >= 0 && d.index < n, op, ": ", d.to_string(),
                     " is not a CUDA device of this machine (", n, " visible)");
}

// Makes `index` the current device for the scope; restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int index) {
    DL_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != index) DL_CUDA_CHECK(cudaSetDevice(index));
  }
  ~DeviceGuard() { (void)cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

inline constexpr int kMaxDevices = 64;

// Per-device state created on first use: the two streams and the multiprocessor count.
struct DeviceContext {
  cudaStream_t compute = nullptr;
  cudaStream_t copy = nullptr;
  int multiprocessors = 0;
};

inline DeviceContext& context(int index) {
  static std::array<DeviceContext, kMaxDevices> contexts{};
  static std::array<std::once_flag, kMaxDevices> once;
  check<DeviceError>(index >= 0 && index < kMaxDevices && index < device_count(), "cuda: device index ", index,
                     " out of range (", device_count(), " devices visible)");
  std::call_once(once[static_cast<size_t>(index)], [index] {
    DeviceGuard guard(index);
    DeviceContext& c = contexts[static_cast<size_t>(index)];
    // Non-blocking: never implicitly synchronised with the legacy default stream.
    DL_CUDA_CHECK(cudaStreamCreateWithFlags(&c.compute, cudaStreamNonBlocking));
    DL_CUDA_CHECK(cudaStreamCreateWithFlags(&c.copy, cudaStreamNonBlocking));
    DL_CUDA_CHECK(cudaDeviceGetAttribute(&c.multiprocessors, cudaDevAttrMultiProcessorCount, index));
  });
  return contexts[static_cast<size_t>(index)];
}
inline cudaStream_t compute_stream(int index) { return context(index).compute; }
inline cudaStream_t copy_stream(int index) { return context(index).copy; }

// Makes `waiter` wait (on the device, not the host) for everything issued so far on `signaller`.
inline void stream_wait(cudaStream_t waiter, cudaStream_t signaller) {
  cudaEvent_t ev;
  DL_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  DL_CUDA_CHECK(cudaEventRecord(ev, signaller));
  DL_CUDA_CHECK(cudaStreamWaitEvent(waiter, ev, 0));
  DL_CUDA_CHECK(cudaEventDestroy(ev));  // released once the wait has happened
}

// Blocks the host until all work on the device's streams has finished.
inline void synchronize(int index = 0) {
  DeviceContext& c = context(index);
  DL_CUDA_CHECK(cudaStreamSynchronize(c.compute));
  DL_CUDA_CHECK(cudaStreamSynchronize(c.copy));
}

// Checks the launch of the kernel just issued (bad configuration, missing sm_90 image, ...).
inline void check_launch(const char* kernel) { check_status(cudaGetLastError(), kernel); }

#else  // no CUDA in this translation unit

inline int device_count() { return 0; }
inline void require_device(const Device& d, const char* op) { cuda_unavailable(op, d); }
inline void synchronize(int index = 0) { cuda_unavailable("cuda::synchronize", Device::cuda(index)); }

#endif

// True when this program was built with CUDA and a device is visible.
inline bool is_available() { return device_count() > 0; }
// True when this translation unit was compiled with CUDA support (even if no device is present).
inline constexpr bool compiled_with_cuda() {
#if defined(DL_CUDA_ENABLED)
  return true;
#else
  return false;
#endif
}

}  // namespace dl::cuda
