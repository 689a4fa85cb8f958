#!/usr/bin/env bash
# memory driver: dl (bench/memory.cpp) and PyTorch (bench/memory_torch.py) on the same deep residual
# MLP training step (width 512, batch 128, depths 16/64/256/1024), one after the other, one table:
# peak memory of activations and temporaries, its growth from depth 64, step time and the ratio to
# the same side and block mode (eager or compiled) without checkpointing; then the issue's targets,
# checked (dl's compiled rows: graph::repeat with compiled blocks).
#
#   bash bench/memory.sh                          # builds build/bench/bench_memory, all depths
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
builddir=build threads=2 repeats=3 depths=16,64,256,1024 bias=""
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
[ -f "$builddir/build.ninja" ] || meson setup "$builddir" --buildtype=release >/dev/null \
  || { echo "memory.sh: meson setup $builddir failed" >&2; exit 1; }
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
def base_of(r):  # the same side and block mode without checkpointing
    if r["side"] == "torch":
        return "torch eager"
    return "compiled" if r["config"].startswith("compiled") else "eager"
mib = 2.0 ** 20
print(f"{'depth':>5}  {'side':<6} {'config':<16} {'policy':<16} {'peak MiB':>9} {'planned':>8} {'/peak64':>8} "
      f"{'step ms':>9} {'spread':>6} {'x base':>8}")
for depth in sorted({r["depth"] for r in rows}):
    for c in configs:
        r = by.get((c, depth))
        if not r:
            continue
        base = by.get((c, 64))
        growth = f"{r['peak_bytes'] / base['peak_bytes']:.2f}" if base and base["peak_bytes"] else "-"
        b = by.get((base_of(r), depth))
        planned = f"{r['planned_bytes'] / mib:.1f}" if "planned_bytes" in r else "-"
        print(f"{depth:>5}  {r['side']:<6} {c:<16} {r['policy']:<16} {r['peak_bytes'] / mib:>9.2f} {planned:>8} {growth:>8} "
              f"{r['median_s'] * 1e3:>9.1f} {r['spread']:>6.2f} {r['median_s'] / b['median_s']:>8.2f}")
print()
def get(c, d, k):
    r = by.get((c, d))
    return r[k] if r else None
def ok(cond):
    return "met" if cond else "MISSED"
top = max(r["depth"] for r in rows)
depths = sorted({r["depth"] for r in rows})
for d in depths:
    if d < 64 or not get("compiled", d, "peak_bytes"):
        continue
    pr = get("compiled", d, "planned_bytes") / get("eager", d, "planned_bytes")
    mr = get("compiled", d, "peak_bytes") / get("eager", d, "peak_bytes")
    print(f"target, depth {d}: compiled planned {pr:.2f}x eager's (<= 0.5: {ok(pr <= 0.5)}); measured peak {mr:.2f}x eager's")
for mode in ("eager", "compiled"):
    if get(f"{mode}+sqrt", 64, "peak_bytes") and get(f"{mode}+sqrt", top, "peak_bytes") and top > 64:
        g = get(f"{mode}+sqrt", top, "peak_bytes") / get(f"{mode}+sqrt", 64, "peak_bytes")
        e = get(mode, top, "peak_bytes") / get(mode, 64, "peak_bytes")
        print(f"target: dl {mode}+sqrt peak({top})/peak(64) = {g:.2f} (<= 5: {ok(g <= 5)}); {mode} without checkpointing grows {e:.1f}x")
for d in depths:
    ts, te = get("torch+sqrt", d, "median_s"), get("torch eager", d, "median_s")
    pt = get("torch+sqrt", d, "peak_bytes")
    for mode in ("eager", "compiled"):
        s, e, ps = get(f"{mode}+sqrt", d, "median_s"), get(mode, d, "median_s"), get(f"{mode}+sqrt", d, "peak_bytes")
        if not (s and e):
            continue
        line = f"target, depth {d}: dl {mode}+sqrt time {s / e:.2f}x {mode} (<= 1.35: {ok(s / e <= 1.35)})"
        if ts and pt:
            line += (f"; peak dl {ps / mib:.2f} MiB vs PyTorch {pt / mib:.2f} MiB ({ok(ps <= pt)}); "
                     f"overhead dl {s / e:.2f}x vs PyTorch {ts / te:.2f}x ({ok(s / e <= ts / te)})")
        print(line)
EOF
