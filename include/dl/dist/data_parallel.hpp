// dist::DataParallel: synchronous data-parallel training of an nn::Module over MPI. At construction
// it checks that every rank has the same parameter names, shapes and dtypes (first difference named
// on every rank) and broadcasts rank 0's values. Gradients are packed into buckets (25 MB by
// default and 1 MB for the first, in reverse registration order = roughly the order backward
// produces them; a bucket of one gradient is reduced in place, without copies); a bucket's
// average-allreduce runs on a communication thread as soon as all its gradients are ready, so it
// can overlap the rest of backward (on_ready, below). synchronize() waits for every bucket
// before the optimizer step.
//
//   dl::dist::DataParallel dp(net);                    // verify + broadcast parameters
//   for (...) {
//     opt.zero_grad();
//     dl::NDArray<float> loss;
//     { dl::autograd::record r; loss = dl::cross_entropy(net(x_shard), y_shard); }
//     loss.backward();                                 // buckets start while backward runs
//     dp.synchronize();                                // averaged gradients in p.grad()
//     opt.step();
//   }
//
// "Ready" comes from the autograd engine: each parameter's GradMeta::on_ready fires as soon as the
// last node feeding that parameter has run, which calls grad_ready(index). You can also call
// grad_ready(name) yourself
// or just synchronize(), which launches whatever is left in bucket order. Buckets are always
// launched in bucket order, so every rank issues the same collectives in the same order.
// Threading: the communication thread uses its own duplicated communicators; with only
// MPI_THREAD_SERIALIZED do not call other dl::dist collectives between backward and synchronize().
#pragma once
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "dl/autograd/record.hpp"
#include "dl/dist/collectives.hpp"
#include "dl/nn/module.hpp"

namespace dl::dist {

struct DataParallelOptions {
  size_t bucket_bytes = size_t{25} << 20;   // gradient bytes per allreduce (a larger tensor gets its own)
  // The first bucket (the last layers, whose gradients backward produces first) holds at most this
  // many bytes (capped by bucket_bytes; 0: bucket_bytes), so communication starts early in backward.
  size_t first_bucket_bytes = size_t{1} << 20;
  bool broadcast_parameters = true;         // start every rank from root's values
  int root = 0;
  Algorithm algorithm = Algorithm::automatic;
};

// Timing of the last step: how much of the allreduce time was hidden behind backward.
struct OverlapStats {
  int buckets = 0;
  double comm_seconds = 0;     // sum over buckets of (copy in + allreduce + copy out)
  double hidden_seconds = 0;   // part of comm_seconds that ran before synchronize() was called
  double wait_seconds = 0;     // time synchronize() blocked
  double backward_seconds = 0; // first gradient ready -> synchronize() called
  double hidden_share() const { return comm_seconds > 0 ? hidden_seconds / comm_seconds : 0.0; }
};

class DataParallel {
 public:
  explicit DataParallel(nn::Module& module, DataParallelOptions options = {}, const Group& base = world())
      : module_(&module), options_(options), group_(base.comm()) {
    check<ValueError>(options_.bucket_bytes > 0, "DataParallel: bucket_bytes must be positive");
    check<ValueError>(options_.root >= 0 && options_.root < group_.size(), "DataParallel: root ", options_.root,
                      " is out of range for ", group_.size(), " ranks");
    int level = MPI_THREAD_SINGLE;
    MPI_Query_thread(&level);
    check<DistributedError>(level >= MPI_THREAD_SERIALIZED,
                            "DataParallel: its communication thread needs MPI_THREAD_SERIALIZED or better, MPI provides ",
                            to_string(detail::from_mpi_level(level)));
    params_ = module.named_parameters();
    verify_same_parameters();
    group_.set_small_message_bytes(base.small_message_bytes());
    group_.set_check_arguments(false);  // layout verified above; per-bucket checks would only add latency
    if (options_.broadcast_parameters) {
      autograd::pause no_tape;
      for (auto& [name, p] : params_) {
        NDArray<float> v = p.detach();
        broadcast(v, options_.root, group_);
      }
    }
    build_buckets();
    thread_ = std::thread([this] { comm_loop(); });
    // The engine calls on_ready once a leaf's gradient for the backward pass is complete, so a
    // bucket's allreduce starts while backward is still producing the others.
    for (size_t i = 0; i < params_.size(); ++i)
      if (bucket_of_[i] >= 0 && params_[i].second.grad_meta())
        params_[i].second.grad_meta()->on_ready = [this, i] { grad_ready(i); };
  }

