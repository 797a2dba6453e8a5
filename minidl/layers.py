"""The book's layers (``common/layers.py``): one class each, forward and backward.

Each layer keeps what its backward pass needs from the forward pass. The
arithmetic runs on the selected backend (``minidl.set_backend``): compiled
kernels by default, or the NumPy reference. Dtypes follow NumPy's promotion, as
in the book: uint8 images with float64 weights compute in float64; dtypes the
kernels do not take (float16 alone, integers) are computed by the NumPy
reference, as the book's NumPy code computes them.
"""

from __future__ import annotations

import math

import numpy as np

from ._conv_numpy import pool_arg_max
from .backend import ops
from .backend.checks import (
    as_array,
    batch_size_of,
    compute_dtype,
    float_array,
    float_dtype,
    labels_as_indices,
    native,
    numeric_array,
    one_hot_rows,
    ops_for,
)
from .functions import cross_entropy_error, relu, sigmoid, softmax
from .util import conv_geometry, window_dtype

__all__ = [
    "AddLayer",
    "Affine",
    "BatchNormalization",
    "Convolution",
    "Dropout",
    "MulLayer",
    "Pooling",
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
        x = native(numeric_array("Relu.forward", x))
        self.out = ops_for(x.dtype).relu_forward(x)
        return self.out

    def backward(self, dout):
        return _activation_backward("Relu.backward", "relu_backward", dout, self.out)


class Sigmoid:
    def __init__(self):
        self.out = None

    def forward(self, x):
        x = native(numeric_array("Sigmoid.forward", x))
        self.out = ops_for(x.dtype).sigmoid_forward(x)
        return self.out

    def backward(self, dout):
        return _activation_backward("Sigmoid.backward", "sigmoid_backward", dout, self.out)


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
        self._state = {}  # what the backend keeps from forward for backward
        # gradients of the weight and bias parameters
        self.dW = None
        self.db = None

    def forward(self, x):
        W, b = self.W, self.b
        x = as_array("Affine.forward", x)
        dtype = compute_dtype("Affine.forward (x, W, b)", x, W, b)
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
        # float32 images are kept as given (the kernels promote as they read); other
        # dtypes (uint8, float16, ...) are converted as NumPy's promotion does
        self.x = native(x).reshape(n, width)
        if self.x.dtype not in (np.float32, dtype):
            self.x = self.x.astype(dtype)
        return ops_for(dtype).affine_forward(
            self.x, W.astype(dtype, copy=False), b.astype(dtype, copy=False), self._state
        )

    def backward(self, dout, need_dx=True):
        """Gradients for ``dout`` (N, M); ``need_dx=False`` skips ``dx`` (returns None).

        ``W`` is read as it is now (a student may have replaced it since forward):
        it must still fit the input forward saw and ``dout``.
        """
        if self.x is None:
            raise ValueError("Affine.backward called before forward")
        W = self.W
        dout = numeric_array("Affine.backward", dout)
        n, width = self.x.shape
        if not isinstance(W, np.ndarray) or W.ndim != 2 or W.shape[0] != width:
            raise ValueError(
                f"Affine.backward: W has shape {getattr(W, 'shape', None)}, but the input "
                f"forward saw has {width} features per sample (W was replaced since forward?)"
            )
        expected = (n, W.shape[1])
        if dout.shape != expected:
            raise ValueError(f"Affine.backward: dout must have shape {expected}, got {dout.shape}")
        dtype = compute_dtype("Affine.backward (x, W, dout)", self.x, W, dout)
        dx, self.dW, self.db = ops_for(dtype).affine_backward(
            self.x, W.astype(dtype, copy=False), native(dout).astype(dtype, copy=False),
            need_dx, self._state,
        )
        # NumPy's dtypes for the book's dot(dout, W.T), dot(x.T, dout) and sum(dout)
        self.dW = self.dW.astype(np.result_type(self.x, dout), copy=False)
        self.db = self.db.astype(np.result_type(dout), copy=False)
        if dx is None:
            return None
        dx = dx.astype(np.result_type(dout, W), copy=False)
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
        x = native(numeric_array("SoftmaxWithLoss.forward", x))
        if x.ndim == 1:  # a single sample, as the book's functions allow
            x = x.reshape(1, -1)
        if x.ndim != 2:
            raise ValueError(f"SoftmaxWithLoss.forward: scores must be (N, C), got {x.shape}")
        n = batch_size_of("SoftmaxWithLoss.forward", x)
        t = np.asarray(t)
        rows = one_hot_rows(t, x.shape)
        self.one_hot = rows is not None
        if self.one_hot:
            t = rows
            self.labels = t.argmax(axis=1).astype(np.int64)
        else:
            self.labels = labels_as_indices(_label_vector(t, n), n, x.shape[1])
        self.t = t
        self.loss, self.y = ops_for(x.dtype).softmax_cross_entropy_forward(x, self.labels)
        return self.loss

    def backward(self, dout=1):
        if self.y is None:
            raise ValueError("SoftmaxWithLoss.backward called before forward")
        if self.one_hot:  # the book's formula, which also serves soft labels
            dx = (self.y - self.t) / self.y.shape[0]
            return dx if dout == 1 else dx * dout
        return ops_for(self.y.dtype).softmax_cross_entropy_backward(self.y, self.labels, dout)


class Convolution:
    """The book's convolution: W (FN, C, FH, FW), b (FN,), x (N, C, H, W) ->
    (N, FN, out_h, out_w), with out_h = (H + 2*pad - FH) / stride + 1.

    As the book: the windows of x become the rows of a matrix (im2col) and one
    matrix product with ``W.reshape(FN, -1)`` gives every output (minidl's
    compiled backend lays the windows out per image so that the product lands
    in (N, FN, out_h, out_w) directly). ``W`` and ``b`` are kept by reference,
    as ``Affine`` keeps them; ``backward`` sets ``dW`` (W's shape) and ``db``.
    Mixed dtypes compute in NumPy's promotion of x, W and b (float32 or float64).
    """

    def __init__(self, W, b, stride=1, pad=0):
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad

        # intermediate data (used in backward)
        self.x = None
        self._geometry = None  # stride, pad, out_h, out_w of the last forward
        self._dtype = None
        self._state = {}  # what the backend keeps from forward (the im2col matrix)

        # gradients of the weight and bias parameters
        self.dW = None
        self.db = None

    def forward(self, x):
        return ops().conv_forward(*self._forward_args(x), self._state)

    def _forward_args(self, x):
        """Checks ``x`` against ``W`` and ``b`` and keeps what ``backward`` needs; gives the
        backend's arguments (x, W, b in the computing dtype, stride, pad, out_h, out_w)."""
        W, b = self.W, self.b
        x = as_array("Convolution.forward", x)
        dtype = float_dtype("Convolution.forward (x, W, b)", x, W, b)
        if W.ndim != 4 or b.shape != (W.shape[0],):
            raise ValueError("Convolution: W must be (FN, C, FH, FW) and b of shape (FN,); "
                             f"got W {W.shape}, b {b.shape}")
        _, C, FH, FW = W.shape
        if x.ndim != 4 or x.shape[1] != C:
            raise ValueError(f"Convolution.forward: expected input of shape (N, {C}, H, W) "
                             f"for W of shape {W.shape}, got {x.shape}")
        batch_size_of("Convolution.forward", x)
        _, _, _, stride, pad, out_h, out_w = conv_geometry(
            "Convolution.forward", x.shape, FH, FW, self.stride, self.pad)

        self.x = x
        self._geometry = (stride, pad, out_h, out_w)
        self._dtype = dtype
        return (x.astype(dtype, copy=False), W.astype(dtype, copy=False),
                b.astype(dtype, copy=False), stride, pad, out_h, out_w)

    def backward(self, dout, need_dx=True):
        """Gradients for ``dout`` (N, FN, out_h, out_w); ``need_dx=False`` skips ``dx``."""
        if self.x is None:
            raise ValueError("Convolution.backward called before forward")
        dout = float_array("Convolution.backward", dout)
        stride, pad, out_h, out_w = self._geometry
        expected = (self.x.shape[0], self.W.shape[0], out_h, out_w)
        if dout.shape != expected:
            raise ValueError(f"Convolution.backward: dout must have shape {expected}, "
                             f"got {dout.shape}")
        dtype = self._dtype
        dx, self.dW, self.db = ops().conv_backward(
            dout.astype(dtype, copy=False), self.W.astype(dtype, copy=False),
            stride, pad, out_h, out_w, need_dx, self._state)
        return dx


class Pooling:
    """The book's max pooling: x (N, C, H, W) -> (N, C, out_h, out_w), the maximum
    of each pool_h x pool_w window (moved by ``stride``; ``pad`` adds zeros around
    the input, as the book's im2col does, and they take part in the max).

    ``backward`` sends each window's gradient to the first pixel that held its
    maximum (the book's ``arg_max``, one entry per window in (N, out_h, out_w, C)
    order, int64, in ``self.arg_max``). The compiled backend records the maxima of
    2 x 2 windows more compactly and makes ``arg_max`` from that record when it is
    first read; from then on (or once it is assigned), ``backward`` uses ``arg_max``,
    as the book's does.
    """

    def __init__(self, pool_h, pool_w, stride=2, pad=0):
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad

        self.x = None
        self._arg_max = None
        self._where = None  # the backend's record of the maxima, until arg_max is made
        self._geometry = None
        self._state = {}  # what the backend keeps from call to call (thread choices)

    @property
    def arg_max(self):
        if self._arg_max is None and self._where is not None:
            self._arg_max = pool_arg_max(self._where)
            self._where = None
        return self._arg_max

    @arg_max.setter
    def arg_max(self, value):
        self._arg_max = value
        self._where = None

    def forward(self, x):
        x = as_array("Pooling.forward", x)
        x = x.astype(window_dtype("Pooling.forward", x), copy=False)  # uint8: float64, as the book
        if x.ndim != 4:
            raise ValueError(f"Pooling.forward: expected input of shape (N, C, H, W), "
                             f"got {x.shape}")
        batch_size_of("Pooling.forward", x)
        _, pool_h, pool_w, stride, pad, out_h, out_w = conv_geometry(
            "Pooling.forward", x.shape, self.pool_h, self.pool_w, self.stride, self.pad)

        out, self._where = ops().pool_forward(x, pool_h, pool_w, stride, pad, out_h, out_w,
                                              self._state)
        self._arg_max = None
        self.x = x
        self._geometry = (pool_h, pool_w, stride, pad, out_h, out_w)
        return out

    def backward(self, dout):
        if self.x is None:
            raise ValueError("Pooling.backward called before forward")
        dout = float_array("Pooling.backward", dout)
        pool_h, pool_w, stride, pad, out_h, out_w = self._geometry
        N, C = self.x.shape[:2]
        if dout.shape != (N, C, out_h, out_w):
            raise ValueError(f"Pooling.backward: dout must have shape {(N, C, out_h, out_w)}, "
                             f"got {dout.shape}")
        if self._where is not None:  # nobody has read or set arg_max since forward
            return ops().pool_backward_where(dout, self._where, self.x.shape, pool_h, pool_w,
                                             stride, pad, out_h, out_w, self._state)
        arg_max = np.asarray(self.arg_max)
        if arg_max.shape != (N * out_h * out_w * C,) or arg_max.dtype.kind not in "iu":
            raise ValueError(f"Pooling.backward: arg_max must hold {N * out_h * out_w * C} "
                             f"window indices, got {arg_max.dtype} of shape {arg_max.shape}")
        return ops().pool_backward(dout, arg_max, self.x.shape, pool_h, pool_w,
                                            stride, pad, out_h, out_w)


class Dropout:
    """Drop each input with probability ``dropout_ratio`` while training
    (http://arxiv.org/abs/1207.0580).

    ``forward(x, train_flg=True)`` draws the mask ``np.random.rand(*x.shape) >
    dropout_ratio`` from NumPy's global generator, as the book does (so that
    ``np.random.seed`` gives the book's masks), and keeps it for ``backward``;
    ``train_flg=False`` scales by ``1 - dropout_ratio`` instead and keeps the
    last mask. ``dropout_ratio`` is in [0, 1).
    """

    def __init__(self, dropout_ratio=0.5):
        self.dropout_ratio = dropout_ratio
        self.mask = None
        _check_ratio(dropout_ratio)

    def forward(self, x, train_flg=True):
        x = float_array("Dropout.forward", x)
        _check_ratio(self.dropout_ratio)
        if train_flg:
            self.mask = np.random.rand(*x.shape) > self.dropout_ratio
            return x * self.mask
        else:
            return x * (1.0 - self.dropout_ratio)

    def backward(self, dout):
        if self.mask is None:
            raise ValueError("Dropout.backward called before a training forward (train_flg=True)")
        dout = float_array("Dropout.backward", dout)
        if dout.shape != self.mask.shape:
            raise ValueError(f"Dropout.backward: dout must have shape {self.mask.shape}, "
                             f"got {dout.shape}")
        return dout * self.mask


class BatchNormalization:
    """Batch normalisation (http://arxiv.org/abs/1502.03167), the book's layer.

    ``forward(x, train_flg=True)``: x is (N, D), or (N, C, H, W) which is
    treated as (N, C*H*W) and given back in its shape. While training, each
    feature is normalised by the batch's mean and variance,
    ``xn = (x - mu) / sqrt(var + 10e-7)``, and ``running_mean`` and
    ``running_var`` move towards them (``running = momentum * running + (1 -
    momentum) * batch``); with ``train_flg=False`` the running ones are used.
    The output is ``gamma * xn + beta`` (``gamma``, ``beta``: (D,) arrays,
    kept by reference like Affine's W and b). ``backward`` sets ``dgamma``
    and ``dbeta`` and returns dx.

    A batch of one has variance 0 in every feature: ``xn`` is 0, the output is
    ``beta`` and dx is 0 (the book's 10e-7 keeps it finite); it trains
    ``beta`` only.
    """

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        self.gamma = gamma
        self.beta = beta
        self.momentum = momentum
        self.input_shape = None  # 4-D after a convolution layer, 2-D after an affine one

        # the mean and variance used at test time
        self.running_mean = running_mean
        self.running_var = running_var

        # what backward needs from forward
        self.batch_size = None
        self.xc = None
        self.xn = None
        self.std = None
        self.dgamma = None
        self.dbeta = None
        _check_momentum(momentum)

    def forward(self, x, train_flg=True):
        x = float_array("BatchNormalization.forward", x)
        batch_size_of("BatchNormalization.forward", x)
        if x.ndim < 2:
            raise ValueError(f"BatchNormalization.forward: expected (N, D) or (N, C, H, W), "
                             f"got shape {x.shape}")
        self.input_shape = x.shape
        if x.ndim != 2:
            x = x.reshape(x.shape[0], -1)

        out = self.__forward(x, train_flg)

        return out.reshape(*self.input_shape)

    def __forward(self, x, train_flg):
        self._check(x.shape[1])
        # (the book's start as float64 zeros; here in gamma's dtype)
        if self.running_mean is None:
            self.running_mean = np.zeros(x.shape[1], dtype=self.gamma.dtype)
        if self.running_var is None:
            self.running_var = np.zeros(x.shape[1], dtype=self.gamma.dtype)

        if train_flg:
            # mu = mean(x), xc = x - mu, var = mean(xc**2), std = sqrt(var + 10e-7),
            # xn = xc / std, out = gamma * xn + beta (minidl._norm_numpy has the book's lines)
            out, mu, var, xc, xn, std = ops().batchnorm_forward_train(
                x, self.gamma, self.beta)

            self.batch_size = x.shape[0]
            self.xc = xc
            self.xn = xn
            self.std = std
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
        else:
            # out = gamma * (x - running_mean) / sqrt(running_var + 10e-7) + beta
            out = ops().batchnorm_forward_test(x, self.gamma, self.beta,
                                                        self.running_mean, self.running_var)
        return out

    def backward(self, dout):
        if self.xn is None:
            raise ValueError("BatchNormalization.backward called before a training forward "
                             "(train_flg=True)")
        dout = float_array("BatchNormalization.backward", dout)
        if dout.shape[:1] != (self.batch_size,) or dout.size != self.xn.size:
            raise ValueError(f"BatchNormalization.backward: dout must have "
                             f"{self.batch_size} rows of {self.xn.shape[1]} values "
                             f"(the last training forward's), got shape {dout.shape}")
        if dout.ndim != 2:
            dout = dout.reshape(dout.shape[0], -1)

        dx = self.__backward(dout)

        dx = dx.reshape(*self.input_shape)
        return dx

    def __backward(self, dout):
        # dbeta = sum(dout), dgamma = sum(xn * dout), dxn = gamma * dout, dxc = dxn / std,
        # dstd = -sum(dxn * xc / std**2), dvar = 0.5 * dstd / std, dxc += 2/N * xc * dvar,
        # dx = dxc - sum(dxc) / N (sums over the batch; minidl._norm_numpy has the book's lines)
        dx, dgamma, dbeta = ops().batchnorm_backward(dout, self.gamma, self.xc,
                                                              self.xn, self.std)
        self.dgamma = dgamma
        self.dbeta = dbeta

        return dx

    def _check(self, width):
        """gamma, beta and the running statistics against the input's ``width`` features."""
        _check_momentum(self.momentum)
        for name in ("gamma", "beta", "running_mean", "running_var"):
            value = getattr(self, name)
            if value is None and name.startswith("running"):
                continue
            what = f"BatchNormalization: {name}"
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
                raise TypeError(f"{what} must be a float array, got "
                                f"{getattr(value, 'dtype', type(value).__name__)}")
            if value.shape != (width,):
                raise ValueError(f"{what} has shape {value.shape}; the input has {width} "
                                 f"features per sample, so it must be ({width},)")


def _check_ratio(ratio):
    if isinstance(ratio, (bool, np.bool_)) or not isinstance(ratio, (int, float, np.number)):
        raise TypeError(f"Dropout: dropout_ratio must be a number, got {ratio!r}")
    if not 0 <= ratio < 1:  # (NaN fails too)
        raise ValueError(f"Dropout: dropout_ratio must be in [0, 1), got {ratio}")


def _check_momentum(momentum):
    if isinstance(momentum, (bool, np.bool_)) or not isinstance(momentum,
                                                                 (int, float, np.number)):
        raise TypeError(f"BatchNormalization: momentum must be a number, got {momentum!r}")
    if not 0 <= momentum <= 1:
        raise ValueError(f"BatchNormalization: momentum must be in [0, 1], got {momentum}")


def _label_vector(t: np.ndarray, n: int) -> np.ndarray:
    """Class indices shaped as the book's ``y[np.arange(n), t]`` pairs them with rows:
    (N,), or a shape that broadcasts against (N,) to N elements, such as ch07's
    ``np.array([1]).reshape((1, 1))`` for a batch of one."""
    if t.ndim > 1 and t.size == n:
        try:
            pairs = math.prod(np.broadcast_shapes(t.shape, (n,)))
        except ValueError:
            pairs = None
        if pairs == n:
            return t.reshape(n)
        raise ValueError(
            f"labels: shape {t.shape} for a batch of {n}: the book's cross_entropy_error would "
            f"pair every row with every label ({pairs} terms, not {n}); pass t.reshape(-1)")
    return t


def _activation_backward(what: str, kernel: str, dout, out):
    """Check ``dout`` against the forward output ``out`` and run the backend's ``kernel``."""
    if out is None:
        raise ValueError(f"{what} called before forward")
    dout = numeric_array(what, dout)
    if dout.shape != out.shape:
        raise ValueError(f"{what}: dout must have shape {out.shape}, got {dout.shape}")
    dtype = compute_dtype(what, dout, out)
    backward = getattr(ops_for(dtype), kernel)
    return backward(native(dout).astype(dtype, copy=False), out.astype(dtype, copy=False))
