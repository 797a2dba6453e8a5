"""minidl's benchmark suite: ``python -m bench`` (or ``python bench/run.py``).

The seed's training loop (random batches of 100, gradient, SGD update in Python,
batch loss, full train/test accuracy every 600 iterations) on real MNIST, run by
the book-style NumPy code (``book_numpy.py``, the baseline), by the same loop on
minidl's networks, by ``minidl.train``, and by PyTorch when it is importable.
Every case runs the full loop once (10,000 iterations by default) on the same
batches and initial weights; the table gives:

- ``wall s``: the run's wall time;
- ``est s``: the median time of one epoch (600 iterations and one evaluation)
  times iters/600, robust against a neighbour's burst on a shared machine; the
  ratio to the baseline of the same group uses it;
- ``acc``: the test accuracy at the last evaluation;
- ``floor s``: the dense matrix products this loop needs (forward, weight
  gradients, input gradients of the hidden layers, the loss's forward, the
  evaluations) over the BLAS throughput measured in this run: what a loop that
  did nothing but BLAS products would take. minidl's kernels skip zero inputs,
  so they can go under it.

Then the peak memory of the Q2a loop (a subprocess), and the kernel benchmarks.
Run it under the machine's benchmark lock: ``flock /tmp/minidl-bench.lock python -m bench``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
import timeit
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import minidl
from bench import book_numpy, kernels, torch_loop
from bench.stats import float32_speedups
from minidl import _sparse
from minidl.networks import MultiLayerNet

GROUPS = {
    "Q2a": ([784, 50, 10], "relu"),
    "Q5": ([784, 100, 50, 10], "relu"),
    "Q4": ([784, 50, 10], "sigmoid"),
}


def load_data():
    os.environ.setdefault("MINIDL_DATA_DIR", str(HERE.parent.parent / "shared" / "datasets"))
    from minidl.datasets import load_mnist

    (x_train, t_train), (x_test, t_test) = load_mnist(normalize=True, flatten=True)
    return x_train, t_train, x_test, t_test


def minidl_net(sizes, activation, dtype):
    # TwoLayerNet and ThreeLayerNet are MultiLayerNets of these sizes (same init order)
    return MultiLayerNet(sizes[0], sizes[1:-1], sizes[-1], activation=activation,
                         weight_init_std=0.01, dtype=dtype)


# -- the runs ----------------------------------------------------------------------
def run_case(kind, sizes, activation, dtype, data, iters):
    """One full loop; returns (wall seconds, marks, test accuracy)."""
    x_train, t_train, x_test, t_test = data
    np.random.seed(0)  # same initial weights and batches in every case
    marks = []
    start = time.perf_counter()
    if kind == "book":
        net = book_numpy.LayerNet(sizes, activation)
        _, _, test_acc = book_numpy.train_loop(net, x_train, t_train, x_test, t_test, iters,
                                               marks=marks)
    elif kind == "loop":  # the seed's own loop, on minidl's network
        net = minidl_net(sizes, activation, dtype)
        _, _, test_acc = book_numpy.train_loop(net, x_train, t_train, x_test, t_test, iters,
                                               marks=marks)
    elif kind == "train":
        net = minidl_net(sizes, activation, dtype)
        h = minidl.train(net, x_train, t_train, x_test, t_test, lr=0.1, batch_size=100,
                         iters=iters, on_epoch=lambda i, h: marks.append(time.perf_counter()))
        test_acc = h.test_acc
    elif kind == "torch":
        _, _, test_acc = torch_loop.train_loop(sizes, activation, dtype, x_train, t_train,
                                               x_test, t_test, iters, marks=marks)
    else:
        raise ValueError(kind)
    wall = time.perf_counter() - start
    return wall, [start, *marks], test_acc[-1]


def robust_estimate(wall, marks, iters, per_epoch=600):
    """Median epoch (600 iterations + an evaluation) scaled to the run's length."""
    spans = np.diff(marks)[1:]  # drop the first: one iteration and an evaluation
    if len(spans) < 3:
        return wall
    return float(np.median(spans)) * iters / per_epoch


def blas_gflops(dtype):
    """np.dot throughput (GFLOP/s) on the loop's shapes, measured now."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((100, 784)).astype(dtype)
    b = rng.standard_normal((784, 50)).astype(dtype)
    e = rng.standard_normal((8192, 784)).astype(dtype)
    t_small = min(timeit.repeat(lambda: np.dot(a, b), number=200, repeat=5)) / 200
    t_big = min(timeit.repeat(lambda: np.dot(e, b), number=3, repeat=3)) / 3
    return 2 * 100 * 784 * 50 / t_small / 1e9, 2 * 8192 * 784 * 50 / t_big / 1e9


def gemm_floor(sizes, iters, n_train, n_test, gflops, batch=100, per_epoch=600):
    small, big = gflops
    layer = [2 * sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1)]
    per_step = batch * (3 * sum(layer) + sum(layer[1:]))  # fwd, dW, loss fwd; dx of layers > 1
    n_evals = len(range(0, iters, per_epoch))
    per_eval = (n_train + n_test) * sum(layer)
    return iters * per_step / (small * 1e9) + n_evals * per_eval / (big * 1e9)


def peak_memory(iters, fast):
    """Peak RSS of the Q2a loop above the RSS after loading MNIST (MB), in a subprocess.

    Linux: the peak (VmHWM) is reset after loading, so that the loader's own
    temporaries do not count.
    """
    code = f"""
import sys, numpy as np
sys.path.insert(0, {str(HERE.parent)!r})
from bench.run import load_data
import minidl
from minidl.networks import TwoLayerNet
from bench import book_numpy
data = load_data()
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
base = status('VmRSS')
with open('/proc/self/clear_refs', 'w') as fh:  # reset the peak (VmHWM) to the current RSS
    fh.write('5')
