#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <set>
#include <stdexcept>
#include <vector>

#include "dl/data/dataloader.hpp"
#include "dl/data/mnist.hpp"

using dl::data::Batch;
using dl::data::DataLoader;
using dl::data::DataLoaderOptions;
using dl::data::DataLoaderState;
using dl::data::TensorDataset;

namespace {
// Sample i is a (1, 2, 2) block filled with i and labelled i, so a batch tells which samples it holds.
TensorDataset numbered(int64_t n) {
  dl::NDArray<float> x(dl::Shape{n, 1, 2, 2});
  dl::NDArray<int64_t> y(dl::Shape{n});
  for (int64_t i = 0; i < n; ++i) {
    for (int k = 0; k < 4; ++k) x.data()[i * 4 + k] = static_cast<float>(i);
    y.data()[i] = i;
  }
  return TensorDataset(x, y);
}

// Every batch's labels, checking that each x row belongs to its label.
std::vector<std::vector<int64_t>> run_epoch(DataLoader& loader) {
  std::vector<std::vector<int64_t>> out;
  for (const Batch& b : loader) {
    REQUIRE(b.x.shape()[0] == b.y.shape()[0]);
    for (int64_t k = 0; k < b.y.shape()[0]; ++k)
      for (int e = 0; e < 4; ++e) REQUIRE(b.x.data()[k * 4 + e] == static_cast<float>(b.y.data()[k]));
    out.push_back(b.y.to_vector());
  }
  return out;
}
std::vector<int64_t> flat(const std::vector<std::vector<int64_t>>& batches) {
  std::vector<int64_t> v;
  for (const auto& b : batches) v.insert(v.end(), b.begin(), b.end());
  return v;
}
}  // namespace

TEST_CASE("dataloader: every sample exactly once per epoch, last batch partial") {
  auto ds = numbered(103);
  for (int prefetch : {0, 1, 3}) {
    CAPTURE(prefetch);
    DataLoader loader(ds, {.batch_size = 10, .seed = 7, .prefetch = prefetch});
    CHECK(loader.size() == 11);
    auto batches = run_epoch(loader);
    REQUIRE(batches.size() == 11);
    CHECK(batches.back().size() == 3);
    auto all = flat(batches);
    std::vector<int64_t> sorted = all;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int64_t> expect(103);
    for (int64_t i = 0; i < 103; ++i) expect[static_cast<size_t>(i)] = i;
    CHECK(sorted == expect);
    CHECK(all != expect);  // shuffled
  }
}

TEST_CASE("dataloader: order depends on (seed, epoch) only") {
  auto ds = numbered(200);
  auto order = [&](uint64_t seed, int64_t epoch, int prefetch, int64_t batch) {
    DataLoader l(ds, {.batch_size = batch, .seed = seed, .prefetch = prefetch});
    l.set_epoch(epoch);
    return flat(run_epoch(l));
  };
  auto a = order(1, 0, 2, 16);
  CHECK(a == order(1, 0, 0, 16));  // prefetch thread or not
  CHECK(a == order(1, 0, 4, 7));   // batch size does not change the permutation
  CHECK(a != order(1, 1, 2, 16));
  CHECK(a != order(2, 0, 2, 16));
  CHECK(a == flat(std::vector<std::vector<int64_t>>{dl::data::epoch_permutation(200, 1, 0)}));

  // A finished pass moves on to the next epoch by itself.
  DataLoader l(ds, {.batch_size = 16, .seed = 1});
  CHECK(flat(run_epoch(l)) == a);
  CHECK(l.state() == DataLoaderState{1, 0});
  CHECK(flat(run_epoch(l)) == order(1, 1, 2, 16));
  CHECK(l.epoch() == 2);

  DataLoader plain(ds, {.batch_size = 50, .shuffle = false});
  auto p = flat(run_epoch(plain));
  CHECK(p.front() == 0);
  CHECK(p.back() == 199);
  CHECK(std::is_sorted(p.begin(), p.end()));
}

TEST_CASE("dataloader: drop_last") {
  auto ds = numbered(103);
  DataLoader loader(ds, {.batch_size = 10, .drop_last = true});
  auto batches = run_epoch(loader);
  CHECK(batches.size() == 10);
  for (const auto& b : batches) CHECK(b.size() == 10);
  auto all = flat(batches);
  CHECK(std::set<int64_t>(all.begin(), all.end()).size() == 100);
}

