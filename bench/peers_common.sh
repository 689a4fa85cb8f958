# peers_common.sh: the shared part of the peer benchmark drivers (bench/peers_mlp.sh,
# bench/peers_cnn.sh). Sourced, not run. A driver sets
#
#   peers_name=peers_cnn                 # its programs: bench/$peers_name.cpp (dl, Meson target
#                                        #   bench/bench_$peers_name), bench/${peers_name}_libtorch.cpp,
#                                        #   bench/$peers_name.py (MXNet Gluon and PyTorch)
#   peers_title="..."                    # the table's heading
#   peers_help_lines=2,30                # the lines of the driver's header that --help prints
#
# and calls `peers_main "$@"`, which: parses the common flags (below), installs the missing peers,
# builds the dl and libtorch sides (skipped when up to date), runs every side at every thread count
# one after another for --rounds rounds (never two at once; each run capped at $DL_PEERS_TIMEOUT
# seconds), and prints one table of samples/s per (threads, group) with the dl/peer ratios, each
# side's best round, and the best thread count per side.
#
# Common flags: --threads "1 2", --quick, --no-install, --builddir DIR, --repeats N, --rounds N,
# --include DIR (the dl side from another include tree). Any other argument (e.g. --batch 64,
# --model lenet) is passed unchanged to every side: all sides of a driver accept the same flags.
# Work folder (venv, binaries, raw JSON rows): $DL_PEERS_WORK, default ~/.cache/dl-bench-peers.
#
# The sides and their best configurations (shared/BENCHMARKING.md):
#   dl:       DL_NUM_THREADS=n, --threads n (dl's thread pool)
#   libtorch: OPENBLAS_NUM_THREADS=1 (else OpenBLAS's pthreads and OpenMP fight), OMP_NUM_THREADS=n,
#             torch::set_num_threads(n)
#   MXNet:    OMP_NUM_THREADS=n, hybridized Gluon; run with the default threaded engine and with
#             NaiveEngine: the better of the two is the "MXNet" row
#   PyTorch:  eager, OPENBLAS_NUM_THREADS=1, torch.set_num_threads(n)
# Every JSON row a side prints with unit "samples/s" is kept; its "group" names the case
# ("batch 128", "resnet20 batch 64").

peers_log() { echo "${peers_name}.sh: $*" >&2; }

peers_parse_args() {
  peers_threads_list="1 2"
  peers_quick=""
  peers_install=1
  peers_builddir=""
  peers_repeats=""
  peers_rounds=2
  peers_dl_include=""
  peers_extra=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --threads) peers_threads_list="$2"; shift 2 ;;
      --quick) peers_quick="--quick"; shift ;;
      --no-install) peers_install=0; shift ;;
      --builddir) peers_builddir="$2"; shift 2 ;;
      --repeats) peers_repeats="--repeats $2"; shift 2 ;;
      --rounds) peers_rounds="$2"; shift 2 ;;
      --include) peers_dl_include="$(cd "$2" && pwd)"; shift 2 ;;
      -h|--help) sed -n "${peers_help_lines}p" "$0"; exit 0 ;;
      *) peers_extra+=("$1"); shift ;;
    esac
  done
}

# ---- peers: install what is missing -------------------------------------------------------------
peers_sys_python=/usr/bin/python3
peers_have_libtorch() { [ -f /usr/include/torch/csrc/api/include/torch/torch.h ] && ls /usr/lib/x86_64-linux-gnu/libtorch_cpu.so* >/dev/null 2>&1; }
peers_have_pytorch() { "$peers_sys_python" -c "import torch" >/dev/null 2>&1; }
peers_have_mxnet() { [ -x "$peers_mx_python" ] && "$peers_mx_python" -c "import mxnet" >/dev/null 2>&1; }

