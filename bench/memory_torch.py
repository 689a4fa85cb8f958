#!/usr/bin/env python3
"""PyTorch peer of bench/memory.cpp: the same residual MLP training step, eager and with
torch.utils.checkpoint.checkpoint_sequential, peak memory of activations and temporaries, step time.

    x (128, 512) -> [ h + s * relu(Linear(h)) ] x depth -> mean(y * y); SGD (lr 1e-3, no momentum)

The Linear layers have no bias unless --bias (as in bench/memory.cpp). Run with
OMP_WAIT_POLICY=PASSIVE on a shared machine: with OpenMP's active wait, every elementwise op waited
~10 ms for a thread spinning elsewhere (bench/memory.sh sets it).

Rows: "torch eager" and "torch+sqrt" (checkpoint_sequential with round(sqrt depth) segments, i.e.
segments of sqrt(depth) blocks like dl's checkpoint::sqrt; PyTorch runs its last segment without
checkpointing). --segments N adds a "torch+N" row with N segments.

Peak memory: PyTorch 1.13 has no CPU allocator statistics, but with profile_memory=True its CPU
allocator reports every allocation and free (exact byte counts) to the profiler. One step runs under
the profiler; the [memory] records, summed in time order, give the bytes in use over the step; the
peak is their maximum above the start. The gradient buffers exist before that step
(zero_grad(set_to_none=False)), so, like dl's figure, the peak excludes parameters and gradients.
The timed steps run without the profiler and use zero_grad(set_to_none=True) (the faster setting);
the configurations of a depth share one model and their timed steps are interleaved.

    OPENBLAS_NUM_THREADS=2 python3 bench/memory_torch.py [--threads 2] [--repeats 3] [--depths 16,64] [--bias] [--json]
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.checkpoint import checkpoint_sequential


class Block(torch.nn.Module):
    def __init__(self, width, scale, bias=False):
        super().__init__()
        self.fc = torch.nn.Linear(width, width, bias=bias)
        self.scale = scale

    def forward(self, h):
        return h + self.scale * torch.relu(self.fc(h))


def measure_depth(depth, configs, batch, width, bias, repeats):
    """Peaks and step times of every (name, segments) config on one model; timed steps interleaved."""
    torch.manual_seed(0)
    scale = 1.0 / math.sqrt(depth)
    net = torch.nn.Sequential(*[Block(width, scale, bias) for _ in range(depth)])
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    x = torch.randn(batch, width, requires_grad=True)

    def step(segments, set_to_none):
        opt.zero_grad(set_to_none=set_to_none)
        if set_to_none:
            x.grad = None
        y = net(x) if segments == 0 else checkpoint_sequential(net, segments, x)
        loss = (y * y).mean()
        loss.backward()
        opt.step()

    peaks, times = {}, {name: [] for name, _ in configs}
    for name, segments in configs:
        step(segments, False)  # gradient buffers exist from here on
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step(segments, False)
        records = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        records.sort(key=lambda e: e.start_us())  # stable: records of the same microsecond keep their order
        in_use = peak = 0
        for e in records:
            in_use += e.nbytes()
            peak = max(peak, in_use)
        peaks[name] = peak
        step(segments, True)  # warm-up of the timed setting
    for _ in range(repeats):
        for name, segments in configs:
            t0 = time.perf_counter()
            step(segments, True)
            times[name].append(time.perf_counter() - t0)
    return peaks, times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--depths", default="16,64,256,1024")
    ap.add_argument("--quick", action="store_true", help="depths 16,64")
    ap.add_argument("--segments", type=int, default=0, help="also run checkpoint_sequential with this many segments")
    ap.add_argument("--bias", action="store_true", help="Linear layers with bias")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    depths = [16, 64] if a.quick else [int(d) for d in a.depths.split(",")]
    batch, width = 128, 512
    if not a.json:
        print(f"== memory (PyTorch {torch.__version__}): residual MLP width {width}, batch {batch}, "
              f"{'with' if a.bias else 'no'} bias, threads {a.threads}, "
              f"{a.repeats} timed steps")
        print(f"{'config':<14} {'depth':>6} {'segments':>9} {'peak MiB':>12} {'step ms':>10} {'spread':>8} {'x eager':>10}")
    for depth in depths:
        configs = [("torch eager", 0), ("torch+sqrt", max(1, round(math.sqrt(depth))))]
        if a.segments:
            configs.append((f"torch+{a.segments}", a.segments))
        eager_s = None
        peaks, times = measure_depth(depth, configs, batch, width, a.bias, a.repeats)
        for name, segments in configs:
            peak, t = peaks[name], times[name]
            med = statistics.median(t)
            spread = (max(t) - min(t)) / med
            eager_s = eager_s or med
            if a.json:
                print(json.dumps({"bench": "memory", "side": "torch", "config": name, "policy": f"segments={segments}",
                                  "depth": depth, "peak_bytes": peak, "median_s": med, "spread": spread,
                                  "repeats": a.repeats, "threads": a.threads, "bias": a.bias, "version": torch.__version__}))
            else:
                print(f"{name:<14} {depth:>6} {segments:>9} {peak / 2**20:>12.1f} {med * 1e3:>10.1f} {spread:>8.2f} "
                      f"{med / eager_s:>10.2f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
