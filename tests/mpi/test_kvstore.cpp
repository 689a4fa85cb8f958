// KVStore semantics for "local" and "dist_sync": init takes rank 0's value, pushes sum over the
// values given, over pushes until the next pull, and (dist_sync) over ranks; the updater runs on
// the store; errors for unknown types, uninitialised keys, shape and key mismatches.
#include "mpi_main.hpp"

#include "dl/dist/kvstore.hpp"
#include "dl/ndarray/creation.hpp"

using namespace dl;

namespace {
bool all_equal(const NDArray<float>& a, float v) {
  for (float x : a.to_vector())
    if (x != v) return false;
  return true;
}
}  // namespace

TEST_CASE("local: push replaces after a pull, sums pushes and device lists before it") {
  auto kv = dist::KVStore::create("local");
  CHECK(kv->type() == "local");
  CHECK(kv->num_workers() == 1);
  kv->init("w", full<float>(Shape{2, 3}, 1.0f));
  NDArray<float> out = zeros<float>(Shape{2, 3});
  kv->pull("w", out);
  CHECK(all_equal(out, 1.0f));
  kv->push("w", full<float>(Shape{2, 3}, 2.0f));
  kv->push("w", {full<float>(Shape{2, 3}, 3.0f), full<float>(Shape{2, 3}, 4.0f)});
  kv->pull("w", out);
  CHECK(all_equal(out, 9.0f));  // 2 + (3 + 4)
  kv->pushpull("w", full<float>(Shape{2, 3}, 5.0f), out);
  CHECK(all_equal(out, 5.0f));  // first push after a pull replaces
}

TEST_CASE("dist_sync: init broadcasts rank 0's value, push sums over ranks") {
  auto& g = dist::world();
  const int p = g.size();
  auto kv = dist::KVStore::create("dist_sync");
  CHECK(kv->num_workers() == p);
  CHECK(kv->rank() == g.rank());
  kv->init("fc.weight", full<float>(Shape{7}, 10.0f + g.rank()));
  NDArray<float> out = zeros<float>(Shape{7});
  kv->pull("fc.weight", out);
  CHECK(all_equal(out, 10.0f));
  kv->push("fc.weight", full<float>(Shape{7}, static_cast<float>(g.rank() + 1)));
  kv->pull("fc.weight", out);
  CHECK(all_equal(out, static_cast<float>(p * (p + 1) / 2)));
  kv->push("fc.weight", full<float>(Shape{7}, 1.0f));
  kv->push("fc.weight", full<float>(Shape{7}, 1.0f));
  kv->pull("fc.weight", out);
  CHECK(all_equal(out, static_cast<float>(2 * p)));
  // Empty and one-element values work too.
  kv->init("empty", zeros<float>(Shape{0}));
  kv->push("empty", zeros<float>(Shape{0}));
  kv->init("one", zeros<float>(Shape{1}));
  NDArray<float> one = zeros<float>(Shape{1});
  kv->pushpull("one", full<float>(Shape{1}, 2.0f), one);
  CHECK(all_equal(one, 2.0f * p));
}

TEST_CASE("dist_sync: set_optimizer updates on the store with the summed gradient") {
  auto& g = dist::world();
  auto kv = dist::KVStore::create("dist_sync");
  kv->set_optimizer([](const std::string& key, NDArray<float>& grad, NDArray<float>& weight) {
    CHECK(key == "w");
    weight -= grad * 0.5f;
  });
  kv->init("w", full<float>(Shape{3}, 1.0f));
  NDArray<float> w = zeros<float>(Shape{3});
  kv->pushpull("w", full<float>(Shape{3}, 1.0f), w);
  CHECK(all_equal(w, 1.0f - 0.5f * g.size()));
  kv->pushpull("w", full<float>(Shape{3}, 1.0f), w);
  CHECK(all_equal(w, 1.0f - 1.0f * g.size()));
}

TEST_CASE("kvstore errors") {
  auto& g = dist::world();
  CHECK_THROWS_WITH_AS(dist::KVStore::create("dist_async"), doctest::Contains("unknown type 'dist_async'"),
                       dl::ValueError);
  auto kv = dist::KVStore::create("dist_sync");
  NDArray<float> x = zeros<float>(Shape{4});
  CHECK_THROWS_WITH_AS(kv->push("missing", x), doctest::Contains("KVStore::push: key 'missing' is not initialised"),
                       dl::ValueError);
  CHECK_THROWS_WITH_AS(kv->pull("missing", x), doctest::Contains("not initialised"), dl::ValueError);
  kv->init("w", x);
  CHECK_THROWS_WITH_AS(kv->init("w", x), doctest::Contains("already initialised"), dl::ValueError);
  NDArray<float> wrong = zeros<float>(Shape{2, 2});
  CHECK_THROWS_WITH_AS(kv->push("w", wrong), doctest::Contains("stores shape (4,), value 0 has shape (2, 2)"),
                       dl::ShapeError);
  CHECK_THROWS_WITH_AS(kv->pull("w", wrong), doctest::Contains("output has shape (2, 2)"), dl::ShapeError);
  // Ranks pushing different keys at the same time: every rank throws instead of mixing them.
  if (g.size() > 1) {
    kv->init("v", x);
    CHECK_THROWS_WITH_AS(kv->push(g.rank() == 0 ? "w" : "v", x), doctest::Contains("key hash differs across ranks"),
                         dl::DistributedError);
  }
}
