// Main of the GPU suite. Without a usable CUDA device it prints why and exits 77, which meson
// reports as SKIP: a machine without a GPU counts 0 passed, 0 failed, never "passed".
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cuda_runtime_api.h>

#include <cstdio>

int main(int argc, char** argv) {
  int n = 0;
  cudaError_t s = cudaGetDeviceCount(&n);
  if (s != cudaSuccess || n == 0) {
    std::printf("gpu tests: skipped: no usable CUDA device (%s)\n",
                s != cudaSuccess ? cudaGetErrorString(s) : "cudaGetDeviceCount returned 0 devices");
    return 77;
  }
  cudaDeviceProp p{};
  cudaGetDeviceProperties(&p, 0);
  std::printf("gpu tests: running on %s (sm_%d%d, %d devices)\n", p.name, p.major, p.minor, n);
  doctest::Context context(argc, argv);
  return context.run();
}
