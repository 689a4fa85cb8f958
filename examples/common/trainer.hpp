// The training loop shared by the example trainers (train_mlp, train_lenet, ...): one set of
// flags, Fashion-MNIST loading, the optimiser and schedule, progress output, metrics log, plot.
// Each example defines its model and calls run_training(); see examples/train_mlp.cpp.
#pragma once
#include <CLI/CLI.hpp>
#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "dl/dl.hpp"
#include "dl/graph/compile.hpp"
#include "dl/io/checkpoint.hpp"
#include "dl/nn/module.hpp"
#include "dl/ops/loss.hpp"
#include "dl/optim/adam.hpp"
#include "dl/optim/rmsprop.hpp"
#include "dl/optim/schedule.hpp"
#include "dl/optim/sgd.hpp"
#if defined(DL_EXAMPLES_HAVE_MPI)
#include <thread>

#include "dl/dist/collectives.hpp"
#include "dl/dist/data_parallel.hpp"
#include "dl/dist/runtime.hpp"
#endif

namespace examples {

struct TrainConfig {
  int epochs = 10;
  int64_t batch_size = 128;
  std::string optimizer = "sgd";
  double lr = 0.05;
  double momentum = 0.9;
  double weight_decay = 0.0;
  std::string schedule = "cosine";
  double label_smoothing = 0.0;
  uint64_t seed = 0;
  int threads = 0;  // 0: DL_NUM_THREADS or all cores
  std::string data_dir = dl::data::kFashionMnistDir;
  std::string log_path;
  std::string plot_path;
  int64_t limit_train = 0;  // use only the first N training samples (0 = all); for quick runs
  // Set by an example, not a common flag (train_lenet and train_resnet expose --limit-test):
  int64_t limit_test = 0;   // evaluate on the first N test samples only (0 = all)
  // Per-sample augmentation of the training set (e.g. RandomCrop + RandomHorizontalFlip from
  // dl/data/transforms.hpp); it runs in the DataLoader's prefetch thread. Null: none.
  std::shared_ptr<const dl::data::Transform> train_transform;
  std::string checkpoint_path;   // save a training checkpoint here (each epoch, and every N steps)
  std::string checkpoint_flag = "--checkpoint";  // the flag that sets checkpoint_path (for messages)
  int64_t checkpoint_every = 0;  // steps between checkpoints (0: at the end of each epoch only)
  bool resume = false;           // continue from checkpoint_path when it exists
  int64_t stop_after_steps = 0;  // stop abruptly after this many steps, no save (tests resume)
  std::string step_log_path;     // append "step loss" per step (exact decimal) here
  bool dist = false;             // data-parallel over MPI ranks (run under mpirun); see DistRun
  bool compiled = false;         // train and evaluate through dl::graph::compile; see make_steps
};

// Flag validators with short messages ("must be positive, got 0").
inline CLI::Validator number_check(const char* what, bool (*ok)(double)) {
  return CLI::Validator(
      [what, ok](std::string& value) -> std::string {
        char* end = nullptr;
        double v = std::strtod(value.c_str(), &end);
        if (end == value.c_str() || *end != '\0' || !ok(v)) return std::string("must be ") + what + ", got '" + value + "'";
        return "";
      },
      what);
}
inline const CLI::Validator kPositive = number_check("positive", [](double v) { return v > 0; });
inline const CLI::Validator kNonNegative = number_check("non-negative", [](double v) { return v >= 0; });
inline const CLI::Validator kFraction = number_check("in [0, 1)", [](double v) { return v >= 0 && v < 1; });

inline void add_common_flags(CLI::App& app, TrainConfig& c) {
  app.add_option("--epochs", c.epochs, "training epochs")->check(kPositive)->capture_default_str();
  app.add_option("--batch-size", c.batch_size, "samples per step")->check(kPositive)->capture_default_str();
  app.add_option("--optimizer", c.optimizer, "sgd | adam | adamw | rmsprop")
      ->check(CLI::IsMember({"sgd", "adam", "adamw", "rmsprop"}))->capture_default_str();
  app.add_option("--lr", c.lr, "learning rate")->check(kPositive)->capture_default_str();
  app.add_option("--momentum", c.momentum, "SGD / RMSProp momentum")->check(kFraction)->capture_default_str();
  app.add_option("--weight-decay", c.weight_decay, "L2 weight decay (decoupled for adamw)")
      ->check(kNonNegative)->capture_default_str();
  app.add_option("--schedule", c.schedule, "learning-rate schedule: cosine | step | none")
      ->check(CLI::IsMember({"cosine", "step", "none"}))->capture_default_str();
  app.add_option("--label-smoothing", c.label_smoothing, "cross-entropy label smoothing")
      ->check(kFraction)->capture_default_str();
  app.add_option("--seed", c.seed, "seed for initialisation, shuffling and dropout")->capture_default_str();
  app.add_option("--threads", c.threads, "CPU threads (default: DL_NUM_THREADS or all cores)")->check(kNonNegative);
  app.add_option("--data-dir", c.data_dir, "directory with the (Fashion-)MNIST IDX files")->capture_default_str();
  app.add_option("--log", c.log_path, "metrics log file, one row per epoch (.csv or .jsonl)");
  app.add_option("--plot", c.plot_path, "render training curves to this PNG at the end (needs gnuplot and --log)");
  app.add_option("--limit-train", c.limit_train, "train on the first N samples only (quick runs)")->check(kNonNegative);
  app.add_option("--checkpoint", c.checkpoint_path, "save a training checkpoint (model, optimizer, RNG, data position) here");
  app.add_option("--checkpoint-every", c.checkpoint_every, "steps between checkpoints (default: end of each epoch)")
      ->check(kNonNegative);
  app.add_flag("--resume", c.resume, "continue from --checkpoint if the file exists");
  app.add_option("--stop-after-steps", c.stop_after_steps, "stop abruptly after N steps without saving (to test --resume)")
      ->check(kNonNegative);
  app.add_option("--step-log", c.step_log_path, "append one line 'step loss' per training step to this file");
  app.add_flag("--dist", c.dist, "data-parallel training over MPI ranks (mpirun -np N ...): --batch-size per rank");
  app.add_flag("--compiled", c.compiled, "train and evaluate the model as a compiled static graph (dl::graph::compile)");
}

// One training step and the evaluation forward pass, eager or compiled (--compiled). Held as
// std::function so that the training loop is compiled once, whatever the mode.
struct Steps {
  // Forward and backward of the loss on one batch (gradients into the parameters' .grad());
  // returns the loss and sets `logits`, both valid until the next call.
  std::function<dl::NDArray<float>(const dl::NDArray<float>& x, const dl::NDArray<int64_t>& y, dl::NDArray<float>& logits)>
      train;
  // Logits of a batch; called in eval mode without recording. Valid until the next call.
  std::function<dl::NDArray<float>(const dl::NDArray<float>& x)> predict;
};

// --compiled: `forward` is a generic callable (arrays or symbols in) whose structure is fixed at
// compile time. Two graphs, because a graph's train/eval mode is read when it is traced: the
// training step (forward + backward of the loss) and the evaluation forward pass.
template <class Forward>
Steps compiled_steps(Forward forward, double label_smoothing) {
  auto loss = [forward, label_smoothing](auto x, auto y) { return dl::cross_entropy(forward(x), y, label_smoothing); };
  auto logits = [forward](auto x) { return forward(x); };
  auto step = std::make_shared<decltype(dl::graph::compile(loss))>(dl::graph::compile(loss));
  auto predict = std::make_shared<decltype(dl::graph::compile(logits))>(dl::graph::compile(logits));
  Steps s;
  s.train = [step](const dl::NDArray<float>& x, const dl::NDArray<int64_t>& y, dl::NDArray<float>& logits) {
    dl::NDArray<float> loss = step->forward_backward(x, y);
    logits = step->logits();
    return loss;
  };
  s.predict = [predict](const dl::NDArray<float>& x) { return predict->forward(x); };
  return s;
}

// A model opts in to --compiled with `template <class F> void with_static_forward(F&& f)`, which
// calls f once with its forward as a generic callable of fixed structure (a model whose depth is a
// run-time flag picks the matching compile-time variant there, or says which depths it supports).
// A model whose stack is a graph::repeat compiles its blocks in `compile_blocks()` instead
// (train_deep: each block its own graph inside the checkpoint segments) and keeps the eager step.
template <class Model>
Steps make_steps(Model& net, const TrainConfig& c, const char* name) {
  if (c.compiled) {
    if constexpr (requires { net.with_static_forward([](auto) {}); }) {
      Steps s;
      net.with_static_forward([&](auto forward) { s = compiled_steps(forward, c.label_smoothing); });
      return s;
    } else if constexpr (requires { net.compile_blocks(); }) {
      net.compile_blocks();  // compiled subgraphs inside the model, one tape node each: the steps stay eager
    } else {
      dl::fail<dl::ValueError>("--compiled: ", name, " does not support it (its model has neither with_static_forward ",
                               "nor compile_blocks)");
    }
  }
  Steps s;
  const double smoothing = c.label_smoothing;
  s.train = [&net, smoothing](const dl::NDArray<float>& x, const dl::NDArray<int64_t>& y, dl::NDArray<float>& logits) {
    dl::NDArray<float> loss;
    {
      dl::autograd::record rec;
      logits = net(x);
      loss = dl::cross_entropy(logits, y, smoothing);
    }
    loss.backward();  // grad_req write: each backward overwrites the gradients, no zero_grad needed
    return loss;
  };
  s.predict = [&net](const dl::NDArray<float>& x) { return dl::NDArray<float>(net(x)); };
  return s;
}

// --dist: data-parallel training, one process per rank under mpirun. Every rank trains on its own
// shard of the training set (disjoint, the same shuffled epoch order, the same number of batches)
// with --batch-size samples per step, and DataParallel averages the gradients, so one step sees
// ranks x batch-size samples. Rank 0 alone prints, writes the log, plot, step log and checkpoints
// (atomically); each rank evaluates its slice of the test set and the counts are summed. --resume
// reads the checkpoint on every rank (a path all ranks can read). Without --dist every member is a
// no-op for one rank.
//
//   mpirun -np 4 build-release/examples/train_mlp --dist
class DistRun {
 public:
  explicit DistRun(bool on) {
    if (!on) return;
#if defined(DL_EXAMPLES_HAVE_MPI)
    env().emplace();  // MPI_Init_thread; finalized by main_guard (or the job aborted on an error)
    rank_ = dl::dist::world().rank();
    size_ = dl::dist::world().size();
    // Ranks on one machine share its cores: without --threads or DL_NUM_THREADS each takes its part.
    if (!std::getenv("DL_NUM_THREADS"))
      threads_ = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / dl::dist::world().local_size());
#else
    dl::fail<dl::ValueError>("--dist: this program was built without MPI (install libopenmpi-dev, reconfigure with -Dmpi=enabled)");
#endif
  }
  int rank() const { return rank_; }
  int size() const { return size_; }
  bool root() const { return rank_ == 0; }
  int default_threads() const { return threads_; }  // 0: leave dl's default

