"""The course's loop in PyTorch (CPU): the same network, batches and manual SGD.

``nn.Linear`` layers initialised with the book's weights (drawn from NumPy's
global generator in the same order), the batch drawn with ``np.random.choice``,
``loss.backward()``, the in-place update ``p -= lr * p.grad``, the batch loss
after the update, and the accuracy on the full training and test sets once per
epoch. The dataset is converted to the network's dtype once, as a PyTorch user
would. Only the benchmark uses PyTorch; minidl never imports it.
"""

from __future__ import annotations

import time

import numpy as np


def available() -> str | None:
    """PyTorch's version, or None when it cannot be imported."""
    try:
        import torch
    except Exception:  # noqa: BLE001 - any import failure means "skip"
        return None
    return torch.__version__


def train_loop(sizes, activation, dtype, x_train, t_train, x_test, t_test, iters_num=10000,
               batch_size=100, learning_rate=0.1, weight_init_std=0.01, threads=2, marks=None):
    """Returns (train_loss_list, train_acc_list, test_acc_list)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    tdtype = torch.float64 if np.dtype(dtype) == np.float64 else torch.float32
    layers = []
    for i in range(1, len(sizes)):
        W = weight_init_std * np.random.randn(sizes[i - 1], sizes[i])  # the book's draw
        lin = torch.nn.Linear(sizes[i - 1], sizes[i], dtype=tdtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
            lin.bias.zero_()
        layers.append(lin)
    params = [p for lin in layers for p in lin.parameters()]
    act = torch.relu if activation == "relu" else torch.sigmoid

    def forward(x):
        for lin in layers[:-1]:
            x = act(lin(x))
        return layers[-1](x)

    X = torch.from_numpy(x_train).to(tdtype)
    T = torch.from_numpy(t_train.astype(np.int64))
    Xte = torch.from_numpy(x_test).to(tdtype)
    Tte = torch.from_numpy(t_test.astype(np.int64))

    def accuracy(x, t):
        with torch.no_grad():
            return float((forward(x).argmax(dim=1) == t).double().mean())

    train_size = len(x_train)
    iter_per_epoch = max(train_size / batch_size, 1)
    train_loss_list, train_acc_list, test_acc_list = [], [], []
    for i in range(iters_num):
        batch_mask = torch.from_numpy(np.random.choice(train_size, batch_size))
        x_batch, t_batch = X[batch_mask], T[batch_mask]

        for p in params:
            p.grad = None
        F.cross_entropy(forward(x_batch), t_batch).backward()
        with torch.no_grad():
            for p in params:
                p -= learning_rate * p.grad
            loss = F.cross_entropy(forward(x_batch), t_batch).item()
        train_loss_list.append(loss)

        if i % iter_per_epoch == 0:
            train_acc_list.append(accuracy(X, T))
            test_acc_list.append(accuracy(Xte, Tte))
            if marks is not None:
                marks.append(time.perf_counter())
    return train_loss_list, train_acc_list, test_acc_list
