#!/bin/sh
# train_mlp --dist under mpirun with 2 ranks (meson test 'train_mlp_dist', suites examples and mpi):
#  1. one epoch on 2048 samples: exit 0, rank 0 alone prints (one summary line), the summed test
#     accuracy is over all 500 test samples and beats chance by far, log and checkpoint written;
#  2. interrupted at step 11 (checkpoint every 8 steps) and resumed: the per-step losses equal an
#     uninterrupted --dist run exactly;
#  3. ranks with different models (MPMD launch): non-zero exit naming the first difference.
# Usage: train_dist.sh <train_mlp executable> [data dir]. Skips (passes, says so) without mpirun/data.
set -u
. "$(dirname "$0")/../../examples/test_lib.sh"
test_name=train_dist
command -v mpirun >/dev/null 2>&1 || example_test_skip "mpirun not found"
example_test_setup train_dist "$@"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 DL_DIST_TIMEOUT=30
mpi="timeout 60 mpirun --oversubscribe --mca btl_vader_single_copy_mechanism none -x DL_DIST_TIMEOUT -np 2"

# 1. One epoch.
$mpi "$exe" --dist --data-dir "$data" --epochs 1 --limit-train 2048 --limit-test 500 --batch-size 64 --threads 1 \
  --log "$work/log.csv" --checkpoint "$work/one.safetensors" >"$work/one.out" 2>&1 || bad "one-epoch run exited non-zero"
grep -q "data-parallel over 2 ranks" "$work/one.out" || bad "no 'data-parallel over 2 ranks' line"
[ "$(grep -c '^epoch 1/1:' "$work/one.out")" -eq 1 ] || bad "expected exactly one epoch summary (rank 0 alone prints)"
[ "$(grep -c 'test accuracy' "$work/one.out")" -eq 1 ] || bad "expected exactly one final accuracy line"
acc=$(sed -n 's/.*test accuracy \([0-9.]*\).*/\1/p' "$work/one.out")
awk -v a="${acc:-0}" 'BEGIN { exit !(a >= 0.45 && a <= 1) }' || bad "test accuracy '$acc' is not in [0.45, 1] (chance: 0.1)"
# 500 test samples split 250 + 250 and summed: the accuracy is a multiple of 1/500.
awk -v a="${acc:-0}" 'BEGIN { c = a * 500; exit !(c - int(c + 0.5) < 1e-3 && int(c + 0.5) - c < 1e-3) }' ||
  bad "test accuracy $acc is not k/500"
[ "$(wc -l <"$work/log.csv" 2>/dev/null || echo 0)" -eq 2 ] || bad "log.csv should have a header and one row"
[ -s "$work/one.safetensors" ] || bad "no checkpoint written"
[ -z "$(ls "$work" | grep -i tmp)" ] || bad "temporary files left behind: $(ls "$work")"

# 2. Resume: 16 steps per epoch (2048 / 2 ranks / 64), 2 epochs = 32 steps.
common="--dist --data-dir $data --epochs 2 --limit-train 2048 --limit-test 100 --batch-size 64 --threads 1 --dropout 0.1 --seed 5"
$mpi "$exe" $common --step-log "$work/full.log" >"$work/full.out" 2>&1 || bad "uninterrupted run exited non-zero"
$mpi "$exe" $common --checkpoint "$work/ck.safetensors" --checkpoint-every 8 --stop-after-steps 11 \
  --step-log "$work/part1.log" >"$work/part1.out" 2>&1 || bad "interrupted run exited non-zero"
$mpi "$exe" $common --checkpoint "$work/ck.safetensors" --checkpoint-every 8 --resume \
  --step-log "$work/part2.log" >"$work/part2.out" 2>&1 || bad "resumed run exited non-zero"
grep -q "resumed from .* at step 8" "$work/part2.out" || bad "the resumed run did not start at step 8"
head -8 "$work/part1.log" >"$work/joined.log" 2>/dev/null
cat "$work/part2.log" >>"$work/joined.log" 2>/dev/null
[ "$(wc -l <"$work/full.log" 2>/dev/null || echo 0)" -eq 32 ] || bad "expected 32 logged steps (rank 0 only)"
cmp -s "$work/full.log" "$work/joined.log" || { bad "resumed losses differ from the uninterrupted run"; diff "$work/full.log" "$work/joined.log" | head -5; }

# 3. Different models on the two ranks.
timeout 60 mpirun --oversubscribe --mca btl_vader_single_copy_mechanism none -x DL_DIST_TIMEOUT \
  -np 1 "$exe" --dist --data-dir "$data" --limit-train 256 --hidden 32 : \
  -np 1 "$exe" --dist --data-dir "$data" --limit-train 256 --hidden 48 >"$work/diff.out" 2>&1
rc=$?
[ $rc -ne 0 ] || bad "ranks with different models exited 0"
grep -q "parameters differ across ranks: parameter #0" "$work/diff.out" || bad "no message naming the first difference"

if [ $fail -ne 0 ]; then
  for f in one full part1 part2 diff; do echo "--- $f.out"; tail -15 "$work/$f.out" 2>/dev/null; done
fi
example_test_finish "all passed (test accuracy $acc after 1 epoch on 2 ranks)"