np.random.seed(0)
net = TwoLayerNet(784, 50, 10)
if {fast!r}:
    minidl.train(net, *data, lr=0.1, batch_size=100, iters={iters})
else:
    book_numpy.train_loop(net, *data, {iters})
print(base, status('VmHWM'))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    base, peak = map(float, out.stdout.split())
    return base, peak


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(f"{i['internal_api']} {i['version']} {i['num_threads']} threads"
                         for i in threadpool_info() if i["user_api"] == "blas")
    except ImportError:
        blas = "BLAS threads unknown (threadpoolctl not installed)"
    return (f"{platform.node() or 'machine'}: {os.cpu_count()} CPUs ({cpu}), "
            f"Python {platform.python_version()}, numpy {np.__version__} ({blas}), "
            f"minidl kernels {_sparse.SIMD_ISA}, load average {os.getloadavg()[0]:.2f}")


def report(group, arch, label, runs, sizes, args, n_train, n_test, gflops):
    """One table row: medians over the case's runs (the accuracy of the last)."""
    wall, est, ratio = (float(np.median([r[i] for r in runs])) for i in range(3))
    acc = runs[-1][3]
    floor = gemm_floor(sizes, args.iters, n_train, n_test, gflops)
    name = f"{group} {arch} {label}"
    print(f"{name:50s} {wall:8.2f} {est:8.2f} {ratio:6.3f} {acc:7.4f} {floor:8.2f}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=10000, help="iterations per loop (10000)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs of every case, round-robin within a group; the table gives "
                         "medians (1)")
    ap.add_argument("--groups", default="Q2a,Q5,Q4", help="which experiments (Q2a,Q5,Q4)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    ap.add_argument("--no-kernels", action="store_true", help="skip the kernel benchmarks")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.iters < 1:
        ap.error("--repeats and --iters must be at least 1")

    print(f"minidl benchmark, {datetime.date.today()}")
    print(machine())
    data = load_data()
    torch_version = None if args.no_torch else torch_loop.available()
    if not args.no_torch and torch_version is None:
        print("PyTorch is not importable: its rows are skipped (pip install torch to add them).")
    gf = {np.float64: blas_gflops(np.float64), np.float32: blas_gflops(np.float32)}
    print(f"BLAS np.dot: float64 {gf[np.float64][0]:.1f} GFLOP/s (100x784x50), "
          f"{gf[np.float64][1]:.1f} (8192x784x50); float32 {gf[np.float32][0]:.1f}, "
          f"{gf[np.float32][1]:.1f}")
    runs = "one run per case" if args.repeats == 1 else (
        f"{args.repeats} runs per case, round-robin; medians of est s and of the ratio")
    print(f"\nThe seed's loop on MNIST, {args.iters} iterations, batch 100, lr 0.1, "
          f"evaluation every 600 iterations; {runs}")
    header = (f"{'case':50s} {'wall s':>8s} {'est s':>8s} {'ratio':>6s} {'acc':>7s} "
              f"{'floor s':>8s}")
    print(header)
    print("-" * len(header))
    n_train, n_test = len(data[0]), len(data[2])
    for group in args.groups.split(","):
        sizes, act = GROUPS[group]
        arch = "-".join(map(str, sizes)) + ("" if act == "relu" else " sigmoid")
        cases = [("book", np.float64, "book NumPy (baseline)"),
                 ("loop", np.float64, "seed loop, minidl network"),
                 ("loop", np.float32, "seed loop, minidl network, float32"),
                 ("train", np.float64, "minidl.train"),
                 ("train", np.float32, "minidl.train, float32")]
        if group != "Q2a":
            cases = [c for c in cases if c[1] == np.float64]
        if torch_version and group == "Q2a":
            cases += [("torch", np.float64, f"PyTorch {torch_version} (2 threads)"),
                      ("torch", np.float32, f"PyTorch {torch_version}, float32")]
        results = {label: [] for _, _, label in cases}  # (wall, est, ratio, acc) per run
        for _ in range(args.repeats):  # round-robin, so that a slow spell hits every case
            base = None
            for kind, dtype, label in cases:
                wall, marks, acc = run_case(kind, sizes, act, dtype, data, args.iters)
                est = robust_estimate(wall, marks, args.iters)
                base = base or est
                results[label].append((wall, est, est / base, acc))
                if args.repeats == 1:
                    report(group, arch, label, results[label], sizes, args, n_train, n_test,
                           gf[dtype])
        if args.repeats > 1:
            for _, dtype, label in cases:
                report(group, arch, label, results[label], sizes, args, n_train, n_test,
                       gf[dtype])
        speedups = float32_speedups(cases, results)
        if speedups:
            print(f"{group} float32 speedup (float64 est / float32 est of the same round, "
                  f"median): " + ", ".join(f"{name} {s:.2f}x" for name, s in speedups),
                  flush=True)

    if not args.no_memory:
        iters = min(args.iters, 1300)
        for fast, label in ((True, "minidl.train"), (False, "seed loop, minidl network")):
            base_rss, peak = peak_memory(iters, fast)
            print(f"\nPeak memory, Q2a {label} ({iters} iterations): {peak - base_rss:.0f} MB "
                  f"above the {base_rss:.0f} MB after loading MNIST "
                  f"(the dataset arrays: {sum(a.nbytes for a in data) / 2**20:.0f} MB)", end="")
        print()
    if not args.no_kernels:
        kernels.run(data[0], data[1])


if __name__ == "__main__":
    main()
