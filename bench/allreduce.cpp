// Allreduce bandwidth: dl's flat, hierarchical and leader algorithms against raw MPI_Allreduce in
// the same run, float32 sum, 4 KB to a maximum size (default 256 MB, argv[1] in MB). Reports the
// median time over repetitions, algbw = bytes / time and busbw = algbw * 2(p-1)/p (the NCCL-tests
// convention: the bandwidth each link would need for a ring), and each dl variant's ratio to MPI.
// Run with simulated nodes to exercise the two-level paths on one machine:
//   DL_DIST_RANKS_PER_NODE=2 mpirun -np 4 -x DL_DIST_RANKS_PER_NODE ./bench_allreduce 256
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "dl/dist/collectives.hpp"

namespace {

using Clock = std::chrono::steady_clock;

// Median seconds of one call over reps (after one warm-up); every rank times the same call and the
// slowest rank's time counts (a collective is done when the last rank is done).
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
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  dl::dist::Environment env(argc, argv);
  auto& g = dl::dist::world();
  const double max_mb = argc > 1 ? std::atof(argv[1]) : 256.0;
  const bool checks = !(argc > 2 && std::string(argv[2]) == "nocheck");
  g.set_check_arguments(checks);
  const int p = g.size();
  if (g.rank() == 0) {
    std::printf("# %d ranks, %d node(s)%s, %d rank(s) per node, float32 sum, argument check %s\n", p, g.num_nodes(),
                g.simulated_nodes() ? " (simulated)" : "", g.max_local_size(), checks ? "on" : "off");
    std::printf("# times: median, slowest rank; bw in GB/s; ratio = MPI time / dl time (>1: dl faster)\n");
    std::printf("%10s %10s %8s %8s | %10s %8s %6s | %10s %8s %6s | %10s %8s %6s\n", "bytes", "MPI us", "algbw",
                "busbw", "flat us", "busbw", "ratio", "hier us", "busbw", "ratio", "leader us", "busbw", "ratio");
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
    auto gbs = [&](double t) { return bytes / t / 1e9; };
    if (g.rank() == 0)
      std::printf("%10zu %10.1f %8.2f %8.2f | %10.1f %8.2f %6.2f | %10.1f %8.2f %6.2f | %10.1f %8.2f %6.2f\n", bytes,
                  t_mpi * 1e6, gbs(t_mpi), gbs(t_mpi) * bus, t_flat * 1e6, gbs(t_flat) * bus, t_mpi / t_flat,
                  t_hier * 1e6, gbs(t_hier) * bus, t_mpi / t_hier, t_lead * 1e6, gbs(t_lead) * bus, t_mpi / t_lead);
    std::fflush(stdout);
  }
  return 0;
}
