#!/usr/bin/env python3
"""peers_cnn (Python side): the LeNet and ResNet-20 training steps of bench/peers_cnn.cpp in MXNet
Gluon and in PyTorch eager, for bench/peers_cnn.sh.

Same models layer for layer (examples/train_lenet.cpp and examples/train_resnet.cpp defaults: the
input normalisation, bias-free convolutions before batch norm, 1x1 conv + batch norm projections
where a ResNet block changes shape), loss (softmax cross-entropy, mean over the batch), optimiser
(SGD lr 0.01, momentum 0.9, weight decay 5e-4), synthetic data (2048 images 1x28x28 in [0, 1) with
10 classes, cut into batches, generated once) and timing rule as the dl side: 5 warm-up steps, then
repeats of enough steps to last ~1 s (at least 3), median of 5 repeats. Prints one JSON row per
(model, batch) in bench_util.hpp's format.

  OMP_NUM_THREADS=2 python peers_cnn.py mxnet --threads 2          # needs mxnet==1.9.1, numpy<1.24
  python3 peers_cnn.py torch --threads 2 --model lenet --batch 64   # PyTorch eager

Best configurations (shared/BENCHMARKING.md):
  MXNet: network and loss are HybridBlocks hybridized with static_alloc and static_shape;
    OMP_NUM_THREADS is the thread count (set before mxnet is imported); the clock is read after
    mx.nd.waitall(). The driver also tries MXNET_ENGINE_TYPE=NaiveEngine. The pip wheel runs its
    convolutions in oneDNN (MKL-DNN).
  PyTorch: torch.set_num_threads(n), zero_grad(set_to_none=True); convolutions in oneDNN.
"""
import argparse
import os
import sys

from peers_common import mxnet_step, print_row, run_timed, torch_step

