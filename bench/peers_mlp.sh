#!/usr/bin/env bash
# peers_mlp driver: dl vs libtorch 1.13 (C++) vs MXNet 1.9.1 Gluon vs PyTorch (eager) on the same
# MLP 784-256-128-10 training step (ReLU, SGD momentum 0.9, lr 0.01, cross-entropy), synthetic data
# in memory, batch 32 / 128 / 512, at 1 and 2 threads on every side. Installs the peers it can,
# says which are unavailable, builds the C++ sides, runs everything one after another (never two
# at once) and prints one table: samples/s (and steps/s) per side, and the ratio dl / peer.
#
#   bash bench/peers_mlp.sh                      # everything (installs: apt libtorch-dev python3-torch, pip mxnet)
#   bash bench/peers_mlp.sh --threads 2 --quick  # batch 32 only, short repeats (smoke run)
#   bash bench/peers_mlp.sh --no-install         # use only what is installed already
#   bash bench/peers_mlp.sh --builddir build     # build the dl side with ninja in a configured Meson dir
#   bash bench/peers_mlp.sh --rounds 3           # run the whole sequence 3 times (default 2)
#   bash bench/peers_mlp.sh --include ../wip/include   # the dl side from another include tree (try a fix)
#   bash bench/peers_mlp.sh --batch 128          # other arguments go to every side
# Work folder (venv, binaries, raw JSON rows): $DL_PEERS_WORK, default ~/.cache/dl-bench-peers.
# Each side and thread count is capped at $DL_PEERS_TIMEOUT seconds (default 300).
#
# Every side: 20 warm-up steps, then repeats of >= 0.5 s (at least 50 steps), median of 5 repeats;
# the spread is (max - min) / median of the repeats. The whole sequence runs --rounds times; the
# table keeps each side's best round (the least disturbed by other load) and shows the range.
# Best configuration of each peer (shared/BENCHMARKING.md):
#   libtorch: OPENBLAS_NUM_THREADS=1 (else OpenBLAS's pthreads and OpenMP fight), torch::set_num_threads(n)
#   MXNet:    hybridize(static_alloc, static_shape) for net and loss, OMP_NUM_THREADS=n, mx.nd.waitall()
#             before reading the clock; run with the default threaded engine and with NaiveEngine,
#             the better of the two is the "MXNet" row
#   PyTorch:  eager, torch.set_num_threads(n), OPENBLAS_NUM_THREADS=1, zero_grad(set_to_none=True)
#   dl:       set_num_threads(n): dl's thread pool runs the loops and the GEMM blocks (OpenMP before 52ca6f7)
# The shared machinery (install, build, run, table) is bench/peers_common.sh, also used by peers_cnn.sh.
# The machine has 2 cores shared with others: the load average is printed; run it when quiet.
set -uo pipefail
peers_name=peers_mlp
peers_title="MLP 784-256-128-10 training step"
peers_help_lines=2,29
source "$(dirname "${BASH_SOURCE[0]}")/peers_common.sh"
peers_main "$@"