peers_setup() {
  local sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo_cmd="sudo"
  if [ "$peers_install" = 1 ]; then
    if ! peers_have_libtorch || ! peers_have_pytorch; then
      peers_log "installing libtorch-dev and python3-torch (Debian, PyTorch 1.13)..."
      $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y libtorch-dev python3-torch > "$peers_work/apt.log" 2>&1 ||
        { $sudo_cmd apt-get update > /dev/null 2>&1 &&
          $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y libtorch-dev python3-torch >> "$peers_work/apt.log" 2>&1; } ||
        peers_log "apt-get install libtorch-dev python3-torch failed (see $peers_work/apt.log)"
    fi
    if ! peers_have_mxnet; then
      peers_log "installing mxnet==1.9.1 and numpy<1.24 into $peers_work/mxnet-venv..."
      { python3 -m venv "$peers_work/mxnet-venv" && "$peers_work/mxnet-venv/bin/pip" install -q "mxnet==1.9.1" "numpy<1.24"; } \
        > "$peers_work/pip.log" 2>&1 || peers_log "pip install mxnet==1.9.1 failed (see $peers_work/pip.log)"
    fi
  fi
  declare -gA peers_unavailable=()
  peers_have_libtorch || peers_unavailable[libtorch]="libtorch-dev not installed"
  peers_have_pytorch || peers_unavailable[PyTorch]="python3-torch not importable by $peers_sys_python"
  peers_have_mxnet || peers_unavailable[MXNet]="mxnet 1.9.1 not importable from $peers_work/mxnet-venv"
}

# ---- build the C++ sides ------------------------------------------------------------------------
# peers_build_libtorch SOURCE BINARY: builds a libtorch program (Debian's package has no pkg-config
# file) unless BINARY is newer than SOURCE and bench_util.hpp; returns non-zero when it fails.
peers_build_libtorch() {
  local src="$1" bin="$2" name
  name="$(basename "$bin")"
  if [ -x "$bin" ] && [ -z "$(find "$src" "$peers_here/bench_util.hpp" -newer "$bin" -print -quit)" ]; then
    peers_log "libtorch side up to date: $bin"
    return 0
  fi
  peers_log "building $name against libtorch"
  "${CXX:-g++}" -O3 -march=native -std=c++17 -DDL_BENCH_LIBTORCH -I "$peers_here" -I /usr/include/torch/csrc/api/include \
    "$src" -ltorch -ltorch_cpu -lc10 -o "$bin" > "$peers_work/build-$name.log" 2>&1
}

# peers_build_dl NAME: sets peers_dl_bin to bench/NAME.cpp built with the Meson build dir
# (--builddir), against another include tree (--include), or with g++ into the work folder.
peers_build_dl() {
  local name="$1" cxx="${CXX:-g++}"
  local flags=(-O3 -march=native -fopenmp -fno-math-errno -std=c++20 -I /usr/include/eigen3)
  # As meson.build: GCC < 13's SLP vectoriser miscompiles option structs with AVX-512 (nn/conv.hpp).
  if "$cxx" --version 2>/dev/null | head -1 | grep -qi "g++\|gcc" && [ "$("$cxx" -dumpversion | cut -d. -f1)" -lt 13 ]; then
    flags+=(-fno-tree-slp-vectorize)
  fi
  peers_dl_bin="$peers_work/bin/$name"
  if [ -n "$peers_builddir" ]; then
    peers_log "building bench/bench_$name with ninja -C $peers_builddir"
    ninja -C "$peers_builddir" "bench/bench_$name" > "$peers_work/build-$name.log" 2>&1 ||
      { cat "$peers_work/build-$name.log" >&2; exit 1; }
    peers_dl_bin="$peers_builddir/bench/bench_$name"
  elif [ -n "$peers_dl_include" ]; then
    peers_dl_bin="$peers_work/bin/${name}_alt"
    peers_log "building the dl side against $peers_dl_include"
    "$cxx" "${flags[@]}" -I "$peers_dl_include" "$peers_here/$name.cpp" -o "$peers_dl_bin" > "$peers_work/build-$name.log" 2>&1 ||
      { cat "$peers_work/build-$name.log" >&2; exit 1; }
  elif [ -x "$peers_dl_bin" ] &&
       [ -z "$(find "$peers_root/include" "$peers_root/examples/common" "$peers_here/$name.cpp" "$peers_here"/bench_*.hpp -newer "$peers_dl_bin" -print -quit)" ]; then
    peers_log "dl side up to date: $peers_dl_bin"
  else
    peers_log "building the dl side with $cxx ${flags[*]}"
    "$cxx" "${flags[@]}" -I "$peers_root/include" "$peers_here/$name.cpp" -o "$peers_dl_bin" > "$peers_work/build-$name.log" 2>&1 ||
      { cat "$peers_work/build-$name.log" >&2; exit 1; }
  fi
}