TEST_CASE("dataloader: shards are disjoint and yield the same number of batches") {
  for (int64_t n : {103, 64, 7}) {
    for (int shards : {1, 2, 3, 4}) {
      for (bool drop_last : {false, true}) {
        CAPTURE(n);
        CAPTURE(shards);
        CAPTURE(drop_last);
        auto ds = numbered(n);
        if (drop_last && n / shards < 2) {  // not even one full batch per shard
          CHECK_THROWS_AS(DataLoader(ds, {.batch_size = 2, .drop_last = true, .num_shards = shards}), dl::ValueError);
          continue;
        }
        std::set<int64_t> seen;
        size_t total = 0;
        int64_t batches0 = -1;
        for (int k = 0; k < shards; ++k) {
          DataLoader l(ds, {.batch_size = 2, .seed = 3, .drop_last = drop_last, .num_shards = shards, .shard_index = k});
          auto batches = run_epoch(l);
          if (batches0 < 0) batches0 = static_cast<int64_t>(batches.size());
          CHECK(static_cast<int64_t>(batches.size()) == batches0);
          CHECK(static_cast<int64_t>(batches.size()) == l.size());
          auto all = flat(batches);
          total += all.size();
          seen.insert(all.begin(), all.end());
        }
        CHECK(seen.size() == total);  // disjoint
        int64_t per_shard = n / shards;
        CHECK(static_cast<int64_t>(total) == (drop_last ? per_shard / 2 * 2 : per_shard) * shards);
      }
    }
  }
}

TEST_CASE("dataloader: resuming from state() yields exactly the remaining batches") {
  auto ds = numbered(90);
  DataLoaderOptions o{.batch_size = 8, .seed = 11, .prefetch = 3};
  DataLoader reference(ds, o);
  reference.set_epoch(2);
  auto full = run_epoch(reference);
  REQUIRE(full.size() == 12);

  DataLoaderState saved;
  {
    DataLoader first(ds, o);
    first.set_epoch(2);
    int seen = 0;
    for (const Batch& b : first) {
      CHECK(b.y.to_vector() == full[static_cast<size_t>(seen)]);
      ++seen;
      CHECK(first.state() == DataLoaderState{2, seen});  // the batch in hand counts as consumed
      if (seen == 5) break;
    }
    saved = first.state();
  }  // loader destroyed mid-epoch with the prefetch thread still busy
  CHECK(saved == DataLoaderState{2, 5});

  DataLoader resumed(ds, o);
  resumed.load_state(saved);
  auto rest = run_epoch(resumed);
  CHECK(rest == std::vector<std::vector<int64_t>>(full.begin() + 5, full.end()));
  CHECK(resumed.state() == DataLoaderState{3, 0});

  // Breaking out and starting a new loop on the same loader also resumes.
  DataLoader same(ds, o);
  same.set_epoch(2);
  for (const Batch& b : same) { (void)b; break; }
  auto tail = run_epoch(same);
  CHECK(tail == std::vector<std::vector<int64_t>>(full.begin() + 1, full.end()));

  CHECK_THROWS_WITH_AS(resumed.load_state({0, 13}), doctest::Contains("next_batch 13 is out of range for 12 batches"),
                       dl::ValueError);
  CHECK_THROWS_AS(resumed.load_state({-1, 0}), dl::ValueError);
}

TEST_CASE("dataloader: early exit and destruction never hang") {
  auto ds = numbered(5000);
  for (int round = 0; round < 20; ++round) {
    DataLoader l(ds, {.batch_size = 4, .seed = static_cast<uint64_t>(round), .prefetch = 4});
    int k = 0;
    for (const Batch& b : l) {
      (void)b;
      if (++k == round % 3 + 1) break;
    }
  }
  // The loader dies while an iterator is still alive: the iterator ends quietly.
  auto loader = std::make_unique<DataLoader>(ds, DataLoaderOptions{.batch_size = 4, .prefetch = 2});
  auto it = loader->begin();
  CHECK(it != std::default_sentinel);
  loader.reset();
  ++it;
  CHECK(it == std::default_sentinel);

  // A second begin() stops the first loop's thread; the old iterator ends.
  DataLoader l(ds, {.batch_size = 4, .prefetch = 2});
  auto a = l.begin();
  auto b = l.begin();
  ++a;
  CHECK(a == std::default_sentinel);
  CHECK(b != std::default_sentinel);
}

TEST_CASE("dataloader: an exception in the prefetch thread reaches the loop") {
  auto ds = numbered(64);
  std::atomic<bool> armed{true};
  auto boom = std::make_shared<dl::data::Lambda>([&](float*, const dl::Shape&, const dl::data::SampleContext& ctx) {
    if (ctx.index == 37 && armed.exchange(false)) throw std::runtime_error("decode failed for sample 37");
  });
  for (int prefetch : {0, 2}) {
    CAPTURE(prefetch);
    armed = true;
    DataLoader l(ds, {.batch_size = 8, .shuffle = false, .prefetch = prefetch, .transform = boom});
    int got = 0;
    auto loop = [&] {
      for (const Batch& b : l) { (void)b; ++got; }
    };
    CHECK_THROWS_WITH_AS(loop(), doctest::Contains("decode failed for sample 37"), std::runtime_error);
    CHECK(got == 4);  // batches 0..3 arrived, batch 4 (samples 32..39) failed
    CHECK(l.state() == DataLoaderState{0, 4});
    // The loader is still usable and resumes at the failed batch.
    auto rest = run_epoch(l);
    CHECK(rest.size() == 4);
    CHECK(rest.front().front() == 32);
  }
}

