// conv (libtorch side): the convolutions of bench/conv.cpp in libtorch 1.13 C++ (Debian
// libtorch-dev, oneDNN convolutions), for bench/conv.sh, which runs both back to back.
//
//   3x3 and 1x1 convolutions, padding k / 2, 64 -> 64 channels, 32x32 images, batch 32, float32
//   forward: 2 * N * O * C * k * k * H * W FLOP; forward+backward (dx and dw): 3x that
//
// Rows (GFLOP/s, the same names as bench_conv's so the driver can pair them):
//   conv2d forward               torch::conv2d under NoGradGuard
//   conv2d forward+backward      forward with autograd, backward(head) into x and w (their
//                                gradients reset to undefined first: the cheaper choice)
//   ... channels_last            the same with x and w in channels-last memory format (oneDNN's
//                                native layout; NCHW is reordered on every call): the better of
//                                the two layouts is libtorch's best configuration
// Timing as bench_conv: 2 warm-up calls, median of --repeats (default 10).
//
// Built outside Meson (Debian's libtorch has no pkg-config file), by bench/conv.sh:
//   g++ -O3 -march=native -std=c++17 -DDL_BENCH_LIBTORCH -I bench -I /usr/include/torch/csrc/api/include
//       bench/conv_libtorch.cpp -ltorch -ltorch_cpu -lc10 -o conv_libtorch
//   OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=2 ./conv_libtorch --threads 2 [--json] [--quick]
#include <cstdio>

#ifndef DL_BENCH_LIBTORCH
int main() {
  std::fprintf(stderr, "conv_libtorch: built without libtorch; run bench/conv.sh, which builds it with "
                       "-DDL_BENCH_LIBTORCH against Debian's libtorch-dev\n");
  return 77;  // "skipped"
}
#else
#include <torch/torch.h>

#include <string>

#include "bench_util.hpp"

namespace {

void run_group(dl::bench::Table& table, int64_t batch, int64_t channels, int64_t hw, int64_t k, int repeats,
               bool channels_last) {
  const std::string group = std::to_string(k) + "x" + std::to_string(k) + " " + std::to_string(channels) + "->" +
                            std::to_string(channels) + " " + std::to_string(hw) + "x" + std::to_string(hw) + " N" +
                            std::to_string(batch) + " f32";
  const std::string suffix = channels_last ? " channels_last" : "";
  const auto format = channels_last ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous;
  torch::manual_seed(7);
  auto x = torch::randn({batch, channels, hw, hw}).contiguous(format);
  auto w = (torch::randn({channels, channels, k, k}) * 0.05).contiguous(format);
  auto head = torch::randn({batch, channels, hw, hw}).contiguous(format);
  const double fwd_flop = 2.0 * static_cast<double>(batch * channels * channels * k * k * hw * hw);
  const int64_t pad = k / 2;

  auto t_fwd = dl::bench::time_it([&] {
    torch::NoGradGuard no_grad;
    auto y = torch::conv2d(x, w, {}, 1, pad);
  }, repeats, 2);
  table.add_rate(group, "conv2d forward" + suffix, t_fwd, fwd_flop, 1e9, "GFLOP/s");

  x.set_requires_grad(true);
  w.set_requires_grad(true);
  auto t_step = dl::bench::time_it([&] {
    x.mutable_grad() = torch::Tensor();
    w.mutable_grad() = torch::Tensor();
    auto y = torch::conv2d(x, w, {}, 1, pad);
    y.backward(head);
  }, repeats, 2);
  table.add_rate(group, "conv2d forward+backward" + suffix, t_step, 3 * fwd_flop, 1e9, "GFLOP/s");
}

}  // namespace

int main(int argc, char** argv) {
  auto opt = dl::bench::parse_options(argc, argv);
  const int repeats = opt.repeats > 0 ? opt.repeats : 10;
  torch::set_num_threads(opt.threads);
  dl::bench::Table table("conv (libtorch " TORCH_VERSION ")", opt);
  const int64_t batch = opt.quick ? 4 : 32;
  for (int64_t k : {3, 1})
    for (bool cl : {false, true}) run_group(table, batch, 64, 32, k, repeats, cl);
  char note[64];
  std::snprintf(note, sizeof note, "load %.2f", dl::bench::Table::load_average());
  table.print(note);
  return 0;
}
#endif  // DL_BENCH_LIBTORCH
