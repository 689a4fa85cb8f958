// dl::matmul against the GEMM it wraps (raw Eigen) and against OpenBLAS cblas_sgemm, float32,
// in one run, on the same data and the same thread count (--threads N, default 2; dl through
// dl::set_num_threads, Eigen through Eigen::setNbThreads, OpenBLAS through
// openblas_set_num_threads). Shapes are M x K x N (C[M,N] = A[M,K] B[K,N]):
//   square 256 .. 2048; the MLP layers of a 784-256-128-10 net at batch 32/128/512; and the
//   transposed-operand products that backward runs: dW = X^T G and dX = G W^T (transposed
//   views, no copies, on every side: Eigen's .transpose(), OpenBLAS's CblasTrans).
// dl::matmul allocates its output each call (from dl's pool, as in training); the peers write
// into a preallocated C.
//
//   build/bench/bench_matmul [--threads 2] [--repeats 7] [--json] [--quick]
#include <Eigen/Core>
#include <chrono>
#include <thread>

#include "bench_util.hpp"
#include "dl/dl.hpp"

#ifdef DL_BENCH_HAVE_CBLAS
#include <cblas.h>
#endif

namespace {

struct Case {
  std::string name;
  int64_t m, k, n;
  bool trans_a = false, trans_b = false;  // A stored (K, M) / B stored (N, K) and read transposed
};

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMap = Eigen::Map<RowMat>;
using ConstRowMap = Eigen::Map<const RowMat>;

}  // namespace

int main(int argc, char** argv) {
  auto opt = dl::bench::parse_options(argc, argv);
  const int threads = opt.threads;
  const int repeats = opt.repeats > 0 ? opt.repeats : 7;
  dl::set_num_threads(threads);
  Eigen::setNbThreads(threads);
#ifdef DL_BENCH_HAVE_CBLAS
  openblas_set_num_threads(threads);
#endif

  std::vector<Case> cases;
  for (int64_t s : {256, 512, 1024, 2048})
    if (!opt.quick || s <= 512) cases.push_back({"square " + std::to_string(s), s, s, s});
  cases.push_back({"mlp 32x784x256", 32, 784, 256});
  cases.push_back({"mlp 128x784x256", 128, 784, 256});
  cases.push_back({"mlp 512x784x256", 512, 784, 256});
  cases.push_back({"mlp 512x256x128", 512, 256, 128});
  cases.push_back({"mlp 512x128x10", 512, 128, 10});
  // Backward of the 784 -> 256 layer at batch B: X (B, 784), W (784, 256), G (B, 256).
  for (int64_t batch : {32, 128, 512}) {
    std::string b = std::to_string(batch);
    cases.push_back({"dW=X^T G b" + b, 784, batch, 256, true, false});  // (784, B) x (B, 256)
    cases.push_back({"dX=G W^T b" + b, batch, 256, 784, false, true});  // (B, 256) x (256, 784)
  }

  dl::bench::Table table("matmul", opt);
  dl::manual_seed(3);
  double worst_eigen = 1e9;
  std::string worst_case;
  for (const auto& c : cases) {
    dl::NDArray<float> a_store = c.trans_a ? dl::randn<float>({c.k, c.m}) : dl::randn<float>({c.m, c.k});
    dl::NDArray<float> b_store = c.trans_b ? dl::randn<float>({c.n, c.k}) : dl::randn<float>({c.k, c.n});
    dl::NDArray<float> a = c.trans_a ? a_store.transpose() : a_store;
    dl::NDArray<float> b = c.trans_b ? b_store.transpose() : b_store;
    RowMat c_eigen(c.m, c.n), c_blas(c.m, c.n);
    ConstRowMap ea(a_store.data(), a_store.shape(0), a_store.shape(1));
    ConstRowMap eb(b_store.data(), b_store.shape(0), b_store.shape(1));
    const double flops = 2.0 * static_cast<double>(c.m) * static_cast<double>(c.n) * static_cast<double>(c.k);

    dl::NDArray<float> c_dl;
    auto run_dl = [&] { c_dl = dl::matmul(a, b); };
    auto run_eigen = [&] {
      if (c.trans_a) c_eigen.noalias() = ea.transpose() * eb;
      else if (c.trans_b) c_eigen.noalias() = ea * eb.transpose();
      else c_eigen.noalias() = ea * eb;
    };
    auto measure = [&](const std::function<void()>& fn) {
      fn();
      int inner = dl::bench::calibrate_inner(fn, 0.03);
      return dl::bench::time_it(fn, repeats, 1, inner);
    };
    // dl and Eigen share the OpenMP pool: their repeats alternate, so a burst of load from
    // elsewhere hits both alike. OpenBLAS has its own pool, whose workers spin for a while after
    // a call; it runs in a block of its own so the two pools never fight over the cores.
    run_eigen();
    run_dl();
    const int inner = std::max(dl::bench::calibrate_inner(run_eigen, 0.03), 1);
    std::vector<double> te, td;
    for (int r = 0; r < repeats; ++r) {
      te.push_back(dl::bench::time_it(run_eigen, 1, 0, inner).median_s);
      td.push_back(dl::bench::time_it(run_dl, 1, 0, inner).median_s);
    }
    dl::bench::Timing t_eigen = dl::bench::summarise(te), t_dl = dl::bench::summarise(td);
    table.add_rate(c.name, "Eigen", t_eigen, flops, 1e9, "GFLOP/s");
    auto& row_dl = table.add_rate(c.name, "dl", t_dl, flops, 1e9, "GFLOP/s", "Eigen");
    double q = table.ratio(row_dl);
    if (q < worst_eigen) { worst_eigen = q; worst_case = c.name; }
    float diff = (Eigen::Map<const RowMat>(c_dl.data(), c.m, c.n) - c_eigen).cwiseAbs().maxCoeff();
#ifdef DL_BENCH_HAVE_CBLAS
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let OpenMP's spinning workers sleep
    auto run_blas = [&] {
      cblas_sgemm(CblasRowMajor, c.trans_a ? CblasTrans : CblasNoTrans, c.trans_b ? CblasTrans : CblasNoTrans,
                  static_cast<int>(c.m), static_cast<int>(c.n), static_cast<int>(c.k), 1.0f, a_store.data(),
                  static_cast<int>(a_store.shape(1)), b_store.data(), static_cast<int>(b_store.shape(1)), 0.0f,
                  c_blas.data(), static_cast<int>(c.n));
    };
    dl::bench::Timing t_blas = measure(run_blas);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let OpenBLAS's spinning workers sleep
    table.add_rate(c.name, "OpenBLAS", t_blas, flops, 1e9, "GFLOP/s");
    dl::bench::Row vs_blas = row_dl;
    vs_blas.name = "dl / OpenBLAS";
    vs_blas.baseline = "OpenBLAS";
    table.add(vs_blas);
    diff = std::max(diff, (c_blas - c_eigen).cwiseAbs().maxCoeff());
#endif
    if (diff > 1e-2f * std::sqrt(static_cast<float>(c.k))) {
      std::fprintf(stderr, "matmul: %s: results differ by %g\n", c.name.c_str(), static_cast<double>(diff));
      return 1;
    }
  }
  char note[160];
  std::snprintf(note, sizeof note, "load %.2f; worst dl/Eigen %.3fx (%s)%s", dl::bench::Table::load_average(), worst_eigen,
                worst_case.c_str(),
#ifdef DL_BENCH_HAVE_CBLAS
                ""
#else
                "; OpenBLAS not found at build time: no OpenBLAS column"
#endif
  );
  table.print(note);
  return 0;
}