TEST_CASE("dataloader: transforms run on every sample with the output shape") {
  auto ds = numbered(10);
  auto t = dl::data::make_transform(dl::data::Normalize({1.0f}, {2.0f}), dl::data::RandomCrop(1, 1, 0));
  DataLoader l(ds, {.batch_size = 4, .shuffle = false, .transform = t});
  std::vector<Batch> batches;
  for (const Batch& b : l) batches.push_back(b);
  REQUIRE(batches.size() == 3);
  CHECK(batches[0].x.shape() == dl::Shape{4, 1, 1, 1});
  CHECK(batches[2].x.shape() == dl::Shape{2, 1, 1, 1});
  CHECK(batches[1].x.data()[2] == doctest::Approx((6.0 - 1.0) / 2.0));
}

TEST_CASE("dataloader: bad options are ValueErrors") {
  auto ds = numbered(10);
  CHECK_THROWS_WITH_AS(DataLoader(ds, {.batch_size = 0}), doctest::Contains("batch_size must be positive, got 0"),
                       dl::ValueError);
  CHECK_THROWS_WITH_AS(DataLoader(ds, {.num_shards = 2, .shard_index = 2}),
                       doctest::Contains("shard_index 2 is out of range for num_shards 2"), dl::ValueError);
  CHECK_THROWS_WITH_AS(DataLoader(ds, {.num_shards = 0}), doctest::Contains("num_shards must be positive"),
                       dl::ValueError);
  CHECK_THROWS_AS(DataLoader(ds, {.num_shards = 2, .shard_index = -1}), dl::ValueError);
  CHECK_THROWS_WITH_AS(DataLoader(ds, {.prefetch = -1}), doctest::Contains("prefetch depth"), dl::ValueError);
  CHECK_THROWS_WITH_AS(DataLoader(ds, {.batch_size = 16, .drop_last = true}), doctest::Contains("no batches"),
                       dl::ValueError);
  CHECK_THROWS_WITH_AS(DataLoader(ds, {.num_shards = 11}), doctest::Contains("no batches"), dl::ValueError);
  CHECK_THROWS_WITH_AS(DataLoader(ds, {.transform = dl::data::make_transform(dl::data::RandomCrop(5, 0))}),
                       doctest::Contains("RandomCrop: crop (5, 5) is larger than the padded sample"), dl::ShapeError);
  DataLoader ok(ds, {});
  CHECK_THROWS_AS(ok.set_epoch(-1), dl::ValueError);

  dl::NDArray<float> x(dl::Shape{4, 3});
  dl::NDArray<int64_t> y(dl::Shape{5});
  CHECK_THROWS_WITH_AS(TensorDataset(x, y), doctest::Contains("4 inputs but 5 labels"), dl::ShapeError);
  CHECK_THROWS_AS(TensorDataset(x, dl::NDArray<int64_t>(dl::Shape{4, 1})), dl::ShapeError);
  CHECK_THROWS_AS(numbered(3).sample(3), dl::ValueError);
}

TEST_CASE("dataloader: throughput on Fashion-MNIST (batch 128, prefetch 2; skipped when not installed)") {
  std::string dir = dl::data::kFashionMnistDir;
  if (!std::filesystem::exists(dir + "/train-images-idx3-ubyte.gz")) {
    MESSAGE("skipped: Fashion-MNIST not installed in " << dir);
    return;
  }
  auto train = dl::data::load_mnist(dir, dl::data::Split::train);
  TensorDataset ds(train.images, train.labels);
  auto measure = [&](DataLoaderOptions o) {
    DataLoader l(ds, o);
    for (const Batch& b : l) (void)b;  // warm the allocator's pool
    auto t0 = std::chrono::steady_clock::now();
    int64_t batches = 0, samples = 0;
    for (const Batch& b : l) { ++batches; samples += b.y.shape()[0]; }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(samples == 60000);
    return static_cast<double>(batches) / s;
  };
  double plain = measure({.batch_size = 128, .seed = 1, .prefetch = 2});
  double augmented = measure({.batch_size = 128, .seed = 1, .prefetch = 2,
                              .transform = dl::data::make_transform(dl::data::RandomCrop(28, 2),
                                                                    dl::data::RandomHorizontalFlip(0.5),
                                                                    dl::data::Normalize({0.286f}, {0.353f}))});
  MESSAGE("DataLoader on Fashion-MNIST train, batch 128, prefetch 2: " << plain << " batches/s ("
          << plain * 128 << " samples/s); with crop+flip+normalize: " << augmented << " batches/s");
}