MEAN, STD = 0.2860, 0.3530


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("framework", choices=["mxnet", "torch"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", action="append", choices=["lenet", "resnet20"], help="repeatable; default both")
    p.add_argument("--batch", type=int, action="append", help="batch size (repeatable); default 64, 128")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="batch 64 only, short repeats (smoke run)")
    p.add_argument("--json", action="store_true", help="accepted for symmetry with the C++ sides (always JSON)")
    return p.parse_args()


def mxnet_side(model, batch):
    import mxnet as mx
    from mxnet import gluon
    from mxnet.gluon import nn

    class LeNet(gluon.HybridBlock):
        def __init__(self):
            super().__init__()
            with self.name_scope():
                self.conv1 = nn.Conv2D(16, 5, padding=2, use_bias=False, in_channels=1)
                self.bn1 = nn.BatchNorm(in_channels=16)
                self.conv2 = nn.Conv2D(32, 5, use_bias=False, in_channels=16)
                self.bn2 = nn.BatchNorm(in_channels=32)
                self.pool = nn.MaxPool2D(2)
                self.fc1 = nn.Dense(120, activation="relu", in_units=800)
                self.fc2 = nn.Dense(84, activation="relu", in_units=120)
                self.fc3 = nn.Dense(10, in_units=84)

        def hybrid_forward(self, F, x):
            h = self.pool(F.relu(self.bn1(self.conv1((x - MEAN) / STD))))
            h = self.pool(F.relu(self.bn2(self.conv2(h))))
            return self.fc3(self.fc2(self.fc1(h)))  # Dense flattens (N, 32, 5, 5) to (N, 800)

    class BasicBlock(gluon.HybridBlock):
        def __init__(self, cin, cout, stride):
            super().__init__()
            with self.name_scope():
                self.conv1 = nn.Conv2D(cout, 3, strides=stride, padding=1, use_bias=False, in_channels=cin)
                self.bn1 = nn.BatchNorm(in_channels=cout)
                self.conv2 = nn.Conv2D(cout, 3, padding=1, use_bias=False, in_channels=cout)
                self.bn2 = nn.BatchNorm(in_channels=cout)
                self.shortcut = None
                if stride != 1 or cin != cout:
                    self.shortcut = nn.HybridSequential()
                    self.shortcut.add(nn.Conv2D(cout, 1, strides=stride, use_bias=False, in_channels=cin),
                                      nn.BatchNorm(in_channels=cout))

        def hybrid_forward(self, F, x):
            h = F.relu(self.bn1(self.conv1(x)))
            h = self.bn2(self.conv2(h))
            return F.relu(h + (self.shortcut(x) if self.shortcut is not None else x))

    class ResNet(gluon.HybridBlock):
        def __init__(self, depth=20, width=16):
            super().__init__()
            n = (depth - 2) // 6
            with self.name_scope():
                self.conv1 = nn.Conv2D(width, 3, padding=1, use_bias=False, in_channels=1)
                self.bn1 = nn.BatchNorm(in_channels=width)
                self.blocks = nn.HybridSequential()
                cin = width
                for stage in range(3):
                    for i in range(n):
                        cout = width << stage
                        self.blocks.add(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
                        cin = cout
                self.pool = nn.GlobalAvgPool2D()
                self.fc = nn.Dense(10, in_units=4 * width)

        def hybrid_forward(self, F, x):
            h = F.relu(self.bn1(self.conv1((x - MEAN) / STD)))
            return self.fc(self.pool(self.blocks(h)))

    mx.random.seed(0)
    ctx = mx.cpu()
    net = LeNet() if model == "lenet" else ResNet()
    net.initialize(mx.init.MSRAPrelu(factor_type="in", slope=0.0) if model == "resnet20" else mx.init.Xavier(), ctx=ctx)
    net.hybridize(static_alloc=True, static_shape=True)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    loss_fn.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.01, "momentum": 0.9, "wd": 5e-4},
                            kvstore=None)
    n = max(1, 2048 // batch)
    xs = [mx.nd.random.uniform(0, 1, shape=(batch, 1, 28, 28), ctx=ctx) for _ in range(n)]
    ys = [mx.nd.random.randint(0, 10, shape=(batch,), ctx=ctx).astype("float32") for _ in range(n)]
    mx.nd.waitall()
    return mxnet_step(net, loss_fn, trainer, xs, ys, batch)


def torch_side(model, batch, threads):
    import torch
    from torch import nn

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 5, padding=2, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.conv2 = nn.Conv2d(16, 32, 5, bias=False)
            self.bn2 = nn.BatchNorm2d(32)
            self.fc1, self.fc2, self.fc3 = nn.Linear(800, 120), nn.Linear(120, 84), nn.Linear(84, 10)

        def forward(self, x):
            F = torch.nn.functional
            h = F.max_pool2d(F.relu(self.bn1(self.conv1((x - MEAN) / STD))), 2)
            h = F.max_pool2d(F.relu(self.bn2(self.conv2(h))), 2)
            return self.fc3(F.relu(self.fc2(F.relu(self.fc1(h.flatten(1))))))

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = None
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            h = torch.relu(self.bn1(self.conv1(x)))
            h = self.bn2(self.conv2(h))
            return torch.relu(h + (self.shortcut(x) if self.shortcut is not None else x))

    class ResNet(nn.Module):
        def __init__(self, depth=20, width=16):
            super().__init__()
            n = (depth - 2) // 6
            self.conv1 = nn.Conv2d(1, width, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            blocks, cin = [], width
            for stage in range(3):
                for i in range(n):
                    cout = width << stage
                    blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
                    cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(4 * width, 10)
            for p in self.parameters():
                if p.dim() >= 2:
                    nn.init.kaiming_normal_(p, 0.0, "fan_in")

        def forward(self, x):
            h = torch.relu(self.bn1(self.conv1((x - MEAN) / STD)))
            return self.fc(self.blocks(h).mean((2, 3)))

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = LeNet() if model == "lenet" else ResNet()
    net.train()
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    n = max(1, 2048 // batch)
    xs = [torch.rand(batch, 1, 28, 28) for _ in range(n)]
    ys = [torch.randint(0, 10, (batch,)) for _ in range(n)]
    return torch_step(net, loss_fn, opt, xs, ys), (lambda: None), "PyTorch %s eager, torch threads %d, OPENBLAS_NUM_THREADS=%s" % (
        torch.__version__, torch.get_num_threads(), os.environ.get("OPENBLAS_NUM_THREADS", "unset"))


def main():
    args = parse()
    if args.framework == "mxnet":
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # read when mxnet is imported
    models = args.model or ["lenet", "resnet20"]
    batches = args.batch or ([64] if args.quick else [64, 128])
    repeats = 3 if args.quick and args.repeats == 5 else args.repeats
    target_s = 0.2 if args.quick else 1.0
    name = "MXNet" if args.framework == "mxnet" else "PyTorch"
    for model in models:
        for batch in batches:
            if args.framework == "mxnet":
                step, sync, config = mxnet_side(model, batch)
            else:
                step, sync, config = torch_side(model, batch, args.threads)
            times, steps = run_timed(step, sync, repeats, target_s, warmup=5, probe=3, min_steps=3)
            print_row("peers_cnn (%s)" % args.framework, "%s batch %d" % (model, batch), name, batch, times, steps,
                      repeats, args.threads, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
