// Devices on a build without CUDA (g++): using a CUDA device fails with a message that says how to
// enable it; and the parts of the CUDA backend that are plain host logic (the caching allocator's
// pooling and out-of-memory path, the device Philox, the cuBLAS layout rule) are checked here on
// the CPU, since the GPU suite (tests/gpu) needs a GPU.
#include <doctest/doctest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "dl/dl.hpp"
#include "dl/backend/cuda/allocator.hpp"
#include "dl/backend/cuda/gemm.hpp"
#include "dl/backend/cuda/philox.hpp"

using namespace dl;

TEST_CASE("device: a CUDA device in a build without CUDA says how to enable it") {
  CHECK_FALSE(cuda::compiled_with_cuda());
  CHECK(cuda::device_count() == 0);
  CHECK_FALSE(cuda::is_available());
  CHECK_THROWS_WITH_AS(NDArray<float>(Shape{2}, Device::cuda(0)), doctest::Contains("-Dcuda=enabled"), DeviceError);
  CHECK_THROWS_WITH_AS(zeros<float>({3}, Device::cuda(0)), doctest::Contains("built without CUDA"), DeviceError);
  CHECK_THROWS_WITH_AS(ones<double>({3}).to(Device::cuda(2)), doctest::Contains("to: array is on cuda:2"), DeviceError);
  CHECK_THROWS_WITH_AS(arange<float>(0, 4).cuda(), doctest::Contains("nvcc and -DDL_WITH_CUDA"), DeviceError);
  CHECK_THROWS_WITH_AS(cuda::synchronize(0), doctest::Contains("built without CUDA"), DeviceError);
  auto a = arange<float>(0, 4);
  CHECK(a.cpu().storage() == a.storage());  // already on the CPU: the same handle
  CHECK(a.to(Device::cpu()).to_vector() == std::vector<float>{0, 1, 2, 3});
  CHECK(Device::cuda(3).to_string() == "cuda:3");
}

namespace {
// A device with `capacity` bytes; counts calls so the tests can see the pool at work.
struct FakeMemory {
  size_t capacity = 0, used = 0;
  int mallocs = 0, frees = 0, syncs = 0;
  std::vector<std::pair<void*, size_t>> blocks;
};
struct FakeBackend {
  FakeMemory* m;
  void* malloc(size_t bytes) {
    if (m->used + bytes > m->capacity) return nullptr;
    void* p = std::malloc(bytes);
    m->used += bytes;
    ++m->mallocs;
    m->blocks.emplace_back(p, bytes);
    return p;
  }
  void free(void* p) {
    for (auto it = m->blocks.begin(); it != m->blocks.end(); ++it)
      if (it->first == p) {
        m->used -= it->second;
        m->blocks.erase(it);
        break;
      }
    std::free(p);
    ++m->frees;
  }
  void synchronize() { ++m->syncs; }
  size_t free_bytes() { return m->capacity - m->used; }
  std::string name() const { return "fake:0"; }
};
constexpr size_t kMiB = size_t{1} << 20;
}  // namespace

TEST_CASE("cuda caching allocator: rounding, reuse and statistics") {
  CHECK(cuda::round_block_size(1) == 512);
  CHECK(cuda::round_block_size(513) == 1024);
  CHECK(cuda::round_block_size(kMiB) == 2 * kMiB);
  CHECK(cuda::round_block_size(5 * kMiB + 1) == 6 * kMiB);
  FakeMemory mem;
  mem.capacity = 64 * kMiB;
  cuda::CachingAllocator<FakeBackend> alloc(FakeBackend{&mem});
  void* p = alloc.allocate(3 * kMiB);
  CHECK(alloc.stats().bytes_in_use == static_cast<int64_t>(4 * kMiB));
  alloc.deallocate(p);
  CHECK(alloc.stats().bytes_in_use == 0);
  CHECK(alloc.stats().bytes_cached == static_cast<int64_t>(4 * kMiB));
  CHECK(alloc.stats().peak_bytes_in_use == static_cast<int64_t>(4 * kMiB));
  void* q = alloc.allocate(4 * kMiB);  // same rounded size: the cached block, no new malloc
  CHECK(q == p);
  CHECK(mem.mallocs == 1);
  CHECK(alloc.stats().num_system_allocs == 1);
  CHECK(alloc.stats().num_requests == 2);
  void* r = alloc.allocate(40 * kMiB);  // far larger than anything cached: a new block
  CHECK(mem.mallocs == 2);
  alloc.deallocate(q);
  alloc.deallocate(r);
  void* s = alloc.allocate(2 * kMiB);  // the 4 MiB block is more than 1/8 too big: not reused
  CHECK(mem.mallocs == 3);
  alloc.deallocate(s);
  alloc.empty_cache();
  CHECK(alloc.stats().bytes_cached == 0);
  CHECK(mem.used == 0);
  CHECK(mem.frees == 3);
  CHECK(mem.syncs >= 1);  // queued kernels may still read cached blocks: wait before freeing
}

