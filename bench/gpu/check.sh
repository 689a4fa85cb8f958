#!/usr/bin/env bash
# bench/gpu/check.sh: the one GPU check of issue #8. On a machine with a GPU, nvcc, Eigen, doctest,
# NCCL, cuDNN and PyTorch (no network needed) it
#   1. builds every CUDA target (scripts/cuda-compile-check.sh, build dir build-gpu),
#   2. runs the GPU test suite (meson test --suite gpu: GPU vs CPU, float64 gradcheck),
#   3. runs the GPU benchmarks: fused elementwise vs device copy bandwidth (target >= 0.85),
#      MLP training steps dl vs PyTorch eager (bench_gpu_mlp, mlp_torch.py), ResNet-18/50 training
#      at batch 128, 224x224, fp32 and TF32, dl vs PyTorch (bench_gpu_resnet, resnet_torch.py),
# and prints a summary table last. Budget: 6 minutes on one H100 (build ~2-3 min on 16 cores).
# Exit status 0 only when everything ran and no test failed. Without a GPU the build still runs
# and the run part fails clearly ("no GPU").
#
# Usage: bench/gpu/check.sh [--builddir DIR] [--quick] [--prebuilt DIR]
#   --quick          2^26 floats, fewer steps
#   --prebuilt DIR   skip the build: run the test and bench programs found in DIR (built on another
#                    machine with the same nvcc, e.g. by scripts/cuda-compile-check.sh and copied
#                    flat into DIR), for a GPU machine without Eigen/doctest or to save its time.
# CUDA libraries (cuBLAS, cuDNN, NCCL) the programs cannot find are looked up under /usr/local/cuda*
# and python3's site-packages/nvidia/*/lib and added to LD_LIBRARY_PATH.
set -uo pipefail
cd "$(dirname "$0")/../.."
builddir=build-gpu
quick=0
prebuilt=""
while [ $# -gt 0 ]; do
  case "$1" in
    --builddir) builddir="$2"; shift ;;
    --quick) quick=1 ;;
    --prebuilt) prebuilt="$2"; shift ;;
    *) echo "check.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done
logdir="$builddir-logs"
mkdir -p "$logdir"
rows=()
status=0
row() { rows+=("$1|$2|$3"); }
summary() {
  echo
  echo "=== bench/gpu/check.sh summary ($(date -u +%Y-%m-%dT%H:%M:%SZ), logs in $logdir) ==="
  printf '%-28s %-10s %s\n' "step" "result" "detail"
  for r in "${rows[@]}"; do
    IFS='|' read -r a b c <<<"$r"
    printf '%-28s %-10s %s\n' "$a" "$b" "$c"
  done
}
t0=$(date +%s)

# ---- 1. build -----------------------------------------------------------------------------------
if [ -n "$prebuilt" ]; then
  if ! ls "$prebuilt"/gpu_test_* >/dev/null 2>&1; then
    row build FAILED "--prebuilt $prebuilt holds no gpu_test_* program"
    summary
    exit 1
  fi
  row build prebuilt "$(ls "$prebuilt" | tr '\n' ' ')"
  test_bins=("$prebuilt"/gpu_test_*)
  bench_dir="$prebuilt"
elif bash scripts/cuda-compile-check.sh --builddir "$builddir" >"$logdir/build.log" 2>&1; then
  if grep -q "skipped: nvcc not found" "$logdir/build.log"; then
    row build FAILED "nvcc not found (set NVCC or PATH)"
    summary
    exit 1
  fi
  row build ok "$(tail -1 "$logdir/build.log" | sed 's/^cuda-compile-check: //')"
  test_bins=()
  bench_dir="$builddir/bench/gpu"
else
  tail -20 "$logdir/build.log"
  row build FAILED "see $logdir/build.log"
  summary
  exit 1
fi

# ---- CUDA libraries the programs do not find ----------------------------------------------------
missing_libs() { for b in "$@"; do ldd "$b" 2>/dev/null | awk '/not found/ {print $1}'; done | sort -u; }
probe=("${test_bins[@]}" "$bench_dir"/bench_gpu_*)
[ -n "$prebuilt" ] || probe=("$builddir"/tests/gpu/gpu_test_* "$bench_dir"/bench_gpu_*)
for lib in $(missing_libs "${probe[@]}"); do
  site=$(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null || true)
  found=$(for d in /usr/local/cuda*/lib* /usr/lib/x86_64-linux-gnu $site; do
            [ -d "$d" ] && find -L "$d" -maxdepth 4 -name "$lib" 2>/dev/null
          done | head -1)
  if [ -n "$found" ]; then
    export LD_LIBRARY_PATH="$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "check.sh: $lib from $found"
  else
    echo "check.sh: $lib not found anywhere"
  fi
done

# ---- the device ---------------------------------------------------------------------------------
gpu_name=""
if command -v nvidia-smi >/dev/null 2>&1; then
  gpu_name=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
