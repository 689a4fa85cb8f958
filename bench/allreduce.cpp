// Allreduce bandwidth: dl's flat, hierarchical and leader algorithms against raw MPI_Allreduce in
// the same run, float32 sum, 4 KB to a maximum size (default 256 MB, argv[1] in MB). Reports the
// median time over repetitions, algbw = bytes / time and busbw = algbw * 2(p-1)/p (the NCCL-tests
// convention: the bandwidth each link would need for a ring), and each dl variant's ratio to MPI.
// Run with simulated nodes to exercise the two-level paths on one machine:
//   DL_DIST_RANKS_PER_NODE=2 mpirun -np 4 -x DL_DIST_RANKS_PER_NODE ./bench_allreduce 256 [check|nocheck] [median|min]
// "min" reports the fastest repetition instead of the median: on a shared, oversubscribed machine
// it estimates what the algorithm costs when no other process takes the cores.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "dl/dist/collectives.hpp"

namespace {

using Clock = std::chrono::steady_clock;

bool g_report_min = false;

// Median (or fastest) seconds of one call over reps (after one warm-up); every rank times the same
// call and the slowest rank's time counts (a collective is done when the last rank is done).
template <class Fn>
double time_median(Fn&& fn, int reps, MPI_Comm comm) {
  fn();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    MPI_Barrier(comm);
    auto a = Clock::now();
    fn();
    double s = std::chrono::duration<double>(Clock::now() - a).count(), worst = 0;
    MPI_Allreduce(&s, &worst, 1, MPI_DOUBLE, MPI_MAX, comm);
    t.push_back(worst);
  }
  std::sort(t.begin(), t.end());
  return g_report_min ? t.front() : t[t.size() / 2];
}

// The first hierarchical allreduce (until 2026-11-27), kept here to compare in the same run: in-place
// MPI_Reduce_scatter, peer allreduce, memmove of the chunk to its displacement, in-place
// MPI_Allgatherv. The library's version goes through a chunk-sized scratch buffer instead.
void hierarchical_in_place(float* x, int n, const dl::dist::Group& g) {
  const auto& local = g.local();
  const int L = local.size(), r = local.rank();
  std::vector<int> counts(L), displs(L);
  for (int c = 0; c < L; ++c) {
    auto [d, k] = dl::dist::detail::chunk_of(n, L, c);
    displs[c] = static_cast<int>(d);
    counts[c] = static_cast<int>(k);
  }
  const int mine = counts[r];
  if (L > 1) MPI_Reduce_scatter(MPI_IN_PLACE, x, counts.data(), MPI_FLOAT, MPI_SUM, local.get());
  if (g.peers().size() > 1 && mine > 0) MPI_Allreduce(MPI_IN_PLACE, x, mine, MPI_FLOAT, MPI_SUM, g.peers().get());
  if (L > 1) {
    if (displs[r] != 0 && mine > 0) std::memmove(x + displs[r], x, static_cast<size_t>(mine) * sizeof(float));
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, counts.data(), displs.data(), MPI_FLOAT, local.get());
  }
}

}  // namespace

int main(int argc, char** argv) {
  dl::dist::Environment env(argc, argv);
  auto& g = dl::dist::world();
  const double max_mb = argc > 1 ? std::atof(argv[1]) : 256.0;
  const bool checks = !(argc > 2 && std::string(argv[2]) == "nocheck");
  g_report_min = argc > 3 && std::string(argv[3]) == "min";
  g.set_check_arguments(checks);
  const int p = g.size();
  if (g.rank() == 0) {
    std::printf("# %d ranks, %d node(s)%s, %d rank(s) per node, float32 sum, argument check %s\n", p, g.num_nodes(),
                g.simulated_nodes() ? " (simulated)" : "", g.max_local_size(), checks ? "on" : "off");
    std::printf(g_report_min ? "# times: fastest of the repetitions, slowest rank;" : "# times: median, slowest rank;");
    std::printf(" bw in GB/s; ratio = MPI time / dl time (>1: dl faster)\n");
    // hier v1: the earlier in-place hierarchical version (hierarchical_in_place above), for comparison
    std::printf("%10s %10s %8s %8s | %10s %8s %6s | %10s %8s %6s | %10s %8s %6s | %10s %6s\n", "bytes", "MPI us", "algbw",
                "busbw", "flat us", "busbw", "ratio", "hier us", "busbw", "ratio", "leader us", "busbw", "ratio",
                "hier v1 us", "ratio");
  }
  const double bus = 2.0 * (p - 1) / p;
  for (size_t bytes = 4096; bytes <= static_cast<size_t>(max_mb * 1048576.0); bytes *= 4) {
    const int64_t n = static_cast<int64_t>(bytes / sizeof(float));
    std::vector<float> x(static_cast<size_t>(n), 1.0f);
    // Fewer repetitions for big messages keeps the whole run around a minute.
    int reps = bytes <= (1u << 20) ? 50 : bytes <= (16u << 20) ? 10 : 5;
    MPI_Comm world = g.comm().get();
    // Refill before each variant: 51 sums of 4 ranks from 1.0 stay finite (4^51 < FLT_MAX).
    std::fill(x.begin(), x.end(), 1.0f);
    double t_mpi = time_median([&] { MPI_Allreduce(MPI_IN_PLACE, x.data(), static_cast<int>(n), MPI_FLOAT, MPI_SUM, world); },
                               reps, world);
    auto dl_time = [&](dl::dist::Algorithm a) {
      std::fill(x.begin(), x.end(), 1.0f);
      return time_median([&] { dl::dist::allreduce_buffer(x.data(), n, dl::dist::Op::sum, a, g); }, reps, world);
    };
    double t_flat = dl_time(dl::dist::Algorithm::flat);
    double t_hier = dl_time(dl::dist::Algorithm::hierarchical);
    double t_lead = dl_time(dl::dist::Algorithm::leader);
    double t_v1 = 0;
    if (g.uniform_nodes()) {
      std::fill(x.begin(), x.end(), 1.0f);
      t_v1 = time_median([&] { hierarchical_in_place(x.data(), static_cast<int>(n), g); }, reps, world);
    }
    auto gbs = [&](double t) { return bytes / t / 1e9; };
    if (g.rank() == 0)
      std::printf("%10zu %10.1f %8.2f %8.2f | %10.1f %8.2f %6.2f | %10.1f %8.2f %6.2f | %10.1f %8.2f %6.2f | %10.1f %6.2f\n", bytes,
                  t_mpi * 1e6, gbs(t_mpi), gbs(t_mpi) * bus, t_flat * 1e6, gbs(t_flat) * bus, t_mpi / t_flat,
                  t_hier * 1e6, gbs(t_hier) * bus, t_mpi / t_hier, t_lead * 1e6, gbs(t_lead) * bus, t_mpi / t_lead,
                  t_v1 * 1e6, t_v1 > 0 ? t_mpi / t_v1 : 0.0);
    std::fflush(stdout);
  }
  return 0;
}
