"""The course's training loop: mini-batch steps with a per-epoch evaluation.

``train`` runs exactly what the assignment's notebook runs (random batches
drawn with ``np.random.choice`` from NumPy's global generator, ``gradient``,
the in-place update, the batch loss, and train/test accuracy once per epoch)
and returns the curves as a ``History``.

By default (``fast=True``) the steps run on the engine's ``StepRunner``
(``minidl.engine.runner``) when the one rule lets it stand in for the loop: the
same arithmetic on the same batches, but with the dataset's nonzero lists
computed once and each whole step (forward, backward, the update, the loss
after it) in one compiled call, and evaluation counted in compiled chunks.
Networks or data it does not take (soft labels, numerical gradients, a
student's own layers or networks, non-finite weights) run the plain loop, as
does every step after a callback changes the network.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .backend import ops

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
    lr: float | None = None,
    optimizer=None,
    optimizer_param: dict | None = None,
    batch_size: int = 100,
    iters: int = 10000,
    grad: str = "backprop",
    on_epoch: Callable[[int, History], None] | None = None,
    on_iteration: Callable[[int, float], None] | None = None,
    fast: bool = True,
) -> History:
    """Train ``network`` in place; evaluate once per epoch.

    The update is the course's SGD ``params[key] -= lr * grad[key]`` (``lr``
    0.1 by default), or an optimizer's ``update(params, grads)``: ``optimizer``
    is the book's name of one (``'SGD'``, ``'Momentum'``, ``'Nesterov'``,
    ``'AdaGrad'``, ``'RMSprop'``, ``'Adam'``; case-insensitive) with its
    ``optimizer_param`` (``lr`` too, when given), or an optimizer object (any
    object with the book's ``update``, which keeps its own state). An epoch is
    ``max(len(x_train) / batch_size, 1)`` iterations, evaluated at iterations 0,
    epoch, 2*epoch, ... as the course's loop does. ``on_epoch(i, history)`` is
    called after each evaluation, ``on_iteration(i, loss)`` after each step.
    Interrupting (Ctrl-C) leaves ``history`` as far as it got: the exception
    carries it as ``exc.history``.

    ``fast=True`` runs the steps on the engine's compiled runner when the one
    rule lets it; the results agree with the plain loop (``fast=False``) up to
    rounding, on the same random batches.
    """
    if grad not in GRAD_METHODS:
        raise ValueError(f"grad must be one of {GRAD_METHODS}, got {grad!r}")
    needs = ("params", "gradient" if grad == "backprop" else "numerical_gradient",
             "loss", "accuracy")
    if not all(hasattr(network, name) for name in needs):
        raise TypeError(f"train: network must be a network with {', '.join(needs)} "
                        f"(such as minidl.networks.TwoLayerNet), got {type(network).__name__}")
    train_size = len(x_train)
    if train_size == 0 or len(t_train) != train_size:
        raise ValueError(
            f"training data: {train_size} images and {len(t_train)} labels (need the same, > 0)"
        )
    if batch_size < 1 or iters < 0:
        raise ValueError(f"batch_size must be >= 1 and iters >= 0, got {batch_size} and {iters}")
    optimizer, lr = _the_update(optimizer, optimizer_param, lr)
    compute_grad = network.gradient if grad == "backprop" else network.numerical_gradient
    iter_per_epoch = max(train_size / batch_size, 1)
    runner = None
    if fast and grad == "backprop":
        runner, _ = ops().step_runner(network, x_train, t_train, optimizer, lr)
        if runner is not None and x_test is not None:
            try:
                runner.add_eval_set("test", x_test, t_test)
            except ValueError:  # test data the runner does not take: network.accuracy
                pass
    batches = _BatchDrawer(train_size, batch_size, iters, iter_per_epoch,
                           ahead=runner is not None and on_iteration is None)

    def accuracy(name, x, t):
        if runner is not None and name in runner.eval_sets:
            return runner.accuracy(name)
        return float(network.accuracy(x, t))

    history = History()
    start = time.perf_counter()
    try:
        for i in range(iters):
            if runner is not None and not runner.still_holds():
                # a callback changed the network: the plain loop from here on
                runner, batches.ahead = None, False
            batch_mask = batches.draw(i)
            loss = runner.step(batch_mask) if runner is not None else None
            if loss is None:  # the plain loop: a network or numbers the runner does not take
                runner, batches.ahead = None, False
                x_batch = x_train[batch_mask]
                t_batch = t_train[batch_mask]

                grads = compute_grad(x_batch, t_batch)
                if optimizer is None:
                    for key in network.params:
                        network.params[key] -= lr * grads[key]
                else:
                    optimizer.update(network.params, grads)

                loss = network.loss(x_batch, t_batch)
            elif not np.isfinite(loss) and not runner.params_finite():
                # NumPy's arithmetic from the next step on (a finite loss before and after
                # the update means finite gradients: the parameters stayed finite)
                runner, batches.ahead = None, False
            history.train_loss.append(float(loss))
            history.iterations = i + 1
            if on_iteration is not None:
                on_iteration(i, float(loss))

            if i % iter_per_epoch == 0:
                history.epochs.append(i)
                history.train_acc.append(accuracy("train", x_train, t_train))
                if x_test is not None:
                    history.test_acc.append(accuracy("test", x_test, t_test))
                history.epoch_seconds.append(time.perf_counter() - start)
                if on_epoch is not None:
                    on_epoch(i, history)
    except KeyboardInterrupt as exc:
        history.seconds = time.perf_counter() - start
        exc.history = history
        raise
    history.seconds = time.perf_counter() - start
    return history


def _the_update(optimizer, optimizer_param, lr):
    """(optimizer object or None for the course's in-place SGD, lr) from train's
    arguments, checked."""
    if optimizer is None:
        if optimizer_param:
            raise ValueError("train: optimizer_param without an optimizer name")
        lr = 0.1 if lr is None else lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.number)) or not (
                lr > 0 and np.isfinite(lr)):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        return None, float(lr)
    from .optimizer import make_optimizer

    param = dict(optimizer_param or {})
    if lr is not None:
        if "lr" in param:
            raise ValueError("train: lr given twice (lr= and optimizer_param['lr'])")
        param["lr"] = lr
    if not isinstance(optimizer, str) and param and callable(getattr(optimizer, "update", None)):
        raise ValueError("train: an optimizer object keeps its own lr and parameters; "
                         "give lr/optimizer_param with an optimizer name instead")
    optimizer = make_optimizer(optimizer, **param)
    return optimizer, getattr(optimizer, "lr", None)


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
        if self.block is not None and 0 <= i - self.first < len(self.block):
            return self.block[i - self.first]  # (drawn already, even if ahead is now off)
        if not self.ahead:
            return np.random.choice(self.train_size, self.batch_size)
        if self.block is None or i - self.first >= len(self.block):
            end = i  # through the next evaluation (inclusive) or the last iteration
            while end < self.iters - 1 and end % self.iter_per_epoch != 0:
                end += 1
            self.block = np.random.choice(self.train_size, (end - i + 1, self.batch_size))
            self.first = i
        return self.block[i - self.first]