  // Checks that every rank has the same model and starts every rank from rank 0's parameters.
  void attach(dl::nn::Module& net) {
#if defined(DL_EXAMPLES_HAVE_MPI)
    if (size_ > 1) dp_ = std::make_unique<dl::dist::DataParallel>(net);
#endif
    (void)net;
  }
  // After backward: every gradient becomes the average over ranks.
  void synchronize() {
#if defined(DL_EXAMPLES_HAVE_MPI)
    if (dp_) dp_->synchronize();
#endif
  }
  // Element-wise sum over ranks, in place.
  void sum(std::vector<double>& v) {
#if defined(DL_EXAMPLES_HAVE_MPI)
    if (size_ > 1) dl::dist::allreduce_buffer(v.data(), static_cast<int64_t>(v.size()), dl::dist::Op::sum);
#endif
    (void)v;
  }
  // Throws on every rank when `value` differs between ranks (e.g. the resumed step).
  void check_same(const char* what, int64_t value) {
#if defined(DL_EXAMPLES_HAVE_MPI)
    if (size_ > 1) dl::dist::detail::check_agreement(dl::dist::world().comm(), "--dist", {{what, value}});
#endif
    (void)what;
    (void)value;
  }
  // Batch-norm running statistics are per rank (each sees its own shard): average them so that
  // evaluation and checkpoints use the same model on every rank.
  void average_buffers(dl::nn::Module& net) {
#if defined(DL_EXAMPLES_HAVE_MPI)
    if (size_ <= 1) return;
    dl::autograd::pause no_tape;
    for (auto& [name, b] : net.named_buffers()) {
      dl::NDArray<float> v = b.detach();
      dl::dist::allreduce(v, dl::dist::Op::average);
    }
#endif
    (void)net;
  }

#if defined(DL_EXAMPLES_HAVE_MPI)
  static std::optional<dl::dist::Environment>& env() {
    static std::optional<dl::dist::Environment> e;
    return e;
  }
#endif
  // main_guard's two ways out: finalize after success, abort every rank after an error.
  static void finish() {
#if defined(DL_EXAMPLES_HAVE_MPI)
    env().reset();
#endif
  }
  static void abort_if_running() {
#if defined(DL_EXAMPLES_HAVE_MPI)
    if (env()) dl::dist::Environment::abort(1);
#endif
  }

