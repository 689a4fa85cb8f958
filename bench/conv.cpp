// conv2d against the GEMM of the same shape, in one run (the 3x3 layer runs on the direct
// stride-1 kernel of backend/cpu/conv.hpp where the target has AVX-512, else on im2col + GEMM; the
// 1x1 layer is a plain GEMM either way).
//
//   3x3 convolution, padding 1, 64 -> 64 channels, 32x32 images, batch 32, float32
//   forward: 2 * N * O * C * 9 * H * W = 2.42 GFLOP; backward (input + weight): twice that.
//
// Sides, all on the same --threads N (default 2):
//   gemm                    cpu::gemm of the equivalent shape (64 x 576) x (576 x 32768): the
//                           whole batch's forward as one GEMM, threaded by Eigen
//   gemm split              the same GEMM with its columns split into one block per thread, each
//                           a single-threaded cpu::gemm (Eigen threads a GEMM with only 64 rows
//                           poorly; this is how conv2d runs its GEMMs)
//   conv2d forward          dl::conv2d, no tape
//   conv2d backward         dl backward through the taped conv (dx and dw), retain_graph
//   conv2d forward+backward a full training step of the op: record, forward, backward
// Ratios are against the faster gemm row (1.0 = the convolution runs as fast as its GEMM).
// A 1x1 64 -> 64 group (no im2col) is printed too.
//
//   build-h5/bench/bench_conv [--threads 2] [--repeats 10] [--json] [--quick]
//   bash bench/conv.sh --threads 1     # this, then the same layers in libtorch (bench/conv_libtorch.cpp),
//                                      # alternating for 3 rounds: one table with dl/GEMM and dl/libtorch
#include <string>

#include "bench_util.hpp"
#include "dl/dl.hpp"
#include "dl/ops/conv.hpp"

namespace {

void run_group(dl::bench::Table& table, const dl::bench::Options& opt, int64_t batch, int64_t channels, int64_t hw,
               int64_t k, int repeats) {
  const int64_t pad = k / 2, K = channels * k * k, P = hw * hw;
  const std::string group = std::to_string(k) + "x" + std::to_string(k) + " " + std::to_string(channels) + "->" +
                            std::to_string(channels) + " " + std::to_string(hw) + "x" + std::to_string(hw) + " N" +
                            std::to_string(batch) + " f32";
  dl::Generator gen(7);
  auto x = dl::randn<float>({batch, channels, hw, hw}, 0, 1, gen);
  auto w = dl::randn<float>({channels, channels, k, k}, 0, 0.05, gen);
  dl::Conv2dOptions conv_opt{{1, 1}, {pad, pad}, {1, 1}, 1};
  const double fwd_flop = 2.0 * static_cast<double>(batch * channels * K * P);

  // The equivalent GEMM: weight (O, K) x columns (K, N*P).
  auto cols = dl::randn<float>({K, batch * P}, 0, 1, gen);
  dl::NDArray<float> c_out(dl::Shape{channels, batch * P});
  auto t_gemm = dl::bench::time_it([&] {
    dl::cpu::gemm(dl::cpu::MatrixView<float>{w.data(), channels, K, K, 1},
                  dl::cpu::MatrixView<float>{cols.data(), K, batch * P, batch * P, 1}, c_out.data(), batch * P);
  }, repeats, 2);
  table.add_rate(group, "gemm", t_gemm, fwd_flop, 1e9, "GFLOP/s");
  const int64_t cols_n = batch * P, blocks = opt.threads;
  auto t_split = dl::bench::time_it([&] {
    dl::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        int64_t lo = b * cols_n / blocks, hi = (b + 1) * cols_n / blocks;
        dl::cpu::gemm(dl::cpu::MatrixView<float>{w.data(), channels, K, K, 1},
                      dl::cpu::MatrixView<float>{cols.data() + lo, K, hi - lo, cols_n, 1}, c_out.data() + lo, cols_n);
      }
    });
  }, repeats, 2);
  table.add_rate(group, "gemm split", t_split, fwd_flop, 1e9, "GFLOP/s", "gemm");
  const std::string base = t_split.median_s < t_gemm.median_s ? "gemm split" : "gemm";

  auto t_fwd = dl::bench::time_it([&] { auto y = dl::conv2d(x, w, {}, conv_opt); }, repeats, 2);
  table.add_rate(group, "conv2d forward", t_fwd, fwd_flop, 1e9, "GFLOP/s", base);

  auto xg = x.detach(), wg = w.detach();
  xg.attach_grad();
  wg.attach_grad();
  dl::NDArray<float> y;
  {
    dl::autograd::record rec;
    y = dl::conv2d(xg, wg, {}, conv_opt);
  }
  auto head = dl::randn<float>(y.shape(), 0, 1, gen);
  auto t_bwd = dl::bench::time_it([&] { y.backward(head, true); }, repeats, 2);
  table.add_rate(group, "conv2d backward (dx, dw)", t_bwd, 2 * fwd_flop, 1e9, "GFLOP/s", base);

  auto t_step = dl::bench::time_it([&] {
    dl::NDArray<float> out;
    {
      dl::autograd::record rec;
      out = dl::conv2d(xg, wg, {}, conv_opt);
    }
    out.backward(head);
  }, repeats, 2);
  table.add_rate(group, "conv2d forward+backward", t_step, 3 * fwd_flop, 1e9, "GFLOP/s", base);
}

}  // namespace

int main(int argc, char** argv) {
  auto opt = dl::bench::parse_options(argc, argv);
  const int repeats = opt.repeats > 0 ? opt.repeats : 10;
  dl::set_num_threads(opt.threads);
  Eigen::setNbThreads(opt.threads);
  dl::bench::Table table("conv", opt);
  int64_t batch = opt.quick ? 4 : 32;
  run_group(table, opt, batch, 64, 32, 3, repeats);
  run_group(table, opt, batch, 64, 32, 1, repeats);
  table.print();
  return 0;
}
