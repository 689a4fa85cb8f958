#!/usr/bin/env python3
"""bench/gpu/mlp_torch.py: the PyTorch eager peer of bench_gpu_mlp (bench/gpu/mlp.cu).

The same step: model 784 -> width x3 (ReLU) -> 10 in float32 on cuda:0, weights (out, in) used as
x @ w.T + b, head gradient (out - onehot) / batch passed to backward(), then plain SGD (lr 0.01)
under no_grad. TF32 is off (as in dl by default). Timing: CUDA events around --steps steps after
20 warm-up steps, median of 5 repeats. Prints one JSON row per configuration, like the dl side.

  python3 bench/gpu/mlp_torch.py [--steps 200]
"""
import argparse
import json
import statistics
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    args = p.parse_args()
    try:
        import torch
    except ImportError:
        print("mlp_torch: PyTorch is not installed", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("mlp_torch: no CUDA device visible to PyTorch", file=sys.stderr)
        return 1
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda:0")
    for batch, width in ((64, 256), (1024, 1024)):
        torch.manual_seed(0)
        sizes = [784, width, width, width, 10]
        ws, bs = [], []
        for i in range(len(sizes) - 1):
            ws.append((torch.randn(sizes[i + 1], sizes[i], device=dev) * (2.0 / sizes[i]) ** 0.5).requires_grad_())
            bs.append(torch.zeros(sizes[i + 1], device=dev, requires_grad=True))
        x = torch.randn(batch, 784, device=dev)
        onehot = torch.zeros(batch, 10, device=dev)
        onehot[torch.arange(batch), torch.arange(batch) % 10] = 1.0

        def step():
            h = x
            for i in range(len(ws)):
                z = h @ ws[i].t() + bs[i]
                h = torch.relu(z) if i + 1 < len(ws) else z
            h.backward((h.detach() - onehot) / batch)
            with torch.no_grad():
                for t in ws + bs:
                    t -= 0.01 * t.grad
                    t.grad = None

        for _ in range(20):
            step()
        times = []
        for _ in range(5):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(args.steps):
                step()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) / args.steps)
        print(json.dumps({"bench": "gpu_mlp", "name": "torch", "batch": batch, "width": width,
                          "ms_per_step": round(statistics.median(times), 4),
                          "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
