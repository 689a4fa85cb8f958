// The executor's large-output path (>= 32 MiB outputs use tiles and streaming stores): results
// must match the plain path element by element, also for misaligned slices and in-place updates.
#include <doctest/doctest.h>

#include <cmath>

#include "dl/dl.hpp"

using namespace dl;

TEST_CASE("executor: streaming path on large, misaligned outputs") {
  const int64_t n = (int64_t{1} << 23) + 123;  // 32 MiB + a tail, as float
  auto a = randn<float>({n + 20}), b = randn<float>({n});
  for (int64_t off : {0, 1, 3, 17}) {
    auto out_storage = zeros<float>({n + 20});
    auto out = out_storage.slice(0, off, n + off);
    out.assign(a.slice(0, off, n + off) * 2.0f + sqrt(abs(b)));
    const float* pa = a.data() + off;
    const float* pb = b.data();
    const float* po = out.data();
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i)
      if (po[i] != pa[i] * 2.0f + std::sqrt(std::abs(pb[i]))) ++bad;
    CHECK(bad == 0);
    CHECK(out_storage.data()[off + n] == 0.0f);  // nothing written past the slice
  }
  auto c = b.clone();
  c += b;
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i)
    if (c.data()[i] != b.data()[i] * 2.0f) ++bad;
  CHECK(bad == 0);
  auto m = randn<float>({9, (int64_t{1} << 20) + 5});
  auto row = randn<float>({(int64_t{1} << 20) + 5});
  NDArray<float> r = m * row;
  CHECK(r.at({8, 77}) == m.at({8, 77}) * row.at({77}));
  CHECK(r.at({4, -1}) == m.at({4, -1}) * row.at({-1}));
}