 private:
  int rank_ = 0, size_ = 1, threads_ = 0;
#if defined(DL_EXAMPLES_HAVE_MPI)
  std::unique_ptr<dl::dist::DataParallel> dp_;
#endif
};

inline std::unique_ptr<dl::optim::Optimizer> make_optimizer(const TrainConfig& c, const dl::optim::NamedParameters& params) {
  using namespace dl::optim;
  if (c.optimizer == "sgd") return std::make_unique<SGD>(params, c.lr, c.momentum, false, c.weight_decay);
  if (c.optimizer == "adam") return std::make_unique<Adam>(params, c.lr, 0.9, 0.999, 1e-8, c.weight_decay);
  if (c.optimizer == "adamw") return std::make_unique<AdamW>(params, c.lr, 0.9, 0.999, 1e-8, c.weight_decay);
  return std::make_unique<RMSProp>(params, c.lr, 0.99, 1e-8, c.momentum);
}

inline std::unique_ptr<dl::optim::LrSchedule> make_schedule(const TrainConfig& c, int64_t total_steps) {
  using namespace dl::optim;
  if (c.schedule == "cosine") return std::make_unique<CosineAnnealing>(c.lr, total_steps);
  if (c.schedule == "step") return std::make_unique<StepLR>(c.lr, std::max<int64_t>(1, total_steps / 3), 0.1);
  return nullptr;
}

