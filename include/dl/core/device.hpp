// Device: where an array's storage lives. A runtime property of every array: {cpu} or {cuda, i}.
#pragma once
#include <ostream>
#include <string>

#include "dl/core/error.hpp"

// Functions that CUDA kernels call too (the primitive rule table, Philox) are marked
// DL_HOST_DEVICE; for a host compiler it is empty. DL_CUDA_ENABLED means this translation unit can
// run CUDA work: it is compiled by nvcc (__CUDACC__) with -DDL_WITH_CUDA.
#if defined(__CUDACC__)
#define DL_HOST_DEVICE __host__ __device__
#else
#define DL_HOST_DEVICE
#endif
#if defined(DL_WITH_CUDA) && defined(__CUDACC__)
#define DL_CUDA_ENABLED 1
#endif

namespace dl {

enum class DeviceType : uint8_t { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static constexpr Device cpu() { return {DeviceType::cpu, 0}; }
  static constexpr Device cuda(int i = 0) { return {DeviceType::cuda, i}; }
  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  std::string to_string() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
  friend bool operator==(const Device&, const Device&) = default;
  friend std::ostream& operator<<(std::ostream& os, const Device& d) { return os << d.to_string(); }
};

// Raised wherever a CUDA device is used in a build without CUDA support.
[[noreturn]] inline void cuda_unavailable(const char* op, const Device& d) {
  fail<DeviceError>(op, ": array is on ", d.to_string(),
                    " but this program was built without CUDA; compile with nvcc and -DDL_WITH_CUDA "
                    "(meson option -Dcuda=enabled) to use GPUs");
}

// Kernels in backend/cpu call this on every operand.
inline void require_cpu(const Device& d, const char* op) {
  if (!d.is_cpu()) cuda_unavailable(op, d);
}

}  // namespace dl
