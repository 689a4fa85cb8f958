// Not a doctest program: run.sh starts it and expects the whole job to exit NON-zero within the
// timeout. Mode "exit": rank 1 calls std::_Exit(3) in the middle of data-parallel training.
// Mode "stall": rank 1 stops answering (sleeps) so only dl's watchdog can end the others.
// Mode "throw": rank 1 throws; the Environment's destructor aborts the job while unwinding.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "dl/dist/collectives.hpp"
#include "dl/dist/data_parallel.hpp"
#include "dl/nn/dense.hpp"
#include "dl/ops/loss.hpp"
#include "dl/optim/sgd.hpp"

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "exit";
  try {
    dl::dist::Environment env(argc, argv);
    const int rank = env.rank();
    dl::Generator gen(1);
    dl::nn::Dense net(32, 4, true, gen);
    dl::dist::DataParallel dp(net);
    dl::optim::SGD opt(net.named_parameters(), 0.1);
    for (int step = 0; step < 1000; ++step) {
      if (step == 5 && rank == 1) {
        if (!std::strcmp(mode, "exit")) std::_Exit(3);
        if (!std::strcmp(mode, "stall")) std::this_thread::sleep_for(std::chrono::seconds(120));
        if (!std::strcmp(mode, "throw")) throw std::runtime_error("rank 1 failed on purpose");
      }
      opt.zero_grad();
      dl::NDArray<float> loss;
      {
        dl::autograd::record r;
        loss = dl::cross_entropy(net(dl::randn<float>(dl::Shape{8, 32}, 0, 1, gen)),
                                 dl::zeros<int64_t>(dl::Shape{8}));
      }
      loss.backward();
      dp.synchronize();
      opt.step();
    }
    std::printf("rank %d: finished all steps (unexpected)\n", rank);
  } catch (const std::exception& e) {
    // Reached only after Environment's destructor (which aborts when unwinding) — kept for clarity.
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
