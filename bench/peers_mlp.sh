#!/usr/bin/env bash
# peers_mlp driver: dl vs libtorch 1.13 (C++) vs MXNet 1.9.1 Gluon vs PyTorch (eager) on the same
# MLP 784-256-128-10 training step (ReLU, SGD momentum 0.9, lr 0.01, cross-entropy), synthetic data
# in memory, batch 32 / 128 / 512, at 1 and 2 threads on every side. Installs the peers it can,
# says which are unavailable, builds the C++ sides, runs everything one after another (never two
# at once) and prints one table: samples/s (and steps/s) per side, and the ratio dl / peer.
#
#   bash bench/peers_mlp.sh                      # everything (installs: apt libtorch-dev python3-torch, pip mxnet)
#   bash bench/peers_mlp.sh --threads 2 --quick  # batch 32 only, short repeats (smoke run)
#   bash bench/peers_mlp.sh --no-install         # use only what is installed already
#   bash bench/peers_mlp.sh --builddir build     # build the dl side with ninja in a configured Meson dir
#   bash bench/peers_mlp.sh --rounds 3           # run the whole sequence 3 times (default 2)
#   bash bench/peers_mlp.sh --include ../wip/include   # the dl side from another include tree (try a fix)
# Work folder (venv, binaries, raw JSON rows): $DL_PEERS_WORK, default ~/.cache/dl-bench-peers.
# Each side and thread count is capped at $DL_PEERS_TIMEOUT seconds (default 300).
#
# Every side: 20 warm-up steps, then repeats of >= 0.5 s (at least 50 steps), median of 5 repeats;
# the spread is (max - min) / median of the repeats. The whole sequence runs --rounds times; the
# table keeps each side's best round (the least disturbed by other load) and shows the range.
# Best configuration of each peer (shared/BENCHMARKING.md):
#   libtorch: OPENBLAS_NUM_THREADS=1 (else OpenBLAS's pthreads and OpenMP fight), torch::set_num_threads(n)
#   MXNet:    hybridize(static_alloc, static_shape) for net and loss, OMP_NUM_THREADS=n, mx.nd.waitall()
#             before reading the clock; run with the default threaded engine and with NaiveEngine,
#             the better of the two is the "MXNet" row
#   PyTorch:  eager, torch.set_num_threads(n), OPENBLAS_NUM_THREADS=1, zero_grad(set_to_none=True)
#   dl:       set_num_threads(n): dl's thread pool runs the loops and the GEMM blocks (OpenMP before 52ca6f7)
# The machine has 2 cores shared with others: the load average is printed; run it when quiet.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
work="${DL_PEERS_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/dl-bench-peers}"
threads_list="1 2"
quick=""
install=1
builddir=""
repeats=""
side_timeout="${DL_PEERS_TIMEOUT:-300}"  # seconds per side and thread count
rounds=2
dl_include=""
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads_list="$2"; shift 2 ;;
    --quick) quick="--quick"; shift ;;
    --no-install) install=0; shift ;;
    --builddir) builddir="$2"; shift 2 ;;
    --repeats) repeats="--repeats $2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --include) dl_include="$(cd "$2" && pwd)"; shift 2 ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "peers_mlp.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$work/bin"
results="$work/results.jsonl"
: > "$results"
log() { echo "peers_mlp.sh: $*" >&2; }
sudo_cmd=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo_cmd="sudo"

# ---- peers: install what is missing -------------------------------------------------------------
have_libtorch() { [ -f /usr/include/torch/csrc/api/include/torch/torch.h ] && ls /usr/lib/x86_64-linux-gnu/libtorch_cpu.so* >/dev/null 2>&1; }
sys_python=/usr/bin/python3
have_pytorch() { "$sys_python" -c "import torch" >/dev/null 2>&1; }
mx_python="$work/mxnet-venv/bin/python"
have_mxnet() { [ -x "$mx_python" ] && "$mx_python" -c "import mxnet" >/dev/null 2>&1; }

