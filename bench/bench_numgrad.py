"""Numerical gradients: minidl against the book's NumPy loop, measured in one run.

Run from the source tree, under the shared lock (benchmarks never overlap):

    flock /tmp/minidl-bench.lock python3 bench/bench_numgrad.py

On a batch of 100 real MNIST training images (found by ``minidl.datasets``, e.g.
through ``$MINIDL_DATA_DIR``; never downloaded here), for TwoLayerNet
784-50-10 and ThreeLayerNet 784-100-50-10 with the same weights:

1. the book's ``network.numerical_gradient(x, t)`` (its layers, its nditer loop,
   in bench/book_numpy.py), the baseline;
2. minidl's generic loop: ``numerical_gradient(f, W)`` in Cython around minidl's loss
   (``network.numerical_gradient(x, t, method='generic')``);
3. minidl's network-level gradient (``network.numerical_gradient(x, t)``),

with medians, ratios to the baseline and the largest difference from it. Then the
generic function's own cost per element with a trivial ``f``, and the assignment's
Q3: ten iterations of SGD with numerical gradients against ten with backprop.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source tree

from bench import book_numpy
from minidl.datasets import load_mnist
from minidl.gradient import numerical_gradient as minidl_numerical_gradient
from minidl.networks import ThreeLayerNet, TwoLayerNet


def book_copy(net):
    """The book's network (bench/book_numpy.py) computing with a copy of ``net``'s weights."""
    state = np.random.get_state()  # building draws weights; the bench's seeds stay put
    book = book_numpy.LayerNet(net.sizes, net.activation)
    np.random.set_state(state)
    for key, value in net.params.items():
        book.params[key][...] = value
    return book


def load_mnist_train():
    """MNIST training images as the book's load_mnist(normalize=True) gives them."""
    (x, t), _ = load_mnist(normalize=True, download=False)
    return x, t.astype(np.int64)


def timed(fn, repeats, cpu=None):
    """(median wall seconds, result of the last call); appends median CPU seconds to ``cpu``."""
    times, cpu_times, out = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - start_cpu)
    if cpu is not None:
        cpu.append(statistics.median(cpu_times))
    return statistics.median(times), out


def fmt_time(s):
    return f"{s * 1e3:8.1f} ms" if s < 1 else f"{s:8.2f} s "


def max_diff(a, b):
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


# -- the three sections ----------------------------------------------------------------------
def load_average():
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def bench_network(name, net, x, t, args, generic=True):
    book = book_copy(net)
    print(f"\n{name}: {sum(p.size for p in net.params.values()):,} parameters "
          f"({load_average()})", flush=True)
    cpu = []  # process CPU time, all threads: wall >> cpu / threads means a busy machine
    book_s, book_g = timed(lambda: book.numerical_gradient(x, t), args.book_repeats, cpu)
    rows = [("book NumPy loop (baseline)", book_s, args.book_repeats, None)]
    if generic:
        s, g = timed(lambda: net.numerical_gradient(x, t, method="generic"), 1, cpu)
        rows.append(("minidl generic loop", s, 1, max_diff(g, book_g)))
    s, g = timed(lambda: net.numerical_gradient(x, t), args.repeats, cpu)
    rows.append(("minidl network-level", s, args.repeats, max_diff(g, book_g)))
    print(f"  {'method':<28} {'median':>11} {'cpu':>11} {'runs':>5} {'vs book':>9} "
          f"{'max|diff| vs book':>18}")
    for (label, seconds, runs, diff), cpu_s in zip(rows, cpu):
        diff_s = "-" if diff is None else f"{diff:.1e}"
        print(f"  {label:<28} {fmt_time(seconds)} {fmt_time(cpu_s)} {runs:5d} "
              f"{book_s / seconds:8.0f}x {diff_s:>18}")
    print(f"  ({load_average()})")
    return book_s, rows[-1][1]


