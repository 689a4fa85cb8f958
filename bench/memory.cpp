// Sublinear memory: the peak memory of activations and temporaries of one training step of a deep
// residual MLP, and the step time, with and without checkpointing (dl::graph::repeat).
//
//   x (128, 512) -> [ h + s * relu(h W^T) ] x depth -> mean(y * y); SGD (lr 1e-3, no momentum)
//   s = 1/sqrt(depth); depths 16, 64, 256, 1024
//
// No bias by default, on both sides (--bias adds it). With bias, dl's eager bias add (a fused node
// a + bias) keeps only the bias for its backward, not the matmul output a: add's derivatives read
// neither operand (expr/assign.hpp's FusedNode). So an eager block keeps two arrays with or without
// bias (the biased matmul output for relu's derivative, the block output), as PyTorch's does.
//
// Rows per depth:
//   eager          no checkpointing
//   eager+sqrt     checkpoint::sqrt (segments of round(sqrt depth) blocks)
//   eager+budget   checkpoint::balanced_budget(depth, block activation, block output): Chen's greedy
//                  plan with the budget that minimises kept + recomputed bytes
//   compiled       the blocks compiled (graph::repeat with RepeatOptions{.compiled = true}: each
//                  block one graph::compile graph with per-call memory, one tape node), no checkpointing
//   compiled+sqrt  the same with checkpoint::sqrt
//   compiled+budget the same with balanced_budget from the compiled block's plan
// peak = the allocator's peak during one step minus its bytes in use before the step (parameters,
// their gradient buffers, the input), i.e. activations and temporaries; planned = the plan's
// estimate for the blocks (graph::checkpoint::Plan::planned_bytes; for compiled blocks from the
// block's memory plan: the slots it holds from forward to backward). Step time: median of --repeats
// steps after one warm-up step; x base = the ratio to the same blocks (eager or compiled) without
// checkpointing. The configurations of a depth share one model and their timed steps are
// interleaved. The PyTorch peer is bench/memory_torch.py; bench/memory.sh runs both
// and prints one table.
//
//   build/bench/bench_memory [--threads 2] [--repeats 3] [--json] [--quick] [--depths 16,64] [--bias]
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "dl/core/allocator.hpp"
#include "dl/core/parallel.hpp"
#include "dl/graph/repeat.hpp"
#include "dl/nn/dense.hpp"
#include "dl/ops/elementwise.hpp"
#include "dl/ops/reduce.hpp"
#include "dl/optim/sgd.hpp"

namespace {

namespace ck = dl::graph::checkpoint;

class Block : public dl::nn::Module {
 public:
  dl::nn::Dense fc;
  Block(int64_t width, float scale, bool bias) : fc(width, width, bias), scale_(scale) { register_module("fc", &Block::fc); }
  // One template for arrays and graph symbols (compiled blocks).
  template <class X>
  auto forward(const X& x) {
    return x + scale_ * dl::relu(fc(x));
  }
  template <class X>
  auto operator()(const X& x) { return forward(x); }

