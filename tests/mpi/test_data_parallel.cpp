// DataParallel's promises: N ranks x batch B train exactly like one process with batch N*B (mean
// loss, SGD, 20 steps, parameters agree to 1e-5); initial parameters come from rank 0; gradient
// buckets launch from the engine's on_ready callbacks during backward; a rank with a different model fails at construction
// with the first difference named on every rank.
#include "mpi_main.hpp"

#include <cmath>
#include <vector>

#include "dl/dist/data_parallel.hpp"
#include "dl/ndarray/creation.hpp"
#include "dl/nn/dense.hpp"
#include "dl/ops/loss.hpp"
#include "dl/optim/sgd.hpp"

using namespace dl;

namespace {

struct Mlp : nn::Module {
  nn::Dense fc1, fc2, fc3;
  Mlp(int64_t in, int64_t hidden, int64_t out, Generator& gen)
      : fc1(in, hidden, true, gen), fc2(hidden, hidden, true, gen), fc3(hidden, out, true, gen) {
    register_module("fc1", &Mlp::fc1);
    register_module("fc2", &Mlp::fc2);
    register_module("fc3", &Mlp::fc3);
  }
  template <class X> auto forward(const X& x) { return fc3(relu(fc2(relu(fc1(x))))); }
  template <class X> auto operator()(const X& x) { return forward(x); }
};

// Rows [begin, end) of a fixed synthetic data set (same on every rank).
NDArray<float> inputs(int64_t begin, int64_t end, int64_t features, int step) {
  NDArray<float> x(Shape{end - begin, features});
  for (int64_t i = begin; i < end; ++i)
    for (int64_t j = 0; j < features; ++j)
      x.data()[(i - begin) * features + j] = static_cast<float>(std::cos(0.1 * (i + 7 * step) + 0.7 * j));
  return x;
}
NDArray<int64_t> labels(int64_t begin, int64_t end, int64_t classes, int step) {
  NDArray<int64_t> y(Shape{end - begin});
  for (int64_t i = begin; i < end; ++i) y.data()[i - begin] = (i * 3 + step) % classes;
  return y;
}

double max_abs_diff(const NDArray<float>& a, const NDArray<float>& b) {
  NDArray<float> x = a.detach().contiguous(), y = b.detach().contiguous();
  double m = 0;
  for (int64_t i = 0; i < x.numel(); ++i) m = std::max(m, std::abs(double(x.data()[i]) - double(y.data()[i])));
  return m;
}

void train_equivalence(size_t bucket_bytes, size_t first_bucket_bytes = 0) {
  auto& g = dist::world();
  const int p = g.size();
  const int64_t B = 4, F = 6, H = 16, C = 3;
  Generator gen(1234 + g.rank());  // different on each rank: DataParallel must broadcast rank 0's
  Mlp net(F, H, C, gen);
  dist::DataParallelOptions o;
  o.bucket_bytes = bucket_bytes;
  o.first_bucket_bytes = first_bucket_bytes;
  dist::DataParallel dp(net, o);
  Mlp ref = nn::clone(net);  // the single-process model, from the same (broadcast) start
  optim::SGD opt(net.named_parameters(), 0.1), ref_opt(ref.named_parameters(), 0.1);
  for (int step = 0; step < 20; ++step) {
    opt.zero_grad();
    NDArray<float> loss;
    {
      autograd::record r;
      loss = cross_entropy(net(inputs(g.rank() * B, (g.rank() + 1) * B, F, step)),
                           labels(g.rank() * B, (g.rank() + 1) * B, C, step));
    }
    loss.backward();
    dp.synchronize();
    opt.step();

    ref_opt.zero_grad();
    NDArray<float> ref_loss;
    {
      autograd::record r;
      ref_loss = cross_entropy(ref(inputs(0, p * B, F, step)), labels(0, p * B, C, step));
    }
    ref_loss.backward();
    ref_opt.step();
  }
  auto a = net.named_parameters(), b = ref.named_parameters();
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("parameter ", a[i].first, ", bucket_bytes ", bucket_bytes, ", ", g.describe());
    CHECK(max_abs_diff(a[i].second, b[i].second) <= 1e-5);
  }
  // Every rank ends with identical parameters.
  for (auto& [name, w] : net.named_parameters()) {
    NDArray<float> mine = w.detach().clone(), root = w.detach().clone();
    dist::broadcast(root, 0);
    CHECK(max_abs_diff(mine, root) == 0.0);
  }
}

}  // namespace