  ~DataParallel() {
    for (auto& [name, p] : params_)
      if (p.grad_meta()) p.grad_meta()->on_ready = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // Marks a parameter's gradient final for this step (by name or by position in named_parameters).
  void grad_ready(const std::string& name) {
    for (size_t i = 0; i < params_.size(); ++i)
      if (params_[i].first == name) return grad_ready(i);
    fail<ValueError>("DataParallel::grad_ready: no parameter named '", name, "'");
  }
  void grad_ready(size_t index) {
    check<ValueError>(index < params_.size(), "DataParallel::grad_ready: index ", index, " is out of range for ",
                      params_.size(), " parameters");
    int b = bucket_of_[index];
    if (b < 0) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (ready_[index]) return;  // a second report in the same step changes nothing
    ready_[index] = true;
    if (!step_started_) {
      step_started_ = true;
      step_start_ = Clock::now();
    }
    if (--pending_[b] == 0) launch_ready_buckets_locked();
  }

  // Launches every bucket not yet launched, waits for all of them, and rethrows a communication
  // error. Afterwards every parameter's grad() holds the average over ranks.
  void synchronize() {
    auto called = Clock::now();
    std::unique_lock<std::mutex> lock(mu_);
    if (!step_started_) {
      step_started_ = true;
      step_start_ = called;
    }
    for (size_t i = params_.size(); i-- > 0;) {  // reverse order, like backward
      if (bucket_of_[i] < 0 || ready_[i]) continue;
      ready_[i] = true;
      --pending_[bucket_of_[i]];
    }
    launch_ready_buckets_locked();
    // Wait for every launched bucket even after an error: the thread must not touch them later.
    done_cv_.wait(lock, [&] { return finished_ == buckets_.size(); });
    auto end = Clock::now();
    // Overlap: bucket time that fell before synchronize() was called was hidden behind backward.
    OverlapStats s;
    s.buckets = static_cast<int>(buckets_.size());
    s.backward_seconds = seconds(step_start_, called);
    s.wait_seconds = seconds(called, end);
    for (const auto& b : buckets_) {
      s.comm_seconds += seconds(b.start, b.end);
      if (b.start < called) s.hidden_seconds += seconds(b.start, std::min(b.end, called));
    }
    stats_ = s;
    // Reset for the next step.
    std::fill(ready_.begin(), ready_.end(), false);
    for (size_t b = 0; b < buckets_.size(); ++b) pending_[b] = static_cast<int>(buckets_[b].params.size());
    next_launch_ = 0;
    finished_ = 0;
    step_started_ = false;
    if (error_) {
      auto e = std::exchange(error_, nullptr);
      std::rethrow_exception(e);
    }
  }

  const OverlapStats& last_stats() const { return stats_; }
  size_t num_buckets() const { return buckets_.size(); }
  // Parameter names of bucket b, in the order they are packed.
  std::vector<std::string> bucket_names(size_t b) const {
    std::vector<std::string> out;
    for (size_t i : buckets_.at(b).params) out.push_back(params_[i].first);
    return out;
  }
  const Group& group() const { return group_; }

 private:
  using Clock = std::chrono::steady_clock;
  static double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

  struct Bucket {
    std::vector<size_t> params;
    std::vector<float> buffer;
    Clock::time_point start, end;
  };

  // Every rank describes its parameters; rank root's list is broadcast; each rank finds its first
  // difference; the lowest differing rank broadcasts its message and every rank throws it.
  void verify_same_parameters() {
    std::string mine;
    for (auto& [name, p] : params_)
      mine += name + " " + p.shape().to_string() + " " + std::string(dtype_name(p.dtype())) + "\n";
    std::string ref = broadcast_string(mine, options_.root);
    std::string diff;
    if (mine != ref) {
      auto lines = [](const std::string& s) {
        std::vector<std::string> out;
        size_t pos = 0;
        while (pos < s.size()) {
          size_t nl = s.find('\n', pos);
          out.push_back(s.substr(pos, nl - pos));
          pos = nl + 1;
        }
        return out;
      };
      auto a = lines(mine), b = lines(ref);
      size_t i = 0;
      while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
      std::string here = i < a.size() ? "'" + a[i] + "'" : "nothing (" + std::to_string(a.size()) + " parameters)";
      std::string there = i < b.size() ? "'" + b[i] + "'" : "nothing (" + std::to_string(b.size()) + " parameters)";
      diff = detail::concat("DataParallel: parameters differ across ranks: parameter #", i, ": rank ", group_.rank(),
                            " has ", here, " where rank ", options_.root, " has ", there);
    }
    int candidate = diff.empty() ? group_.size() : group_.rank(), first = 0;
    {
      detail::Deadline d("DataParallel: parameter check");
      detail::check_mpi(MPI_Allreduce(&candidate, &first, 1, MPI_INT, MPI_MIN, group_.comm().get()), "MPI_Allreduce",
                        "DataParallel");
    }
    if (first == group_.size()) return;
    std::string msg = broadcast_string(diff, first);
    fail<DistributedError>(msg);
  }

  std::string broadcast_string(const std::string& s, int root) {
    detail::Deadline d("DataParallel: parameter check");
    int64_t n = static_cast<int64_t>(s.size());
    detail::check_mpi(MPI_Bcast(&n, 1, MPI_INT64_T, root, group_.comm().get()), "MPI_Bcast", "DataParallel");
    std::string out = group_.rank() == root ? s : std::string(static_cast<size_t>(n), '\0');
    if (n > 0)
      detail::check_mpi(MPI_Bcast(out.data(), static_cast<int>(n), MPI_CHAR, root, group_.comm().get()), "MPI_Bcast",
                        "DataParallel");
    return out;
  }

  void build_buckets() {
    bucket_of_.assign(params_.size(), -1);
    size_t bytes = 0;
    for (size_t i = params_.size(); i-- > 0;) {
      const NDArray<float>& p = params_[i].second;
      const auto& meta = p.grad_meta();
      if (!meta || !meta->requires_grad || meta->req == autograd::GradReq::null) continue;
      check<ValueError>(meta->grad.defined() && meta->grad.is_contiguous() && meta->grad.shape() == p.shape(),
                        "DataParallel: gradient buffer of '", params_[i].first, "' must be contiguous with shape ",
                        p.shape());
      size_t b = static_cast<size_t>(p.numel()) * sizeof(float);
      size_t cap = options_.bucket_bytes;
      if (buckets_.size() == 1 && options_.first_bucket_bytes > 0) cap = std::min(cap, options_.first_bucket_bytes);
      if (buckets_.empty() || (bytes > 0 && bytes + b > cap)) {
        buckets_.emplace_back();
        bytes = 0;
      }
      buckets_.back().params.push_back(i);
      bytes += b;
      bucket_of_[i] = static_cast<int>(buckets_.size() - 1);
    }
    for (auto& bk : buckets_) {
      size_t n = 0;
      for (size_t i : bk.params) n += static_cast<size_t>(params_[i].second.numel());
      if (bk.params.size() > 1) bk.buffer.resize(n);  // one gradient: reduced in place
      pending_.push_back(static_cast<int>(bk.params.size()));
    }
    ready_.assign(params_.size(), false);
  }

  void launch_ready_buckets_locked() {
    bool any = false;
    while (next_launch_ < buckets_.size() && pending_[next_launch_] == 0) {
      queue_.push_back(next_launch_++);
      any = true;
    }
    if (any) cv_.notify_all();
  }

  void comm_loop() {
    for (;;) {
      size_t b;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping with nothing left
        b = queue_.front();
        queue_.pop_front();
      }
      Bucket& bk = buckets_[b];
      bk.start = Clock::now();
      std::exception_ptr err;
      try {
        run_bucket(bk);
      } catch (...) {
        err = std::current_exception();
      }
      bk.end = Clock::now();
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++finished_;
        if (err && !error_) error_ = err;
      }
      done_cv_.notify_all();
    }
  }