 private:
  float scale_;
};

struct Result {
  std::string config, policy;
  int64_t depth = 0, peak = 0, planned = 0;
  std::vector<double> times;
  dl::bench::Timing timing;
};

// All configurations of one depth on one model (the policy is switched between steps), so the
// parameters are allocated once; the timed steps are interleaved (eager, sqrt, budget, eager, ...)
// so that load from elsewhere on the machine falls on every configuration alike.
std::vector<Result> measure_depth(const std::vector<std::string>& configs, int64_t depth, int64_t batch, int64_t width,
                                  bool bias, int repeats) {
  dl::manual_seed(0);
  const float scale = 1.0f / std::sqrt(static_cast<float>(depth));
  auto net = dl::graph::repeat([&] { return Block(width, scale, bias); }, depth, ck::none{}, dl::graph::RepeatOptions{});
  const dl::Shape shape{batch, width};
  // Sets the policy and the block mode of a configuration.
  auto configure = [&](const std::string& config) {
    net.set_compiled(config.rfind("compiled", 0) == 0);
    net.set_policy(ck::none{});
    if (config.ends_with("+sqrt")) net.set_policy(ck::sqrt{});
    if (config.ends_with("+budget")) {
      auto b = net.block_bytes(shape);
      net.set_policy(ck::balanced_budget(depth, b.activation, b.output));
    }
  };
  dl::optim::SGD opt(net.named_parameters(), 1e-3);
  auto x = dl::randn<float>(shape);
  x.attach_grad();
  auto step = [&] {
    dl::NDArray<float> loss;
    {
      dl::autograd::record rec;
      dl::NDArray<float> y = net(x);
      loss = dl::mean(y * y);
    }
    loss.backward();
    opt.step();
  };
  std::vector<Result> out;
  for (const auto& config : configs) {
    configure(config);
    step();  // gradient buffers and the pool's blocks exist from here on
    const int64_t before = dl::cpu_allocator().stats().bytes_in_use;
    dl::cpu_allocator().reset_peak();
    step();
    Result r;
    r.config = config;
    r.policy = net.policy().to_string();
    r.depth = depth;
    r.peak = dl::cpu_allocator().stats().peak_bytes_in_use - before;
    r.planned = net.memory_plan(shape).planned_bytes();
    out.push_back(r);
  }
  for (int rep = 0; rep < repeats; ++rep)
    for (auto& r : out) {
      configure(r.config);
      const double t0 = dl::bench::now_s();
      step();
      r.times.push_back(dl::bench::now_s() - t0);
    }
  for (auto& r : out) r.timing = dl::bench::summarise(r.times);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  auto opt = dl::bench::parse_options(argc, argv, "[--depths 16,64,256,1024] [--bias]");
  dl::set_num_threads(opt.threads);
  const int repeats = opt.repeats > 0 ? opt.repeats : 3;
  std::vector<int64_t> depths = opt.quick ? std::vector<int64_t>{16, 64} : std::vector<int64_t>{16, 64, 256, 1024};
  bool bias = false;
  for (size_t i = 0; i < opt.rest.size(); ++i) {
    std::string a = opt.rest[i], list;
    if (a == "--bias") {
      bias = true;
      continue;
    }
    if (a == "--depths" && i + 1 < opt.rest.size()) list = opt.rest[++i];
    else if (a.rfind("--depths=", 0) == 0) list = a.substr(9);
    else {
      std::fprintf(stderr, "%s: unknown argument '%s'\n", argv[0], a.c_str());
      return 2;
    }
    depths.clear();
    std::stringstream ss(list);
    for (std::string item; std::getline(ss, item, ',');) depths.push_back(std::stoll(item));
  }
  const int64_t batch = 128, width = 512;
  const std::vector<std::string> configs{"eager", "eager+sqrt", "eager+budget", "compiled", "compiled+sqrt", "compiled+budget"};
  if (!opt.json)
    std::printf("== memory: residual MLP width %lld, batch %lld, %s, threads %d, %d timed steps\n"
                "%-16s %6s %-16s %12s %12s %10s %8s %10s\n",
                static_cast<long long>(width), static_cast<long long>(batch), bias ? "with bias" : "no bias", opt.threads, repeats, "config", "depth", "policy",
                "peak MiB", "planned MiB", "step ms", "spread", "x base");
  for (int64_t depth : depths) {
    double eager_s = 0, compiled_s = 0;
    for (const Result& r : measure_depth(configs, depth, batch, width, bias, repeats)) {
      if (r.config == "eager") eager_s = r.timing.median_s;
      if (r.config == "compiled") compiled_s = r.timing.median_s;
      const double base_s = r.config.rfind("compiled", 0) == 0 ? compiled_s : eager_s;
      const double mib = 1024.0 * 1024.0;
      if (opt.json)
        std::printf("{\"bench\": \"memory\", \"side\": \"dl\", \"config\": \"%s\", \"policy\": \"%s\", \"depth\": %lld, "
                    "\"peak_bytes\": %lld, \"planned_bytes\": %lld, \"median_s\": %.6g, \"spread\": %.4f, \"repeats\": %d, "
                    "\"threads\": %d, \"bias\": %s}\n",
                    r.config.c_str(), r.policy.c_str(), static_cast<long long>(depth), static_cast<long long>(r.peak),
                    static_cast<long long>(r.planned), r.timing.median_s, r.timing.spread(), r.timing.repeats, opt.threads,
                    bias ? "true" : "false");
      else
        std::printf("%-16s %6lld %-16s %12.1f %12.1f %10.1f %8.2f %10.2f\n", r.config.c_str(), static_cast<long long>(depth),
                    r.policy.c_str(), static_cast<double>(r.peak) / mib, static_cast<double>(r.planned) / mib,
                    r.timing.median_s * 1e3, r.timing.spread(), r.timing.median_s / base_s);
      std::fflush(stdout);
    }
    dl::cpu_allocator().empty_cache();  // the next depth starts from a clean pool
  }
  return 0;
}