TEST_CASE("N ranks x batch B train like one process with batch N*B (one bucket per parameter, in place)") {
  train_equivalence(1);
}
TEST_CASE("... with one 25 MB bucket") {
  train_equivalence(size_t{25} << 20);
}
TEST_CASE("... with mid-sized buckets") {
  train_equivalence(300 * sizeof(float));
}

TEST_CASE("buckets follow reverse registration order and respect bucket_bytes") {
  Generator gen(5);
  Mlp net(6, 16, 3, gen);
  dist::DataParallelOptions o;
  o.bucket_bytes = 16 * 16 * sizeof(float);  // fc2.weight alone fills a bucket
  dist::DataParallel dp(net, o);
  REQUIRE(dp.num_buckets() == 3);
  CHECK(dp.bucket_names(0) == std::vector<std::string>{"fc3.bias", "fc3.weight", "fc2.bias"});
  CHECK(dp.bucket_names(1) == std::vector<std::string>{"fc2.weight"});
  CHECK(dp.bucket_names(2) == std::vector<std::string>{"fc1.bias", "fc1.weight"});
  CHECK_THROWS_WITH_AS(dp.grad_ready("nope"), doctest::Contains("no parameter named 'nope'"), dl::ValueError);
}

TEST_CASE("the first bucket is capped by first_bucket_bytes, so communication starts early in backward") {
  Generator gen(5);
  Mlp net(6, 16, 3, gen);
  dist::DataParallelOptions o;
  o.bucket_bytes = 4096;
  o.first_bucket_bytes = 64 * sizeof(float);  // fc3 (3 + 48 floats) fits, fc2.bias would not
  dist::DataParallel dp(net, o);
  REQUIRE(dp.num_buckets() == 2);
  CHECK(dp.bucket_names(0) == std::vector<std::string>{"fc3.bias", "fc3.weight"});
  CHECK(dp.bucket_names(1) == std::vector<std::string>{"fc2.bias", "fc2.weight", "fc1.bias", "fc1.weight"});
  o.first_bucket_bytes = 0;  // 0: like every other bucket
  dist::DataParallel one(net, o);
  CHECK(one.num_buckets() == 1);
}

TEST_CASE("... with a first bucket of one gradient (reduced in place) and a 25 MB bucket (copied)") {
  train_equivalence(size_t{25} << 20, 16);  // fc3.bias alone, then everything else
}

TEST_CASE("the engine reports every gradient ready and synchronize() returns consistent overlap statistics") {
  auto& g = dist::world();
  Generator gen(9);
  Mlp net(64, 256, 8, gen);
  dist::DataParallelOptions o;
  o.bucket_bytes = 1;
  dist::DataParallel dp(net, o);
  NDArray<float> loss;
  {
    autograd::record r;
    loss = cross_entropy(net(inputs(0, 64, 64, 0)), labels(0, 64, 8, 0));
  }
  loss.backward();
  dp.synchronize();
  const auto& s = dp.last_stats();
  CHECK(s.buckets == 6);
  CHECK(s.comm_seconds > 0);
  CHECK(s.hidden_seconds >= 0);
  CHECK(s.hidden_seconds <= s.comm_seconds + 1e-9);
  if (g.rank() == 0)
    MESSAGE("overlap: ", s.hidden_seconds * 1e3, " of ", s.comm_seconds * 1e3, " ms hidden (",
            100 * s.hidden_share(), "%), backward ", s.backward_seconds * 1e3, " ms, wait ", s.wait_seconds * 1e3, " ms");
  CHECK(s.backward_seconds > 0);  // the first bucket became ready during backward, before synchronize()
  for (auto& [name, w] : net.named_parameters()) CHECK(w.is_leaf());
}

TEST_CASE("a rank with a different model fails at construction, naming the first difference on every rank") {
  auto& g = dist::world();
  Generator gen(3);
  const int64_t hidden = g.rank() == g.size() - 1 ? 12 : 16;  // the last rank differs in fc1/fc2
  Mlp net(6, hidden, 3, gen);
  std::string expect = "parameter #0: rank " + std::to_string(g.size() - 1) + " has 'fc1.weight (12, 6) float32' where rank 0 has 'fc1.weight (16, 6) float32'";
  try {
    dist::DataParallel dp(net);
    FAIL("no error");
  } catch (const dl::DistributedError& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find("DataParallel: parameters differ across ranks") != std::string::npos);
    CHECK(std::string(e.what()).find(expect) != std::string::npos);
  }
}
