#!/bin/sh
# Compile-failure tests: each .cpp here must FAIL to compile, and the compiler's output must
# contain the text after "// expect: " (our static_assert / concept message, kept short).
# Usage: run.sh <source dir> <include args...> -- <compiler command...>
set -u
dir=$1; shift
incs=""
while [ "$1" != "--" ]; do incs="$incs $1"; shift; done
shift
passed=0; failed=0
for f in "$dir"/*.cpp; do
  expect=$(sed -n 's|^// expect: ||p' "$f" | head -1)
  out=$("$@" -std=c++20 -fsyntax-only $incs "$f" 2>&1)
  rc=$?
  if [ $rc -ne 0 ] && printf '%s' "$out" | grep -qF "$expect"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "compile_fail: $(basename "$f"): expected a compile error containing '$expect' (exit $rc)"
    printf '%s\n' "$out" | head -5
  fi
done
echo "[doctest] test cases: $((passed + failed)) | $passed passed | $failed failed | 0 skipped"
[ $failed -eq 0 ]