if [ "$install" = 1 ]; then
  if ! have_libtorch || ! have_pytorch; then
    log "installing libtorch-dev and python3-torch (Debian, PyTorch 1.13)..."
    $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y libtorch-dev python3-torch > "$work/apt.log" 2>&1 ||
      { $sudo_cmd apt-get update > /dev/null 2>&1 &&
        $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y libtorch-dev python3-torch >> "$work/apt.log" 2>&1; } ||
      log "apt-get install libtorch-dev python3-torch failed (see $work/apt.log)"
  fi
  if ! have_mxnet; then
    log "installing mxnet==1.9.1 and numpy<1.24 into $work/mxnet-venv..."
    { python3 -m venv "$work/mxnet-venv" && "$work/mxnet-venv/bin/pip" install -q "mxnet==1.9.1" "numpy<1.24"; } \
      > "$work/pip.log" 2>&1 || log "pip install mxnet==1.9.1 failed (see $work/pip.log)"
  fi
fi
declare -A unavailable=()
have_libtorch || unavailable[libtorch]="libtorch-dev not installed"
have_pytorch || unavailable[PyTorch]="python3-torch not importable by $sys_python"
have_mxnet || unavailable[MXNet]="mxnet 1.9.1 not importable from $work/mxnet-venv"

# ---- build the C++ sides ------------------------------------------------------------------------
cxx="${CXX:-g++}"
dl_bin="$work/bin/peers_mlp"
if [ -n "$builddir" ]; then
  log "building bench/bench_peers_mlp with ninja -C $builddir"
  ninja -C "$builddir" bench/bench_peers_mlp > "$work/build-dl.log" 2>&1 || { cat "$work/build-dl.log" >&2; exit 1; }
  dl_bin="$builddir/bench/bench_peers_mlp"
elif [ -n "$dl_include" ]; then
  dl_bin="$work/bin/peers_mlp_alt"
  log "building the dl side against $dl_include"
  "$cxx" -O3 -march=native -fopenmp -fno-math-errno -std=c++20 -I "$dl_include" -I /usr/include/eigen3 \
    "$here/peers_mlp.cpp" -o "$dl_bin" > "$work/build-dl.log" 2>&1 || { cat "$work/build-dl.log" >&2; exit 1; }
elif [ -x "$dl_bin" ] && [ -z "$(find "$root/include" "$here/peers_mlp.cpp" "$here/bench_util.hpp" -newer "$dl_bin" -print -quit)" ]; then
  log "dl side up to date: $dl_bin"
else
  log "building the dl side with $cxx -O3 -march=native -fopenmp"
  "$cxx" -O3 -march=native -fopenmp -fno-math-errno -std=c++20 -I "$root/include" -I /usr/include/eigen3 \
    "$here/peers_mlp.cpp" -o "$dl_bin" > "$work/build-dl.log" 2>&1 || { cat "$work/build-dl.log" >&2; exit 1; }
fi
torch_bin="$work/bin/peers_mlp_libtorch"
if [ -z "${unavailable[libtorch]:-}" ] && [ -x "$torch_bin" ] &&
   [ -z "$(find "$here/peers_mlp_libtorch.cpp" "$here/bench_util.hpp" -newer "$torch_bin" -print -quit)" ]; then
  log "libtorch side up to date: $torch_bin"
elif [ -z "${unavailable[libtorch]:-}" ]; then
  log "building the libtorch side"
  "$cxx" -O3 -march=native -std=c++17 -DDL_BENCH_LIBTORCH -I "$here" -I /usr/include/torch/csrc/api/include \
    "$here/peers_mlp_libtorch.cpp" -ltorch -ltorch_cpu -lc10 -o "$torch_bin" > "$work/build-libtorch.log" 2>&1 ||
    { unavailable[libtorch]="build failed (see $work/build-libtorch.log)"; }
fi

# ---- run, one after another ---------------------------------------------------------------------
# Each side's JSON rows are tagged with the variant and appended to $results.
run_side() {  # run_side LABEL threads command...
  local label="$1" t="$2" round="$3"; shift 3
  log "running $label, $t thread(s)  (load $(cut -d' ' -f1 /proc/loadavg))"
  # On an oversubscribed machine 2-thread OpenMP runs can slow down 10-100x; cap each run.
  timeout "$side_timeout" "$@" | python3 -c '
import json, sys
label = sys.argv[1]
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if r.get("unit") != "samples/s":
        continue
    r["side"] = label
    r["round"] = int(sys.argv[2])
    print(json.dumps(r))' "$label" "$round" >> "$results"
}
for round in $(seq 1 "$rounds"); do
for t in $threads_list; do
  run_side dl "$t" "$round" env DL_NUM_THREADS="$t" OMP_NUM_THREADS="$t" "$dl_bin" --threads "$t" --json $quick $repeats
  if [ -z "${unavailable[libtorch]:-}" ]; then
    run_side libtorch "$t" "$round" env OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS="$t" "$torch_bin" --threads "$t" --json $quick $repeats
  fi
  if [ -z "${unavailable[MXNet]:-}" ]; then
    run_side "MXNet" "$t" "$round" env OMP_NUM_THREADS="$t" MXNET_ENGINE_TYPE=ThreadedEnginePerDevice \
      "$mx_python" "$here/peers_mlp.py" mxnet --threads "$t" $quick $repeats
    run_side "MXNet" "$t" "$round" env OMP_NUM_THREADS="$t" MXNET_ENGINE_TYPE=NaiveEngine \
      "$mx_python" "$here/peers_mlp.py" mxnet --threads "$t" $quick $repeats
  fi
  if [ -z "${unavailable[PyTorch]:-}" ]; then
    run_side "PyTorch" "$t" "$round" env OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS="$t" "$sys_python" "$here/peers_mlp.py" torch \
      --threads "$t" $quick $repeats
  fi
