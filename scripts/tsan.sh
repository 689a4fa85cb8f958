#!/usr/bin/env bash
# ThreadSanitizer run of the threaded parts: the thread pool (core/parallel.hpp) and the data
# loader's prefetch thread. Ends with "N passed, N failed" (doctest test cases).
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh || exit 1
out=build-tsan
mkdir -p "$out"
export TSAN_OPTIONS=halt_on_error=1
passed=0; failed=0
for t in tests/core/test_parallel.cpp tests/data/test_dataloader.cpp; do
  exe="$out/$(basename "$t" .cpp)"
  if ! g++ -std=c++20 -O1 -g -fsanitize=thread -pthread -Iinclude -Itests -I/usr/include/eigen3 \
       tests/main.cpp "$t" -o "$exe" -lz 2>"$exe.build.log"; then
    echo "tsan: $t failed to build"; tail -5 "$exe.build.log"; failed=$((failed + 1)); continue
  fi
  "$exe" >"$exe.log" 2>&1
  rc=$?
  line=$(grep -E "^\[doctest\] test cases:" "$exe.log" | tail -1)
  echo "tsan: $(basename "$t"): $line"
  p=$(echo "$line" | awk '{for (i=1;i<=NF;i++) if ($(i+1)=="passed") print $i}')
  f=$(echo "$line" | awk '{for (i=1;i<=NF;i++) if ($(i+1)=="failed") print $i}')
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
  if [ $rc -ne 0 ] && [ "${f:-0}" -eq 0 ]; then failed=$((failed + 1)); grep -A20 "WARNING: ThreadSanitizer" "$exe.log" | head -30; fi
done
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