def bench_generic_overhead():
    f = lambda a: 0.0  # a trivial f: what is left is the loop's own cost
    x = np.zeros(100_000)
    n = x.size
    best = lambda fn, k: min(timed(fn, 1)[0] for _ in range(k))
    ours = best(lambda: minidl_numerical_gradient(f, x), 7) / n
    calls = best(lambda: collections.deque(map(f, itertools.repeat(x, 2 * n)), maxlen=0), 7) / n
    small = x[:20_000]
    book = best(lambda: book_numpy.numerical_gradient(f, small), 3) / small.size
    print(f"\nnumerical_gradient(f, x) with f = lambda a: 0.0, x of {n:,} float64 (best of runs):")
    print(f"  book nditer loop             {book * 1e9:7.0f} ns per element")
    print(f"  minidl Cython loop           {ours * 1e9:7.0f} ns per element "
          f"({book / ours:.0f}x faster)")
    print(f"  2 calls of f, bare (map)     {calls * 1e9:7.0f} ns per element "
          f"(one call {calls / 2 * 1e9:.0f} ns)")
    print(f"  minidl's own overhead        {max(ours - calls, 0) * 1e9:7.0f} ns per element "
          "(what is left after the 2 calls; below one call of f)")


def bench_training(x_train, t_train, book_seconds, args):
    """The assignment's Q3: the course's SGD loop, 10 iterations, numerical vs backprop."""
    print("\nQ3: 10 iterations of SGD (TwoLayerNet 784-50-10, lr 0.1, batch 100, MNIST):")
    results = {}
    for grad in ("numerical", "backprop"):
        np.random.seed(0)
        net = TwoLayerNet(784, 50, 10)
        compute = net.numerical_gradient if grad == "numerical" else net.gradient
        start = time.perf_counter()
        for _ in range(args.iters):
            mask = np.random.choice(len(x_train), 100)
            x_batch, t_batch = x_train[mask], t_train[mask]
            grads = compute(x_batch, t_batch)
            for key in net.params:
                net.params[key] -= 0.1 * grads[key]
            net.loss(x_batch, t_batch)
        results[grad] = (time.perf_counter() - start, net)
    num_s, num_net = results["numerical"]
    bp_s, bp_net = results["backprop"]
    drift = max(float(np.abs(num_net.params[k] - bp_net.params[k]).max()) for k in num_net.params)
    print(f"  numerical gradient, minidl   {fmt_time(num_s)}  ({num_s / bp_s:.0f}x backprop)")
    print(f"  backprop, minidl             {fmt_time(bp_s)}")
    print(f"  numerical gradient, book     {fmt_time(args.iters * book_seconds)}  "
          f"(estimate: {args.iters} x its gradient above; Colab took 844 s)")
    print(f"  max |param difference| after {args.iters} steps, numerical vs backprop: {drift:.1e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="runs of minidl's fast path")
    parser.add_argument("--book-repeats", type=int, default=1, help="runs of the book's loop")
    parser.add_argument("--iters", type=int, default=10, help="SGD iterations for Q3")
    parser.add_argument("--skip-three", action="store_true", help="TwoLayerNet only")
    parser.add_argument("--skip-generic", action="store_true", help="skip minidl's generic loop")
    parser.add_argument("--generic-three", action="store_true",
                        help="also run minidl's generic loop on ThreeLayerNet (minutes)")
    args = parser.parse_args()

    x_train, t_train = load_mnist_train()
    rng = np.random.default_rng(0)
    idx = rng.choice(len(x_train), 100, replace=False)
    x, t = x_train[idx], t_train[idx]
    print("numerical gradients, central differences, h = 1e-4, on a batch of 100 MNIST "
          "training images (float32 pixels / 255, float64 weights)")
    threads = {k: os.environ.get(k, "unset") for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    print(f"{os.cpu_count()} CPUs, {threads}; numpy {np.__version__}; {load_average()}")
    print("(the machine is shared: a load above the CPU count slows the baseline's small, "
          "BLAS-threaded products most)")

    np.random.seed(0)
    book_two, _ = bench_network("TwoLayerNet 784-50-10", TwoLayerNet(784, 50, 10), x, t, args,
                                generic=not args.skip_generic)
    if not args.skip_three:
        np.random.seed(0)
        bench_network("ThreeLayerNet 784-100-50-10", ThreeLayerNet(784, 100, 50, 10), x, t, args,
                      generic=args.generic_three and not args.skip_generic)
    bench_generic_overhead()
    bench_training(x_train, t_train, book_two, args)


if __name__ == "__main__":
    main()
