# Shared by the example tests (examples/test_*.sh, tests/mpi/train_dist.sh): sourced, not run.
#   . "$(dirname "$0")/test_lib.sh"
#   example_test_setup NAME "$@"   # sets exe, data, work (removed on exit), fail=0; skips without data
#   bad "message"                  # records a failure
#   example_test_finish "summary"  # prints the doctest-style count line the CI totals, exits
# A test that cannot run here (no Fashion-MNIST, no mpirun) passes, says SKIPPED, and counts as skipped.

example_test_skip() {
  echo "$test_name: SKIPPED: $*"
  echo "[doctest] test cases: 0 | 0 passed | 0 failed | 1 skipped"
  exit 0
}

example_test_setup() {
  test_name=$1
  exe=$2
  data=${3:-/usr/share/datasets/fashion-mnist}
  if [ ! -f "$data/train-images-idx3-ubyte.gz" ] && [ ! -f "$data/train-images-idx3-ubyte" ]; then
    example_test_skip "no Fashion-MNIST in $data (apt-get install dataset-fashion-mnist)"
  fi
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  fail=0
}

bad() { echo "$test_name: FAIL: $*"; fail=1; }

example_test_finish() {
  if [ "$fail" -eq 0 ]; then
    [ -n "${1:-}" ] && echo "$test_name: $1"
    echo "[doctest] test cases: 1 | 1 passed | 0 failed | 0 skipped"
  else
    echo "[doctest] test cases: 1 | 0 passed | 1 failed | 0 skipped"
  fi
  exit "$fail"
}
