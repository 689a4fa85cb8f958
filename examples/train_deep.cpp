// train_deep: a 1000-block residual MLP on Fashion-MNIST, trained with sublinear memory.
//
//   784 -> Dense -> [ h + s * fc2(dropout(relu(fc1 h))) ] x depth -> relu -> Dense -> 10
//
// The blocks are one dl::graph::repeat; --checkpoint picks the policy (none, sqrt, every=K,
// budget=BYTES); --compiled (the common trainer's flag) runs each block as a compiled graph
// (graph::compile with per-call memory: one tape node per block, inside the same segments). s = 1/sqrt(depth) by default keeps the stack close to the identity at the start,
// so a thousand blocks train without normalisation. Before training, it prints the planned memory
// of the blocks and the measured peak of one training step: the allocator's peak minus what was
// allocated before the step (parameters, gradients, optimizer state, the batch).
//
//   build-release/examples/train_deep                                    # depth 1000, sqrt, 1 epoch
//   build-release/examples/train_deep --depth 1000 --checkpoint none --limit-train 12800
//   build-release/examples/train_deep --checkpoint budget=4M --width 128 --epochs 3 --log deep.csv
//   build-release/examples/train_deep --compiled --checkpoint sqrt
//
// The other flags are the common trainer's (examples/common/trainer.hpp), except that the file of
// a training checkpoint is --save-checkpoint here: --checkpoint is the policy.
#include <cmath>
#include <string>

#include "common/trainer.hpp"
#include "dl/graph/repeat.hpp"
#include "dl/nn/dense.hpp"
#include "dl/nn/dropout.hpp"

constexpr float kMean = 0.2860f, kStd = 0.3530f;  // Fashion-MNIST pixel statistics

class ResidualBlock : public dl::nn::Module {
 public:
  dl::nn::Dense fc1, fc2;
  dl::nn::Dropout dropout;

  ResidualBlock(int64_t width, int64_t hidden, float scale, double dropout_p)
      : fc1(width, hidden), fc2(hidden, width), dropout(dropout_p), scale_(scale) {
    register_module("fc1", &ResidualBlock::fc1);
    register_module("fc2", &ResidualBlock::fc2);
    register_module("dropout", &ResidualBlock::dropout);
  }
  // One template for arrays (eager) and graph symbols (--compiled).
  template <class X>
  auto forward(const X& x) {
    return x + scale_ * fc2(dropout(dl::relu(fc1(x))));  // scale, add: one fused pass
  }
  template <class X>
  auto operator()(const X& x) { return forward(x); }

 private:
  float scale_;
};

class DeepMlp : public dl::nn::Module {
 public:
  dl::nn::Dense stem;
  dl::graph::Repeat<ResidualBlock> body;
  dl::nn::Dense head;

  DeepMlp(int64_t depth, int64_t width, int64_t hidden, float scale, double dropout_p, dl::graph::checkpoint::Policy policy,
          bool compiled)
      : stem(784, width),
        body([&] { return ResidualBlock(width, hidden, scale, dropout_p); }, depth, std::move(policy),
             dl::graph::RepeatOptions{.compiled = compiled}),
        head(width, 10) {
    register_module("stem", &DeepMlp::stem);
    register_module("body", &DeepMlp::body);
    register_module("head", &DeepMlp::head);
  }
  // x: (batch, 1, 28, 28) images in [0, 1] -> (batch, 10) logits.
  template <class X>
  auto forward(const X& x) {
    dl::NDArray<float> h = stem((x.reshape({x.shape(0), -1}) - kMean) / kStd);
    return head(dl::relu(body(h)));
  }
  template <class X>
  auto operator()(const X& x) { return forward(x); }
  // --compiled (examples/common/trainer.hpp): each block a compiled graph, one tape node each,
  // inside the checkpointed segments; the step itself stays eager.
  void compile_blocks() { body.set_compiled(true); }
};

