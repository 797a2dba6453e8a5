"""The book's functions (``common/functions.py``), in plain NumPy.

These are the formulas students read and call directly; they also serve as the
reference path that the compiled kernels are checked against.

One deliberate difference from the book: ``relu_grad`` is 0 at exactly 0, the
same as the ``Relu`` layer's backward pass (the book's two disagree there).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "cross_entropy_error",
    "identity_function",
    "mean_squared_error",
    "relu",
    "relu_grad",
    "sigmoid",
    "sigmoid_grad",
    "softmax",
    "softmax_loss",
    "step_function",
    "sum_squared_error",
    "weight_decay_loss",
]


def identity_function(x):
    return x


def step_function(x):
    return np.array(x > 0, dtype=int)


_FLOATS = frozenset({np.dtype(np.float32), np.dtype(np.float64)})


def sigmoid(x):
    """The book's ``1 / (1 + np.exp(-x))``, the very same numbers (bit for bit, in
    x's dtype as NumPy promotes it). Where ``exp(-x)`` overflows (x below about
    -709 in float64, -88 in float32) the result is the limit 0 and NumPy warns of
    the overflow, as it does for the book's code."""
    x = np.asarray(x)
    if x.ndim == 0 or x.dtype not in _FLOATS:
        return 1 / (1 + np.exp(-x))
    # the same operations in one buffer (the book's ch03 calls this 20,000 times on one
    # image's 50 or 100 values, where each temporary's allocation is much of the cost)
    e = np.negative(x)
    np.exp(e, out=e)
    e += 1
    return np.divide(1, e, out=e)


def sigmoid_grad(x):
    s = sigmoid(x)
    return (1.0 - s) * s


def relu(x):
    return np.maximum(0, x)


def relu_grad(x):
    """1 where x > 0, else 0 (0 at exactly 0, like the Relu layer)."""
    grad = np.zeros_like(x)
    grad[x > 0] = 1
    return grad


def softmax(x):
    """Softmax over the last axis, shifted by the maximum for stability."""
    x = np.asarray(x)
    # the book's np.max and np.sum, without their Python wrappers (a few microseconds a
    # call: most of the cost on one image's 10 scores), and exp(x) computed once
    x = x - np.maximum.reduce(x, axis=-1, keepdims=True)
    e = np.exp(x)
    return e / np.add.reduce(e, axis=-1, keepdims=True)


def sum_squared_error(y, t):
    """0.5 * sum((y - t) ** 2) over every element (the book's, for one sample or a batch)."""
    return 0.5 * np.sum((y - t) ** 2)


# The same formula under the name some translations of chapter 4 and courses give it;
# like the book's, it is not divided by the number of elements.
mean_squared_error = sum_squared_error


def cross_entropy_error(y, t):
    """Mean cross-entropy of probabilities ``y`` (N, C) against labels ``t``.

    ``t`` holds class indices (N,) or one-hot rows (N, C); 1e-7 is added
    inside the log, as in the book.
    """
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)

    # One-hot labels become class indices.
    if t.size == y.size and t.ndim == y.ndim:
        t = t.argmax(axis=1)

    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size


def softmax_loss(X, t):
    """cross_entropy_error(softmax(X), t): the scores' loss, as the book's."""
    y = softmax(X)
    return cross_entropy_error(y, t)


def weight_decay_loss(weights, weight_decay_lambda):
    """The L2 penalty the book's MultiLayerNet adds to its loss:
    ``0.5 * lambda * sum(W ** 2)`` summed over the weight matrices, in order."""
    weight_decay = 0
    for W in weights:
        if weight_decay_lambda:
            weight_decay += 0.5 * weight_decay_lambda * np.sum(W ** 2)
        else:
            # 0 * sum(W ** 2) is 0, or NaN once the weights overflow (a diverged
            # network's loss is NaN in the book): the sum of products says which,
            # without squaring W into a temporary
            weight_decay += 0.0 * _sum_of_squares(W)
    return weight_decay


def _sum_of_squares(W):
    flat = W.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):  # (the product is only multiplied by 0)
        # einsum's own loop, not np.dot: BLAS would wake its threads for every loss
        # (on a busy 2-core machine that made a small network's loss 10x slower)
        return np.einsum("i,i->", flat, flat)
