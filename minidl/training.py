"""The seed's training loop: mini-batch SGD with a per-epoch evaluation.

``train`` runs exactly what the assignment's notebook runs (random batches
drawn with ``np.random.choice`` from NumPy's global generator, ``gradient``,
the in-place SGD update, the batch loss, and train/test accuracy once per
epoch) and returns the curves as a ``History``.

By default (``fast=True``) the steps run on a ``Trainer``: the same arithmetic
on the same batches, but with the dataset's nonzero lists computed once and
each whole step (forward, backward, every update, the loss after it) in one
compiled call (``_core.SGDStep``) on the batch's rows of those lists, every
weight gradient fused with its SGD update, and evaluation counted in compiled
chunks. Networks or data it does not cover (weight decay, soft labels,
numerical gradients, user-defined networks) run the plain loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import _backend, _core

__all__ = ["History", "Trainer", "train"]

GRAD_METHODS = ("backprop", "numerical")


@dataclass
class History:
    """What one training run recorded."""

    train_loss: list = field(default_factory=list)  # the batch loss after each step
    epochs: list = field(default_factory=list)  # iteration index of each evaluation
    train_acc: list = field(default_factory=list)
    test_acc: list = field(default_factory=list)
    epoch_seconds: list = field(default_factory=list)  # elapsed time at each evaluation
    iterations: int = 0
    seconds: float = 0.0

    def __repr__(self) -> str:
        # short: the curves themselves can hold 10,000 floats
        parts = [f"{self.iterations} iterations in {self.seconds:.1f} s",
                 f"{len(self.epochs)} evaluation{'' if len(self.epochs) == 1 else 's'}"]
        if self.train_acc:
            parts.append(f"last train acc {self.train_acc[-1]:.4f}")
        if self.test_acc:
            parts.append(f"test acc {self.test_acc[-1]:.4f}")
        if self.train_loss:
            parts.append(f"last loss {self.train_loss[-1]:.4g}")
        return f"History({', '.join(parts)})"

    def as_dict(self) -> dict:
        return {
            "train_loss": [float(v) for v in self.train_loss],
            "epochs": list(self.epochs),
            "train_acc": [float(v) for v in self.train_acc],
            "test_acc": [float(v) for v in self.test_acc],
            "epoch_seconds": list(self.epoch_seconds),
            "iterations": self.iterations,
            "seconds": self.seconds,
        }


def train(
    network,
    x_train: np.ndarray,
    t_train: np.ndarray,
    x_test: np.ndarray | None = None,
    t_test: np.ndarray | None = None,
    *,
    lr: float = 0.1,
    batch_size: int = 100,
    iters: int = 10000,
    grad: str = "backprop",
    on_epoch: Callable[[int, History], None] | None = None,
    on_iteration: Callable[[int, float], None] | None = None,
    fast: bool = True,
) -> History:
    """Train ``network`` in place with SGD; evaluate once per epoch.

    An epoch is ``max(len(x_train) / batch_size, 1)`` iterations, evaluated at
    iterations 0, epoch, 2*epoch, ... as the seed's loop does. ``on_epoch(i,
    history)`` is called after each evaluation, ``on_iteration(i, loss)``
    after each step. Interrupting (Ctrl-C) leaves ``history`` as far as it got:
    the exception carries it as ``exc.history``.

    ``fast=True`` runs the steps on a ``Trainer`` when it covers the network and
    data (see ``Trainer.unsupported``); the results agree with the plain loop
    (``fast=False``) up to rounding, on the same random batches.
    """
    if grad not in GRAD_METHODS:
        raise ValueError(f"grad must be one of {GRAD_METHODS}, got {grad!r}")
    train_size = len(x_train)
    if train_size == 0 or len(t_train) != train_size:
        raise ValueError(
            f"training data: {train_size} images and {len(t_train)} labels (need the same, > 0)"
        )
    if batch_size < 1 or iters < 0:
        raise ValueError(f"batch_size must be >= 1 and iters >= 0, got {batch_size} and {iters}")
    if lr <= 0 or not np.isfinite(lr):
        raise ValueError(f"lr must be a positive number, got {lr}")
    compute_grad = network.gradient if grad == "backprop" else network.numerical_gradient
    iter_per_epoch = max(train_size / batch_size, 1)
    trainer = None
    if fast and grad == "backprop" and Trainer.unsupported(network, x_train, t_train) is None:
        trainer = Trainer(network, x_train, t_train, lr=lr)
        if x_test is not None and Trainer.unsupported(network, x_test, t_test) is None:
            trainer.add_eval_set("test", x_test, t_test)
    batches = _BatchDrawer(train_size, batch_size, iters, iter_per_epoch,
                           ahead=trainer is not None and on_iteration is None)

    history = History()
    start = time.perf_counter()
    try:
        for i in range(iters):
            batch_mask = batches.draw(i)
            if trainer is not None:
                loss = trainer.step(batch_mask)
            else:
                x_batch = x_train[batch_mask]
                t_batch = t_train[batch_mask]

                grads = compute_grad(x_batch, t_batch)
                for key in network.params:
                    network.params[key] -= lr * grads[key]

                loss = network.loss(x_batch, t_batch)
            history.train_loss.append(float(loss))
            history.iterations = i + 1
            if on_iteration is not None:
                on_iteration(i, float(loss))

            if i % iter_per_epoch == 0:
                history.epochs.append(i)
                if trainer is not None:
                    history.train_acc.append(trainer.accuracy("train"))
                else:
                    history.train_acc.append(float(network.accuracy(x_train, t_train)))
                if x_test is not None:
                    if trainer is not None and "test" in trainer.eval_sets:
                        history.test_acc.append(trainer.accuracy("test"))
                    else:
                        history.test_acc.append(float(network.accuracy(x_test, t_test)))
                history.epoch_seconds.append(time.perf_counter() - start)
                if on_epoch is not None:
                    on_epoch(i, history)
    except KeyboardInterrupt as exc:
        history.seconds = time.perf_counter() - start
        exc.history = history
        raise
    history.seconds = time.perf_counter() - start
    return history


class _BatchDrawer:
    """``np.random.choice(train_size, batch_size)`` for every iteration.

    With ``ahead``, the batches up to the next evaluation are drawn in one call:
    NumPy's legacy generator gives the very same numbers as one call per
    iteration, as long as nothing else draws in between (so not with an
    ``on_iteration`` callback, and never across an evaluation, where
    ``on_epoch`` runs).
    """

    def __init__(self, train_size, batch_size, iters, iter_per_epoch, ahead):
        self.train_size, self.batch_size, self.iters = train_size, batch_size, iters
        self.iter_per_epoch, self.ahead = iter_per_epoch, ahead
        self.block, self.first = None, 0

    def draw(self, i: int) -> np.ndarray:
        if not self.ahead:
            return np.random.choice(self.train_size, self.batch_size)
        if self.block is None or i - self.first >= len(self.block):
            end = i  # through the next evaluation (inclusive) or the last iteration
            while end < self.iters - 1 and end % self.iter_per_epoch != 0:
                end += 1
            self.block = np.random.choice(self.train_size, (end - i + 1, self.batch_size))
            self.first = i
        return self.block[i - self.first]


class Trainer:
    """Whole SGD steps on a book network, with the least overhead minidl can give.

    A step is exactly the seed's: forward and backward on the batch, the update
    ``W -= lr * dW`` of every parameter, and the batch loss after the update;
    the arithmetic is the layers' (ReLU or sigmoid, softmax with cross-entropy,
    NumPy's dtype promotion) and agrees with ``network.gradient`` up to rounding.
    What differs is the plumbing: the nonzero lists of the dataset's rows are
    computed once, and each step is one compiled call (``_core.SGDStep``) that
    gathers the batch's lists, runs every layer through the zero-skipping
    kernels into preallocated buffers, and fuses each weight gradient with its
    update; evaluation counts correct rows in compiled chunks over the same
    lists. Dense inputs (CIFAR-10, say) take a Python step with NumPy's BLAS for
    the first layer instead.

    The network's ``params`` arrays are updated in place, as the plain loop does.
    """

    EVAL_CHUNK = 8192
    LIST_MAX_DENSITY = 0.3  # keep a dataset's nonzero lists when at most this dense

    def __init__(self, network, x_train, t_train, *, lr: float = 0.1,
                 num_threads: int | None = None):
        reason = self.unsupported(network, x_train, t_train)
        if reason is not None:
            raise ValueError(f"Trainer: {reason}")
        self.network = network
        self.lr = float(lr)
        self.num_threads = num_threads or _backend.STEP_THREADS
        self.dtype = network.dtype
        self.n_affine = network.n_affine
        self.sigmoid = network.activation == "sigmoid"
        self.W = [network.params[f"W{i}"] for i in range(1, self.n_affine + 1)]
        self.b = [network.params[f"b{i}"] for i in range(1, self.n_affine + 1)]
        self.eval_sets = {}
        self.x, self.labels, self.lists = self._prepare(x_train, t_train)
        # dense inputs (CIFAR-10, say): BLAS on a gathered copy beats skipping zeros
        self.dense_input = (self.lists is None and _core.nonzero_fraction(self.x, 64)
                            > _backend.SPARSE_MAX_DENSITY)
        self.eval_sets["train"] = (self.x, self.labels, self.lists)
        self._buffers = {}
        self._sgd = None  # the compiled whole step (_core.SGDStep), made for the batch size

    # -- what it covers ------------------------------------------------------------
    @staticmethod
    def unsupported(network, x, t) -> str | None:
        """Why a Trainer cannot run this network on this data, or None if it can."""
        from .networks import _LayerNet  # late: networks imports layers, not training

        if not isinstance(network, _LayerNet):
            return "only minidl's TwoLayerNet, ThreeLayerNet and MultiLayerNet"
        if type(network).gradient is not _LayerNet.gradient:
            return "the network overrides gradient()"
        if network.weight_decay_lambda:
            return "weight decay"
        if _backend.get_backend() != "cython":
            return "the NumPy reference backend is selected"
        x = np.asarray(x)
        if x.dtype not in (np.float32, np.float64) or x.ndim < 2 or not x.flags.c_contiguous:
            return "inputs must be a C-contiguous float32 or float64 array"
        if x.dtype == np.float64 and network.dtype == np.float32:
            return "float64 inputs with a float32 network"
        if int(np.prod(x.shape[1:])) != network.sizes[0]:
            return "input width does not match the network"
        if any(network.params[k].dtype != network.dtype or not network.params[k].flags.c_contiguous
               for k in network.params):
            return "parameters changed dtype or layout"
        t = np.asarray(t)
        if t.ndim == 2:
            if t.shape != (len(x), network.sizes[-1]) or not np.all((t == 0) | (t == 1)) \
                    or not np.all(t.sum(axis=1) == 1):
                return "labels must be class indices or exact one-hot rows"
        elif t.ndim != 1 or t.dtype.kind not in "iu" or len(t) != len(x):
            return "labels must be class indices or exact one-hot rows"
        elif len(t) and (t.min() < 0 or t.max() >= network.sizes[-1]):
            return "labels out of range"
        return None

    def _prepare(self, x, t, keep_lists=True):
        x = np.asarray(x)
        x = x.reshape(len(x), -1)
        t = np.asarray(t)
        labels = (t.argmax(axis=1) if t.ndim == 2 else t).astype(np.int64)
        # The nonzero lists (8 bytes a nonzero for float32 data) pay for themselves
        # on sparse data such as MNIST; denser rows are scanned at each use.
        lists = None
        if keep_lists and _core.nonzero_fraction(x, 64) <= self.LIST_MAX_DENSITY:
            lists = _core.nonzero_lists(x)
        return x, labels, lists

    def add_eval_set(self, name: str, x, t) -> None:
        """Register a dataset for ``accuracy(name)``.

        Its rows are scanned for nonzeros at each evaluation (a small cost next to
        the products): only the training set, read at every step, keeps its lists.
        """
        reason = self.unsupported(self.network, x, t)
        if reason is not None:
            raise ValueError(f"Trainer: {reason}")
        self.eval_sets[name] = self._prepare(x, t, keep_lists=False)

    # -- buffers -------------------------------------------------------------------
    def _buf(self, name, shape, dtype=None):
        a = self._buffers.get(name)
        if a is None or a.shape != shape:
            a = self._buffers[name] = np.empty(shape, dtype=dtype or self.dtype)
        return a

    # -- one step ------------------------------------------------------------------
    def _forward(self, x, rows, lists, n, tag):
        """Activations a_1 .. a_{L-1} and the scores, in buffers named by ``tag``."""
        acts = []
        for layer in range(self.n_affine):
            W, b = self.W[layer], self.b[layer]
            z = self._buf(f"{tag}z{layer}", (n, W.shape[1]))
            if layer == 0 and self.dense_input:
                xb = x[rows] if rows is not None else x
                self._buffers[f"{tag}x"] = xb = xb.astype(self.dtype, copy=False)
                np.dot(xb, W, out=z)
                z += b
            elif layer == 0:  # the dataset's rows, in place, over their nonzero lists
                _core.sparse_affine_forward(x, rows, W, b, z, self.num_threads, lists)
            else:
                np.dot(acts[-1], W, out=z)
                z += b
            if layer < self.n_affine - 1:
                flat = z.reshape(-1)
                if self.sigmoid:
                    _core.sigmoid_forward(flat, flat)
                else:
                    _core.relu_forward(flat, flat)
            acts.append(z)
        return acts

    def step(self, rows) -> float:
        """One SGD step on the batch ``x[rows]``; returns the batch loss after it."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        n = len(rows)
        labels = self.labels[rows]
        if self._covered(n):
            return self._compiled(n).step(rows, labels, self.lr)
        return self._python_step(rows, labels)

    def _covered(self, n) -> bool:
        """Whether the compiled step and evaluation (``_core.SGDStep``) take this."""
        return not self.dense_input and n > 0 and self.n_affine <= _core.MAX_LAYERS

    def _compiled(self, n) -> _core.SGDStep:
        """The compiled step, with buffers for batches of at least ``n`` rows."""
        if self._sgd is None or self._sgd.batch_size < n:
            self._sgd = _core.SGDStep(self.W, self.b, self.x, self.lists, self.sigmoid,
                                      max(n, 100), self.num_threads)
        return self._sgd

    def _python_step(self, rows, labels) -> float:
        """The step with NumPy's BLAS for the first layer (dense inputs such as CIFAR-10)."""
        n = len(rows)
        acts = self._forward(self.x, rows, self.lists, n, "g")

        # softmax with cross-entropy, backward (the loss itself is not needed here)
        scores = acts[-1]
        y = self._buf("y", scores.shape)
        _core.softmax_cross_entropy_forward(scores, labels, y, self._buf("rl", (n,)))
        dz = self._buf("dz", scores.shape)
        _core.softmax_cross_entropy_backward(y, labels, 1.0, dz)

        lr = self.lr
        for layer in range(self.n_affine - 1, 0, -1):
            W, b, a = self.W[layer], self.b[layer], acts[layer - 1]
            dW = self._buf(f"dW{layer}", W.shape)
            np.dot(a.T, dz, out=dW)
            db = dz.sum(axis=0)
            da = self._buf(f"da{layer}", a.shape)
            np.dot(dz, W.T, out=da)  # with W before its update
            flat = da.reshape(-1)
            if self.sigmoid:
                _core.sigmoid_backward(flat, a.reshape(-1), flat)
            else:
                _core.relu_backward(flat, a.reshape(-1), flat)
            dW *= lr  # W -= lr * dW, rounded as the plain loop rounds it
            W -= dW
            db *= lr
            b -= db
            dz = da
        # first layer: dW1 = x[rows].T @ dz, fused with W1 -= lr * dW1
        if self.dense_input:
            dW = self._buf("dW0", self.W[0].shape)
            np.dot(self._buffers["gx"].T, dz, out=dW)
            dW *= lr
            self.W[0] -= dW
        else:
            _core.sparse_affine_backward_weights(self.x, rows, dz, self.W[0], lr,
                                                 self.num_threads, self.lists)
        db = dz.sum(axis=0)
        db *= lr
        self.b[0] -= db

        # the batch loss with the updated parameters
        scores = self._forward(self.x, rows, self.lists, n, "g")[-1]
        row_loss = self._buf("rl", (n,))
        _core.softmax_cross_entropy_forward(scores, labels, y, row_loss)
        return float(row_loss.sum() / n)

    # -- evaluation ------------------------------------------------------------------
    def accuracy(self, name: str = "train") -> float:
        """``network.accuracy`` on a registered dataset, in chunks over its nonzero lists."""
        x, labels, lists = self.eval_sets[name]
        if self._covered(len(x)) and x.dtype == self.x.dtype:
            return self._compiled(1).count_correct(x, labels, lists) / float(len(x))
        correct = 0
        for s in range(0, len(x), self.EVAL_CHUNK):
            e = min(s + self.EVAL_CHUNK, len(x))
            chunk_lists = None if lists is None else (lists[0], lists[1], lists[2][s:e + 1])
            scores = self._forward(x[s:e], None, chunk_lists, e - s, "e")[-1]
            correct += int(np.count_nonzero(scores.argmax(axis=1) == labels[s:e]))
        return correct / float(len(x))
