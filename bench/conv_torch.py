#!/usr/bin/env python3
"""PyTorch peer of bench/conv.cpp: the same convolutions (3x3 and 1x1, 64 -> 64 channels,
32x32, batch 32, float32, padding k // 2) on the CPU with the same thread count, timed the same
way (warm-up, median of repeats). Run it right after bench_conv on the same cores:

    taskset -c 0,1 build/bench/bench_conv --threads 2
    taskset -c 0,1 python3 bench/conv_torch.py --threads 2

The libtorch (C++) peer runs in the same driver as bench_conv: bash bench/conv.sh.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def median_time(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), (max(times) - min(times)) / statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(7)
    print(f"== conv peer: PyTorch {torch.__version__} (threads {args.threads}, mkldnn "
          f"{torch.backends.mkldnn.is_available()})")
    for k in (3, 1):
        n, c, hw = args.batch, 64, 32
        fwd_flop = 2.0 * n * c * c * k * k * hw * hw
        x = torch.randn(n, c, hw, hw, requires_grad=True)
        w = (torch.randn(c, c, k, k) * 0.05).requires_grad_()
        head = torch.randn(n, c, hw, hw)
        with torch.no_grad():
            t_fwd, s_fwd = median_time(lambda: F.conv2d(x, w, padding=k // 2), args.repeats)

        def step():
            y = F.conv2d(x, w, padding=k // 2)
            y.backward(head)

        t_step, s_step = median_time(step, args.repeats)
        group = f"{k}x{k} {c}->{c} {hw}x{hw} N{n} f32"
        print(f"{group}  torch forward           {fwd_flop / t_fwd / 1e9:8.2f} GFLOP/s  spread {100 * s_fwd:5.1f}%")
        print(f"{group}  torch forward+backward  {3 * fwd_flop / t_step / 1e9:8.2f} GFLOP/s  spread {100 * s_step:5.1f}%")


if __name__ == "__main__":
    main()
