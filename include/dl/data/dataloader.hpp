// DataLoader: batches from a TensorDataset, shuffled, sharded and prefetched.
//
//   dl::data::DataLoader loader(ds, {.batch_size = 128, .seed = 1, .transform = t});
//   for (int epoch = 0; epoch < 10; ++epoch)
//     for (const dl::data::Batch& b : loader) train_step(b.x, b.y);  // b.x (128, 1, 28, 28)
//
// Order. Each epoch uses a permutation of [0, N) computed from (seed, epoch) alone by a
// Fisher-Yates shuffle on counter-based random numbers, so it is reproducible and independent
// of threads, prefetch depth and resume point. A finished pass moves the loader to the next
// epoch by itself; set_epoch(e) jumps to the start of epoch e.
//
// Sharding (distributed data parallelism). With S = num_shards, each shard takes floor(N / S)
// samples of the epoch's permutation: shard k gets positions k, k + S, k + 2S, ... The N mod S
// samples left at the end of the permutation are skipped for that epoch (with shuffling they are
// different samples every epoch). So shards are disjoint and every shard yields exactly the same
// number of batches: no rank waits forever for a peer's extra batch in an allreduce.
//
// Prefetch. With prefetch >= 1 a background thread gathers batches and applies the transform
// while the caller computes, keeping at most `prefetch` finished batches in a queue. Leaving the
// loop early, starting a new loop, or destroying the loader stops and joins the thread; an
// exception thrown while preparing a batch is re-thrown by the loop in the caller's thread.
// prefetch = 0 prepares batches in the caller's thread (same batches, no thread).
//
// Resuming. state() is {epoch, next_batch}: the batch index the next loop starts at (it counts a
// batch as consumed when the loop hands it out). load_state(s) on a loader with the same dataset
// and options makes the next loop yield exactly the batches an uninterrupted run had left.
//
// A DataLoader (and its iterators) is used from one thread; it is not itself thread-safe.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "dl/core/error.hpp"
#include "dl/core/rng.hpp"
#include "dl/data/dataset.hpp"
#include "dl/data/transforms.hpp"

namespace dl::data {

struct DataLoaderOptions {
  int64_t batch_size = 64;
  bool shuffle = true;
  uint64_t seed = 0;
  bool drop_last = false;   // drop a final batch smaller than batch_size
  int num_shards = 1;
  int shard_index = 0;
  int prefetch = 2;         // queue depth of the background thread; 0 = no thread
  std::shared_ptr<const Transform> transform = nullptr;  // per sample, in the prefetch thread; may be null
};

struct DataLoaderState {
  int64_t epoch = 0;
  int64_t next_batch = 0;
  friend bool operator==(const DataLoaderState&, const DataLoaderState&) = default;
};

// The order of epoch `epoch`: a permutation of [0, n) that depends only on (seed, epoch).
inline std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = i;
  uint64_t key = seed ^ 0xD1B54A32D192ED03ull;  // keeps loader draws apart from transforms' draws
  for (int64_t i = n - 1; i > 0; --i) {
    auto w = philox4x32(key, static_cast<uint64_t>(i), static_cast<uint64_t>(epoch));
    uint64_t r = (static_cast<uint64_t>(w[0]) << 32) | w[1];
    auto j = static_cast<int64_t>((static_cast<unsigned __int128>(r) * static_cast<uint64_t>(i + 1)) >> 64);
    std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
  }
  return perm;
}

namespace detail {

// Everything fixed at construction; shared read-only by the loader and its running epochs.
struct LoaderPlan {
  TensorDataset dataset;
  DataLoaderOptions options;
  Shape out_sample_shape;
  int64_t per_shard = 0;    // samples per shard per epoch
  int64_t num_batches = 0;  // batches per shard per epoch

  // The dataset indices of shard `options.shard_index` in `epoch`, in order.
  std::vector<int64_t> shard_indices(int64_t epoch) const {
    int64_t n = dataset.size(), shards = options.num_shards;
    std::vector<int64_t> order;
    if (options.shuffle) order = epoch_permutation(n, options.seed, epoch);
    std::vector<int64_t> mine(static_cast<size_t>(per_shard));
    for (int64_t j = 0; j < per_shard; ++j) {
      int64_t pos = options.shard_index + j * shards;
      mine[static_cast<size_t>(j)] = options.shuffle ? order[static_cast<size_t>(pos)] : pos;
    }
    return mine;
  }

