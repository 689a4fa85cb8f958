// The training loop shared by the example trainers (train_mlp, train_lenet, ...): one set of
// flags, Fashion-MNIST loading, the optimiser and schedule, progress output, metrics log, plot.
// Each example defines its model and calls run_training(); see examples/train_mlp.cpp.
#pragma once
#include <CLI/CLI.hpp>
#include <Eigen/Core>

#include <chrono>
#include <filesystem>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "dl/dl.hpp"
#include "dl/io/checkpoint.hpp"
#include "dl/nn/module.hpp"
#include "dl/ops/loss.hpp"
#include "dl/optim/adam.hpp"
#include "dl/optim/rmsprop.hpp"
#include "dl/optim/schedule.hpp"
#include "dl/optim/sgd.hpp"

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
  int64_t checkpoint_every = 0;  // steps between checkpoints (0: at the end of each epoch only)
  bool resume = false;           // continue from checkpoint_path when it exists
  int64_t stop_after_steps = 0;  // stop abruptly after this many steps, no save (tests resume)
  std::string step_log_path;     // append "step loss" per step (exact decimal) here
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
}

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
double evaluate(Model& net, const dl::data::TensorDataset& set) {
  dl::autograd::pause no_tape;
  net.eval();
  dl::data::DataLoader loader(set, {.batch_size = 1000, .shuffle = false, .prefetch = 1});
  dl::util::Accuracy acc;
  for (const auto& batch : loader) acc.update(net(batch.x), batch.y);
  net.train();
  return acc.value();
}

inline dl::data::TensorDataset first_n(const dl::data::MnistData& d, int64_t n) {
  if (n <= 0 || n >= d.images.shape(0)) return dl::data::TensorDataset(d.images, d.labels);
  return dl::data::TensorDataset(d.images.slice(0, 0, n), d.labels.slice(0, 0, n));
}

// Trains `net` on Fashion-MNIST with the flags in `c`; returns the process exit code.
template <class Model>
int run_training(const char* name, Model& net, const TrainConfig& c) {
  using Clock = std::chrono::steady_clock;
  if (c.threads > 0) dl::set_num_threads(c.threads);
  std::printf("%s: backend cpu (Eigen %d.%d.%d GEMM, dl thread pool), %d threads, seed %llu\n", name, EIGEN_WORLD_VERSION,
              EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION, dl::num_threads(), static_cast<unsigned long long>(c.seed));
  auto train = dl::data::load_mnist(c.data_dir, dl::data::Split::train);
  auto test = dl::data::load_mnist(c.data_dir, dl::data::Split::test);
  dl::data::TensorDataset train_set = first_n(train, c.limit_train), test_set = first_n(test, c.limit_test);
  std::printf("%s: %lld training and %lld test images from %s\n", name, static_cast<long long>(train_set.size()),
              static_cast<long long>(test_set.size()), c.data_dir.c_str());

  dl::data::DataLoader loader(train_set,
                              {.batch_size = c.batch_size, .shuffle = true, .seed = c.seed, .transform = c.train_transform});
  auto opt = make_optimizer(c, net.named_parameters());
  const int64_t steps_per_epoch = (train_set.size() + c.batch_size - 1) / c.batch_size;
  auto schedule = make_schedule(c, steps_per_epoch * c.epochs);
  std::optional<dl::util::MetricsLog> log;
  if (!c.log_path.empty()) log.emplace(c.log_path);

  int64_t step = 0;
  double test_acc = 0;
  dl::check<dl::ValueError>(!c.resume || !c.checkpoint_path.empty(), "--resume needs --checkpoint PATH");
  if (c.resume && std::filesystem::exists(c.checkpoint_path)) {
    auto ck = dl::io::load_checkpoint(c.checkpoint_path);
    dl::io::restore_checkpoint(ck, net, *opt);
    loader.load_state(ck.loader);
    step = ck.step;
    std::printf("%s: resumed from %s at step %lld (epoch %lld, batch %lld)\n", name, c.checkpoint_path.c_str(),
                static_cast<long long>(step), static_cast<long long>(ck.loader.epoch + 1),
                static_cast<long long>(ck.loader.next_batch));
  } else if (c.resume) {
    std::printf("%s: no checkpoint at %s yet; starting from scratch\n", name, c.checkpoint_path.c_str());
  }
  auto save = [&](int64_t epoch) {
    if (c.checkpoint_path.empty()) return;
    dl::io::save_checkpoint(c.checkpoint_path, dl::io::make_checkpoint(net, *opt, step, epoch, loader.state()));
  };
  std::FILE* step_log = c.step_log_path.empty() ? nullptr : std::fopen(c.step_log_path.c_str(), "a");
  dl::check<dl::IoError>(c.step_log_path.empty() || step_log, "--step-log: cannot open '", c.step_log_path, "'");
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
      dl::NDArray<float> logits, loss;
      {
        dl::autograd::record rec;
        logits = net(batch.x);
        loss = dl::cross_entropy(logits, batch.y, c.label_smoothing);
      }
      loss.backward();  // grad_req write: each backward overwrites the gradients, no zero_grad needed
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
    test_acc = evaluate(net, test_set);
    std::printf("%s\n", dl::util::epoch_summary(epoch, c.epochs, {{"loss", loss_mean.value()}, {"train_acc", train_acc.value()},
                                                                  {"test_acc", test_acc}}, seconds, throughput).c_str());
    std::fflush(stdout);
    if (log) {
      log->write({{"epoch", epoch}, {"loss", loss_mean.value()}, {"train_acc", train_acc.value()}, {"test_acc", test_acc},
                  {"lr", opt->lr()}, {"seconds", seconds}, {"samples_per_s", throughput}});
    }
  }
  if (step_log) std::fclose(step_log);
  double total = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("%s: test accuracy %.4f after %d epochs (%.1f s)\n", name, test_acc, c.epochs, total);
  if (!c.plot_path.empty()) {
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
    return body();
  } catch (const dl::Error& e) {
    std::fprintf(stderr, "%s: error: %s\n", app.get_name().c_str(), e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", app.get_name().c_str(), e.what());
    return 1;
  }
}

}  // namespace examples