TEST_CASE("cuda caching allocator: out of memory frees the cache, retries, then names the sizes") {
  FakeMemory mem;
  mem.capacity = 10 * kMiB;
  cuda::CachingAllocator<FakeBackend> alloc(FakeBackend{&mem});
  alloc.deallocate(alloc.allocate(6 * kMiB));  // 6 MiB cached
  void* p = alloc.allocate(8 * kMiB);          // fits only once the cache is released
  CHECK(p != nullptr);
  CHECK(mem.frees == 1);
  CHECK(alloc.stats().bytes_cached == 0);
  CHECK_THROWS_WITH_AS(alloc.allocate(20 * kMiB), doctest::Contains("fake:0 allocator: out of memory allocating 20971520 bytes"),
                       DeviceError);
  CHECK_THROWS_WITH_AS(alloc.allocate(20 * kMiB), doctest::Contains("2097152 bytes free on the device"), DeviceError);
  CHECK(alloc.stats().bytes_in_use == static_cast<int64_t>(8 * kMiB));  // the failure leaked nothing
  alloc.deallocate(p);
  alloc.deallocate(reinterpret_cast<void*>(0x1234));  // not from this allocator: ignored
  CHECK(alloc.stats().bytes_in_use == 0);
  alloc.empty_cache();
}

// The kernels' entry points call core/rng.hpp's (DL_HOST_DEVICE) functions: the CPU's numbers.
TEST_CASE("cuda philox: the device entry points give the CPU's numbers bit for bit") {
  PhiloxState s{42, 1000};
  for (uint64_t i = 0; i < 4000; ++i) {
    REQUIRE(cuda::uniform(s.seed, s.offset, i) == philox_uniform(s, i));
    REQUIRE(cuda::normal(s.seed, s.offset, i) == philox_normal(s, i));
  }
}

TEST_CASE("cuda gemm: which strided matrices cuBLAS can take without a copy") {
  using M = cuda::Matrix<float>;
  auto row_major = cuda::blas_layout(M{nullptr, 4, 6, 6, 1});
  CHECK((row_major.ok && !row_major.trans && row_major.ld == 6));
  auto padded = cuda::blas_layout(M{nullptr, 4, 6, 8, 1});  // a column slice of a wider matrix
  CHECK((padded.ok && !padded.trans && padded.ld == 8));
  auto transposed = cuda::blas_layout(M{nullptr, 6, 4, 1, 6});
  CHECK((transposed.ok && transposed.trans && transposed.ld == 6));
  CHECK_FALSE(cuda::blas_layout(M{nullptr, 4, 6, 12, 2}).ok);  // every other column
  CHECK_FALSE(cuda::blas_layout(M{nullptr, 4, 6, 3, 1}).ok);   // rows overlap
  CHECK(cuda::blas_layout(M{nullptr, 1, 5, 0, 1}).ok);         // a broadcast row
  CHECK(cuda::blas_layout(M{nullptr, 5, 1, 1, 0}).ok);         // a single column
  cuda::set_allow_tf32(true);
  CHECK(cuda::allow_tf32());
  cuda::set_allow_tf32(false);
  CHECK_FALSE(cuda::allow_tf32());
}
