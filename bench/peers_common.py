"""What the Python sides of the peers benchmarks (bench/peers_mlp.py, bench/peers_cnn.py) share: the
timing rule, the training step of each framework and the JSON row in bench_util.hpp's format.
The model, the optimiser and the data stay in each script."""
import json
import os
import statistics
import time


def run_timed(step, sync, repeats, target_s, warmup, probe, min_steps):
    """`warmup` steps, `probe` steps to calibrate the steps per repeat (enough for ~target_s, at
    least min_steps), then `repeats` timed repeats; returns (per-step times of the repeats, steps)."""
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(probe):
        step()
    sync()
    per_step = (time.perf_counter() - t0) / probe
    steps = max(min_steps, int(target_s / max(per_step, 1e-7)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        times.append((time.perf_counter() - t0) / steps)
    return times, steps


def mxnet_step(net, loss_fn, trainer, xs, ys, batch):
    """One Gluon training step over the batches xs, ys in turn; returns (step, sync, config)."""
    import mxnet as mx
    from mxnet import autograd

    state = {"i": 0}

    def step():
        i = state["i"] % len(xs)
        state["i"] += 1
        with autograd.record():
            loss = loss_fn(net(xs[i]), ys[i])
        loss.backward()
        trainer.step(batch)  # gradients of the per-sample losses, rescaled by 1/batch: the mean

    return step, mx.nd.waitall, "MXNet %s, engine %s, OMP_NUM_THREADS=%s" % (
        mx.__version__, os.environ.get("MXNET_ENGINE_TYPE", "ThreadedEnginePerDevice"),
        os.environ.get("OMP_NUM_THREADS", "unset"))


def torch_step(model, loss_fn, opt, xs, ys):
    """One PyTorch eager training step over the batches xs, ys in turn (zero_grad(set_to_none=True))."""
    state = {"i": 0}

    def step():
        i = state["i"] % len(xs)
        state["i"] += 1
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xs[i]), ys[i])
        loss.backward()
        opt.step()

    return step


def print_row(bench, group, name, batch, times, steps, repeats, threads, config):
    """One JSON row (samples/s) in bench_util.hpp's format, as the drivers read it."""
    med = statistics.median(times)
    row = {"bench": bench, "group": group, "name": name,
           "value": batch / med, "unit": "samples/s", "ratio": None, "baseline": None, "median_s": med,
           "spread": (max(times) - min(times)) / med, "repeats": repeats, "threads": threads,
           "note": "%d steps/repeat, %s" % (steps, config)}
    print(json.dumps(row), flush=True)
