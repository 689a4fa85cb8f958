// Training steps per second: the same model run eagerly (taped autograd) and as a compiled static
// graph (dl::graph::compile), in one run, on the same data and parameters. One step is forward +
// backward + an SGD update (momentum 0.9) in both columns; the update is the same imperative code.
//
//   MLP   784-256-128-10 (relu), cross entropy
//   LeNet conv(1->6, 5x5, pad 2) relu maxpool2 conv(6->16, 5x5) relu maxpool2 fc 400-120-84-10 (relu)
//
// at batch 32 and 512. The ratio column is compiled / eager steps per second (> 1: compiled faster).
//
// The compiled column runs graph/exec.hpp's fusion: bias and activation epilogues inside the GEMM
// and conv passes, GEMMs cut into one block per thread, a layer's backward GEMMs side by side.
//
//   build/bench/bench_compiled_vs_eager [--threads 2] [--repeats 7] [--json] [--quick]
#include <cstdio>
#include <string>

#include "bench_train.hpp"
#include "bench_util.hpp"
#include "dl/dl.hpp"
#include "dl/graph/compile.hpp"

namespace {

struct LeNet : dl::nn::Module {
  dl::nn::Conv2d conv1{1, 6, 5, dl::Conv2dOptions{.padding = {2, 2}}}, conv2{6, 16, 5};
  dl::nn::MaxPool2d pool{2};
  dl::nn::Flatten flat;
  dl::nn::Dense fc1{400, 120}, fc2{120, 84}, fc3{84, 10};
  LeNet() {
    register_module("conv1", &LeNet::conv1);
    register_module("conv2", &LeNet::conv2);
    register_module("fc1", &LeNet::fc1);
    register_module("fc2", &LeNet::fc2);
    register_module("fc3", &LeNet::fc3);
  }
  template <class X> auto forward(const X& x) {
    auto h = pool(dl::relu(conv2(pool(dl::relu(conv1(x))))));
    return fc3(dl::relu(fc2(dl::relu(fc1(flat(h))))));
  }
};

template <class Net>
void run(dl::bench::Table& table, const std::string& model, const dl::Shape& sample, int64_t batch, int repeats) {
  dl::manual_seed(1);
  Net net;
  std::vector<int64_t> dims{batch};
  for (int64_t d : sample) dims.push_back(d);
  auto x = dl::rand<float>(dl::Shape(dims));
  dl::NDArray<int64_t> y(dl::Shape{batch});
  for (int64_t i = 0; i < batch; ++i) y.data()[i] = i % 10;
  dl::optim::SGD opt(net.named_parameters(), 0.01, 0.9);
  float sink = 0;
  auto eager = [&] {
    dl::NDArray<float> loss;
    {
      dl::autograd::record rec;
      loss = dl::cross_entropy(net.forward(x), y);
    }
    loss.backward();
    opt.step();
    sink += loss.item();
  };
  auto step = dl::graph::compile([&](auto a, auto b) { return dl::cross_entropy(net.forward(a), b); });
  auto compiled = [&] {
    sink += step.forward_backward(x, y).item();
    opt.step();
  };
  // Interleaved, so load changes on a shared machine hit both columns alike.
  std::vector<double> te, tc;
  int inner_e = dl::bench::calibrate_inner(eager, 0.1), inner_c = dl::bench::calibrate_inner(compiled, 0.1);
  for (int r = 0; r < repeats; ++r) {
    te.push_back(dl::bench::time_it(eager, 1, r == 0 ? 2 : 0, inner_e).median_s);
    tc.push_back(dl::bench::time_it(compiled, 1, r == 0 ? 2 : 0, inner_c).median_s);
  }
  const std::string g = model + ", batch " + std::to_string(batch);
  table.add_rate(g, "eager", dl::bench::summarise(te), 1.0, 1.0, "steps/s");
  auto& row = table.add_rate(g, "compiled", dl::bench::summarise(tc), 1.0, 1.0, "steps/s", "eager");
  auto rep = step.plan_report();
  char note[200];
  std::snprintf(note, sizeof note, "plan %lld of %lld bytes, %d fused kernels, %d epilogues%s",
                static_cast<long long>(rep.bytes_planned), static_cast<long long>(rep.bytes_unplanned), rep.fused_kernels,
                rep.gemm_epilogues, sink == 12345.f ? " " : "");
  row.note = note;
}

}  // namespace

int main(int argc, char** argv) {
  auto opt = dl::bench::parse_options(argc, argv);
  const int repeats = opt.repeats > 0 ? opt.repeats : 7;
  dl::set_num_threads(opt.threads);
  dl::bench::Table table("compiled_vs_eager", opt);
  for (int64_t batch : {int64_t{32}, int64_t{512}}) {
    if (opt.quick && batch > 32) continue;
    run<dl::bench::Mlp>(table, "mlp 784-256-128-10", dl::Shape{784}, batch, repeats);
    run<LeNet>(table, "lenet", dl::Shape{1, 28, 28}, batch, repeats);
  }
  char note[64];
  std::snprintf(note, sizeof note, "load %.2f", dl::bench::Table::load_average());
  table.print(note);
  return 0;
}