# ---- run, one after another ---------------------------------------------------------------------
# peers_run_side LABEL THREADS ROUND command...: keeps the command's "samples/s" JSON rows, tagged
# with the side and the round, in $peers_results.
peers_run_side() {
  local label="$1" t="$2" round="$3"; shift 3
  peers_log "running $label, $t thread(s), round $round  (load $(cut -d' ' -f1 /proc/loadavg))"
  # On an oversubscribed machine 2-thread runs can slow down 10-100x; cap each run.
  timeout "$peers_side_timeout" "$@" | python3 -c '
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
    print(json.dumps(r))' "$label" "$round" >> "$peers_results"
  local rc="${PIPESTATUS[0]}"
  [ "$rc" = 124 ] && peers_log "$label, $t thread(s): stopped after ${peers_side_timeout}s (DL_PEERS_TIMEOUT)"
  [ "$rc" != 0 ] && [ "$rc" != 124 ] && peers_log "$label, $t thread(s): exit status $rc"
  return 0
}

peers_run_all() {
  local round t py="$peers_here/$peers_name.py"
  local common=($peers_quick $peers_repeats "${peers_extra[@]}")
  for round in $(seq 1 "$peers_rounds"); do
    for t in $peers_threads_list; do
      peers_run_side dl "$t" "$round" env DL_NUM_THREADS="$t" OMP_NUM_THREADS="$t" "$peers_dl_bin" --threads "$t" --json "${common[@]}"
      if [ -z "${peers_unavailable[libtorch]:-}" ]; then
        peers_run_side libtorch "$t" "$round" env OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS="$t" "$peers_torch_bin" \
          --threads "$t" --json "${common[@]}"
      fi
      if [ -z "${peers_unavailable[MXNet]:-}" ]; then
        peers_run_side MXNet "$t" "$round" env OMP_NUM_THREADS="$t" MXNET_ENGINE_TYPE=ThreadedEnginePerDevice \
          "$peers_mx_python" "$py" mxnet --threads "$t" "${common[@]}"
        peers_run_side MXNet "$t" "$round" env OMP_NUM_THREADS="$t" MXNET_ENGINE_TYPE=NaiveEngine \
          "$peers_mx_python" "$py" mxnet --threads "$t" "${common[@]}"
      fi
      if [ -z "${peers_unavailable[PyTorch]:-}" ]; then
        peers_run_side PyTorch "$t" "$round" env OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS="$t" "$peers_sys_python" "$py" torch \
          --threads "$t" "${common[@]}"
      fi
    done
  done
}

