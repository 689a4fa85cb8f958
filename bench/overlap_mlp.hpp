// The data-parallel MLP step shared by bench/overlap.cpp and bench/scaling.cpp: a ReLU MLP
// (784 -> hidden x layers -> 10) trained with SGD on synthetic data, one dl thread per rank, each
// rank its own batch; DataParallel averages the gradients. run_steps() returns per-step timings.
#pragma once
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "dl/dist/data_parallel.hpp"
#include "dl/dl.hpp"

namespace bench_dp {

struct Mlp : dl::nn::Module {
  dl::nn::ModuleList<dl::nn::Dense> layers;
  Mlp(int64_t in, int64_t hidden, int depth, int64_t out) {
    int64_t prev = in;
    for (int i = 0; i < depth; ++i) {
      layers.emplace_back(prev, hidden);
      prev = hidden;
    }
    layers.emplace_back(prev, out);
    register_module("layers", &Mlp::layers);
  }
  template <class X>
  auto forward(const X& x) {
    dl::NDArray<float> h = x;
    for (size_t i = 0; i < layers.size(); ++i) h = i + 1 < layers.size() ? dl::relu(layers[i](h)) : layers[i](h);
    return h;
  }
  template <class X>
  auto operator()(const X& x) { return forward(x); }
};

// The command line both benchmarks take, [hidden] [depth] [batch] [steps]; a missing argument keeps
// the caller's default.
struct Config {
  int64_t hidden;
  int depth;
  int64_t batch;
  int steps;
};
inline Config parse_config(int argc, char** argv, Config c) {
  if (argc > 1) c.hidden = std::atoll(argv[1]);
  if (argc > 2) c.depth = std::atoi(argv[2]);
  if (argc > 3) c.batch = std::atoll(argv[3]);
  if (argc > 4) c.steps = std::atoi(argv[4]);
  return c;
}

inline int64_t parameter_count(Mlp& net) {
  int64_t n = 0;
  for (auto& [name, p] : net.named_parameters()) n += p.numel();
  return n;
}

struct StepTimes {
  double step = 0;  // forward + backward + synchronize + optimizer step
  dl::dist::OverlapStats overlap;
};

// Median of a sample (copy).
inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
inline double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

// `steps` timed steps after `warmup` untimed ones. dp may be null (no communication at all).
inline std::vector<StepTimes> run_steps(Mlp& net, dl::dist::DataParallel* dp, int64_t batch, int warmup, int steps,
                                        int rank) {
  using Clock = std::chrono::steady_clock;
  dl::optim::SGD opt(net.named_parameters(), 0.01, 0.9);
  dl::NDArray<float> x(dl::Shape{batch, 784});
  dl::NDArray<int64_t> y(dl::Shape{batch});
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = static_cast<float>(std::sin(0.001 * static_cast<double>(i) + rank));
  for (int64_t i = 0; i < batch; ++i) y.data()[i] = (i * 7 + rank) % 10;
  std::vector<StepTimes> out;
  for (int s = 0; s < warmup + steps; ++s) {
    auto t0 = Clock::now();
    dl::NDArray<float> loss;
    {
      dl::autograd::record r;
      loss = dl::cross_entropy(net(x), y);
    }
    loss.backward();
    if (dp) dp->synchronize();
    opt.step();
    double t = std::chrono::duration<double>(Clock::now() - t0).count();
    if (s >= warmup) out.push_back({t, dp ? dp->last_stats() : dl::dist::OverlapStats{}});
  }
  return out;
}

// The slowest rank's value (a synchronous step is as slow as its slowest rank).
inline double max_over(double v, MPI_Comm comm) {
  double m = v;
  MPI_Allreduce(&v, &m, 1, MPI_DOUBLE, MPI_MAX, comm);
  return m;
}

}  // namespace bench_dp
