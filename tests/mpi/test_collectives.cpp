// Collectives against a serial reference: every rank builds every rank's input from a seeded
// formula, so it knows the exact expected sum. Lengths {0, 1, 2, 7, 13, 1009, 4099} x every
// algorithm x float/double; run by run.sh on 2, 3 and 4 ranks, flat and with simulated nodes.
#include "mpi_main.hpp"

#include <cmath>
#include <vector>

#include "dl/dist/collectives.hpp"
#include "dl/ndarray/creation.hpp"

using namespace dl;
using dist::Algorithm;
using dist::Op;

namespace {

const std::vector<int64_t> kLengths{0, 1, 2, 7, 13, 1009, 4096 + 3};
const Algorithm kAlgorithms[] = {Algorithm::automatic, Algorithm::flat, Algorithm::hierarchical, Algorithm::leader};

// Rank r's i-th input value, distinct per rank and element, O(1). Not inlined: the compiler may
// contract 0.37 i + 1.3 r into an FMA at one call site and not another, and broadcast compares exactly.
template <class T>
[[gnu::noinline]] T value(int r, int64_t i) {
  return static_cast<T>(std::sin(0.37 * static_cast<double>(i) + 1.3 * r) + 0.01 * r);
}

template <class T>
NDArray<T> input(int r, int64_t n) {
  NDArray<T> x(Shape{n});
  for (int64_t i = 0; i < n; ++i) x.data()[i] = value<T>(r, i);
  return x;
}

template <class T>
double tol() { return std::is_same_v<T, float> ? 2e-5 : 1e-12; }

template <class T>
void check_allreduce(Algorithm a, Op op, int64_t small_bytes) {
  auto& g = dist::world();
  g.set_small_message_bytes(static_cast<size_t>(small_bytes));
  const int p = g.size();
  for (int64_t n : kLengths) {
    NDArray<T> x = input<T>(g.rank(), n);
    dist::allreduce(x, op, a);
    int bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      double ref = 0;
      for (int r = 0; r < p; ++r) ref += static_cast<double>(value<T>(r, i));
      if (op == Op::average) ref /= p;
      if (std::abs(static_cast<double>(x.data()[i]) - ref) > tol<T>() * (1 + std::abs(ref))) ++bad;
    }
    INFO("algorithm ", dist::to_string(a), ", op ", dist::to_string(op), ", n ", n, ", ", g.describe());
    CHECK(bad == 0);
  }
  g.set_small_message_bytes(64 * 1024);
}

}  // namespace

TEST_CASE("allreduce matches the serial reference for every algorithm, op, length and dtype") {
  for (Algorithm a : kAlgorithms)
    for (Op op : {Op::sum, Op::average}) {
      check_allreduce<float>(a, op, 64 * 1024);
      check_allreduce<double>(a, op, 64 * 1024);
    }
  // automatic with a tiny threshold: large lengths take the hierarchical path
  check_allreduce<float>(Algorithm::automatic, Op::sum, 16);
}

TEST_CASE("allreduce of a non-contiguous view writes back into the view only") {
  auto& g = dist::world();
  NDArray<float> base = full<float>(Shape{4, 6}, 1.0f);
  NDArray<float> col = base.slice(1, 1, 6, 2);  // columns 1, 3, 5
  dist::allreduce(col, Op::sum, Algorithm::hierarchical);
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 6; ++j) CHECK(base.at({i, j}) == doctest::Approx(j % 2 ? g.size() : 1));
}

TEST_CASE("broadcast copies the root's elements to every rank") {
  auto& g = dist::world();
  for (int root = 0; root < g.size(); ++root)
    for (int64_t n : kLengths) {
      NDArray<double> x = input<double>(g.rank(), n);
      dist::broadcast(x, root);
      bool same = true;
      for (int64_t i = 0; i < n; ++i) same = same && x.data()[i] == value<double>(root, i);
      CHECK(same);
    }
  NDArray<float> x = zeros<float>(Shape{3});
  CHECK_THROWS_WITH_AS(dist::broadcast(x, g.size()), doctest::Contains("broadcast: root"), dl::ValueError);
}