// Accuracy of `net` on a dataset, in eval mode, without recording.
template <class Model>
dl::util::Accuracy evaluate_counts(Model& net, const Steps& steps, const dl::data::TensorDataset& set) {
  dl::autograd::pause no_tape;
  dl::util::Accuracy acc;
  if (set.size() == 0) return acc;
  net.eval();
  dl::data::DataLoader loader(set, {.batch_size = 1000, .shuffle = false, .prefetch = 1});
  for (const auto& batch : loader) acc.update(steps.predict(batch.x), batch.y);
  net.train();
  return acc;
}
template <class Model>
double evaluate(Model& net, const Steps& steps, const dl::data::TensorDataset& set) {
  return evaluate_counts(net, steps, set).value();
}
// --dist: each rank evaluates a contiguous slice of the (first `limit`) test samples; the correct
// and total counts are summed over ranks, so every sample counts exactly once.
template <class Model>
double evaluate(Model& net, const Steps& steps, const dl::data::MnistData& d, int64_t limit, DistRun& dist) {
  int64_t n = limit > 0 ? std::min<int64_t>(limit, d.images.shape(0)) : d.images.shape(0);
  int64_t lo = n * dist.rank() / dist.size(), hi = n * (dist.rank() + 1) / dist.size();
  dl::data::TensorDataset part(d.images.slice(0, lo, hi), d.labels.slice(0, lo, hi));
  dl::util::Accuracy acc = evaluate_counts(net, steps, part);
  std::vector<double> counts{static_cast<double>(acc.correct()), static_cast<double>(acc.total())};
  dist.sum(counts);
  dl::check<dl::DistributedError>(counts[1] == static_cast<double>(n), "evaluate: ranks counted ", counts[1],
                                  " test samples, expected ", n);
  return counts[0] / counts[1];
}

inline dl::data::TensorDataset first_n(const dl::data::MnistData& d, int64_t n) {
  if (n <= 0 || n >= d.images.shape(0)) return dl::data::TensorDataset(d.images, d.labels);
  return dl::data::TensorDataset(d.images.slice(0, 0, n), d.labels.slice(0, 0, n));
}

