"""The chapter 7 benchmark: one SimpleConvNet training step, book vs minidl vs PyTorch.

``python -m bench.bench_conv`` (under the machine's benchmark lock:
``flock /tmp/minidl-bench.lock python -m bench.bench_conv``), with MNIST found
as minidl finds it (``MINIDL_DATA_DIR``).

The step is the book's ``Trainer.train_step`` with SGD: a batch of 100 MNIST
images (1 x 28 x 28) drawn with ``np.random.choice``, ``network.gradient``,
``params[key] -= lr * grads[key]``, then the batch's loss. The network is the
book's ``ch07/train_convnet.py`` one: conv 30 x 5 x 5 - relu - pool 2 x 2 -
affine 100 - relu - affine 10 - softmax. Every case starts from the same
weights (the book's draws) and runs the same batches:

- ``book``: the book's code (``tests/book_conv.py``'s transcription of
  ``common/util.py``, ``common/layers.py`` and ``ch07/simple_convnet.py``), float64;
- ``minidl f64`` / ``minidl f32``: ``minidl.networks.SimpleConvNet`` (float32:
  ``dtype=np.float32`` and float32 images);
- ``torch f32``: the same network in PyTorch (CPU, float32; ``Conv2d``,
  ``max_pool2d``, ``Linear``, manual SGD), when it is importable.

The cases run round-robin, ``--rounds`` times; in each round a case runs
``--steps`` steps (the book ``--book-steps``), after one warm-up step, and its
time is the median step. The table gives the median over rounds of those
times, and of the ratio to the book's (and PyTorch's) time of the same round
(the machine is shared: a neighbour's burst then hits both). The last column is
each case's batch loss after the first (warm-up) step, the same step for every
case: they agree to rounding (float32 to about 1e-6), they compute the same thing.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))  # the book's transcription lives there

import book_conv

import minidl
from minidl.networks import SimpleConvNet

LR = 0.01
BATCH = 100


def load_data():
    from minidl.datasets import load_mnist

    (x_train, t_train), _ = load_mnist(normalize=True, flatten=False)
    return x_train, t_train


def initial_params(seed=1211):
    np.random.seed(seed)
    return {k: v.copy() for k, v in book_conv.SimpleConvNet().params.items()}


class NumpyCase:
    """A network with the book's interface (book or minidl), stepped with SGD."""

    def __init__(self, net, x, t, params, dtype):
        self.net, self.t = net, t
        self.x = x.astype(dtype)
        for key, value in params.items():
            net.params[key][...] = value  # in place: the layers share these arrays

    def step(self, batch_mask):
        x_batch, t_batch = self.x[batch_mask], self.t[batch_mask]
        grads = self.net.gradient(x_batch, t_batch)
        for key in self.net.params:
            self.net.params[key] -= LR * grads[key]
        return float(self.net.loss(x_batch, t_batch))


class TorchCase:
    """The same network and step in PyTorch (float32, CPU)."""

    def __init__(self, x, t, params, threads):
        import torch

        torch.set_num_threads(threads)
        self.torch = torch
        self.x = torch.from_numpy(x.astype(np.float32))
        self.t = torch.from_numpy(t.astype(np.int64))
        f32 = {k: torch.from_numpy(v.astype(np.float32)) for k, v in params.items()}
        self.conv = torch.nn.Conv2d(1, 30, 5)
        self.fc1 = torch.nn.Linear(4320, 100)
        self.fc2 = torch.nn.Linear(100, 10)
        with torch.no_grad():  # the book's weights; Linear keeps W transposed
            self.conv.weight.copy_(f32["W1"])
            self.conv.bias.copy_(f32["b1"])
            self.fc1.weight.copy_(f32["W2"].T)
            self.fc1.bias.copy_(f32["b2"])
            self.fc2.weight.copy_(f32["W3"].T)
            self.fc2.bias.copy_(f32["b3"])
        self.params = [*self.conv.parameters(), *self.fc1.parameters(), *self.fc2.parameters()]

    def _loss(self, x, t):
        F = self.torch.nn.functional
        h = F.max_pool2d(self.torch.relu(self.conv(x)), 2, 2)
        h = self.torch.relu(self.fc1(h.flatten(1)))
        return F.cross_entropy(self.fc2(h), t)

    def step(self, batch_mask):
        idx = self.torch.from_numpy(batch_mask)
        x_batch, t_batch = self.x[idx], self.t[idx]
        for p in self.params:
            p.grad = None
        self._loss(x_batch, t_batch).backward()
        with self.torch.no_grad():
            for p in self.params:
                p -= LR * p.grad
            return float(self._loss(x_batch, t_batch))


