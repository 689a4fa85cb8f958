#!/usr/bin/env bash
# Compiles every CUDA target (tests/gpu/*.cu, bench/gpu/*.cu) with nvcc for sm_90 and runs none of
# them: CI's check that the CUDA backend still builds on a machine without a GPU.
# Usage: scripts/cuda-compile-check.sh [--builddir DIR] [--fast]     (default: build-cuda-check)
#   --fast: no optimisation (host -O0, ptxas -O0): the same errors in about 60% of the time, for CI;
#           the programs are slow, so bench/gpu/check.sh builds without it.
# nvcc is taken from $NVCC, else PATH, else /usr/local/cuda/bin. Without nvcc it prints
# "cuda-compile-check: skipped: nvcc not found" and exits 0. Ends with one line
# "cuda-compile-check: ok (N targets, S s)" or "cuda-compile-check: FAILED ...".
set -uo pipefail
cd "$(dirname "$0")/.."
builddir=build-cuda-check
fast=0
while [ $# -gt 0 ]; do
  case "$1" in
    --builddir) builddir="$2"; shift ;;
    --fast) fast=1 ;;
    *) echo "cuda-compile-check: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done
nvcc_path=${NVCC:-}
if [ -z "$nvcc_path" ]; then
  if command -v nvcc >/dev/null 2>&1; then nvcc_path=$(command -v nvcc)
  elif [ -x /usr/local/cuda/bin/nvcc ]; then nvcc_path=/usr/local/cuda/bin/nvcc
  fi
fi
if [ -z "$nvcc_path" ] || [ ! -x "$nvcc_path" ]; then
  echo "cuda-compile-check: skipped: nvcc not found (set NVCC or put nvcc on PATH)"
  exit 0
fi
export PATH="$(dirname "$nvcc_path"):$PATH"
start=$(date +%s)
opts=(-Dcuda=enabled -Dtests=enabled -Dbench=enabled -Dexamples=disabled -Dmpi=disabled --buildtype=release)
if [ $fast -eq 1 ]; then
  opts=(-Dcuda=enabled -Dtests=enabled -Dbench=enabled -Dexamples=disabled -Dmpi=disabled --buildtype=plain
        -Dcuda_args=--ptxas-options=-O0)
fi
setup_ok=1
if [ -f "$builddir/meson-private/coredata.dat" ]; then
  meson setup --reconfigure "$builddir" "${opts[@]}" >"$builddir.setup.log" 2>&1 || setup_ok=0
fi
if [ $setup_ok -eq 0 ] || [ ! -f "$builddir/meson-private/coredata.dat" ]; then
  # A half-configured meson directory (an earlier failed setup) cannot be reconfigured: start over.
  if [ -d "$builddir/meson-private" ]; then rm -rf "$builddir"; fi
  setup_ok=1
  meson setup "$builddir" "${opts[@]}" >"$builddir.setup.log" 2>&1 || setup_ok=0
fi
if [ $setup_ok -eq 0 ]; then
  tail -30 "$builddir.setup.log"
  echo "cuda-compile-check: FAILED (meson setup; log in $builddir.setup.log)"
  exit 1
fi
rm -f "$builddir.setup.log"
# The CUDA targets: every target with a .cu source (tests/gpu, bench/gpu).
mapfile -t targets < <(meson introspect --targets "$builddir" | python3 -c '
import json, os, sys
for t in json.load(sys.stdin):
    srcs = [s for g in t.get("target_sources", []) for s in g.get("sources", [])]
    if any(s.endswith(".cu") for s in srcs):
        for f in t["filename"]:
            print(os.path.relpath(f, sys.argv[1]))
' "$(cd "$builddir" && pwd)")
if [ ${#targets[@]} -eq 0 ]; then
  echo "cuda-compile-check: FAILED (no CUDA targets configured)"
  exit 1
fi
echo "cuda-compile-check: nvcc $("$nvcc_path" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), building ${#targets[@]} targets: ${targets[*]}"
if ! ninja -C "$builddir" -j"$(nproc)" "${targets[@]}" >"$builddir/cuda-compile.log" 2>&1; then
  grep -E "error|Error" "$builddir/cuda-compile.log" | head -40
  echo "cuda-compile-check: FAILED (build; log in $builddir/cuda-compile.log)"
  exit 1
fi
echo "cuda-compile-check: ok (${#targets[@]} targets, $(( $(date +%s) - start )) s)"
