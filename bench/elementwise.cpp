// Elementwise fusion against the memory-bandwidth limit and against Eigen, in one run.
//
//   y = relu(a * 1.5 + b) * c - sqrt(abs(a)) + maximum(b, 0.5)      (9 ops, 3 inputs, 1 output)
//
// over 2^26 floats (256 MiB per array: far beyond every cache, so every side is memory-bound).
// Sides, all on the same --threads N (default 2):
//   dl fused      one pass: y.assign(expression) into a preallocated array
//   dl op-by-op   the same chain, each op assigned to its own NDArray (what an eager library
//                 without fusion does: 9 passes, 8 temporaries)
//   Eigen         the same chain as an Eigen Array expression on Eigen::Map<ArrayXf>, the range
//                 split across the same threads with OpenMP
//   memcpy        std::memcpy of one input, split across the same threads
//   copy loop     a plain `dst[i] = src[i]` loop over the same threads (ordinary stores: each
//                 store first reads its line, so 12 bytes move per 8 counted)
//   copy NT       the copy with non-temporal (streaming) stores, as dl's executor uses for
//                 outputs of 32 MiB and more
//   copy          the fastest of the three: the bandwidth limit every ratio is taken against
// Bytes counted: inputs read + output written (16 B/element for the chain, 8 B for a copy).
//
//   build/bench/bench_elementwise [--threads 2] [--repeats 10] [--json] [--quick] [--log2n 26]
#include <omp.h>

#include <Eigen/Core>
#include <cstring>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "bench_util.hpp"
#include "dl/dl.hpp"

namespace {

// Splits [0, n) into `threads` equal chunks and runs fn(begin, end) on each, one per thread.
template <class Fn>
void omp_split(int threads, int64_t n, Fn&& fn) {
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    int64_t chunk = (n + nt - 1) / nt;
    int64_t b = std::min<int64_t>(n, t * chunk), e = std::min<int64_t>(n, b + chunk);
    if (b < e) fn(b, e);
  }
}

// dst[0, n) = src[0, n) with streaming stores where dst is 64-byte aligned.
void copy_streaming(float* dst, const float* src, int64_t n) {
  int64_t i = 0;
  while (i < n && reinterpret_cast<uintptr_t>(dst + i) % 64 != 0) { dst[i] = src[i]; ++i; }
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) _mm512_stream_ps(dst + i, _mm512_loadu_ps(src + i));
#elif defined(__AVX__)
  for (; i + 8 <= n; i += 8) _mm256_stream_ps(dst + i, _mm256_loadu_ps(src + i));
#elif defined(__SSE2__)
  for (; i + 4 <= n; i += 4) _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
#endif
  for (; i < n; ++i) dst[i] = src[i];
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

