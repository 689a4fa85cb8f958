#!/bin/sh
# An interrupted-and-resumed run gives bit-identical per-step losses to an uninterrupted one.
# Usage: test_resume.sh <train_mlp executable> [data dir]. Skips (passes, says so) without the data.
set -u
exe=$1
data=${2:-/usr/share/datasets/fashion-mnist}
if [ ! -f "$data/train-images-idx3-ubyte.gz" ] && [ ! -f "$data/train-images-idx3-ubyte" ]; then
  echo "test_resume: SKIPPED: no Fashion-MNIST in $data (apt-get install dataset-fashion-mnist)"
  echo "[doctest] test cases: 0 | 0 passed | 0 failed | 1 skipped"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common="--data-dir $data --epochs 2 --limit-train 2000 --batch-size 100 --dropout 0.2 --seed 3 --threads 2"
fail=0
"$exe" $common --step-log "$work/full.log" >"$work/full.out" 2>&1 || { echo "uninterrupted run failed"; cat "$work/full.out"; fail=1; }
# Interrupted at step 27 (checkpoints every 10 steps: the last one is step 20), then resumed.
"$exe" $common --checkpoint "$work/ck.safetensors" --checkpoint-every 10 --stop-after-steps 27 \
  --log "$work/m.csv" --step-log "$work/part1.log" >"$work/part1.out" 2>&1 || { echo "interrupted run failed"; cat "$work/part1.out"; fail=1; }
"$exe" $common --checkpoint "$work/ck.safetensors" --checkpoint-every 10 --resume \
  --log "$work/m.csv" --step-log "$work/part2.log" >"$work/part2.out" 2>&1 || { echo "resumed run failed"; cat "$work/part2.out"; fail=1; }
grep -q "resumed from .* at step 20" "$work/part2.out" || { echo "the resumed run did not start at step 20"; cat "$work/part2.out"; fail=1; }
head -20 "$work/part1.log" >"$work/joined.log"
cat "$work/part2.log" >>"$work/joined.log"
if [ "$(wc -l <"$work/full.log")" -ne 40 ]; then echo "expected 40 steps, got $(wc -l <"$work/full.log")"; fail=1; fi
if ! cmp -s "$work/full.log" "$work/joined.log"; then
  echo "resumed losses differ from the uninterrupted run:"
  diff "$work/full.log" "$work/joined.log" | head -10
  fail=1
fi
# The metrics log continues: epoch 1's row (written before the interruption) and epoch 2's.
if [ "$(cut -d, -f1 "$work/m.csv" | tr '\n' ' ')" != "epoch 1 2 " ]; then
  echo "the metrics log lost rows across the resume:"; cat "$work/m.csv"; fail=1
fi
if [ $fail -eq 0 ]; then
  echo "test_resume: 40 steps, interrupted at 27, resumed from the step-20 checkpoint: losses bit-identical"
  echo "[doctest] test cases: 1 | 1 passed | 0 failed | 0 skipped"
else
  echo "[doctest] test cases: 1 | 0 passed | 1 failed | 0 skipped"
fi
exit $fail
