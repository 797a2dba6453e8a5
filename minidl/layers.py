"""The book's layers (``common/layers.py``): one class each, forward and backward.

Each layer keeps what its backward pass needs from the forward pass. The
arithmetic runs on the selected backend (``minidl.set_backend``): compiled
kernels by default, or the NumPy reference.
"""

from __future__ import annotations

import math

import numpy as np

from . import _backend
from ._checks import as_array, batch_size_of, float_array, float_dtype, labels_as_indices
from .functions import cross_entropy_error, relu, sigmoid, softmax

__all__ = [
    "AddLayer",
    "Affine",
    "MulLayer",
    "Relu",
    "Sigmoid",
    "SoftmaxWithLoss",
    "cross_entropy_error",
    "relu",
    # re-exported as the book's layers module does
    "sigmoid",
    "softmax",
]


class MulLayer:
    def __init__(self):
        self.x = None
        self.y = None

    def forward(self, x, y):
        self.x = x
        self.y = y
        return x * y

    def backward(self, dout):
        dx = dout * self.y  # swap x and y
        dy = dout * self.x
        return dx, dy


class AddLayer:
    def __init__(self):
        pass

    def forward(self, x, y):
        return x + y

    def backward(self, dout):
        dx = dout * 1
        dy = dout * 1
        return dx, dy


class Relu:
    def __init__(self):
        self.out = None

    @property
    def mask(self):
        """Where the input was <= 0 (the book's ``mask``)."""
        return None if self.out is None else self.out <= 0

    def forward(self, x):
        x = float_array("Relu.forward", x)
        self.out = _backend.ops().relu_forward(x)
        return self.out

    def backward(self, dout):
        return _activation_backward(
            "Relu.backward", _backend.ops().relu_backward, dout, self.out
        )


class Sigmoid:
    def __init__(self):
        self.out = None

    def forward(self, x):
        x = float_array("Sigmoid.forward", x)
        self.out = _backend.ops().sigmoid_forward(x)
        return self.out

    def backward(self, dout):
        return _activation_backward(
            "Sigmoid.backward", _backend.ops().sigmoid_backward, dout, self.out
        )


class Affine:
    """out = x @ W + b, for x of shape (N, ...) flattened to (N, W.shape[0]).

    ``W`` and ``b`` are kept by reference: updating the arrays in place (as
    ``network.params[key] -= lr * grad[key]`` does) changes what this layer
    computes with. ``backward`` sets ``dW`` and ``db`` and returns ``dx`` in
    the shape of the original input.
    """

    def __init__(self, W, b):
        self.W = W
        self.b = b

        self.x = None
        self.original_x_shape = None
        self._dtype = None  # the dtype forward computed in (NumPy's promotion of x, W, b)
        self._state = {}  # what the backend keeps from forward for backward
        # gradients of the weight and bias parameters
        self.dW = None
        self.db = None

    def forward(self, x):
        W, b = self.W, self.b
        x = as_array("Affine.forward", x)
        dtype = float_dtype("Affine.forward (x, W, b)", x, W, b)
        if W.ndim != 2 or b.shape != (W.shape[1],):
            raise ValueError(
                f"Affine: W must be 2-D and b of shape (W.shape[1],); got W {W.shape}, b {b.shape}"
            )
        n = batch_size_of("Affine.forward", x)
        width = math.prod(x.shape[1:])
        if width != W.shape[0]:
            raise ValueError(
                f"Affine.forward: input of shape {x.shape} has {width} features per sample, "
                f"but W has {W.shape[0]} rows"
            )
        # the tensor case: (N, C, H, W) -> (N, C*H*W)
        self.original_x_shape = x.shape
        # x is kept as given (float32 images stay float32): the kernels promote as they read
        self.x = x.reshape(n, width)
        self._dtype = dtype
        return _backend.ops().affine_forward(
            self.x, W.astype(dtype, copy=False), b.astype(dtype, copy=False), self._state
        )

    def backward(self, dout, need_dx=True):
        """Gradients for ``dout`` (N, M); ``need_dx=False`` skips ``dx`` (returns None)."""
        if self.x is None:
            raise ValueError("Affine.backward called before forward")
        dout = float_array("Affine.backward", dout)
        expected = (self.x.shape[0], self.W.shape[1])
        if dout.shape != expected:
            raise ValueError(f"Affine.backward: dout must have shape {expected}, got {dout.shape}")
        dtype = self._dtype
        dx, self.dW, self.db = _backend.ops().affine_backward(
            self.x, self.W.astype(dtype, copy=False), dout.astype(dtype, copy=False), need_dx,
            self._state,
        )
        if dx is None:
            return None
        return dx.reshape(*self.original_x_shape)  # back to the input's shape (tensor case)


class SoftmaxWithLoss:
    """Softmax followed by the cross-entropy loss, averaged over the batch.

    ``t`` holds integer class labels (N,) or one-hot rows (N, C).
    """

    def __init__(self):
        self.loss = None
        self.y = None  # softmax output
        self.t = None  # labels as given: one-hot rows or class indices
        self.labels = None  # class indices (int64)
        self.one_hot = False

    def forward(self, x, t):
        x = float_array("SoftmaxWithLoss.forward", x)
        if x.ndim == 1:  # a single sample, as the book's functions allow
            x = x.reshape(1, -1)
        if x.ndim != 2:
            raise ValueError(f"SoftmaxWithLoss.forward: scores must be (N, C), got {x.shape}")
        n, n_classes = batch_size_of("SoftmaxWithLoss.forward", x), x.shape[1]
        t = np.asarray(t)
        self.one_hot = t.size == x.size and n_classes > 1
        if self.one_hot:
            if t.dtype.kind not in "biuf":
                raise TypeError(f"SoftmaxWithLoss.forward: one-hot labels of dtype {t.dtype}")
            t = t.reshape(x.shape)
            self.labels = t.argmax(axis=1).astype(np.int64)
        else:
            self.labels = labels_as_indices(t, n, n_classes)
        self.t = t
        self.loss, self.y = _backend.ops().softmax_cross_entropy_forward(x, self.labels)
        return self.loss

    def backward(self, dout=1):
        if self.y is None:
            raise ValueError("SoftmaxWithLoss.backward called before forward")
        if self.one_hot:  # the book's formula, which also serves soft labels
            dx = (self.y - self.t) / self.y.shape[0]
            return dx if dout == 1 else dx * dout
        return _backend.ops().softmax_cross_entropy_backward(self.y, self.labels, dout)


def _activation_backward(what: str, kernel, dout, out):
    """Check ``dout`` against the forward output ``out`` and run ``kernel``."""
    if out is None:
        raise ValueError(f"{what} called before forward")
    dout = float_array(what, dout)
    if dout.shape != out.shape:
        raise ValueError(f"{what}: dout must have shape {out.shape}, got {dout.shape}")
    dtype = float_dtype(what, dout, out)
    return kernel(dout.astype(dtype, copy=False), out.astype(dtype, copy=False))
