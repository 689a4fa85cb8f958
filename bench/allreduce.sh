#!/usr/bin/env bash
# Builds and runs bench/allreduce.cpp on 4 ranks with 2 simulated nodes (the figures in
# docs/distributed.md). Usage: bench/allreduce.sh [max MB, default 256] [check|nocheck] [median|min]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=${TMPDIR:-/tmp}/dl_bench_allreduce
mpicxx -std=c++20 -O2 -march=native -DOMPI_SKIP_MPICXX -I"$root/include" -I/usr/include/eigen3 \
  "$root/bench/allreduce.cpp" -o "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 DL_DIST_RANKS_PER_NODE=2
mpirun -np 4 --oversubscribe -x DL_DIST_RANKS_PER_NODE -x OMP_NUM_THREADS "$out" "${1:-256}" ${2:-check} ${3:-median}
