#!/usr/bin/env bash
# conv driver: dl's conv2d against the same run's GEMM and against libtorch 1.13 (oneDNN), on the
# same layer: 3x3 convolution, padding 1, 64 -> 64 channels, 32x32 images, batch 32, float32,
# forward and forward+backward (dx and dw); the 1x1 group of bench_conv is reported too.
# Builds bench/conv.cpp (dl, with its GEMM rows) and bench/conv_libtorch.cpp, runs them back to
# back --rounds times (dl, libtorch, dl, libtorch, ...: a burst of outside load hits both), and
# prints one table per layer: GFLOP/s of dl and libtorch, dl's fraction of the GEMM GFLOP/s measured
# in the same process (target >= 0.6) and dl / libtorch (target >= 1.0).
#
#   bash bench/conv.sh                       # 2 threads, 3 rounds
#   bash bench/conv.sh --threads 1 --rounds 5
#   bash bench/conv.sh --builddir build-h1   # the dl side from a configured Meson dir (ninja bench/bench_conv)
#   bash bench/conv.sh --quick               # batch 4: a smoke run
#
# Every side: 2 warm-up calls, median of --repeats (default 10) timed calls. Each side's best
# round is reported (the least disturbed); the GEMM fraction is taken within dl's best round.
# libtorch's best configuration: OPENBLAS_NUM_THREADS=1, torch::set_num_threads(n), and the better
# of NCHW and channels-last tensors (oneDNN reorders NCHW on every call). dl: --threads n.
# Binaries and raw JSON rows: $DL_PEERS_WORK (default ~/.cache/dl-bench-peers), shared with the
# peers_* drivers (bench/peers_common.sh builds the libtorch side).
set -uo pipefail
peers_name=conv
source "$(dirname "${BASH_SOURCE[0]}")/peers_common.sh"
peers_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
peers_root="$(cd "$peers_here/.." && pwd)"
peers_work="${DL_PEERS_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/dl-bench-peers}"
peers_side_timeout="${DL_PEERS_TIMEOUT:-300}"
peers_builddir=""
peers_dl_include=""
threads=2
rounds=3
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --builddir) peers_builddir="$2"; shift 2 ;;
    --repeats) extra+=(--repeats "$2"); shift 2 ;;
    --quick) extra+=(--quick); shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "conv.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$peers_work/bin"
results="$peers_work/results-conv.jsonl"
: > "$results"

peers_build_dl conv
torch_bin="$peers_work/bin/conv_libtorch"
have_torch=1
if ! peers_have_libtorch; then
  have_torch=0; peers_log "libtorch-dev is not installed: dl against its GEMM only (bash bench/peers_mlp.sh installs it)"
elif ! peers_build_libtorch "$peers_here/conv_libtorch.cpp" "$torch_bin"; then
  have_torch=0; peers_log "building the libtorch side failed (see $peers_work/build-conv_libtorch.log)"
fi

run() {  # run SIDE ROUND command...: keeps the JSON rows, tagged
  local side="$1" round="$2"; shift 2
  peers_log "running $side, $threads thread(s), round $round  (load $(cut -d' ' -f1 /proc/loadavg))"
  timeout "$peers_side_timeout" "$@" --threads "$threads" --json "${extra[@]}" | python3 -c '
import json, sys
for line in sys.stdin:
    if line.startswith("{"):
        r = json.loads(line)
        r["side"], r["round"] = sys.argv[1], int(sys.argv[2])
        print(json.dumps(r))' "$side" "$round" >> "$results"
}
for round in $(seq 1 "$rounds"); do
  run dl "$round" env DL_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads" "$peers_dl_bin"
  [ "$have_torch" = 1 ] && run libtorch "$round" env OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS="$threads" "$torch_bin"
done

python3 - "$results" "$threads" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
with open("/proc/loadavg") as f:
    load = f.read().split()[0]
groups = []
for r in rows:
    if r["group"] not in groups:
        groups.append(r["group"])
def val(side, rnd, group, name):
    for r in rows:
        if r["side"] == side and r["round"] == rnd and r["group"] == group and r["name"] == name:
            return r
    return None
rounds = sorted({r["round"] for r in rows})
print("== conv: dl conv2d vs the same run's GEMM and libtorch %s, %s thread(s), GFLOP/s, best of %d rounds  load %s"
      % (next((r["bench"].split("libtorch ")[1].rstrip(")") for r in rows if r["side"] == "libtorch"), "-"),
         sys.argv[2], len(rounds), load))
print("%-26s %-13s %9s %9s %9s %11s %10s %11s" % ("layer", "pass", "dl", "gemm", "dl/gemm", "libtorch", "(layout)",
                                                 "dl/libtorch"))
for g in groups:
    for pass_name, dl_name in (("forward", "conv2d forward"), ("fwd+bwd", "conv2d forward+backward")):
        # dl: its best round, with the GEMM (the faster of the two GEMM rows) of that same process.
        best = None
        for rnd in rounds:
            d = val("dl", rnd, g, dl_name)
            if d is None:
                continue
            gemm = max([r["value"] for r in (val("dl", rnd, g, "gemm"), val("dl", rnd, g, "gemm split")) if r] or [0])
            if best is None or d["value"] > best[0]:
                best = (d["value"], gemm, d["spread"])
        # libtorch: the best round and layout.
        tb = None
        for rnd in rounds:
            for layout, suffix in (("NCHW", ""), ("ch-last", " channels_last")):
                t = val("libtorch", rnd, g, dl_name + suffix)
                if t and (tb is None or t["value"] > tb[0]):
                    tb = (t["value"], layout)
        if best is None:
            continue
        line = "%-26s %-13s %9.1f %9.1f %8.2fx" % (g, pass_name, best[0], best[1], best[0] / best[1] if best[1] else 0)
        line += " %11s %10s %10s" % (("%.1f" % tb[0], tb[1], "%.2fx" % (best[0] / tb[0])) if tb else ("-", "", "-"))
        print(line)
print("per round (dl fwd+bwd / its gemm / libtorch NCHW fwd+bwd / libtorch channels-last fwd+bwd):")
for g in groups:
    for rnd in rounds:
        parts = []
        for side, name in (("dl", "conv2d forward+backward"), ("dl", "gemm split"), ("libtorch", "conv2d forward+backward"),
                           ("libtorch", "conv2d forward+backward channels_last")):
            r = val(side, rnd, g, name)
            parts.append("%.1f (spread %.0f%%)" % (r["value"], 100 * r["spread"]) if r else "-")
        print("  %-26s round %d: %s" % (g, rnd, " / ".join(parts)))
EOF
peers_log "raw rows: $results"
