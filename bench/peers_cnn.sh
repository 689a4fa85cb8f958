#!/usr/bin/env bash
# peers_cnn driver: dl vs libtorch 1.13 (C++) vs MXNet 1.9.1 Gluon vs PyTorch 1.13 (eager) on the
# training step of two CNNs (bench/peers_cnn.cpp says exactly which): LeNet as in
# examples/train_lenet.cpp and ResNet-20 as in examples/train_resnet.cpp, synthetic 1x28x28 images
# with 10 classes in memory, cross-entropy, SGD lr 0.01 momentum 0.9 weight decay 5e-4, batch 64
# and 128, at 1 and 2 threads on every side. Installs the peers it can, says which are
# unavailable, builds the C++ sides, runs everything one after another (never two at once) and
# prints one table: samples/s per side, and the ratio dl / peer.
#
#   bash bench/peers_cnn.sh                          # everything, 2 rounds (~15 min on 2 quiet cores)
#   bash bench/peers_cnn.sh --threads 2 --quick      # batch 64 only, short repeats (smoke run)
#   bash bench/peers_cnn.sh --model lenet --batch 128   # other arguments go to every side
#   bash bench/peers_cnn.sh --builddir build         # the dl side from a configured Meson dir
#   bash bench/peers_cnn.sh --no-install --rounds 3 --include ../wip/include
# Work folder (venv, binaries, raw JSON rows): $DL_PEERS_WORK, default ~/.cache/dl-bench-peers.
# Each side and thread count is capped at $DL_PEERS_TIMEOUT seconds (default 300).
#
# Every side: 5 warm-up steps, then repeats of >= 1 s (at least 3 steps), median of 5 repeats; the
# spread is (max - min) / median. The whole sequence runs --rounds times (sides interleaved); the
# table keeps each side's best round and shows the worst in brackets.
# Best configuration of each peer (shared/BENCHMARKING.md):
#   libtorch: OPENBLAS_NUM_THREADS=1, torch::set_num_threads(n); convolutions in oneDNN
#   MXNet:    hybridize(static_alloc, static_shape) for net and loss, OMP_NUM_THREADS=n,
#             mx.nd.waitall() before reading the clock; threaded engine and NaiveEngine both run,
#             the better is the "MXNet" row; convolutions in oneDNN (the pip wheel's MKL-DNN)
#   PyTorch:  eager, torch.set_num_threads(n), OPENBLAS_NUM_THREADS=1, zero_grad(set_to_none=True)
#   dl:       set_num_threads(n): dl's thread pool (im2col + GEMM convolutions)
# The shared machinery (install, build, run, table) is bench/peers_common.sh.
# The machine has 2 cores shared with others: the load average is printed; run it when quiet.
set -uo pipefail
peers_name=peers_cnn
peers_title="CNN training step (LeNet, ResNet-20; 1x28x28, 10 classes)"
peers_help_lines=2,29
source "$(dirname "${BASH_SOURCE[0]}")/peers_common.sh"
peers_main "$@"