// Bytes of every parameter, gradient buffer and optimizer state the step keeps, and the peak of
// one step above them, measured on a copy of the model (training the copy changes nothing).
void report_memory(const DeepMlp& net, const examples::TrainConfig& config, int64_t width) {
  using dl::graph::checkpoint::format_bytes;
  DeepMlp copy = dl::nn::clone(net);
  const dl::PhiloxState rng = dl::default_generator().state();  // the run's own numbers stay the same
  auto plan = copy.body.memory_plan(dl::Shape{config.batch_size, width});
  auto opt = examples::make_optimizer(config, copy.named_parameters());
  auto x = dl::rand<float>({config.batch_size, 1, 28, 28});
  auto y = dl::zeros<int64_t>({config.batch_size});
  auto step = [&] {
    dl::NDArray<float> loss;
    {
      dl::autograd::record rec;
      loss = dl::cross_entropy(copy(x), y);
    }
    loss.backward();
    opt->step();
  };
  step();  // creates the gradient buffers and the optimizer state
  const int64_t before = dl::cpu_allocator().stats().bytes_in_use;
  dl::cpu_allocator().reset_peak();
  step();
  const int64_t peak = dl::cpu_allocator().stats().peak_bytes_in_use - before;
  dl::default_generator().set_state(rng);
  int64_t param_bytes = 0;
  for (const auto& p : net.parameters()) param_bytes += p.numel() * static_cast<int64_t>(sizeof(float));
  std::printf("train_deep: %lld %s blocks, checkpoint %s: %s\n", static_cast<long long>(copy.body.size()),
              copy.body.compiled() ? "compiled" : "eager", copy.body.policy().to_string().c_str(), plan.to_string().c_str());
  std::printf("train_deep: planned %s for the blocks' activations; measured step peak %s above parameters (%s), "
              "gradients and optimizer state\n",
              format_bytes(plan.planned_bytes()).c_str(), format_bytes(peak).c_str(), format_bytes(param_bytes).c_str());
  std::fflush(stdout);
}

int main(int argc, char** argv) {
  CLI::App app{"Train a 1000-block residual MLP on Fashion-MNIST with checkpointing", "train_deep"};
  examples::TrainConfig config;
  config.epochs = 1;
  config.lr = 0.02;
  config.checkpoint_flag = "--save-checkpoint";
  int64_t depth = 1000, width = 64, hidden = 64;
  double scale = 0, dropout = 0;
  std::string checkpoint = "sqrt";
  examples::add_common_flags(app, config);
  app.add_option("--depth", depth, "residual blocks")->check(examples::kPositive)->capture_default_str();
  app.add_option("--width", width, "width of the residual stream")->check(examples::kPositive)->capture_default_str();
  app.add_option("--hidden", hidden, "hidden width inside a block")->check(examples::kPositive)->capture_default_str();
  app.add_option("--residual-scale", scale, "scale of each block's branch (0: 1/sqrt(depth))")
      ->check(examples::kNonNegative)->capture_default_str();
  app.add_option("--dropout", dropout, "dropout inside each block")->check(examples::kFraction)->capture_default_str();
  // --checkpoint is the activation-checkpointing policy here; the common flag that names the
  // training-state file becomes --save-checkpoint (--resume reads that file).
  app.remove_option(app.get_option("--checkpoint"));
  app.add_option("--save-checkpoint", config.checkpoint_path,
                 "save a training checkpoint (model, optimizer, RNG, data position) here");
  app.add_option("--checkpoint", checkpoint, "activation checkpointing: none | sqrt | every=K | budget=BYTES (64M, 1G)")
      ->capture_default_str();
  return examples::main_guard(app, argc, argv, [&] {
    auto policy = dl::graph::checkpoint::parse(checkpoint);
    if (config.threads > 0) dl::set_num_threads(config.threads);
    dl::manual_seed(config.seed);
    const float s = scale > 0 ? static_cast<float>(scale) : static_cast<float>(1.0 / std::sqrt(static_cast<double>(depth)));
    DeepMlp net(depth, width, hidden, s, dropout, policy, config.compiled);
    report_memory(net, config, width);
    return examples::run_training("train_deep", net, config);
  });
}