# ---- one table ----------------------------------------------------------------------------------
peers_table() {
  local unavail_json="{" k
  for k in "${!peers_unavailable[@]}"; do unavail_json+="\"$k\": \"${peers_unavailable[$k]}\","; done
  unavail_json="${unavail_json%,}}"
  python3 - "$peers_results" "$unavail_json" "$peers_name" "$peers_title" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
unavailable = json.loads(sys.argv[2])
name, title = sys.argv[3], sys.argv[4]
with open("/proc/loadavg") as f:
    load = f.read().split()[0]
groups = []  # in the order the sides printed them
for r in rows:
    if r["group"] not in groups:
        groups.append(r["group"])
# Best variant per (side, threads, group): the MXNet engines compete; the best one is reported.
best, lo, per_round = {}, {}, {}
for r in rows:
    key = (r["side"], r["threads"], r["group"])
    if key not in best or r["value"] > best[key]["value"]:
        best[key] = r
    rk = key + (r.get("round", 1),)
    per_round[rk] = max(per_round.get(rk, 0), r["value"])
# The range over rounds of each side's best variant per round.
for (side, t, g, _), v in per_round.items():
    lo[(side, t, g)] = min(lo.get((side, t, g), v), v)
sides = [s for s in ["dl", "libtorch", "MXNet", "PyTorch"] if any(k[0] == s for k in best)]
peers = [s for s in sides if s != "dl"]
wg = max([len(g) for g in groups] + [5])
print("== %s: %s, samples/s: best round's median (worst round's in brackets)  load %s" % (name, title, load))
print("%-7s %-*s " % ("threads", wg, "group") + "".join("%20s" % s for s in sides) + "".join("%13s" % ("dl/" + p) for p in peers))
for t in sorted({k[1] for k in best}):
    for g in [g for g in groups if any(k[1] == t and k[2] == g for k in best)]:
        line = "%-7d %-*s " % (t, wg, g)
        for s in sides:
            r = best.get((s, t, g))
            line += "%20s" % ("%.0f [%.0f]" % (r["value"], lo[(s, t, g)]) if r else "-")
        d = best.get(("dl", t, g))
        for p in peers:
            r = best.get((p, t, g))
            line += "%13s" % ("%.2fx" % (d["value"] / r["value"]) if d and r else "-")
        print(line)
# Best thread count per side (the configuration each side would choose), per group.
print("best thread count per side:")
for g in groups:
    line = "%-7s %-*s " % ("best", wg, g)
    bests = {}
    for s in sides:
        cand = [best[k] for k in best if k[0] == s and k[2] == g]
        if cand:
            bests[s] = max(cand, key=lambda r: r["value"])
            line += "%20s" % ("%.0f (%dt)" % (bests[s]["value"], bests[s]["threads"]))
        else:
            line += "%20s" % "-"
    for p in peers:
        line += "%13s" % ("%.2fx" % (bests["dl"]["value"] / bests[p]["value"]) if "dl" in bests and p in bests else "-")
    print(line)
print("all runs (the best variant of a side is the one in the table):")
def batch_of(g):
    return int(g.split("batch")[1].split()[0])
for r in sorted(rows, key=lambda r: (r["threads"], groups.index(r["group"]), r["side"], r.get("round", 1))):
    print("  %-8s %dt %-*s round %d %9.0f samples/s %8.2f steps/s  spread %3.0f%%  %s" % (
        r["side"], r["threads"], wg, r["group"], r.get("round", 1), r["value"], r["value"] / batch_of(r["group"]),
        100 * r["spread"], r.get("note", "")))
for k, v in unavailable.items():
    print("  %s: UNAVAILABLE (%s)" % (k, v))
EOF
}

peers_main() {
  peers_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  peers_root="$(cd "$peers_here/.." && pwd)"
  peers_work="${DL_PEERS_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/dl-bench-peers}"
  peers_side_timeout="${DL_PEERS_TIMEOUT:-300}"  # seconds per side and thread count
  peers_mx_python="$peers_work/mxnet-venv/bin/python"
  peers_parse_args "$@"
  mkdir -p "$peers_work/bin"
  peers_results="$peers_work/results-$peers_name.jsonl"
  : > "$peers_results"
  peers_setup
  peers_build_dl "$peers_name"
  peers_torch_bin="$peers_work/bin/${peers_name}_libtorch"
  if [ -z "${peers_unavailable[libtorch]:-}" ]; then
    peers_build_libtorch "$peers_here/${peers_name}_libtorch.cpp" "$peers_torch_bin" ||
      peers_unavailable[libtorch]="build failed (see $peers_work/build-${peers_name}_libtorch.log)"
  fi
  peers_log "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  peers_run_all
  peers_table
  peers_log "raw rows: $peers_results"
}
