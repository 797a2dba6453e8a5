"""Convolution and pooling on minidl's kernels (``minidl._conv``) and NumPy's BLAS.

``ConvCythonOps`` overrides ``ConvNumpyOps`` (the book's im2col code) for
``CythonOps``. The convolution is the book's matrix product, transposed:
``_conv.unfold`` lays every window of the batch out as a column (C*FH*FW,
N*out_h*out_w), one ``W.reshape(FN, -1) @ col`` computes all of it, and
``_conv.images_from_product`` cuts the product's rows into the book's
(N, FN, out_h, out_w) images with the bias added. Backward, the output's
gradient goes back to the product's layout (``db`` summed on the way) for one
product each for ``dW`` and the windows' gradient, which ``_conv.fold`` adds
back into the input's. Max pooling reads the images directly.

Each method hands the kernels C-contiguous arrays of one dtype; the kernels
check the buffers' shapes against the geometry and run without bounds checks.
"""

from __future__ import annotations

import numpy as np

from . import _conv
from ._conv_numpy import ConvNumpyOps

# Threads for the convolution kernels (the images are shared out between them).
# One by default, like the other layer kernels: OpenBLAS's threads run the
# products in between, and two teams of spinning threads on two cores slow
# each other down.
NUM_THREADS = 1


def _c(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a)


def _buffer(state: dict, key: str, shape: tuple, dtype) -> np.ndarray:
    """A scratch array kept in ``state`` from call to call (fresh multi-megabyte
    arrays every batch would cost their page faults each time)."""
    buf = state.get(key)
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        buf = np.empty(shape, dtype=dtype)
        state[key] = buf
    return buf


class ConvCythonOps(ConvNumpyOps):
    # -- im2col / col2im ---------------------------------------------------------------
    def im2col(self, x, filter_h, filter_w, stride, pad, out_h, out_w):
        x = _c(x)
        N, C = x.shape[:2]
        col = np.empty((N * out_h * out_w, C * filter_h * filter_w), dtype=x.dtype)
        _conv.im2col(x, filter_h, filter_w, stride, pad, col, out_h, out_w, NUM_THREADS)
        return col

    def col2im(self, col, input_shape, filter_h, filter_w, stride, pad, out_h, out_w):
        col = _c(col)
        img = np.empty(input_shape, dtype=col.dtype)
        _conv.col2im(col, filter_h, filter_w, stride, pad, img, out_h, out_w, NUM_THREADS)
        return img

    # -- Convolution -------------------------------------------------------------------
    def conv_forward(self, x, W, b, stride, pad, out_h, out_w, state):
        x = _c(x)
        FN, C, FH, FW = W.shape
        N, K, P = x.shape[0], C * FH * FW, out_h * out_w
        col = _buffer(state, "col", (K, N * P), x.dtype)  # every window, one column each
        _conv.unfold(x, FH, FW, stride, pad, col, out_h, out_w, NUM_THREADS)
        prod = _buffer(state, "prod", (FN, N * P), x.dtype)
        np.matmul(_c(W.reshape(FN, K)), col, out=prod)  # the whole convolution, one product
        out = np.empty((N, FN, P), dtype=x.dtype)
        _conv.images_from_product(prod, _c(b), out, NUM_THREADS)
        state["x_shape"] = x.shape
        return out.reshape(N, FN, out_h, out_w)

    def conv_backward(self, dout, W, stride, pad, out_h, out_w, need_dx, state):
        FN, C, FH, FW = W.shape
        col = state["col"]
        K, NP = col.shape
        dprod = _buffer(state, "prod", (FN, NP), col.dtype)  # forward's product is done with
        db = np.empty(FN, dtype=col.dtype)
        _conv.product_from_images(_c(dout.reshape(NP // (out_h * out_w), FN, -1)), dprod, db)
        dW = np.matmul(dprod, col.T).reshape(FN, C, FH, FW)
        dx = None
        if need_dx:
            dcol = _buffer(state, "dcol", (K, NP), col.dtype)
            np.matmul(_c(W.reshape(FN, K)).T, dprod, out=dcol)
            dx = np.empty(state["x_shape"], dtype=col.dtype)
            _conv.fold(dcol, FH, FW, stride, pad, dx, out_h, out_w, NUM_THREADS)
        return dx, dW, db

    # -- Pooling (max) -----------------------------------------------------------------
    def pool_forward(self, x, pool_h, pool_w, stride, pad, out_h, out_w):
        x = _c(x)
        N, C = x.shape[:2]
        out = np.empty((N, C, out_h, out_w), dtype=x.dtype)
        arg_max = np.empty(N * out_h * out_w * C, dtype=np.int64)
        _conv.maxpool_forward(x, pool_h, pool_w, stride, pad, out, arg_max, NUM_THREADS)
        return out, arg_max

    def pool_backward(self, dout, arg_max, input_shape, pool_h, pool_w, stride, pad, out_h,
                      out_w):
        dx = np.empty(input_shape, dtype=dout.dtype)
        _conv.maxpool_backward(_c(dout), np.ascontiguousarray(arg_max, dtype=np.int64), pool_h, pool_w, stride, pad, dx,
                               NUM_THREADS)
        return dx
