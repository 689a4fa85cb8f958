#!/usr/bin/env python3
"""bench/gpu/resnet_torch.py: the PyTorch eager peer of bench_gpu_resnet (bench/gpu/resnet.cu).

torchvision's resnet18 / resnet50 (weights=None), float32 NCHW on cuda:0, one random batch of
--batch images --size x --size with random labels, cross_entropy, torch.optim.SGD (lr 0.1,
momentum 0.9; foreach, PyTorch's default on CUDA), zero_grad(set_to_none=True). fp32 rows turn TF32
off for both matmul and cuDNN (PyTorch allows it in cuDNN by default); tf32 rows turn it on for
both. cudnn.benchmark stays False (the default; dl also picks algorithms by heuristic). Timing: CUDA
events around --steps steps after 3 warm-up steps, median of 3 repeats. One JSON row per
configuration, like the dl side.

  python3 bench/gpu/resnet_torch.py [--steps 10] [--batch 128] [--size 224] [--model all] [--precision all]
"""
import argparse
import json
import statistics
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--model", choices=["resnet18", "resnet50", "all"], default="all")
    p.add_argument("--precision", choices=["fp32", "tf32", "all"], default="all")
    args = p.parse_args()
    try:
        import torch
        import torchvision
    except ImportError as e:
        print(f"resnet_torch: {e}", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("resnet_torch: no CUDA device visible to PyTorch", file=sys.stderr)
        return 1
    dev = torch.device("cuda:0")
    for tf32 in (False, True):
        if args.precision != "all" and (args.precision == "tf32") != tf32:
            continue
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        for name in ("resnet18", "resnet50"):
            if args.model not in ("all", name):
                continue
            torch.manual_seed(0)
            net = getattr(torchvision.models, name)(weights=None).to(dev)
            net.train()
            opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
            x = torch.randn(args.batch, 3, args.size, args.size, device=dev)
            y = (torch.arange(args.batch, device=dev) * 7919) % 1000

            def step():
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(net(x), y)
                loss.backward()
                opt.step()

            for _ in range(3):
                step()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            ms = []
            for _ in range(3):
                start = torch.cuda.Event(enable_timing=True)
                stop = torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(args.steps):
                    step()
                stop.record()
                stop.synchronize()
                ms.append(start.elapsed_time(stop) / args.steps)
            step_ms = statistics.median(ms)
            print(json.dumps({"bench": "gpu_resnet", "name": "torch", "model": name, "precision": "tf32" if tf32 else "fp32",
                              "batch": args.batch, "size": args.size, "ms_per_step": round(step_ms, 3),
                              "images_per_s": round(1000.0 * args.batch / step_ms, 1),
                              "peak_mib": round(torch.cuda.max_memory_allocated() / 2**20),
                              "torch": torch.__version__}), flush=True)
            del net, opt, x, y
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
