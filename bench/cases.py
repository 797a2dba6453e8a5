"""One run of the course's loop by each contender (the book's code, minidl, PyTorch).

Every run seeds NumPy's global generator with 0 first, so that all of them
start from the same weights and draw the same batches.
"""

from __future__ import annotations

import time

import numpy as np

from bench import book_numpy, torch_loop

KINDS = ("book", "loop", "train", "torch")


def minidl_net(sizes, activation, dtype):
    from minidl.networks import MultiLayerNet

    # TwoLayerNet and ThreeLayerNet are MultiLayerNets of these sizes (same init order)
    return MultiLayerNet(sizes[0], sizes[1:-1], sizes[-1], activation=activation,
                         weight_init_std=0.01, dtype=dtype)


def run_case(kind, sizes, activation, dtype, data, iters, batch_size=100, lr=0.1):
    """One full loop; returns (wall seconds, [start, time after each evaluation...],
    test accuracy at the last evaluation)."""
    import minidl

    x_train, t_train, x_test, t_test = data
    if kind == "torch":  # class indices, converted before the clock starts
        t_train, t_test = (t if t.ndim == 1 else t.argmax(axis=1) for t in (t_train, t_test))
    np.random.seed(0)  # same initial weights and batches in every case
    marks = []
    start = time.perf_counter()
    if kind == "book":
        net = book_numpy.LayerNet(sizes, activation)
        _, _, test_acc = book_numpy.train_loop(net, x_train, t_train, x_test, t_test, iters,
                                               batch_size, lr, marks=marks)
    elif kind == "loop":  # the course's own loop, on minidl's network
        net = minidl_net(sizes, activation, dtype)
        _, _, test_acc = book_numpy.train_loop(net, x_train, t_train, x_test, t_test, iters,
                                               batch_size, lr, marks=marks)
    elif kind == "train":
        net = minidl_net(sizes, activation, dtype)
        h = minidl.train(net, x_train, t_train, x_test, t_test, lr=lr, batch_size=batch_size,
                         iters=iters, on_epoch=lambda i, h: marks.append(time.perf_counter()))
        test_acc = h.test_acc
    elif kind == "torch":
        _, _, test_acc = torch_loop.train_loop(sizes, activation, dtype, x_train, t_train,
                                               x_test, t_test, iters, batch_size, lr,
                                               marks=marks)
    else:
        raise ValueError(f"unknown kind {kind!r}; choose from {KINDS}")
    wall = time.perf_counter() - start
    return wall, [start, *marks], float(test_acc[-1])