// Trains `net` on Fashion-MNIST with the flags in `c`; returns the process exit code.
template <class Model>
int run_training(const char* name, Model& net, const TrainConfig& c) {
  using Clock = std::chrono::steady_clock;
  DistRun dist(c.dist);
  if (c.threads > 0) dl::set_num_threads(c.threads);
  else if (dist.default_threads() > 0) dl::set_num_threads(dist.default_threads());
  // Rank 0 alone prints (progress too: std::cout goes through stdout); errors still reach stderr.
  if (!dist.root()) dl::check<dl::IoError>(std::freopen("/dev/null", "w", stdout) != nullptr, "--dist: cannot silence stdout");
  if (c.dist)
    std::printf("%s: data-parallel over %d ranks (MPI), %lld samples per rank per step\n", name, dist.size(),
                static_cast<long long>(c.batch_size));
  std::printf("%s: backend cpu (Eigen %d.%d.%d GEMM, dl thread pool), %d threads, seed %llu%s\n", name, EIGEN_WORLD_VERSION,
              EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION, dl::num_threads(), static_cast<unsigned long long>(c.seed),
              c.compiled ? ", compiled static graph" : "");
  auto train = dl::data::load_mnist(c.data_dir, dl::data::Split::train);
  auto test = dl::data::load_mnist(c.data_dir, dl::data::Split::test);
  dl::data::TensorDataset train_set = first_n(train, c.limit_train), test_set = first_n(test, c.limit_test);
  std::printf("%s: %lld training and %lld test images from %s\n", name, static_cast<long long>(train_set.size()),
              static_cast<long long>(test_set.size()), c.data_dir.c_str());

  dl::data::DataLoader loader(train_set, {.batch_size = c.batch_size, .shuffle = true, .seed = c.seed,
                                          .num_shards = dist.size(), .shard_index = dist.rank(),
                                          .transform = c.train_transform});
  dist.attach(net);  // --dist: same model on every rank? then rank 0's parameters everywhere
  auto opt = make_optimizer(c, net.named_parameters());
  const int64_t steps_per_epoch = loader.batches_per_epoch();
  auto schedule = make_schedule(c, steps_per_epoch * c.epochs);
  std::optional<dl::util::MetricsLog> log;

  int64_t step = 0;
  double test_acc = 0;
  dl::check<dl::ValueError>(!c.resume || !c.checkpoint_path.empty(), "--resume needs ", c.checkpoint_flag, " PATH");
  const bool have_checkpoint = c.resume && std::filesystem::exists(c.checkpoint_path);
  dist.check_same("whether the --resume checkpoint exists", have_checkpoint);
  if (have_checkpoint) {
    auto ck = dl::io::load_checkpoint(c.checkpoint_path);
    dl::io::restore_checkpoint(ck, net, *opt);
    loader.load_state(ck.loader);
    step = ck.step;
    dist.check_same("the resumed step", step);
    std::printf("%s: resumed from %s at step %lld (epoch %lld, batch %lld)\n", name, c.checkpoint_path.c_str(),
                static_cast<long long>(step), static_cast<long long>(ck.loader.epoch + 1),
                static_cast<long long>(ck.loader.next_batch));
  } else if (c.resume) {
    std::printf("%s: no checkpoint at %s yet; starting from scratch\n", name, c.checkpoint_path.c_str());
  }
  // A resumed run continues its metrics log (the rows of the epochs before the checkpoint stay).
  if (!c.log_path.empty() && dist.root()) log.emplace(c.log_path, /*append=*/have_checkpoint);
  auto save = [&](int64_t epoch) {
    if (c.checkpoint_path.empty()) return;
    dist.average_buffers(net);
    if (!dist.root()) return;
    dl::io::save_checkpoint(c.checkpoint_path, dl::io::make_checkpoint(net, *opt, step, epoch, loader.state()));
  };
  // After the resume: a compiled graph binds the parameters it finds at its first call.
  Steps steps = make_steps(net, c, name);
  std::FILE* step_log = c.step_log_path.empty() || !dist.root() ? nullptr : std::fopen(c.step_log_path.c_str(), "a");
  dl::check<dl::IoError>(c.step_log_path.empty() || !dist.root() || step_log, "--step-log: cannot open '", c.step_log_path, "'");
  auto start = Clock::now();
  net.train();
  for (int epoch = static_cast<int>(loader.state().epoch) + 1; epoch <= c.epochs; ++epoch) {
    dl::util::ProgressBar bar(steps_per_epoch, {.desc = "epoch " + std::to_string(epoch) + "/" + std::to_string(c.epochs)});
    dl::util::RunningMean loss_mean;
    dl::util::Accuracy train_acc;
    dl::util::Throughput speed;
    int64_t i = loader.state().next_batch;
    for (const auto& batch : loader) {
      if (schedule) schedule->apply(*opt, step);
      dl::NDArray<float> logits;
      dl::NDArray<float> loss = steps.train(batch.x, batch.y, logits);
      dist.synchronize();  // --dist: average the gradients over ranks
      opt->step();
      ++step;
      if (step_log) std::fprintf(step_log, "%lld %.9g\n", static_cast<long long>(step), static_cast<double>(loss.item()));
      if (c.stop_after_steps > 0 && step >= c.stop_after_steps) {
        if (step_log) std::fclose(step_log);
        std::printf("%s: stopping after %lld steps (--stop-after-steps)\n", name, static_cast<long long>(step));
        return 0;
      }
      if (c.checkpoint_every > 0 && step % c.checkpoint_every == 0) save(epoch);
      speed.update(batch.x.shape(0));
      loss_mean.update(loss.item(), static_cast<double>(batch.x.shape(0)));
      train_acc.update(logits, batch.y);
      bar.update(++i, {{"loss", loss_mean.value()}, {"acc", train_acc.value()}});
    }
    bar.finish();
    save(epoch);
    double seconds = speed.elapsed_seconds(), throughput = speed.samples_per_second();
    double epoch_loss = loss_mean.value(), epoch_acc = train_acc.value();
    if (c.dist) {  // every rank's samples count: sum losses, counts and throughputs over ranks
      std::vector<double> t{epoch_loss * loss_mean.weight(), loss_mean.weight(), static_cast<double>(train_acc.correct()),
                            static_cast<double>(train_acc.total()), throughput};
      dist.sum(t);
      epoch_loss = t[1] > 0 ? t[0] / t[1] : 0.0;
      epoch_acc = t[3] > 0 ? t[2] / t[3] : 0.0;
      throughput = t[4];
      dist.average_buffers(net);
      test_acc = evaluate(net, steps, test, c.limit_test, dist);
    } else {
      test_acc = evaluate(net, steps, test_set);
    }
    std::printf("%s\n", dl::util::epoch_summary(epoch, c.epochs, {{"loss", epoch_loss}, {"train_acc", epoch_acc},
                                                                  {"test_acc", test_acc}}, seconds, throughput).c_str());
    std::fflush(stdout);
    if (log) {
      log->write({{"epoch", epoch}, {"loss", epoch_loss}, {"train_acc", epoch_acc}, {"test_acc", test_acc},
                  {"lr", opt->lr()}, {"seconds", seconds}, {"samples_per_s", throughput}});
    }
  }
  if (step_log) std::fclose(step_log);
  double total = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("%s: test accuracy %.4f after %d epochs (%.1f s)\n", name, test_acc, c.epochs, total);
  if (!c.plot_path.empty() && dist.root()) {
    if (c.log_path.empty()) std::fprintf(stderr, "%s: --plot needs --log; no plot written\n", name);
    else if (dl::util::plot_curves(c.log_path, c.plot_path)) std::printf("%s: training curves in %s\n", name, c.plot_path.c_str());
  }
  return 0;
}

// Parses flags and runs `body`, turning every error into one clear line and a non-zero exit.
template <class Body>
int main_guard(CLI::App& app, int argc, char** argv, Body body) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    int rc = body();
    DistRun::finish();  // --dist: MPI_Finalize
    return rc;
  } catch (const dl::Error& e) {
    std::fprintf(stderr, "%s: error: %s\n", app.get_name().c_str(), e.what());
    std::fflush(stderr);
    DistRun::abort_if_running();  // --dist: the peers may be waiting in a collective; end the job
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", app.get_name().c_str(), e.what());
    std::fflush(stderr);
    DistRun::abort_if_running();
    return 1;
  }
}

}  // namespace examples
