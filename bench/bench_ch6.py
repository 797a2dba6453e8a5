"""Chapter 6's benchmark: the book's code against minidl's, in the same run.

``flock /tmp/minidl-bench.lock python -m bench.bench_ch6 [--rounds 3]``

Two of the book's chapter 6 programs, on real MNIST (``MINIDL_DATA_DIR``):

- ``optimizer_compare``: ``ch06/optimizer_compare_mnist.py``'s loop. Four
  784-100-100-100-100-10 ``MultiLayerNet`` (He initialisation), one per optimizer
  (SGD, Momentum, AdaGrad, Adam, the book's defaults), trained on the same random
  batches of 128 for 2000 iterations: per iteration and network ``gradient``,
  ``optimizer.update``, ``loss``, and every 100 iterations the loss again.
- ``batchnorm``: ``ch06/batch_norm_test.py``'s ``__train(w)``: a
  784-100x5-10 ``MultiLayerNetExtend`` with batch normalisation and one without,
  the first 1000 training images, batches of 100, SGD lr 0.01, 20 epochs with
  both networks' training accuracy after each; for ``--scales`` of the script's 16
  weight scales (``np.logspace(0, -4, 16)``, spread over the range).

The baseline is the book's code (``bench/book_ch6.py``: its optimizers,
MultiLayerNet, MultiLayerNetExtend, layers); minidl runs the same program on
``minidl.networks`` and ``minidl.optimizer``. Both start from the same seed, so
they draw the same batches and weights; the final losses and accuracies are
printed side by side (they agree to rounding). Each round runs the book, then
minidl; the table gives the median wall time over rounds and the median of the
per-round ratios minidl / book (a neighbour's burst hits both runs of a round).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import minidl.networks
import minidl.optimizer
from bench import book_ch6

OPTIMIZERS = ("SGD", "Momentum", "AdaGrad", "Adam")


def load_data():
    from minidl.datasets import load_mnist

    (x_train, t_train), _ = load_mnist(normalize=True)
    return x_train, t_train


# -- ch06/optimizer_compare_mnist.py ------------------------------------------------------
def optimizer_compare(nets, opts, x_train, t_train, max_iterations, seed=0):
    """The script's loop (without its prints and plot); the last losses per optimizer."""
    np.random.seed(seed)
    optimizers = {key: getattr(opts, key)() for key in OPTIMIZERS}
    networks = {key: nets.MultiLayerNet(input_size=784, hidden_size_list=[100, 100, 100, 100],
                                        output_size=10) for key in OPTIMIZERS}
    train_loss = {key: [] for key in OPTIMIZERS}
    train_size, batch_size = x_train.shape[0], 128
    for i in range(max_iterations):
        batch_mask = np.random.choice(train_size, batch_size)
        x_batch = x_train[batch_mask]
        t_batch = t_train[batch_mask]
        for key in OPTIMIZERS:
            grads = networks[key].gradient(x_batch, t_batch)
            optimizers[key].update(networks[key].params, grads)
            loss = networks[key].loss(x_batch, t_batch)
            train_loss[key].append(loss)
        if i % 100 == 0:
            for key in OPTIMIZERS:
                networks[key].loss(x_batch, t_batch)
    return {key: float(np.mean(train_loss[key][-100:])) for key in OPTIMIZERS}


# -- ch06/batch_norm_test.py ---------------------------------------------------------------
def batchnorm(nets, opts, x_train, t_train, scales, max_epochs=20, seed=0):
    """The script's __train(w) for each weight scale; the last accuracies (plain, bn)."""
    np.random.seed(seed)
    x_train, t_train = x_train[:1000], t_train[:1000]
    train_size, batch_size, learning_rate = x_train.shape[0], 100, 0.01
    finals = []
    for w in scales:
        bn_network = nets.MultiLayerNetExtend(input_size=784, hidden_size_list=[100] * 5,
                                              output_size=10, weight_init_std=w,
                                              use_batchnorm=True)
        network = nets.MultiLayerNetExtend(input_size=784, hidden_size_list=[100] * 5,
                                           output_size=10, weight_init_std=w)
        optimizer = opts.SGD(lr=learning_rate)
        iter_per_epoch = max(train_size / batch_size, 1)
        epoch_cnt = 0
        for i in range(1000000000):
            batch_mask = np.random.choice(train_size, batch_size)
            x_batch = x_train[batch_mask]
            t_batch = t_train[batch_mask]
            for _network in (bn_network, network):
                grads = _network.gradient(x_batch, t_batch)
                optimizer.update(_network.params, grads)
            if i % iter_per_epoch == 0:
                train_acc = network.accuracy(x_train, t_train)
                bn_train_acc = bn_network.accuracy(x_train, t_train)
                epoch_cnt += 1
                if epoch_cnt >= max_epochs:
                    break
        finals.append((float(train_acc), float(bn_train_acc)))
    return finals


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of book + minidl")
    parser.add_argument("--iters", type=int, default=2000,
                        help="optimizer_compare's iterations (the book's 2000)")
    parser.add_argument("--scales", type=int, default=4,
                        help="batchnorm's weight scales, of the script's 16")
    parser.add_argument("--cases", nargs="+", default=["optimizer_compare", "batchnorm"],
                        choices=["optimizer_compare", "batchnorm"])
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.iters < 1 or not 1 <= args.scales <= 16:
        parser.error("--rounds and --iters must be >= 1, --scales in 1..16")

    x_train, t_train = load_data()
    all_scales = np.logspace(0, -4, num=16)
    scales = all_scales[np.linspace(0, 15, args.scales).round().astype(int)]
    impls = {"book": (book_ch6, book_ch6), "minidl": (minidl.networks, minidl.optimizer)}
    runs = {
        "optimizer_compare": lambda nets, opts: optimizer_compare(nets, opts, x_train, t_train,
                                                                   args.iters),
        "batchnorm": lambda nets, opts: batchnorm(nets, opts, x_train, t_train, scales),
    }
    print(f"minidl {minidl.__version__}, NumPy {np.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    print(f"optimizer_compare: {args.iters} iterations; batchnorm: weight scales "
          f"{', '.join(f'{w:.3g}' for w in scales)}; {args.rounds} rounds\n")
    for case in args.cases:
        times = {name: [] for name in impls}
        results = {}
        for _ in range(args.rounds):
            for name, (nets, opts) in impls.items():
                seconds, results[name] = timed(runs[case], nets, opts)
                times[name].append(seconds)
        ratios = [m / b for m, b in zip(times["minidl"], times["book"])]
        print(f"{case}")
        for name in impls:
            print(f"  {name:7s} median {statistics.median(times[name]):7.2f} s   "
                  f"(rounds: {', '.join(f'{t:.2f}' for t in times[name])})   "
                  f"results {results[name]}")
        print(f"  minidl / book: {statistics.median(ratios):.2f}x "
              f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})\n")


if __name__ == "__main__":
    main()
