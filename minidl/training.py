"""The seed's training loop: mini-batch SGD with a per-epoch evaluation.

``train`` runs exactly what the assignment's notebook runs (random batches
drawn with ``np.random.choice`` from NumPy's global generator, ``gradient``,
the in-place SGD update, the batch loss, and train/test accuracy once per
epoch) and returns the curves as a ``History``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["History", "train"]

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
) -> History:
    """Train ``network`` in place with SGD; evaluate once per epoch.

    An epoch is ``max(len(x_train) / batch_size, 1)`` iterations, evaluated at
    iterations 0, epoch, 2*epoch, ... as the seed's loop does. ``on_epoch(i,
    history)`` is called after each evaluation, ``on_iteration(i, loss)``
    after each step. Interrupting (Ctrl-C) leaves ``history`` as far as it got:
    the exception carries it as ``exc.history``.
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

    history = History()
    start = time.perf_counter()
    try:
        for i in range(iters):
            batch_mask = np.random.choice(train_size, batch_size)
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
                history.train_acc.append(float(network.accuracy(x_train, t_train)))
                if x_test is not None:
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
