#!/usr/bin/env bash
# memory driver: dl (bench/memory.cpp) and PyTorch (bench/memory_torch.py) on the same deep residual
# MLP training step (width 512, batch 128, depths 16/64/256/1024), one after the other, one table:
# peak memory of activations and temporaries, its growth from depth 64, step time and the ratio to
# the same side without checkpointing; then the issue's targets, checked.
#
#   bash bench/memory.sh                          # builds build-h5/bench/bench_memory, all depths
#   bash bench/memory.sh --builddir build --quick # depths 16 and 64 only (smoke run)
#   bash bench/memory.sh --depths 64,1024 --repeats 5 --threads 2
#   bash bench/memory.sh --bias                   # Linear layers with bias on both sides
#
# PyTorch's best configuration here: torch.set_num_threads(T), OPENBLAS_NUM_THREADS=T and
# OMP_WAIT_POLICY=PASSIVE. Without the last, on a loaded 2-core machine every elementwise op waits
# ~10 ms for an OpenMP thread that is spinning elsewhere (a step of depth 16 took 2 s, not 0.1 s).
# Raw JSON rows stay in $DL_MEMORY_WORK (default /tmp/dl-bench-memory).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
builddir=build-h5 threads=2 repeats=3 depths=16,64,256,1024 bias=""
python="${PYTHON:-/usr/bin/python3}"
while [ $# -gt 0 ]; do
  case "$1" in
    --builddir) builddir="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --depths) depths="$2"; shift 2 ;;
    --quick) depths=16,64; shift ;;
    --bias) bias=--bias; shift ;;
    -h|--help) sed -n 2,15p "$0"; exit 0 ;;
    *) echo "memory.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
work="${DL_MEMORY_WORK:-/tmp/dl-bench-memory}"
mkdir -p "$work"
cd "$root" || exit 1
ninja -C "$builddir" bench/bench_memory >/dev/null || { echo "memory.sh: building $builddir/bench/bench_memory failed" >&2; exit 1; }
echo "memory.sh: $(date -u '+%F %T') UTC, load average $(cut -d' ' -f1-3 /proc/loadavg), threads $threads, depths $depths, $repeats timed steps"
: > "$work/rows.jsonl"
"$builddir/bench/bench_memory" --json --threads "$threads" --repeats "$repeats" --depths "$depths" $bias | tee -a "$work/rows.jsonl" >/dev/null \
  || { echo "memory.sh: the dl side failed" >&2; exit 1; }
if "$python" -c "import torch" 2>/dev/null; then
  OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads" \
    "$python" "$here/memory_torch.py" --json --threads "$threads" --repeats "$repeats" --depths "$depths" $bias 2>/dev/null \
    | tee -a "$work/rows.jsonl" >/dev/null || echo "memory.sh: the PyTorch side failed" >&2
else
  echo "memory.sh: PyTorch is not installed for $python (apt install python3-torch); its rows are missing" >&2
fi
echo "memory.sh: load average after $(cut -d' ' -f1-3 /proc/loadavg)"
"$python" - "$work/rows.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
by = {(r["config"], r["depth"]): r for r in rows}
configs = []
for r in rows:
    if r["config"] not in configs:
        configs.append(r["config"])
eager_of = {"dl": "eager", "torch": "torch eager"}
mib = 2.0 ** 20
print(f"{'depth':>5}  {'side':<6} {'config':<14} {'policy':<16} {'peak MiB':>9} {'planned':>8} {'/peak64':>8} "
      f"{'step ms':>9} {'spread':>6} {'x eager':>8}")
for depth in sorted({r["depth"] for r in rows}):
    for c in configs:
        r = by.get((c, depth))
        if not r:
            continue
        base = by.get((c, 64))
        growth = f"{r['peak_bytes'] / base['peak_bytes']:.2f}" if base and base["peak_bytes"] else "-"
        eager = by.get((eager_of[r["side"]], depth))
        planned = f"{r['planned_bytes'] / mib:.1f}" if "planned_bytes" in r else "-"
        print(f"{depth:>5}  {r['side']:<6} {c:<14} {r['policy']:<16} {r['peak_bytes'] / mib:>9.1f} {planned:>8} {growth:>8} "
              f"{r['median_s'] * 1e3:>9.1f} {r['spread']:>6.2f} {r['median_s'] / eager['median_s']:>8.2f}")
    print(f"{depth:>5}  {'dl':<6} {'compiled':<14} (reserved: graph::compile rows, issue #5's compiled path)")
print()
def get(c, d, k):
    r = by.get((c, d))
    return r[k] if r else None
top = max(r["depth"] for r in rows)
if get("eager+sqrt", 64, "peak_bytes") and top > 64:
    g = get("eager+sqrt", top, "peak_bytes") / get("eager+sqrt", 64, "peak_bytes")
    e = get("eager", top, "peak_bytes") / get("eager", 64, "peak_bytes")
    print(f"target: dl sqrt peak({top})/peak(64) = {g:.2f} (<= 5: {'met' if g <= 5 else 'MISSED'}); eager grows {e:.1f}x")
for d in sorted({r["depth"] for r in rows}):
    s, e = get("eager+sqrt", d, "median_s"), get("eager", d, "median_s")
    ts, te = get("torch+sqrt", d, "median_s"), get("torch eager", d, "median_s")
    ps, pt = get("eager+sqrt", d, "peak_bytes"), get("torch+sqrt", d, "peak_bytes")
    line = f"target, depth {d}: dl sqrt time {s / e:.2f}x eager (<= 1.35: {'met' if s / e <= 1.35 else 'MISSED'})"
    if ts and pt:
        line += (f"; peak dl {ps / mib:.1f} MiB vs PyTorch {pt / mib:.1f} MiB ({'met' if ps <= pt else 'MISSED'}); "
                 f"overhead dl {s / e:.2f}x vs PyTorch {ts / te:.2f}x ({'met' if s / e <= ts / te else 'MISSED'})")
    print(line)
EOF
