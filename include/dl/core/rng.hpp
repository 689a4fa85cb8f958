// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011). Element i of a draw depends
// only on (seed, offset + i / 4), never on the thread that computes it, so results are the same
// for any thread count and on any device. A Generator is just (seed, offset): saving and restoring
// it replays a draw exactly (dropout recomputation, checkpoints). The functions of one draw are
// DL_HOST_DEVICE: CUDA kernels call these same functions (backend/cuda/philox.hpp).
#pragma once
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <numbers>

#include "dl/core/device.hpp"

namespace dl {

struct PhiloxState {
  uint64_t seed = 0;
  uint64_t offset = 0;  // in blocks of four 32-bit words
  friend bool operator==(const PhiloxState&, const PhiloxState&) = default;
};

// One Philox4x32-10 block: 128 random bits for (key, counter).
DL_HOST_DEVICE inline std::array<uint32_t, 4> philox4x32(uint64_t key, uint64_t counter_lo, uint64_t counter_hi = 0) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u, kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  uint32_t c0 = static_cast<uint32_t>(counter_lo), c1 = static_cast<uint32_t>(counter_lo >> 32);
  uint32_t c2 = static_cast<uint32_t>(counter_hi), c3 = static_cast<uint32_t>(counter_hi >> 32);
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = static_cast<uint64_t>(kM0) * c0, p1 = static_cast<uint64_t>(kM1) * c2;
    uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0, n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += kW0;
    k1 += kW1;
  }
  return {c0, c1, c2, c3};
}

// [0, 1) with 24 random bits (exactly representable in float).
DL_HOST_DEVICE inline float uint_to_unit_float(uint32_t u) { return static_cast<float>(u >> 8) * (1.0f / 16777216.0f); }
// [0, 1) with 53 random bits.
DL_HOST_DEVICE inline double uints_to_unit_double(uint32_t hi, uint32_t lo) {
  uint64_t v = (static_cast<uint64_t>(hi) << 21) ^ (lo >> 11);
  return static_cast<double>(v & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

// Standard normal for element i of a draw starting at `state` (Box-Muller on word pairs).
DL_HOST_DEVICE inline double philox_normal(const PhiloxState& s, uint64_t i) {
  auto w = philox4x32(s.seed, s.offset + i / 4);
  int pair = static_cast<int>((i % 4) / 2);
  double u1 = uints_to_unit_double(w[2 * pair], w[2 * pair + 1] ^ 0x5bd1e995u);
  double u2 = uint_to_unit_float(w[2 * pair + 1]);
  double r = std::sqrt(-2.0 * std::log(1.0 - u1));  // 1 - u1 in (0, 1]
  double theta = 2.0 * std::numbers::pi * u2;
  return (i % 2 == 0) ? r * std::cos(theta) : r * std::sin(theta);
}

DL_HOST_DEVICE inline double philox_uniform(const PhiloxState& s, uint64_t i) {
  auto w = philox4x32(s.seed, s.offset + i / 4);
  return uint_to_unit_float(w[i % 4]);
}

// A stream of draws: each draw of n numbers takes ceil(n / 4) counter blocks.
class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  // Reserves n numbers and returns the state they start at. Thread-safe.
  PhiloxState reserve(uint64_t n) {
    uint64_t blocks = (n + 3) / 4;
    return {seed_, offset_.fetch_add(blocks, std::memory_order_relaxed)};
  }
  PhiloxState state() const { return {seed_, offset_.load()}; }
  void set_state(const PhiloxState& s) {
    seed_ = s.seed;
    offset_.store(s.offset);
  }
  void manual_seed(uint64_t seed) { set_state({seed, 0}); }

 private:
  uint64_t seed_;
  std::atomic<uint64_t> offset_{0};
};

inline Generator& default_generator() {
  static Generator g(0x5eed);
  return g;
}
inline void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

}  // namespace dl
