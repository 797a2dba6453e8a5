"""Convolution and pooling on minidl's kernels (``minidl._conv``) and NumPy's BLAS.

``ConvCythonOps`` overrides ``ConvNumpyOps`` (the book's im2col code) for
``CythonOps``. The convolution is the book's matrix product without its
transposes: ``_conv.unfold`` lays each image's windows out as columns
(C*FH*FW, out_h*out_w), plus a row of ones, so that ``np.matmul([W | b], col)``
gives the output with its bias directly in the book's (N, FN, out_h, out_w)
layout, one BLAS product per image inside NumPy's batched matmul; ``dW`` and
``db`` are the same products transposed, and ``dx`` goes back through
``_conv.fold``. Max pooling reads the images directly.

Each method checks the buffers it hands a kernel (C-contiguous, one dtype,
the shapes the geometry gives) right before the call; the kernels check the
geometry again and run without bounds checks.
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
        N, K = x.shape[0], C * FH * FW
        # each image's windows as columns, and a row of ones that carries the bias
        col = _buffer(state, "col", (N, K + 1, out_h * out_w), x.dtype)
        _conv.unfold(x, FH, FW, stride, pad, col, out_h, out_w, NUM_THREADS, True)
        W_b = np.empty((FN, K + 1), dtype=x.dtype)  # [W | b]
        W_b[:, :K] = W.reshape(FN, K)
        W_b[:, K] = b
        out = np.matmul(W_b, col)  # (N, FN, out_h*out_w): image n is [W | b] @ col[n]
        state["x_shape"] = x.shape
        return out.reshape(N, FN, out_h, out_w)

    def conv_backward(self, dout, W, stride, pad, out_h, out_w, need_dx, state):
        FN, C, FH, FW = W.shape
        col = state["col"]
        N, K = col.shape[0], C * FH * FW
        dout = dout.reshape(N, FN, out_h * out_w)
        # sum over images of dout[n] @ col[n].T = [dW | db] (the ones row gives db)
        dW_b = np.matmul(dout, col.transpose(0, 2, 1)).sum(axis=0)
        dW = np.ascontiguousarray(dW_b[:, :K]).reshape(FN, C, FH, FW)
        db = dW_b[:, K].copy()
        dx = None
        if need_dx:
            dcol = _buffer(state, "dcol", (N, K, out_h * out_w), col.dtype)
            np.matmul(W.reshape(FN, K).T, dout, out=dcol)
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
