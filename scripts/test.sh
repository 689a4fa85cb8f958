#!/usr/bin/env bash
# The test command: installs dependencies, builds every test suite and runs it.
# Usage: scripts/test.sh [--sanitize] [--builddir DIR]
#   --sanitize  build with AddressSanitizer + UndefinedBehaviorSanitizer (separate build dir)
# Prints per-program doctest summaries and ends with one line "N passed, N failed" (test cases).
set -uo pipefail
cd "$(dirname "$0")/.."
sanitize=0
builddir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --sanitize) sanitize=1 ;;
    --builddir) builddir="$2"; shift ;;
    *) echo "test.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done
scripts/install-deps.sh --mpi || { echo "test.sh: installing dependencies failed" >&2; exit 1; }

if [ $sanitize -eq 1 ]; then
  builddir=${builddir:-build-sanitize}
  # MPI suites run in the release pass: Open MPI itself trips LeakSanitizer.
  opts=(-Db_sanitize=address,undefined -Db_lundef=false --buildtype=plain -Doptimization=0 -Dexamples=disabled -Dbench=disabled -Dmpi=disabled)
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
else
  builddir=${builddir:-build-test}
  opts=(--buildtype=release)
fi
if [ -d "$builddir" ]; then
  meson setup --reconfigure "$builddir" "${opts[@]}" >/dev/null || exit 1
else
  meson setup "$builddir" "${opts[@]}" >/dev/null || exit 1
fi
ninja -C "$builddir" -j"$(nproc)" >"$builddir/ninja.log" 2>&1 || { tail -40 "$builddir/ninja.log"; echo "test.sh: build failed" >&2; exit 1; }

meson test -C "$builddir" --num-processes 1 --print-errorlogs >"$builddir/meson-test.log" 2>&1
meson_rc=$?
grep -E "^ *[0-9]+/[0-9]+ " "$builddir/meson-test.log"

# (The MPI suite runs under meson test as the 'mpi' test: several ranks, simulated nodes.)

# Count doctest test cases from every program's summary line.
read -r passed failed < <(awk '
  /\[doctest\] test cases:/ {  # first "N passed" / "N failed" only: a line may also carry assertion counts
    dp = 0; df = 0
    for (i = 1; i <= NF; i++) {
      if (!dp && $(i+1) == "passed") { p += $i; dp = 1 }
      if (!df && $(i+1) == "failed") { f += $i; df = 1 }
    }
  }
  END { print p + 0, f + 0 }' "$builddir/meson-logs/testlog.txt")
# A program that crashed prints no summary: count it as one failed case.
crashed=$(grep -cE "^ *[0-9]+/[0-9]+ .*(FAIL|TIMEOUT)" "$builddir/meson-test.log" || true)
no_summary=0
if [ "$meson_rc" -ne 0 ] && [ "$failed" -eq 0 ]; then no_summary=$crashed; fi
failed=$((failed + no_summary))
echo "$passed passed, $failed failed"
[ "$meson_rc" -eq 0 ] && [ "$failed" -eq 0 ]