  Batch make_batch(const std::vector<int64_t>& indices, int64_t epoch, int64_t b) const {
    int64_t begin = b * options.batch_size;
    int64_t end = std::min(per_shard, begin + options.batch_size);
    std::vector<int64_t> ix(indices.begin() + begin, indices.begin() + end);
    if (!options.transform) return dataset.gather(ix);
    Shape xs;
    xs.push_back(end - begin);
    for (int64_t d : out_sample_shape) xs.push_back(d);
    Batch out{NDArray<float>(xs), NDArray<int64_t>(Shape{end - begin})};
    int64_t out_numel = out_sample_shape.numel();
    for (size_t k = 0; k < ix.size(); ++k) {
      SampleContext ctx{options.seed, epoch, ix[k], 0};
      options.transform->apply(dataset.sample(ix[k]), dataset.sample_shape(),
                               out.x.data() + static_cast<int64_t>(k) * out_numel, ctx);
      out.y.data()[k] = dataset.label(ix[k]);
    }
    return out;
  }
};

// One pass over batches [first, plan.num_batches) of one epoch, with or without a thread.
class LoaderRun {
 public:
  LoaderRun(std::shared_ptr<const LoaderPlan> plan, int64_t epoch, int64_t first)
      : plan_(std::move(plan)), epoch_(epoch), next_(first), depth_(plan_->options.prefetch) {
    indices_ = plan_->shard_indices(epoch_);
    if (depth_ > 0 && next_ < plan_->num_batches) thread_ = std::thread([this] { produce(); });
  }
  LoaderRun(const LoaderRun&) = delete;
  LoaderRun& operator=(const LoaderRun&) = delete;
  ~LoaderRun() { stop(); }

  int64_t epoch() const { return epoch_; }
  int64_t next_index() const { return next_; }
  bool completed() const { return next_ >= plan_->num_batches; }

  // The next batch in order, or nullopt once the pass is complete or stopped.
  std::optional<Batch> next() {
    if (completed() || stopped_consumer_) return std::nullopt;
    {
      std::lock_guard lock(mutex_);
      if (stop_) { stopped_consumer_ = true; return std::nullopt; }  // stopped: queued batches are dropped
    }
    if (depth_ == 0) {
      Batch b = plan_->make_batch(indices_, epoch_, next_);
      ++next_;
      return b;
    }
    Item item;
    {
      std::unique_lock lock(mutex_);
      ready_.wait(lock, [&] { return !queue_.empty() || stop_; });
      if (stop_) { stopped_consumer_ = true; return std::nullopt; }
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    space_.notify_one();
    if (item.error) {
      stopped_consumer_ = true;
      std::rethrow_exception(item.error);
    }
    ++next_;
    return std::move(item.batch);
  }

  // Idempotent: wakes the producer, waits for it to finish its current batch, joins.
  void stop() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    space_.notify_all();
    ready_.notify_all();
    if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
  }

 private:
  struct Item {
    Batch batch;
    std::exception_ptr error;
  };

  void produce() {
    for (int64_t b = next_; b < plan_->num_batches; ++b) {
      {
        std::unique_lock lock(mutex_);
        space_.wait(lock, [&] { return stop_ || static_cast<int>(queue_.size()) < depth_; });
        if (stop_) return;
      }
      Item item;
      try {
        item.batch = plan_->make_batch(indices_, epoch_, b);
      } catch (...) {
        item.error = std::current_exception();
      }
      bool failed = static_cast<bool>(item.error);
      {
        std::lock_guard lock(mutex_);
        if (stop_) return;
        queue_.push_back(std::move(item));
      }
      ready_.notify_one();
      if (failed) return;  // the consumer re-throws; nothing after a failed batch is produced
    }
  }

  std::shared_ptr<const LoaderPlan> plan_;
  int64_t epoch_;
  int64_t next_;  // consumer side: index of the next batch to hand out
  int depth_;
  std::vector<int64_t> indices_;
  bool stopped_consumer_ = false;

  std::mutex mutex_;
  std::condition_variable ready_, space_;
  std::deque<Item> queue_;
  bool stop_ = false;
  std::thread thread_;  // last member: started after everything it uses is constructed
};

}  // namespace detail

class DataLoader {
 public:
  class Iterator;