done
done

# ---- one table ----------------------------------------------------------------------------------
unavail_json="{"
for k in "${!unavailable[@]}"; do unavail_json+="\"$k\": \"${unavailable[$k]}\","; done
unavail_json="${unavail_json%,}}"
python3 - "$results" "$unavail_json" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
unavailable = json.loads(sys.argv[2])
with open("/proc/loadavg") as f:
    load = f.read().split()[0]
# Best variant per (side, threads, batch): the MXNet engines compete; the best one is reported.
best, lo = {}, {}
for r in rows:
    batch = int(r["group"].split()[1])
    key = (r["side"], r["threads"], batch)
    if key not in best or r["value"] > best[key]["value"]:
        best[key] = r
# The range over rounds of each side's best variant per round (the MXNet engines compete in a round).
per_round = {}
for r in rows:
    key = (r["side"], r["threads"], int(r["group"].split()[1]), r.get("round", 1))
    per_round[key] = max(per_round.get(key, 0), r["value"])
for (side, t, b, _), v in per_round.items():
    lo[(side, t, b)] = min(lo.get((side, t, b), v), v)
sides = [s for s in ["dl", "libtorch", "MXNet", "PyTorch"] if any(k[0] == s for k in best)]
peers = [s for s in sides if s != "dl"]
print("== peers_mlp: MLP 784-256-128-10 training step, samples/s: best round's median (worst round's in brackets)  load %s" % load)
head = "%-7s %5s " % ("threads", "batch") + "".join("%22s" % s for s in sides) + "".join("%13s" % ("dl/" + p) for p in peers)
print(head)
for t in sorted({k[1] for k in best}):
    for b in sorted({k[2] for k in best if k[1] == t}):
        line = "%-7d %5d " % (t, b)
        for s in sides:
            r = best.get((s, t, b))
            line += "%22s" % ("%.0f [%.0f]" % (r["value"], lo[(s, t, b)]) if r else "-")
        d = best.get(("dl", t, b))
        for p in peers:
            r = best.get((p, t, b))
            line += "%13s" % ("%.2fx" % (d["value"] / r["value"]) if d and r else "-")
        print(line)
# Best thread count per side (the configuration each side would choose), per batch.
print("best thread count per side:")
for b in sorted({k[2] for k in best}):
    line = "%-7s %5d " % ("best", b)
    bests = {}
    for s in sides:
        cand = [best[k] for k in best if k[0] == s and k[2] == b]
        if cand:
            bests[s] = max(cand, key=lambda r: r["value"])
            line += "%22s" % ("%.0f (%dt)" % (bests[s]["value"], bests[s]["threads"]))
        else:
            line += "%22s" % "-"
    for p in peers:
        line += "%13s" % ("%.2fx" % (bests["dl"]["value"] / bests[p]["value"]) if "dl" in bests and p in bests else "-")
    print(line)
print("all runs (the best variant of a side is the one in the table):")
for r in sorted(rows, key=lambda r: (r["threads"], int(r["group"].split()[1]), r["side"], r.get("round", 1))):
    print("  %-8s %dt %-9s round %d %9.0f samples/s %7.0f steps/s  spread %3.0f%%  %s" % (
        r["side"], r["threads"], r["group"], r.get("round", 1), r["value"], r["value"] / int(r["group"].split()[1]),
        100 * r["spread"], r.get("note", "")))
for k, v in unavailable.items():
    print("  %s: UNAVAILABLE (%s)" % (k, v))
EOF
log "raw rows: $results"