float max_abs_diff(const float* x, const float* y, int64_t n) {
  float m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  auto opt = dl::bench::parse_options(argc, argv, "[--log2n K]");
  int log2n = opt.quick ? 22 : 26;
  for (size_t i = 0; i + 1 < opt.rest.size(); ++i)
    if (opt.rest[i] == "--log2n") log2n = std::atoi(opt.rest[i + 1].c_str());
  const int threads = opt.threads;
  const int repeats = opt.repeats > 0 ? opt.repeats : 10;
  dl::set_num_threads(threads);
  Eigen::setNbThreads(threads);
  omp_set_num_threads(threads);

  const int64_t n = int64_t{1} << log2n;
  dl::manual_seed(7);
  dl::NDArray<float> a = dl::randn<float>({n}), b = dl::randn<float>({n}), c = dl::randn<float>({n});
  dl::NDArray<float> y = dl::zeros<float>({n}), y_ops = dl::zeros<float>({n}), y_eigen = dl::zeros<float>({n});
  dl::NDArray<float> copy_dst = dl::zeros<float>({n});

  const double chain_bytes = 16.0 * static_cast<double>(n);  // a, b, c read; y written
  const double copy_bytes = 8.0 * static_cast<double>(n);    // src read; dst written
  const std::string group = "2^" + std::to_string(log2n) + " floats";

  auto fused = [&] { y.assign(dl::relu(a * 1.5f + b) * c - dl::sqrt(dl::abs(a)) + dl::maximum(b, 0.5f)); };
  auto op_by_op = [&] {
    dl::NDArray<float> t1 = a * 1.5f;
    dl::NDArray<float> t2 = t1 + b;
    dl::NDArray<float> t3 = dl::relu(t2);
    dl::NDArray<float> t4 = t3 * c;
    dl::NDArray<float> t5 = dl::abs(a);
    dl::NDArray<float> t6 = dl::sqrt(t5);
    dl::NDArray<float> t7 = t4 - t6;
    dl::NDArray<float> t8 = dl::maximum(b, 0.5f);
    y_ops.assign(t7 + t8);
  };
  const float *pa = a.data(), *pb = b.data(), *pc = c.data();
  float* pe = y_eigen.data();
  auto eigen = [&] {
    omp_split(threads, n, [&](int64_t s, int64_t e) {
      using Map = Eigen::Map<const Eigen::ArrayXf>;
      Map ea(pa + s, e - s), eb(pb + s, e - s), ec(pc + s, e - s);
      Eigen::Map<Eigen::ArrayXf> ey(pe + s, e - s);
      ey = (ea * 1.5f + eb).max(0.0f) * ec - ea.abs().sqrt() + eb.max(0.5f);
    });
  };
  float* pd = copy_dst.data();
  auto memcpy_copy = [&] {
    omp_split(threads, n, [&](int64_t s, int64_t e) { std::memcpy(pd + s, pa + s, static_cast<size_t>(e - s) * sizeof(float)); });
  };
  auto nt_copy = [&] { omp_split(threads, n, [&](int64_t s, int64_t e) { copy_streaming(pd + s, pa + s, e - s); }); };
  auto loop_copy = [&] {
    omp_split(threads, n, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) pd[i] = pa[i];
    });
  };

  // Interleave the sides across rounds so a burst of load from elsewhere hits all of them alike.
  std::vector<std::pair<std::string, std::function<void()>>> sides = {
      {"memcpy", memcpy_copy}, {"copy loop", loop_copy}, {"copy NT", nt_copy},
      {"dl fused", fused},     {"Eigen", eigen},         {"dl op-by-op", op_by_op}};
  std::vector<std::vector<double>> samples(sides.size());
  for (auto& s : sides) s.second();  // warm-up: page faults, pool allocations
  for (int r = 0; r < repeats; ++r)
    for (size_t k = 0; k < sides.size(); ++k) samples[k].push_back(dl::bench::time_it(sides[k].second, 1, 0).median_s);
  auto timing_of = [&](size_t k) { return dl::bench::summarise(samples[k]); };

  dl::bench::Table table("elementwise", opt);
  size_t best = 0;
  for (size_t k = 1; k < 3; ++k)
    if (timing_of(k).median_s < timing_of(best).median_s) best = k;
  table.add_rate(group, "memcpy", timing_of(0), copy_bytes, 1e9, "GB/s", "copy");
  table.add_rate(group, "copy loop", timing_of(1), copy_bytes, 1e9, "GB/s", "copy");
  table.add_rate(group, "copy NT", timing_of(2), copy_bytes, 1e9, "GB/s", "copy");
  table.add_rate(group, "copy", timing_of(best), copy_bytes, 1e9, "GB/s").note = "= " + sides[best].first;
  table.add_rate(group, "dl fused", timing_of(3), chain_bytes, 1e9, "GB/s", "copy");
  table.add_rate(group, "Eigen", timing_of(4), chain_bytes, 1e9, "GB/s", "copy");
  table.add_rate(group, "dl op-by-op", timing_of(5), chain_bytes, 1e9, "GB/s", "copy");
  // The headline ratios as their own rows: fused vs op-by-op and fused vs Eigen.
  const std::string vs = group + " fused vs";
  for (const char* who : {"dl op-by-op", "Eigen"}) {
    dl::bench::Row peer = *table.find(group, who);
    peer.group = vs;
    peer.baseline.clear();
    table.add(peer);
    dl::bench::Row r = *table.find(group, "dl fused");
    r.group = vs;
    r.name = std::string("dl fused / ") + who;
    r.baseline = who;
    table.add(r);
  }

  float d_ops = max_abs_diff(y.data(), y_ops.data(), n), d_eigen = max_abs_diff(y.data(), y_eigen.data(), n);
  char note[256];
#ifdef __NO_MATH_ERRNO__
  const char* errno_note = "";
#else
  const char* errno_note = "; built WITHOUT -fno-math-errno: dl's sqrt is not vectorised";
#endif
  std::snprintf(note, sizeof note, "load %.2f; max |fused - op-by-op| %.2g, |fused - Eigen| %.2g%s", dl::bench::Table::load_average(),
                static_cast<double>(d_ops), static_cast<double>(d_eigen), errno_note);
  table.print(note);
  if (d_ops > 1e-5f || d_eigen > 1e-5f) {
    std::fprintf(stderr, "elementwise: results differ (%g, %g)\n", static_cast<double>(d_ops), static_cast<double>(d_eigen), errno_note);
    return 1;
  }
  return 0;
}