  DataLoader(const TensorDataset& dataset, DataLoaderOptions options = {})
      : position_(std::make_shared<DataLoaderState>()) {
    const auto& o = options;
    check<ValueError>(o.batch_size > 0, "DataLoader: batch_size must be positive, got ", o.batch_size);
    check<ValueError>(o.num_shards > 0, "DataLoader: num_shards must be positive, got ", o.num_shards);
    check<ValueError>(o.shard_index >= 0 && o.shard_index < o.num_shards, "DataLoader: shard_index ",
                      o.shard_index, " is out of range for num_shards ", o.num_shards);
    check<ValueError>(o.prefetch >= 0, "DataLoader: prefetch depth must be non-negative, got ", o.prefetch);
    auto plan = std::make_shared<detail::LoaderPlan>(detail::LoaderPlan{dataset, options, dataset.sample_shape()});
    if (o.transform) plan->out_sample_shape = o.transform->output_shape(dataset.sample_shape());
    plan->per_shard = dataset.size() / o.num_shards;
    plan->num_batches = o.drop_last ? plan->per_shard / o.batch_size
                                    : (plan->per_shard + o.batch_size - 1) / o.batch_size;
    check<ValueError>(plan->num_batches > 0, "DataLoader: no batches: ", dataset.size(), " samples in ",
                      o.num_shards, " shard(s) give ", plan->per_shard, " per shard",
                      o.drop_last ? ", fewer than batch_size " : "", o.drop_last ? std::to_string(o.batch_size) : "",
                      o.drop_last ? " with drop_last" : "");
    plan_ = std::move(plan);
  }
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;
  DataLoader(DataLoader&&) = default;
  DataLoader& operator=(DataLoader&&) = default;
  ~DataLoader() { stop_active(); }

  // Batches each epoch yields (on this shard); the same on every shard.
  int64_t size() const { return plan_->num_batches; }
  int64_t batches_per_epoch() const { return plan_->num_batches; }
  int64_t samples_per_epoch() const { return plan_->per_shard; }
  const DataLoaderOptions& options() const { return plan_->options; }
  int64_t epoch() const { return position_->epoch; }

  void set_epoch(int64_t epoch) {
    check<ValueError>(epoch >= 0, "DataLoader: epoch must be non-negative, got ", epoch);
    stop_active();
    *position_ = {epoch, 0};
  }
  DataLoaderState state() const { return *position_; }
  void load_state(const DataLoaderState& s) {
    check<ValueError>(s.epoch >= 0, "DataLoader: load_state: epoch must be non-negative, got ", s.epoch);
    check<ValueError>(s.next_batch >= 0 && s.next_batch <= plan_->num_batches, "DataLoader: load_state: next_batch ",
                      s.next_batch, " is out of range for ", plan_->num_batches, " batches per epoch");
    stop_active();
    *position_ = s;
  }

  // Starts (or resumes) the current epoch at state().next_batch. Any earlier loop is stopped.
  Iterator begin();
  std::default_sentinel_t end() const { return {}; }

 private:
  void stop_active() {
    if (auto run = active_.lock()) run->stop();
  }
  std::shared_ptr<const detail::LoaderPlan> plan_;
  std::shared_ptr<DataLoaderState> position_;  // shared with iterators, which advance it
  std::weak_ptr<detail::LoaderRun> active_;
};

class DataLoader::Iterator {
 public:
  using iterator_concept = std::input_iterator_tag;
  using iterator_category = std::input_iterator_tag;
  using value_type = Batch;
  using difference_type = std::ptrdiff_t;

  Iterator() = default;
  const Batch& operator*() const { return current_; }
  const Batch* operator->() const { return &current_; }
  Iterator& operator++() {
    fetch();
    return *this;
  }
  void operator++(int) { fetch(); }
  friend bool operator==(const Iterator& it, std::default_sentinel_t) { return it.done_; }

 private:
  friend class DataLoader;
  Iterator(std::shared_ptr<detail::LoaderRun> run, std::shared_ptr<DataLoaderState> position)
      : run_(std::move(run)), position_(std::move(position)), done_(false) {
    fetch();
  }
  void fetch() {
    if (!run_) { done_ = true; return; }
    std::optional<Batch> b;
    try {
      b = run_->next();
    } catch (...) {
      done_ = true;
      run_.reset();  // joins the producer before the exception leaves the loop
      throw;
    }
    if (b) {
      current_ = std::move(*b);
      *position_ = {run_->epoch(), run_->next_index()};
      return;
    }
    done_ = true;
    if (run_->completed()) *position_ = {run_->epoch() + 1, 0};  // a finished pass moves on
    run_.reset();
  }

  std::shared_ptr<detail::LoaderRun> run_;
  std::shared_ptr<DataLoaderState> position_;
  Batch current_;
  bool done_ = true;
};

inline DataLoader::Iterator DataLoader::begin() {
  stop_active();
  auto run = std::make_shared<detail::LoaderRun>(plan_, position_->epoch, position_->next_batch);
  active_ = run;
  return Iterator(std::move(run), position_);
}

}  // namespace dl::data
