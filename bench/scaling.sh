#!/usr/bin/env bash
# Data-parallel figures of docs/distributed.md, in one go: overlap of allreduce with backward
# (bench_overlap, 2 ranks), weak scaling 1 -> 2 ranks (bench_scaling, two model sizes), the
# hierarchical allreduce table (bench_allreduce, 4 ranks = 2 simulated nodes, fastest repetition)
# and the alpha-beta projection fitted to that table (scaling_model.py).
# Usage: bench/scaling.sh [build dir, default build]   (configure it with -Dmpi=enabled)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
cd "$root"
ninja -C "$build" bench/bench_overlap bench/bench_scaling bench/bench_allreduce >/dev/null
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mpi=(mpirun --oversubscribe --mca btl_vader_single_copy_mechanism none -x OMP_NUM_THREADS)
echo "# $(date -u +%F) $(nproc --all) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
"${mpi[@]}" -np 2 "$build/bench/bench_overlap"
"${mpi[@]}" -np 2 "$build/bench/bench_scaling" 256 2 128 30     # train_mlp-sized: 0.27 M parameters
"${mpi[@]}" -np 2 "$build/bench/bench_scaling" 1024 3 128 15    # 2.9 M parameters
table=$(mktemp)
DL_DIST_RANKS_PER_NODE=2 "${mpi[@]}" -x DL_DIST_RANKS_PER_NODE -np 4 "$build/bench/bench_allreduce" 64 nocheck min | tee "$table"
python3 "$root/bench/scaling_model.py" "$table"
rm -f "$table"
