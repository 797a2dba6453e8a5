"""The reference backend: every kernel computed the book's way, in NumPy.

``NumpyOps`` is the interface that the layers, networks and training call
(thinc's ``Ops`` pattern): ``minidl.backend.cython_ops.CythonOps`` subclasses it
and overrides the hot operations with compiled kernels. The tests hold one
against the other. This module imports nothing compiled.

Callers validate first (see ``minidl.backend.checks``): every method may assume
float32 or float64 arrays of one dtype, consistent shapes, and integer labels
in range.
"""

from __future__ import annotations

import numpy as np

from .. import functions as F
from .._conv_numpy import ConvNumpyOps
from .._norm_numpy import NormNumpyOps


class NumpyOps(ConvNumpyOps, NormNumpyOps):  # convolution, pooling, batch norm: _conv/_norm_numpy
    name = "numpy"

    def __repr__(self) -> str:
        return "NumpyOps()"

    # -- whole-network shortcuts: none on the reference ------------------------
    def fused(self, network):
        """The compiled passes that may stand in for ``network``'s gradient, loss,
        accuracy and numerical gradient (``minidl.engine``), or None: on the
        reference backend the book's layer-by-layer code always runs."""

    def step_runner(self, network, x, t, optimizer=None, lr=0.1):
        """(a compiled runner of whole training steps, None) or (None, the reason
        there is none): on the reference backend there is none."""
        return None, "the NumPy reference backend is selected"

    # -- checks --------------------------------------------------------------
    def labels_in_range(self, labels: np.ndarray, n_classes: int) -> bool:
        """Whether every int64 label is in [0, n_classes)."""
        return bool(np.all((labels >= 0) & (labels < n_classes)))

    def one_hot_indices(self, rows: np.ndarray) -> np.ndarray | None:
        """The class of each row of ``rows`` (N, C) when every row is exactly one-hot
        (a single 1, zeros elsewhere) as int64, else None."""
        if not (np.all((rows == 0) | (rows == 1)) and np.all(rows.sum(axis=1) == 1)):
            return None
        return rows.argmax(axis=1).astype(np.int64)

    # -- affine -------------------------------------------------------------
    def gemm(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.dot(a, b)

    def affine_forward(self, x: np.ndarray, W: np.ndarray, b: np.ndarray, state=None):
        """x (N, D) @ W (D, M) + b (M,) -> (N, M). ``state``: see ``affine_backward``."""
        return np.dot(x, W) + b

    def affine_backward(self, x, W, dout, need_dx=True, state=None):
        """Returns (dx, dW, db); dx is None when ``need_dx`` is false.

        ``state`` is the dict the layer passed to ``affine_forward`` for this ``x``:
        a backend may keep there what its backward pass reuses (the reference
        keeps nothing).
        """
        dx = np.dot(dout, W.T) if need_dx else None
        dW = np.dot(x.T, dout)
        db = np.sum(dout, axis=0)
        return dx, dW, db

    # -- activations ----------------------------------------------------------
    def relu_forward(self, x: np.ndarray) -> np.ndarray:
        out = x.copy()
        out[x <= 0] = 0
        return out

    def relu_backward(self, dout: np.ndarray, out: np.ndarray) -> np.ndarray:
        dx = dout.copy()
        dx[out <= 0] = 0
        return dx

    def sigmoid_forward(self, x: np.ndarray) -> np.ndarray:
        return F.sigmoid(x).astype(x.dtype, copy=False)

    def sigmoid_backward(self, dout: np.ndarray, out: np.ndarray) -> np.ndarray:
        return dout * (1.0 - out) * out

    # -- softmax with cross-entropy --------------------------------------------
    def softmax_cross_entropy_forward(self, x: np.ndarray, labels: np.ndarray):
        """Scores (N, C) and class indices (N,) -> (mean loss, probabilities)."""
        y = F.softmax(x)
        batch_size = y.shape[0]
        return -np.sum(np.log(y[np.arange(batch_size), labels] + 1e-7)) / batch_size, y

    def softmax_cross_entropy_backward(self, y, labels, dout=1.0):
        batch_size = y.shape[0]
        dx = y.copy()
        dx[np.arange(batch_size), labels] -= 1
        dx = dx / batch_size
        return dx if dout == 1 else dx * dout

    # -- finite differences -----------------------------------------------------
    def numerical_gradient(self, f, x: np.ndarray, h: float = 1e-4) -> np.ndarray:
        """The book's central-difference loop over every element of ``x``."""
        grad = np.zeros_like(x)
        if x.size == 0:
            return grad
        it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
        while not it.finished:
            idx = it.multi_index
            tmp_val = x[idx]
            try:
                x[idx] = tmp_val + h
                fxh1 = f(x)  # f(x+h)
                x[idx] = tmp_val - h
                fxh2 = f(x)  # f(x-h)
            finally:
                x[idx] = tmp_val
            grad[idx] = (fxh1 - fxh2) / (2 * h)
            it.iternext()
        return grad


REFERENCE = NumpyOps()  # the book's arithmetic, for dtypes the kernels do not take