def torch_version():
    try:
        import torch
    except Exception:  # noqa: BLE001 - any import failure means "skip"
        return None
    return torch.__version__


def machine(threads):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh
                        if line.startswith("model name")), "?")
    except OSError:
        pass
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    return (f"{platform.node() or 'machine'}: {os.cpu_count()} CPUs ({cpu}), "
            f"Python {platform.python_version()}, numpy {np.__version__} "
            f"(OPENBLAS_NUM_THREADS={blas}), torch {torch_version()} ({threads} threads), "
            f"minidl backend {minidl.get_backend()}, load average {os.getloadavg()[0]:.2f}")


def make_cases(x, t, params, args):
    cases = {"book": NumpyCase(book_conv.SimpleConvNet(), x, t, params, np.float64),
             "minidl f64": NumpyCase(SimpleConvNet(), x, t, params, np.float64),
             "minidl f32": NumpyCase(SimpleConvNet(dtype=np.float32), x, t, params, np.float32)}
    if not args.no_torch and torch_version() is not None:
        cases["torch f32"] = TorchCase(x, t, params, args.threads)
    return cases


def run(args):
    x, t = load_data()
    params = initial_params()
    cases = make_cases(x, t, params, args)
    np.random.seed(7)
    n_steps = max(args.steps, args.book_steps)
    masks = [np.random.choice(x.shape[0], BATCH) for _ in range(1 + args.rounds * n_steps)]
    times = {name: [] for name in cases}
    losses = {}
    for r in range(args.rounds):
        for name, case in cases.items():
            steps = args.book_steps if name == "book" else args.steps
            if r == 0:  # warm-up (first-call allocations, imports): the same step for all
                losses[name] = case.step(masks[0])
            per_step = []
            for i in range(steps):
                mask = masks[1 + r * n_steps + i]
                start = time.perf_counter()
                case.step(mask)
                per_step.append(time.perf_counter() - start)
            times[name].append(float(np.median(per_step)))
    return times, losses


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="round-robin rounds (5)")
    ap.add_argument("--steps", type=int, default=20, help="steps per round, minidl/torch (20)")
    ap.add_argument("--book-steps", type=int, default=4, help="steps per round, book (4)")
    ap.add_argument("--threads", type=int, default=2, help="PyTorch's threads (2)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    args = ap.parse_args(argv)
    if min(args.rounds, args.steps, args.book_steps, args.threads) < 1:
        ap.error("--rounds, --steps, --book-steps and --threads must be >= 1")

    print(f"# {datetime.date.today()}  {machine(args.threads)}")
    print(f"# SimpleConvNet training step (batch {BATCH}, MNIST 1x28x28, SGD lr {LR}); "
          f"{args.rounds} rounds, medians")
    times, losses = run(args)
    book = times["book"]
    print(f"{'case':12s} {'ms/step':>9s} {'x book':>8s} {'x torch':>8s} {'loss':>10s}")
    torch_times = times.get("torch f32")
    for name, ts in times.items():
        ratio = np.median([a / b for a, b in zip(ts, book)])
        vs_torch = (f"{np.median([a / b for a, b in zip(ts, torch_times)]):8.3f}"
                    if torch_times else f"{'-':>8s}")
        print(f"{name:12s} {np.median(ts) * 1e3:9.2f} {ratio:8.4f} {vs_torch} "
              f"{losses[name]:10.6f}", flush=True)


if __name__ == "__main__":
    main()
