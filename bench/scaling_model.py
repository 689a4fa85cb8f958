#!/usr/bin/env python3
"""Alpha-beta model of dl's hierarchical allreduce and projected data-parallel efficiency.

1. Fits T(n) = a + b n to the 'hier us' column of a bench_allreduce table (4 ranks = 2 simulated
   nodes x 2, so T_h = 2(L-1) alpha + 2(N-1) alpha + (2(L-1)/L + 2(N-1)/(N L)) n beta = 4 alpha + 1.5 n beta)
   and prints alpha and beta (per byte) for that machine's links.
2. Projects the step efficiency of ResNet-50 data-parallel training on p = N nodes x 8 GPUs with
   T_h(p) (intra-node terms with alpha_l, beta_l; inter-node with alpha_g, beta_g):
       T_h = 2(L-1) alpha_l + 2(L-1)/L n beta_l + 2(N-1) alpha_g + 2(N-1)/(N L) n beta_g
   efficiency = T_c / (T_c + exposed), exposed = max(T_h - T_bwd, (1 - h) T_h): the allreduce can
   hide behind backward (T_bwd = 2/3 of the step's compute) at most, and at best the share h that
   bench/overlap measured.
Usage: bench/scaling_model.py <bench_allreduce output> [hidden share h, default 0.5]
"""
import sys


def fit(path):
    pts = []
    for line in open(path):
        f = line.split()
        if not f or not f[0].isdigit():
            continue
        n = int(f[0])
        # columns: bytes MPI algbw busbw | flat busbw ratio | hier busbw ratio | leader ...
        hier = float(f[9])
        if n <= 16 << 20:  # above this the caches no longer hold the data: a different regime
            pts.append((n, hier * 1e-6))
    # Least squares on relative errors (weights 1/t^2): 4 KB counts as much as 16 MB.
    k = len(pts)
    w = [1 / (t * t) for _, t in pts]
    sw = sum(w); sx = sum(wi * n for wi, (n, _) in zip(w, pts)); sy = sum(wi * t for wi, (_, t) in zip(w, pts))
    sxx = sum(wi * n * n for wi, (n, _) in zip(w, pts)); sxy = sum(wi * n * t for wi, (n, t) in zip(w, pts))
    b = (sw * sxy - sx * sy) / (sw * sxx - sx * sx)
    a = (sy - b * sx) / sw
    # Relative fit error per point, so a reader can judge the straight line.
    err = max(abs(a + b * n - t) / t for n, t in pts)
    return a / 4, b / 1.5, err, len(pts)


def t_hier(n_bytes, nodes, local, al, bl, ag, bg, nics):
    # The L ranks of a node send their 2(N-1)/(N L) n bytes at once through the node's `nics` NICs.
    return (2 * (local - 1) * al + 2 * (local - 1) / local * n_bytes * bl
            + 2 * (nodes - 1) * ag + 2 * (nodes - 1) / (nodes * local) * n_bytes * bg * local / nics)


def main():
    alpha, beta, err, k = fit(sys.argv[1])
    h = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
    print(f"fit over {k} sizes (4 KB..16 MB), worst relative error {err:.0%}:")
    print(f"  alpha = {alpha * 1e6:.2f} us per step, beta = {beta * 1e9:.3f} ns/byte ({1 / beta / 1e9:.2f} GB/s per link)")
    grads = 25.6e6 * 4  # ResNet-50: 25.6 M float32 parameters
    L = 8
    h100 = 128 / 831  # PyTorch ResNet-50 fp32 on one H100, 831 img/s (docs/benchmarks.md), batch 128 per GPU
    p100 = 64 / 200   # P100-class GPU (Horovod's era), ~200 img/s fp32 at batch 64: an assumption
    scenarios = [
        # name, step compute s, alpha_l, beta_l, alpha_g, beta_g (per NIC), NICs per node
        ("H100, intra-node at the FITTED alpha/beta, 1 x 100 Gb/s NIC", h100, alpha, beta, 10e-6, 1 / 12.5e9, 1),
        ("H100, NVLink 150 GB/s, 1 x 100 Gb/s NIC", h100, 5e-6, 1 / 150e9, 10e-6, 1 / 12.5e9, 1),
        ("H100, NVLink 150 GB/s, 8 x 400 Gb/s NICs (DGX-class)", h100, 5e-6, 1 / 150e9, 5e-6, 1 / 50e9, 8),
        ("P100-class, PCIe 10 GB/s, 1 x 25 Gb/s NIC (Horovod's setting)", p100, 10e-6, 1 / 10e9, 10e-6, 1 / 3.125e9, 1),
    ]
    print(f"ResNet-50, {grads / 1e6:.0f} MB of float32 gradients per step, {L} ranks per node, hidden share h = {h:.2f}")
    print(f"{'scenario':66s} {'GPUs':>5s} {'T_ar ms':>8s} {'T_c ms':>7s} {'eff':>5s}")
    for name, tc, al, bl, ag, bg, nics in scenarios:
        for p in (16, 256):
            nodes = p // L
            tar = t_hier(grads, nodes, L, al, bl, ag, bg, nics)
            exposed = max(tar - 2 / 3 * tc, (1 - h) * tar)
            print(f"{name:66s} {p:5d} {tar * 1e3:8.1f} {tc * 1e3:7.0f} {tc / (tc + exposed):5.0%}")
    print("published: MXNet 91% at 16 GPUs; Horovod 90% at 512 GPUs (ResNet-101 / Inception V3, 25 Gb/s RoCE)")


if __name__ == "__main__":
    main()
