"""The book's ``Trainer`` (``common/trainer.py``): mini-batch training with an optimizer.

Each step draws ``np.random.choice(train_size, mini_batch_size)``, computes
``network.gradient`` on the batch, lets the optimizer update
``network.params`` in place, and records the batch loss after the update;
once per epoch (every ``iter_per_epoch`` steps, from the first) it records
the accuracy on the training and test sets (their first
``evaluate_sample_num_per_epoch`` rows when given). The draws, the order of
the calls and the prints are the book's, so a run seeded with
``np.random.seed`` gives the book's numbers; the network's own ``gradient``,
``loss`` and ``accuracy`` do the arithmetic (compiled where minidl can).

``minidl.train`` is the library's fastest loop for plain SGD; this class is
the book's, for any network and optimizer::

    from minidl.trainer import Trainer
    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=20,
                      mini_batch_size=100, optimizer='Adam', optimizer_param={'lr': 0.001})
    trainer.train()
    trainer.test_acc_list
"""

from __future__ import annotations

import numbers

import numpy as np

from .optimizer import make_optimizer

__all__ = ["Trainer"]


class Trainer:
    """Train ``network`` on ``(x_train, t_train)``, evaluating on ``(x_test, t_test)`` per epoch.

    ``optimizer``: a name as the book's (``'SGD'``, ``'Momentum'``,
    ``'Nesterov'``, ``'AdaGrad'``, ``'RMSprop'``, ``'Adam'``, any case) built
    with ``optimizer_param``, or an optimizer object. ``verbose`` prints the
    book's lines (the loss after each step, the accuracies each epoch, the
    final test accuracy). After ``train()``: ``train_loss_list`` (one loss per
    step), ``train_acc_list`` and ``test_acc_list`` (one per epoch).
    """

    def __init__(self, network, x_train, t_train, x_test, t_test,
                 epochs=20, mini_batch_size=100,
                 optimizer="SGD", optimizer_param={"lr": 0.01},  # noqa: B006 (the book's; never mutated)
                 evaluate_sample_num_per_epoch=None, verbose=True):
        for name in ("gradient", "loss", "accuracy"):
            if not callable(getattr(network, name, None)):
                raise TypeError(f"Trainer: the network has no {name}() method "
                                f"({type(network).__name__})")
        if not isinstance(getattr(network, "params", None), dict):
            raise TypeError(f"Trainer: the network has no params dict ({type(network).__name__})")
        _check_pair("training", x_train, t_train)
        _check_pair("test", x_test, t_test)
        if isinstance(epochs, (bool, np.bool_)) or not isinstance(epochs, numbers.Real) \
                or not 0 <= epochs < np.inf:
            raise ValueError(f"Trainer: epochs must be a finite number >= 0, got {epochs!r}")
        mini_batch_size = _whole("mini_batch_size", mini_batch_size, minimum=1)
        if evaluate_sample_num_per_epoch is not None:
            evaluate_sample_num_per_epoch = _whole("evaluate_sample_num_per_epoch",
                                                   evaluate_sample_num_per_epoch, minimum=1)
        if not isinstance(optimizer_param, dict):
            raise TypeError(f"Trainer: optimizer_param must be a dict, got "
                            f"{type(optimizer_param).__name__}")
        self.network = network
        self.verbose = verbose
        self.x_train = x_train
        self.t_train = t_train
        self.x_test = x_test
        self.t_test = t_test
        self.epochs = epochs
        self.batch_size = mini_batch_size
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch

        # optimizer (a name as the book's optimizer_class_dict takes it, or an object)
        self.optimizer = make_optimizer(optimizer, **optimizer_param)

        self.train_size = x_train.shape[0]
        self.iter_per_epoch = max(self.train_size / mini_batch_size, 1)
        self.max_iter = int(epochs * self.iter_per_epoch)
        self.current_iter = 0
        self.current_epoch = 0

        self.train_loss_list = []
        self.train_acc_list = []
        self.test_acc_list = []

    def train_step(self):
        """One step: a random mini-batch, its gradient, the update, its loss (and an
        evaluation at the start of each epoch)."""
        batch_mask = np.random.choice(self.train_size, self.batch_size)
        x_batch = self.x_train[batch_mask]
        t_batch = self.t_train[batch_mask]

        grads = self.network.gradient(x_batch, t_batch)
        self.optimizer.update(self.network.params, grads)

        loss = self.network.loss(x_batch, t_batch)
        self.train_loss_list.append(loss)
        if self.verbose:
            print("train loss:" + str(loss))

        if self.current_iter % self.iter_per_epoch == 0:
            self.current_epoch += 1

            x_train_sample, t_train_sample = self.x_train, self.t_train
            x_test_sample, t_test_sample = self.x_test, self.t_test
            if self.evaluate_sample_num_per_epoch is not None:
                t = self.evaluate_sample_num_per_epoch
                x_train_sample, t_train_sample = self.x_train[:t], self.t_train[:t]
                x_test_sample, t_test_sample = self.x_test[:t], self.t_test[:t]

            train_acc = self.network.accuracy(x_train_sample, t_train_sample)
            test_acc = self.network.accuracy(x_test_sample, t_test_sample)
            self.train_acc_list.append(train_acc)
            self.test_acc_list.append(test_acc)

            if self.verbose:
                print("=== epoch:" + str(self.current_epoch) + ", train acc:" + str(train_acc)
                      + ", test acc:" + str(test_acc) + " ===")
        self.current_iter += 1

    def train(self):
        """``max_iter`` steps, then the accuracy on the whole test set (printed, and returned)."""
        for _ in range(self.max_iter):
            self.train_step()

        test_acc = self.network.accuracy(self.x_test, self.t_test)

        if self.verbose:
            print("=============== Final Test Accuracy ===============")
            print("test acc:" + str(test_acc))
        return test_acc


def _check_pair(what, x, t):
    for name, a in (("images", x), ("labels", t)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"Trainer: the {what} {name} must be a NumPy array, got "
                            f"{type(a).__name__}")
        if a.ndim == 0:
            raise ValueError(f"Trainer: the {what} {name} must be an array of samples, "
                             "got a scalar")
    if len(x) == 0 or len(x) != len(t):
        raise ValueError(f"Trainer: {len(x)} {what} images and {len(t)} labels "
                         "(need the same number, > 0)")


def _whole(name, value, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Trainer: {name} must be a whole number, got {value!r}")
    if value < minimum:
        raise ValueError(f"Trainer: {name} must be >= {minimum}, got {value}")
    return int(value)
