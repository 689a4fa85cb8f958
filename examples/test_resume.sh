#!/bin/sh
# An interrupted-and-resumed run gives bit-identical per-step losses to an uninterrupted one.
# Usage: test_resume.sh <train_mlp executable> [data dir]. Skips (passes, says so) without the data.
set -u
. "$(dirname "$0")/test_lib.sh"
example_test_setup test_resume "$@"
common="--data-dir $data --epochs 2 --limit-train 2000 --batch-size 100 --dropout 0.2 --seed 3 --threads 2"
"$exe" $common --step-log "$work/full.log" >"$work/full.out" 2>&1 || { bad "uninterrupted run failed"; cat "$work/full.out"; }
# Interrupted at step 27 (checkpoints every 10 steps: the last one is step 20), then resumed.
"$exe" $common --checkpoint "$work/ck.safetensors" --checkpoint-every 10 --stop-after-steps 27 \
  --log "$work/m.csv" --step-log "$work/part1.log" >"$work/part1.out" 2>&1 || { bad "interrupted run failed"; cat "$work/part1.out"; }
"$exe" $common --checkpoint "$work/ck.safetensors" --checkpoint-every 10 --resume \
  --log "$work/m.csv" --step-log "$work/part2.log" >"$work/part2.out" 2>&1 || { bad "resumed run failed"; cat "$work/part2.out"; }
grep -q "resumed from .* at step 20" "$work/part2.out" || { bad "the resumed run did not start at step 20"; cat "$work/part2.out"; }
head -20 "$work/part1.log" >"$work/joined.log"
cat "$work/part2.log" >>"$work/joined.log"
if [ "$(wc -l <"$work/full.log")" -ne 40 ]; then bad "expected 40 steps, got $(wc -l <"$work/full.log")"; fi
if ! cmp -s "$work/full.log" "$work/joined.log"; then
  bad "resumed losses differ from the uninterrupted run:"
  diff "$work/full.log" "$work/joined.log" | head -10
fi
# The metrics log continues: epoch 1's row (written before the interruption) and epoch 2's.
if [ "$(cut -d, -f1 "$work/m.csv" | tr '\n' ' ')" != "epoch 1 2 " ]; then
  bad "the metrics log lost rows across the resume:"; cat "$work/m.csv"
fi
example_test_finish "40 steps, interrupted at 27, resumed from the step-20 checkpoint: losses bit-identical"
