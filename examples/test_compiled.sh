#!/bin/sh
# --compiled trains the same model as eager execution: the per-step losses of train_mlp agree
# (to a relative 1e-4; today they are bit-identical) and so do the test accuracies.
# Usage: test_compiled.sh <train_mlp executable> [data dir]. Skips (passes, says so) without the data.
set -u
. "$(dirname "$0")/test_lib.sh"
example_test_setup test_compiled "$@"
# Two hidden layers with dropout (the same Philox masks both ways) and label smoothing; the last
# batch is partial (2050 = 20 x 100 + 50), so each graph re-plans once for a new shape.
common="--data-dir $data --epochs 2 --limit-train 2050 --limit-test 500 --batch-size 100 --hidden 64,32 --dropout 0.2
  --label-smoothing 0.1 --seed 5 --threads 2"
"$exe" $common --step-log "$work/eager.log" >"$work/eager.out" 2>&1 || { bad "eager run failed"; cat "$work/eager.out"; }
"$exe" $common --compiled --step-log "$work/compiled.log" >"$work/compiled.out" 2>&1 ||
  { bad "compiled run failed"; cat "$work/compiled.out"; }
if [ "$(wc -l <"$work/compiled.log")" -ne 42 ]; then bad "expected 42 steps, got $(wc -l <"$work/compiled.log")"; fi
paste "$work/eager.log" "$work/compiled.log" | awk '
  { d = $2 - $4; if (d < 0) d = -d; r = d / ($2 > 0 ? $2 : 1); if (r > worst) { worst = r; at = $1 } }
  END { printf "test_compiled: largest relative loss difference %.3g (step %d)\n", worst, at; exit worst > 1e-4 }' || fail=1
acc_eager=$(grep -a "test accuracy" "$work/eager.out" | awk '{print $4}')
acc_compiled=$(grep -a "test accuracy" "$work/compiled.out" | awk '{print $4}')
echo "test_compiled: test accuracy eager $acc_eager, compiled $acc_compiled"
awk -v a="$acc_eager" -v b="$acc_compiled" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d <= 0.01) }' ||
  bad "test accuracies differ by more than 0.01"
# A depth beyond the compiled variants is a clear error, not a crash.
if "$exe" --data-dir "$data" --compiled --hidden 8,8,8,8 --epochs 1 --limit-train 100 >"$work/deep.out" 2>&1; then
  bad "--compiled with 4 hidden layers should fail"
elif ! grep -q "compiled MLP has 1 to 3 hidden layers, got 4" "$work/deep.out"; then
  bad "unexpected error for 4 hidden layers:"; cat "$work/deep.out"
fi
example_test_finish