  // Copy the bucket's gradients into one buffer, average over ranks, copy back. A bucket of one
  // gradient (a large weight) is averaged in place: two copies of it saved.
  void run_bucket(Bucket& bk) {
    if (bk.params.size() == 1) {
      const NDArray<float>& g = params_[bk.params[0]].second.grad_meta()->grad;
      allreduce_buffer(g.data(), g.numel(), Op::average, options_.algorithm, group_);
      return;
    }
    size_t off = 0;
    for (size_t i : bk.params) {
      const NDArray<float>& g = params_[i].second.grad_meta()->grad;
      size_t n = static_cast<size_t>(g.numel());
      if (n) std::memcpy(bk.buffer.data() + off, g.data(), n * sizeof(float));
      off += n;
    }
    allreduce_buffer(bk.buffer.data(), static_cast<int64_t>(bk.buffer.size()), Op::average, options_.algorithm, group_);
    off = 0;
    for (size_t i : bk.params) {
      const NDArray<float>& g = params_[i].second.grad_meta()->grad;
      size_t n = static_cast<size_t>(g.numel());
      if (n) std::memcpy(g.data(), bk.buffer.data() + off, n * sizeof(float));
      off += n;
    }
  }

  nn::Module* module_;
  DataParallelOptions options_;
  Group group_;  // own communicators: the communication thread never shares them with the caller
  nn::NamedArrays params_;
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_of_;  // parameter -> bucket, -1 when it has no gradient
  std::vector<int> pending_;    // per bucket: gradients not yet ready
  std::vector<bool> ready_;
  size_t next_launch_ = 0, finished_ = 0;
  std::deque<size_t> queue_;
  bool stopping_ = false, step_started_ = false;
  Clock::time_point step_start_;
  std::exception_ptr error_;
  OverlapStats stats_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::thread thread_;
};

}  // namespace dl::dist
