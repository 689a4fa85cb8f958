// Weak scaling of data-parallel training (dl::dist::DataParallel): the step time of rank 0 training
// alone (DataParallel over MPI_COMM_SELF, the other ranks parked in MPI_Barrier) against all p ranks
// training together, the same batch per rank and one dl thread per rank, in one run. Efficiency =
// t(1 rank) / t(p ranks) (1.0: p times the samples per second). The two phases alternate twice so
// that drifting machine load hits both. Target: >= 90% for 2 ranks.
//
//   mpirun -np 2 --oversubscribe -x OMP_NUM_THREADS=1 build/bench/bench_scaling [hidden] [depth] [batch] [steps]
//   (defaults 256 2 128 30: 784-256-256-10; bench/scaling.sh runs the configurations in docs/distributed.md)
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "overlap_mlp.hpp"

int main(int argc, char** argv) {
  dl::dist::Environment env(argc, argv);
  auto& g = dl::dist::world();
  const auto [hidden, depth, batch, steps] =
      bench_dp::parse_config(argc, argv, {.hidden = 256, .depth = 2, .batch = 128, .steps = 30});
  dl::set_num_threads(1);
  MPI_Comm world = g.comm().get();
  bench_dp::Mlp net(784, hidden, depth, 10);
  const int64_t params = bench_dp::parameter_count(net);
  dl::dist::Group self(dl::dist::Communicator::borrow(MPI_COMM_SELF), 1);

  std::vector<double> alone, together;
  std::vector<double> wait_together;
  for (int round = 0; round < 2; ++round) {
    MPI_Barrier(world);
    if (g.rank() == 0) {
      dl::dist::DataParallel dp(net, {}, self);
      for (auto& t : bench_dp::run_steps(net, &dp, batch, 3, steps, 0)) alone.push_back(t.step);
    }
    MPI_Barrier(world);
    {
      dl::dist::DataParallel dp(net);
      for (auto& t : bench_dp::run_steps(net, &dp, batch, 3, steps, g.rank())) {
        together.push_back(t.step);
        wait_together.push_back(t.overlap.wait_seconds);
      }
    }
  }
  double t1 = bench_dp::max_over(bench_dp::median(alone), world);  // only rank 0 has values; others 0
  double tp = bench_dp::max_over(bench_dp::median(together), world);
  double tp_lo = bench_dp::max_over(bench_dp::quantile(together, 0.25), world);
  double tp_hi = bench_dp::max_over(bench_dp::quantile(together, 0.75), world);
  double t1_lo = bench_dp::max_over(bench_dp::quantile(alone, 0.25), world);
  double t1_hi = bench_dp::max_over(bench_dp::quantile(alone, 0.75), world);
  double wait = bench_dp::max_over(bench_dp::median(wait_together), world);
  if (g.rank() == 0) {
    const int p = g.size();
    std::printf("# weak scaling: MLP 784-%lldx%d-10 (%.2f M parameters, %.2f MB of gradients), batch %lld per rank, "
                "1 dl thread per rank, 2 x %d steps per phase\n",
                static_cast<long long>(hidden), depth, params / 1e6, params * 4 / 1e6, static_cast<long long>(batch),
                steps);
    std::printf("%6s %12s %22s %14s %14s\n", "ranks", "step ms", "(25% .. 75%)", "samples/s", "sync wait ms");
    std::printf("%6d %12.2f %10.2f .. %-9.2f %14.0f %14s\n", 1, t1 * 1e3, t1_lo * 1e3, t1_hi * 1e3, batch / t1, "-");
    std::printf("%6d %12.2f %10.2f .. %-9.2f %14.0f %14.2f\n", p, tp * 1e3, tp_lo * 1e3, tp_hi * 1e3, p * batch / tp,
                wait * 1e3);
    std::printf("weak-scaling efficiency %d ranks: %.0f%% (t1 / t%d; target >= 90%%): %s\n", p, 100 * t1 / tp, p,
                t1 / tp >= 0.9 ? "met" : "MISSED");
  }
  return 0;
}
