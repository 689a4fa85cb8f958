// The fixed cost of dl's eager autograd: a tiny MLP step where the arithmetic is negligible, so
// the time is what taping, node creation, the backward engine and the per-op dispatch cost.
//
//   x (1, 32) -> tanh(x W1 + b1) -> relu(. W2 + b2) -> square(. W3 + b3 - target) -> . ones(32, 1)
//
// batch 1, width 32, 3 Dense layers, the loss summed by a matmul with a ones vector (no
// reduction op needed). Rows, all in microseconds per call:
//   forward            the forward pass, not recorded (no tape)
//   forward recorded   the same forward under autograd::record (nodes are built)
//   step               forward under record + loss.backward()
// and per recorded op: (forward recorded - forward) / ops = the cost of taping one op, and
// step / ops. The libtorch comparison comes later (docs/benchmarks.md).
//
//   build/bench/bench_autograd_overhead [--threads 2] [--repeats 9] [--json]
#include <Eigen/Core>
#include <unordered_set>

#include "bench_util.hpp"
#include "dl/dl.hpp"

namespace {

// Counts the tape nodes reachable from a result (= the ops recorded for it).
int count_nodes(const std::shared_ptr<dl::autograd::Node>& root) {
  std::unordered_set<const dl::autograd::Node*> seen;
  std::vector<const dl::autograd::Node*> stack{root.get()};
  while (!stack.empty()) {
    const auto* n = stack.back();
    stack.pop_back();
    if (!n || !seen.insert(n).second) continue;
    for (const auto& p : n->next) stack.push_back(p.get());
  }
  return static_cast<int>(seen.size());
}

}  // namespace

int main(int argc, char** argv) {
  auto opt = dl::bench::parse_options(argc, argv);
  const int repeats = opt.repeats > 0 ? opt.repeats : 9;
  dl::set_num_threads(opt.threads);
  Eigen::setNbThreads(opt.threads);
  constexpr int64_t kWidth = 32;

  dl::manual_seed(11);
  using A = dl::NDArray<float>;
  A x = dl::randn<float>({1, kWidth}), target = dl::randn<float>({1, kWidth}), ones = dl::ones<float>({kWidth, 1});
  A w1 = dl::randn<float>({kWidth, kWidth}, 0.0, 0.2), w2 = dl::randn<float>({kWidth, kWidth}, 0.0, 0.2),
    w3 = dl::randn<float>({kWidth, kWidth}, 0.0, 0.2);
  A b1 = dl::zeros<float>({kWidth}), b2 = dl::zeros<float>({kWidth}), b3 = dl::zeros<float>({kWidth});
  for (A* p : {&w1, &w2, &w3, &b1, &b2, &b3}) p->attach_grad();

  auto forward = [&] {
    A h1 = dl::tanh(dl::matmul(x, w1) + b1);
    A h2 = dl::relu(dl::matmul(h1, w2) + b2);
    A err = dl::square(dl::matmul(h2, w3) + b3 - target);
    return dl::matmul(err, ones);  // (1, 1): the summed squared error
  };

  int ops = 0;
  {
    dl::autograd::record rec;
    A loss = forward();
    ops = count_nodes(loss.grad_fn());
    loss.backward();
  }

  float sink = 0;
  auto run_plain = [&] { sink += forward().item(); };
  auto run_recorded = [&] {
    dl::autograd::record rec;
    sink += forward().item();
  };
  auto run_step = [&] {
    A loss;
    {
      dl::autograd::record rec;
      loss = forward();
    }
    loss.backward();
    sink += loss.item();
  };
  auto measure = [&](const std::function<void()>& fn) {
    int inner = dl::bench::calibrate_inner(fn, 0.05);
    return dl::bench::time_it(fn, repeats, 2, inner);
  };
  dl::bench::Timing t_plain = measure(run_plain), t_rec = measure(run_recorded), t_step = measure(run_step);

  const std::string g = "mlp 32x3, batch 1";
  dl::bench::Table table("autograd_overhead", opt);
  table.add_time(g, "forward", t_plain, 1e6, "us");
  table.add_time(g, "forward recorded", t_rec, 1e6, "us", "forward");
  table.add_time(g, "step (fwd+bwd)", t_step, 1e6, "us", "forward");
  const std::string per = g + ", per recorded op";
  dl::bench::Row tape;
  tape.group = per;
  tape.name = "taping cost / op";
  tape.value = (t_rec.median_s - t_plain.median_s) / ops * 1e6;
  tape.unit = "us";
  tape.higher_is_better = false;
  tape.timing = t_rec;
  table.add(tape);
  dl::bench::Row fwd_op = tape;
  fwd_op.name = "forward / op";
  fwd_op.value = t_plain.median_s / ops * 1e6;
  fwd_op.timing = t_plain;
  table.add(fwd_op);
  dl::bench::Row step_op = tape;
  step_op.name = "step / op";
  step_op.value = t_step.median_s / ops * 1e6;
  step_op.timing = t_step;
  table.add(step_op);

  char note[160];
  std::snprintf(note, sizeof note, "load %.2f; %d recorded ops per forward (matmul x4, fused elementwise x3)%s",
                dl::bench::Table::load_average(), ops, sink == 12345.f ? " " : "");
  table.print(note);
  return 0;
}
