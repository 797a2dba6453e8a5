"""Dense batches on NumPy's BLAS: a stack's forward and backward passes fused.

Where the inputs are mostly nonzero (Fashion-MNIST, CIFAR-10), skipping zeros
costs more than it saves, and the fastest product is NumPy's own (OpenBLAS).
``DenseStep`` runs the book's layer-by-layer arithmetic with no Python layers
between the products: ``np.matmul`` into buffers kept for the batch size, the
bias and the activation in one pass after each product
(``_core.bias_activate``), softmax with cross-entropy as the layers compute it,
and a backward pass that does not compute the first layer's input gradient
(nobody reads it). NaN and infinity travel through the products as they do in
NumPy, so no finiteness check is needed here.

A float32 input to a float64 network is converted a batch (or an evaluation
chunk) at a time, as NumPy's promotion converts it in the book's ``np.dot``:
the whole float32 set is never copied to float64.
"""

from __future__ import annotations

import numpy as np

from .. import _core
from ..backend import blas_threads

__all__ = ["EVAL_CHUNK", "DenseStep"]

EVAL_CHUNK = 1024  # rows of an evaluation forwarded at a time (its buffers stay in cache)

_NONE, _RELU, _SIGMOID = 0, 1, 2


class DenseStep:
    """Buffers and passes for batches of up to ``n`` rows of one stack.

    The arrays it returns are its buffers, overwritten by the next call (but
    those ``hand_over`` hands over).
    """

    def __init__(self, stack, n: int):
        self.stack = stack
        self.n = n
        dt = stack.dtype
        self.kind = _SIGMOID if stack.sigmoid else _RELU
        self.x = np.empty((n, stack.sizes[0]), dtype=dt)  # a batch converted to dt
        self.out = [np.empty((n, w.shape[1]), dtype=dt) for w in stack.W]  # each layer's
        self.delta = [np.empty((n, w.shape[1]), dtype=dt) for w in stack.W]  # backward's
        self.probabilities = np.empty((n, stack.sizes[-1]), dtype=dt)
        self.row_loss = np.empty(n, dtype=dt)

    # -- the batch ---------------------------------------------------------------
    def rows_from(self, x, rows) -> np.ndarray:
        """``x[rows]`` in the stack's dtype, in the step's buffer (rows checked in range
        by the caller)."""
        out = self.x[:len(rows)]
        _core.gather_rows(x, rows, out)
        return out

    def batch_from(self, x) -> np.ndarray:
        """``x`` (N, width), C-contiguous, in the stack's dtype (converted into the
        step's buffer when it is not)."""
        if x.dtype == self.stack.dtype:
            return x
        out = self.x[:len(x)]
        np.copyto(out, x)
        return out

    def hand_over(self, m: int):
        """The last pass's hidden activations and softmax output (their first ``m``
        rows), handed over: the step takes fresh buffers for its next pass, so the
        arrays returned are never written again (the layers keep them, as the book's
        forward pass leaves new arrays behind), with no copy."""
        hidden = [h[:m] for h in self.out[:-1]]
        probabilities = self.probabilities[:m]
        self.out[:-1] = [np.empty_like(h) for h in self.out[:-1]]
        self.probabilities = np.empty_like(self.probabilities)
        return hidden, probabilities

    # -- the passes ----------------------------------------------------------------
    def forward(self, x) -> np.ndarray:
        """The scores of ``x`` (m, width) in the stack's dtype: predict's output."""
        m = len(x)
        h = x
        last = len(self.stack.W) - 1
        for i, (W, b) in enumerate(zip(self.stack.W, self.stack.b)):
            z = self.out[i][:m]
            np.matmul(h, W, out=z)
            _core.bias_activate(z, np.ascontiguousarray(b), _NONE if i == last else self.kind)
            h = z
        return h

    def loss(self, labels) -> float:
        """The mean cross-entropy of the last forward's scores (``SoftmaxWithLoss``)."""
        m = len(labels)
        y, row_loss = self.probabilities[:m], self.row_loss[:m]
        _core.softmax_cross_entropy_forward(self.out[-1][:m], labels, y, row_loss)
        return row_loss.sum() / m

    def backward(self, x, labels, gW, gb) -> None:
        """The weight and bias gradients of the last forward and loss, into ``gW``, ``gb``."""
        m = len(labels)
        W = self.stack.W
        d = self.delta[-1][:m]
        _core.softmax_cross_entropy_backward(self.probabilities[:m], labels, 1.0, d)
        for i in range(len(W) - 1, -1, -1):
            h = self.out[i - 1][:m] if i else x
            np.matmul(h.T, d, out=gW[i])
            _core.column_sums(d, gb[i])  # np.sum(d, axis=0), bit for bit
            if i:
                below = self.delta[i - 1][:m]
                np.matmul(d, W[i].T, out=below)
                _core.activation_backward(below, h, self.kind)
                d = below

    def count_correct(self, x, labels) -> int:
        """How many rows of ``x`` (N, width: float32 or the stack's dtype) the network
        classifies as ``labels`` says (the book's argmax), a chunk at a time."""
        correct = 0
        for start in range(0, len(x), self.n):
            rows = self.batch_from(x[start:start + self.n])
            correct += _core.count_correct_scores(self.forward(rows),
                                                  labels[start:start + len(rows)])
        return correct

    # -- the same on a chosen number of BLAS threads --------------------------------
    def gradient_on(self, threads: int, x, labels, gW, gb) -> float:
        """forward, loss and backward of ``x`` (any dtype ``batch_from`` takes) with the
        products on ``threads`` BLAS threads; returns the loss."""
        with blas_threads.local(threads):
            rows = self.batch_from(x)
            self.forward(rows)
            loss = self.loss(labels)
            self.backward(rows, labels, gW, gb)
            return loss

    def loss_on(self, threads: int, x, labels) -> float:
        """forward and loss of ``x`` with the products on ``threads`` BLAS threads."""
        with blas_threads.local(threads):
            self.forward(self.batch_from(x))
            return self.loss(labels)

    def count_correct_on(self, threads: int, x, labels) -> int:
        with blas_threads.local(threads):
            return self.count_correct(x, labels)