TEST_CASE("allgather stacks every rank's array in rank order") {
  auto& g = dist::world();
  for (int64_t n : kLengths) {
    NDArray<float> x = input<float>(g.rank(), n).reshape({1, n});
    NDArray<float> all = dist::allgather(x);
    REQUIRE(all.shape() == Shape({g.size(), 1, n}));
    bool same = true;
    for (int r = 0; r < g.size(); ++r)
      for (int64_t i = 0; i < n; ++i) same = same && all.data()[r * n + i] == value<float>(r, i);
    CHECK(same);
  }
}

TEST_CASE("reduce_scatter gives each rank its rows of the sum") {
  auto& g = dist::world();
  const int p = g.size();
  for (int64_t rows : {int64_t{0}, int64_t{1}, int64_t{5}, int64_t{13}}) {
    const int64_t cols = 3;
    NDArray<double> x = input<double>(g.rank(), rows * cols).reshape({rows, cols});
    for (Op op : {Op::sum, Op::average}) {
      NDArray<double> part = dist::reduce_scatter(x, op);
      int64_t base = rows / p, rem = rows % p;
      int64_t mine = base + (g.rank() < rem), start = g.rank() * base + std::min<int64_t>(g.rank(), rem);
      REQUIRE(part.shape() == Shape({mine, cols}));
      int bad = 0;
      for (int64_t i = 0; i < mine * cols; ++i) {
        double ref = 0;
        for (int r = 0; r < p; ++r) ref += value<double>(r, start * cols + i);
        if (op == Op::average) ref /= p;
        if (std::abs(part.data()[i] - ref) > 1e-12) ++bad;
      }
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("mismatched lengths throw DistributedError on every rank instead of hanging") {
  auto& g = dist::world();
  for (Algorithm a : kAlgorithms) {
    NDArray<float> x = zeros<float>(Shape{10 + g.rank()});
    CHECK_THROWS_WITH_AS(dist::allreduce(x, Op::sum, a), doctest::Contains("allreduce: length differs across ranks"),
                         dl::DistributedError);
  }
  NDArray<float> x = zeros<float>(Shape{4});
  Algorithm mine = g.rank() == 0 ? Algorithm::flat : Algorithm::leader;
  CHECK_THROWS_WITH_AS(dist::allreduce(x, Op::sum, mine), doctest::Contains("algorithm differs"), dl::DistributedError);
  NDArray<double> y = zeros<double>(Shape{3 + g.rank()});
  CHECK_THROWS_WITH_AS(dist::broadcast(y, 0), doctest::Contains("broadcast: length differs"), dl::DistributedError);
  CHECK_THROWS_WITH_AS(dist::allgather(y), doctest::Contains("allgather: dim 0 differs"), dl::DistributedError);
}

TEST_CASE("automatic picks flat on one machine; an explicit two-level choice stands (leader on uneven nodes)") {
  auto& g = dist::world();
  if (g.num_machines() == 1) {  // run.sh runs on one machine, simulated nodes or not
    for (size_t bytes : {size_t{4}, size_t{64} << 10, size_t{1} << 20, size_t{256} << 20})
      CHECK(dist::choose_algorithm(Algorithm::automatic, bytes, g) == Algorithm::flat);
  }
  if (g.simulated_nodes()) CHECK(g.num_machines() < g.num_nodes() + (g.num_nodes() == 1 ? 1 : 0));
  CHECK(dist::choose_algorithm(Algorithm::hierarchical, 1 << 20, g) ==
        (g.uniform_nodes() ? Algorithm::hierarchical : Algorithm::leader));
  CHECK(dist::choose_algorithm(Algorithm::leader, 16, g) == Algorithm::leader);
  CHECK(dist::choose_algorithm(Algorithm::flat, 1 << 20, g) == Algorithm::flat);
}

TEST_CASE("topology: simulated nodes follow DL_DIST_RANKS_PER_NODE") {
  auto& g = dist::world();
  const char* k = std::getenv("DL_DIST_RANKS_PER_NODE");
  if (k && *k) {
    int per = std::atoi(k);
    CHECK(g.simulated_nodes());
    CHECK(g.node_index() == g.rank() / per);
    CHECK(g.local_rank() == g.rank() % per);
    CHECK(g.num_nodes() == (g.size() + per - 1) / per);
    CHECK(g.uniform_nodes() == (g.size() % per == 0));
  }
  CHECK(g.peers().size() >= 1);
  CHECK(g.leaders().valid() == (g.local_rank() == 0));
}
