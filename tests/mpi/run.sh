#!/usr/bin/env bash
# Runs the MPI suites: every doctest program with 2, 3 and 4 ranks, flat (one shared-memory node)
# and with simulated nodes of 2 ranks (DL_DIST_RANKS_PER_NODE=2, so 3 ranks give uneven nodes);
# then the rank-failure program, which must end the job NON-zero within the watchdog bound.
# Usage: tests/mpi/run.sh <dir with the built test programs>. Exit 0 when all pass; 0 with a
# "skipping" line when MPI is not installed; 1 otherwise.
set -u
dir=${1:-.}
if ! command -v mpirun >/dev/null 2>&1; then
  echo "tests/mpi: skipping: mpirun not found (install libopenmpi-dev openmpi-bin)"
  exit 0
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_NUM_THREADS=1            # ranks share the cores; OpenMP threads would only oversubscribe more
export DL_DIST_TIMEOUT=${DL_DIST_TIMEOUT:-30}  # a wedged test ends in 30 s, not never
launch=(mpirun --oversubscribe --mca btl_vader_single_copy_mechanism none)
failures=0
summary=()

run_case() {  # name, env assignment (may be empty), ranks, program
  local label=$1 envset=$2 np=$3 prog=$4 out rc
  out=$(env $envset timeout 120 "${launch[@]}" -x DL_DIST_RANKS_PER_NODE -x DL_DIST_TIMEOUT -x OMP_NUM_THREADS \
        -np "$np" "$prog" 2>&1)
  rc=$?
  local line
  line=$(printf '%s\n' "$out" | grep -E '^\[doctest\] (test cases|assertions)' | head -2 | tr '\n' ' ')
  if [ $rc -ne 0 ]; then
    failures=$((failures + 1))
    printf '%s\n' "$out" | tail -40
    summary+=("FAIL $label np=$np $(basename "$prog"): rc=$rc $line")
  else
    summary+=("ok   $label np=$np $(basename "$prog"): $line")
  fi
}

for prog in "$dir"/test_collectives "$dir"/test_kvstore "$dir"/test_data_parallel; do
  [ -x "$prog" ] || { echo "tests/mpi: missing $prog"; failures=$((failures + 1)); continue; }
  for np in 2 3 4; do
    run_case flat "DL_DIST_RANKS_PER_NODE=" "$np" "$prog"
    run_case nodes=2 "DL_DIST_RANKS_PER_NODE=2" "$np" "$prog"
  done
done

# Rank failure: must exit non-zero, and within bound + start-up slack.
bound=4
for mode in exit throw stall; do
  start=$(date +%s%N)
  out=$(DL_DIST_TIMEOUT=$bound timeout 60 "${launch[@]}" -x DL_DIST_TIMEOUT -x OMP_NUM_THREADS -np 3 \
        "$dir"/rank_failure "$mode" 2>&1)
  rc=$?
  took_ms=$((($(date +%s%N) - start) / 1000000))  # integer shell arithmetic: no bc needed
  took="$((took_ms / 1000)).$(printf '%03d' $((took_ms % 1000)))"
  if [ $rc -ne 0 ] && [ $took_ms -lt $(((bound + 10) * 1000)) ]; then
    summary+=("ok   rank failure ($mode): job exited rc=$rc after $took s (bound ${bound} s + 10 s start-up slack)")
  else
    failures=$((failures + 1))
    printf '%s\n' "$out" | tail -20
    summary+=("FAIL rank failure ($mode): rc=$rc after $took s (bound ${bound} s)")
  fi
  if [ "$mode" = stall ] && ! printf '%s\n' "$out" | grep -q "did not finish within"; then
    failures=$((failures + 1))
    summary+=("FAIL rank failure (stall): no watchdog message in the output")
  fi
done

printf '%s\n' "${summary[@]}"
if [ $failures -ne 0 ]; then
  echo "tests/mpi: $failures failure(s)"
  exit 1
fi
echo "tests/mpi: all passed"
