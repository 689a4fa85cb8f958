#!/bin/sh
# Builds and runs one libFuzzer target:  fuzz/run.sh <idx|safetensors|npy> <seconds> [extra libFuzzer flags]
# Needs clang++ with the libFuzzer runtime (Debian: apt-get install clang libclang-rt-14-dev).
# Build output goes to fuzz/build/ (ignored); new corpus entries go to fuzz/build/corpus-<target>/
# so the committed seed corpus fuzz/corpus/<target>/ stays small. Crashes land in
# fuzz/build/crash-<target>-*: copy each to tests/fixtures/regressions/<target>/ (see docs/formats.md).
# DL_FUZZ_INCLUDE=<dir> builds against another include folder (e.g. a patched copy).
set -eu
target=${1:?usage: fuzz/run.sh <idx|safetensors|npy> <seconds>}
seconds=${2:?usage: fuzz/run.sh <idx|safetensors|npy> <seconds>}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build="$here/build"
mkdir -p "$build" "$build/corpus-$target"
cxx=${CXX_FUZZ:-clang++}
exe="$build/fuzz_$target"
if [ ! -x "$exe" ] || [ "$here/fuzz_$target.cpp" -nt "$exe" ] || [ -n "$(find "$root/include/dl" -newer "$exe" -name '*.hpp' | head -1)" ]; then
  echo "building $exe"
  $cxx -std=c++20 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=undefined -fopenmp -I"${DL_FUZZ_INCLUDE:-$root/include}" $(pkg-config --cflags eigen3) \
    "$here/fuzz_$target.cpp" -o "$exe" -lz
fi
# -rss_limit_mb / -malloc_limit_mb: a reader that allocates what a hostile header promises fails here.
exec "$exe" "$build/corpus-$target" "$here/corpus/$target" \
  -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=65536 \
  -artifact_prefix="$build/crash-$target-" -print_final_stats=1 "$@"
