#!/usr/bin/env python3
"""peers_mlp (Python side): the MLP 784-256-128-10 training step of bench/peers_mlp.cpp in MXNet
Gluon and in PyTorch eager, for bench/peers_mlp.sh.

Same model (784-256-128-10, ReLU), loss (softmax cross-entropy, mean over the batch), optimiser
(SGD lr 0.01, momentum 0.9), synthetic data (8192 samples cut into batches, generated once) and
timing rule as the dl side: 20 warm-up steps, then repeats of enough steps to last ~0.5 s (at least
50), median of 5 repeats. Prints one JSON row per batch size in bench_util.hpp's format.

  OMP_NUM_THREADS=2 python peers_mlp.py mxnet --threads 2          # needs mxnet==1.9.1, numpy<1.24
  python3 peers_mlp.py torch --threads 2                            # PyTorch eager
  python3 peers_mlp.py torch --threads 2 --compile                  # torch.compile (PyTorch >= 2)

Best configurations (shared/BENCHMARKING.md):
  MXNet: the network and the loss are HybridBlocks hybridized with static_alloc and static_shape;
    OMP_NUM_THREADS is the thread count (set before mxnet is imported, by the driver or here);
    the clock is read after mx.nd.waitall(). MXNET_ENGINE_TYPE=NaiveEngine (synchronous) is
    tried as a variant by the driver.
  PyTorch: torch.set_num_threads(n), zero_grad(set_to_none=True).
"""
import argparse
import os
import sys

from peers_common import mxnet_step, print_row, run_timed, torch_step


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("framework", choices=["mxnet", "torch"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, action="append", help="batch size (repeatable); default 32, 128, 512")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="batch 32 only, short repeats (smoke run)")
    p.add_argument("--compile", action="store_true", help="PyTorch: torch.compile the model (PyTorch >= 2)")
    p.add_argument("--name", default=None, help="row name in the output (default: the framework)")
    return p.parse_args()


def mxnet_side(args, batch):
    import mxnet as mx
    from mxnet import gluon
    from mxnet.gluon import nn

    mx.random.seed(0)
    ctx = mx.cpu()
    net = nn.HybridSequential()
    net.add(nn.Dense(256, in_units=784, activation="relu"), nn.Dense(128, in_units=256, activation="relu"),
            nn.Dense(10, in_units=128))
    net.initialize(mx.init.Xavier(), ctx=ctx)
    net.hybridize(static_alloc=True, static_shape=True)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    loss_fn.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.01, "momentum": 0.9}, kvstore=None)
    n = max(1, 8192 // batch)
    xs = [mx.nd.random.normal(shape=(batch, 784), ctx=ctx) for _ in range(n)]
    ys = [mx.nd.random.randint(0, 10, shape=(batch,), ctx=ctx).astype("float32") for _ in range(n)]
    mx.nd.waitall()
    return mxnet_step(net, loss_fn, trainer, xs, ys, batch)


def torch_side(args, batch):
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128), torch.nn.ReLU(),
                              torch.nn.Linear(128, 10))
    model = torch.compile(net) if args.compile else net
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    n = max(1, 8192 // batch)
    xs = [torch.randn(batch, 784) for _ in range(n)]
    ys = [torch.randint(0, 10, (batch,)) for _ in range(n)]
    return torch_step(model, loss_fn, opt, xs, ys), (lambda: None), "PyTorch %s%s, torch threads %d, OPENBLAS_NUM_THREADS=%s" % (
        torch.__version__, " compiled" if args.compile else " eager", torch.get_num_threads(),
        os.environ.get("OPENBLAS_NUM_THREADS", "unset"))


def main():
    args = parse()
    if args.framework == "mxnet":
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # read when mxnet is imported
    batches = args.batch or ([32] if args.quick else [32, 128, 512])
    repeats = 3 if args.quick and args.repeats == 5 else args.repeats
    target_s = 0.1 if args.quick else 0.5
    name = args.name or ("MXNet" if args.framework == "mxnet" else "PyTorch" + (" compiled" if args.compile else ""))
    for batch in batches:
        step, sync, config = (mxnet_side if args.framework == "mxnet" else torch_side)(args, batch)
        times, steps = run_timed(step, sync, repeats, target_s, warmup=20, probe=10, min_steps=50)
        print_row("peers_mlp (%s)" % args.framework, "batch %d" % batch, name, batch, times, steps, repeats,
                  args.threads, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
