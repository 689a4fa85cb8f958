// The convolutions of ResNet-20 on 28x28 inputs (examples/train_resnet.cpp's model, as in
// bench/peers_cnn), one layer shape at a time: forward, input gradient and weight gradient through
// the backend kernels (cpu::conv2d_forward / conv2d_backward), as GFLOP/s of useful work, against
// the same run's GEMM of the forward's shape (weight (O, K) x columns (K, N*OH*OW), one threaded
// cpu::gemm call): a ratio > 1 means the layer runs faster than its plain GEMM would. The last
// group adds the layers up with their counts in one training step (ms, lower is better): where a
// ResNet-20 step's convolution time goes. Which kernel serves each shape: backend/cpu/conv.hpp.
//
//   build/bench/bench_conv_layers [--threads 1] [--repeats 15] [--batch 64] [--json] [--quick]
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "dl/dl.hpp"

namespace {

struct Layer {
  const char* name;
  int64_t in_channels, hw, out_channels, kernel, stride, pad, count;  // count: layers of this shape per step
};

// ResNet-20, width 16: the stem, 3 stages of 3 blocks (two 3x3 convs each), a stride-2 3x3 and a
// 1x1 stride-2 projection entering stages 2 and 3. The stem's input gradient is never computed.
const std::vector<Layer> kLayers = {
    {"stem 3x3 1->16 28x28", 1, 28, 16, 3, 1, 1, 1},      {"3x3 16->16 28x28", 16, 28, 16, 3, 1, 1, 6},
    {"3x3 s2 16->32 28x28", 16, 28, 32, 3, 2, 1, 1},      {"1x1 s2 16->32 28x28", 16, 28, 32, 1, 2, 0, 1},
    {"3x3 32->32 14x14", 32, 14, 32, 3, 1, 1, 5},         {"3x3 s2 32->64 14x14", 32, 14, 64, 3, 2, 1, 1},
    {"1x1 s2 32->64 14x14", 32, 14, 64, 1, 2, 0, 1},      {"3x3 64->64 7x7", 64, 7, 64, 3, 1, 1, 5},
};

}  // namespace

int main(int argc, char** argv) {
  auto opt = dl::bench::parse_options(argc, argv, "[--batch N]");
  int64_t batch = 64;
  for (size_t i = 0; i < opt.rest.size(); ++i)
    if (opt.rest[i] == "--batch" && i + 1 < opt.rest.size()) batch = std::atoll(opt.rest[++i].c_str());
  if (opt.quick) batch = 8;
  const int repeats = opt.repeats > 0 ? opt.repeats : (opt.quick ? 3 : 15);
  dl::set_num_threads(opt.threads);
  Eigen::setNbThreads(opt.threads);
  dl::bench::Table table("conv_layers", opt);
  dl::Generator gen(11);
  double total[3] = {0, 0, 0};
  for (const Layer& l : kLayers) {
    dl::cpu::Conv2dGeometry g;
    g.batch = batch;
    g.in_channels = l.in_channels;
    g.in_h = g.in_w = l.hw;
    g.out_channels = l.out_channels;
    g.kernel_h = g.kernel_w = l.kernel;
    g.stride_h = g.stride_w = l.stride;
    g.pad_h = g.pad_w = l.pad;
    g.out_h = g.out_w = (l.hw + 2 * l.pad - l.kernel) / l.stride + 1;
    const int64_t K = g.col_rows(), P = g.out_plane();
    auto x = dl::randn<float>({batch, l.in_channels, l.hw, l.hw}, 0, 1, gen);
    auto w = dl::randn<float>({l.out_channels, l.in_channels, l.kernel, l.kernel}, 0, 0.1, gen);
    auto gy = dl::randn<float>({batch, l.out_channels, g.out_h, g.out_w}, 0, 1, gen);
    dl::NDArray<float> y(gy.shape()), dx(x.shape()), dw(w.shape());
    auto cols = dl::randn<float>({K, batch * P}, 0, 1, gen);
    dl::NDArray<float> c_out(dl::Shape{l.out_channels, batch * P});
    const double flop = 2.0 * static_cast<double>(batch * l.out_channels * K * P);
    const std::string group = std::string(l.name) + " N" + std::to_string(batch) + " (x" + std::to_string(l.count) + ")";
    auto t_gemm = dl::bench::time_it([&] {
      dl::cpu::gemm(dl::cpu::MatrixView<float>{w.data(), l.out_channels, K, K, 1},
                    dl::cpu::MatrixView<float>{cols.data(), K, batch * P, batch * P, 1}, c_out.data(), batch * P);
    }, repeats, 2);
    table.add_rate(group, "gemm (forward's shape)", t_gemm, flop, 1e9, "GFLOP/s");
    auto t_fwd = dl::bench::time_it([&] {
      dl::cpu::conv2d_forward(x.data(), w.data(), static_cast<const float*>(nullptr), y.data(), g);
    }, repeats, 2);
    table.add_rate(group, "forward", t_fwd, flop, 1e9, "GFLOP/s", "gemm (forward's shape)");
    const bool want_dx = l.in_channels > 1;  // the stem's input (the images) needs no gradient
    dl::bench::Timing t_dx;
    if (want_dx) {
      t_dx = dl::bench::time_it([&] {
        dl::cpu::conv2d_backward(x.data(), w.data(), gy.data(), dx.data(), static_cast<float*>(nullptr),
                                 static_cast<float*>(nullptr), g);
      }, repeats, 2);
      table.add_rate(group, "input gradient", t_dx, flop, 1e9, "GFLOP/s", "gemm (forward's shape)");
    }
    auto t_dw = dl::bench::time_it([&] {
      dl::cpu::conv2d_backward(x.data(), w.data(), gy.data(), static_cast<float*>(nullptr), dw.data(),
                               static_cast<float*>(nullptr), g);
    }, repeats, 2);
    table.add_rate(group, "weight gradient", t_dw, flop, 1e9, "GFLOP/s", "gemm (forward's shape)");
    total[0] += l.count * t_fwd.median_s;
    total[1] += l.count * (want_dx ? t_dx.median_s : 0.0);
    total[2] += l.count * t_dw.median_s;
  }
  const std::string sum = "all layers x count (one step's convolutions), N" + std::to_string(batch);
  const char* names[3] = {"forward", "input gradient", "weight gradient"};
  for (int i = 0; i < 3; ++i) {
    dl::bench::Timing t;
    t.median_s = t.min_s = t.max_s = total[i];
    t.repeats = repeats;
    table.add_time(sum, names[i], t, 1e3, "ms");
  }
  dl::bench::Timing all;
  all.median_s = all.min_s = all.max_s = total[0] + total[1] + total[2];
  all.repeats = repeats;
  table.add_time(sum, "all three", all, 1e3, "ms");
  table.print();
  return 0;
}