fi
if [ -z "$gpu_name" ]; then
  row device "NO GPU" "nvidia-smi lists no GPU; the run part cannot pass on this machine"
  status=1
else
  row device ok "$gpu_name"
fi

# ---- 2. GPU test suite --------------------------------------------------------------------------
if [ -n "$prebuilt" ]; then
  test_rc=0
  : >"$logdir/testlog.txt"
  for t in "${test_bins[@]}"; do
    timeout 240 "$t" >>"$logdir/testlog.txt" 2>&1 || test_rc=$?
  done
  cp "$logdir/testlog.txt" "$logdir/tests.log"
  testlog="$logdir/testlog.txt"
else
  timeout 240 meson test -C "$builddir" --suite gpu --print-errorlogs --no-rebuild >"$logdir/tests.log" 2>&1
  test_rc=$?
  testlog="$builddir/meson-logs/testlog.txt"
fi
read -r passed failed < <(awk '/\[doctest\] test cases:/ {
    dp = 0; df = 0
    for (i = 1; i <= NF; i++) {
      if (!dp && $(i+1) == "passed") { p += $i; dp = 1 }
      if (!df && $(i+1) == "failed") { f += $i; df = 1 }
    }
  } END { print p + 0, f + 0 }' "$testlog" 2>/dev/null || echo "0 0")
if grep -q "gpu tests: skipped" "$testlog" 2>/dev/null; then
  row "gpu tests" SKIPPED "$(grep -h -m1 'gpu tests: skipped' "$testlog" | sed 's/^gpu tests: skipped: //') -> 0 passed, 0 failed"
  status=1
elif [ $test_rc -eq 0 ] && [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]; then
  row "gpu tests" ok "$passed passed, 0 failed"
else
  row "gpu tests" FAILED "$passed passed, $failed failed, meson rc $test_rc (see $logdir/tests.log)"
  status=1
fi

# ---- 3. benchmarks ------------------------------------------------------------------------------
log2n=28; steps=200
if [ $quick -eq 1 ]; then log2n=26; steps=50; fi
if timeout 90 "$bench_dir/bench_gpu_elementwise" --log2n $log2n >"$logdir/elementwise.log" 2>&1; then
  cat "$logdir/elementwise.log"
  ratio=$(awk '/dl fused/ {print $NF}' "$logdir/elementwise.log")
  met=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.85) ? "met" : "NOT met" }')
  row "elementwise 2^$log2n floats" ok "fused/copy bandwidth $ratio (target >= 0.85: $met)"
else
  row "elementwise 2^$log2n floats" FAILED "$(tail -1 "$logdir/elementwise.log")"
  status=1
fi
if timeout 120 "$bench_dir/bench_gpu_mlp" --steps $steps --json >"$logdir/mlp_dl.json" 2>"$logdir/mlp_dl.err"; then
  dl_ok=1
else
  dl_ok=0
  row "mlp dl" FAILED "$(tail -1 "$logdir/mlp_dl.err")"
  status=1
fi
if timeout 120 python3 bench/gpu/mlp_torch.py --steps $steps >"$logdir/mlp_torch.json" 2>"$logdir/mlp_torch.err"; then
  torch_ok=1
else
  torch_ok=0
  row "mlp torch" FAILED "$(tail -1 "$logdir/mlp_torch.err")"
  status=1
fi
if [ $dl_ok -eq 1 ]; then
  while IFS='|' read -r name result detail; do row "$name" "$result" "$detail"; done < <(
    python3 bench/gpu/summary.py mlp "$logdir/mlp_dl.json" "$logdir/mlp_torch.json")
fi

# ResNet-18 / ResNet-50 training, batch 128, 224x224, fp32 and TF32: dl vs PyTorch (target >= 0.9x).
rsteps=10
if [ $quick -eq 1 ]; then rsteps=3; fi
if [ -x "$bench_dir/bench_gpu_resnet" ]; then
  timeout 300 "$bench_dir/bench_gpu_resnet" --steps $rsteps --json >"$logdir/resnet_dl.json" 2>"$logdir/resnet_dl.err" ||
    { row "resnet dl" FAILED "$(tail -1 "$logdir/resnet_dl.err")"; status=1; }
  timeout 300 python3 bench/gpu/resnet_torch.py --steps $rsteps >"$logdir/resnet_torch.json" 2>"$logdir/resnet_torch.err" ||
    { row "resnet torch" FAILED "$(tail -1 "$logdir/resnet_torch.err")"; status=1; }
  while IFS='|' read -r name result detail; do row "$name" "$result" "$detail"; done < <(
    python3 bench/gpu/summary.py resnet "$logdir/resnet_dl.json" "$logdir/resnet_torch.json")
fi

row "wall time" "" "$(( $(date +%s) - t0 )) s"
summary
exit $status
