"""The reference for convolution and pooling: the book's im2col code, in NumPy.

``ConvNumpyOps`` holds the backend operations of ``minidl.util``'s im2col /
col2im and of the ``Convolution`` and ``Pooling`` layers, computed as the book's
``common/util.py`` and ``common/layers.py`` compute them; ``NumpyOps`` inherits
them, and ``minidl._conv_cython.ConvCythonOps`` overrides them with the kernels
of ``minidl._conv``. Nothing compiled is imported here.

Callers validate first (``minidl.util.conv_geometry``, the layers): every
method may assume float32 or float64 arrays of one dtype and a geometry whose
windows fit (``g``: filter_h, filter_w, stride, pad, out_h, out_w). Results
keep the inputs' dtype (the book's ``np.zeros`` is always float64).
"""

from __future__ import annotations

import numpy as np


class ConvNumpyOps:
    # -- im2col / col2im ---------------------------------------------------------------
    def im2col(self, x, filter_h, filter_w, stride, pad, out_h, out_w):
        """x (N, C, H, W) -> col (N*out_h*out_w, C*filter_h*filter_w), the book's im2col."""
        N, C = x.shape[:2]
        img = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)], "constant")
        col = np.zeros((N, C, filter_h, filter_w, out_h, out_w), dtype=x.dtype)
        for y in range(filter_h):
            y_max = y + stride * out_h
            for x_ in range(filter_w):
                x_max = x_ + stride * out_w
                col[:, :, y, x_, :, :] = img[:, :, y:y_max:stride, x_:x_max:stride]
        return col.transpose(0, 4, 5, 1, 2, 3).reshape(N * out_h * out_w, -1)

    def col2im(self, col, input_shape, filter_h, filter_w, stride, pad, out_h, out_w):
        """col (N*out_h*out_w, C*filter_h*filter_w) -> (N, C, H, W), the book's col2im
        (overlapping windows add up); C-contiguous, of col's dtype."""
        N, C, H, W = input_shape
        col = col.reshape(N, out_h, out_w, C, filter_h, filter_w).transpose(0, 3, 4, 5, 1, 2)
        img = np.zeros((N, C, H + 2 * pad + stride - 1, W + 2 * pad + stride - 1),
                       dtype=col.dtype)
        for y in range(filter_h):
            y_max = y + stride * out_h
            for x in range(filter_w):
                x_max = x + stride * out_w
                img[:, :, y:y_max:stride, x:x_max:stride] += col[:, :, y, x, :, :]
        return np.ascontiguousarray(img[:, :, pad:H + pad, pad:W + pad])

    # -- Convolution -------------------------------------------------------------------
    def conv_forward(self, x, W, b, stride, pad, out_h, out_w, state):
        """x (N, C, H, W), W (FN, C, FH, FW), b (FN,) -> (N, FN, out_h, out_w).

        ``state``: a dict the layer keeps for ``conv_backward`` of this input.
        """
        FN, _, FH, FW = W.shape
        N = x.shape[0]
        col = self.im2col(x, FH, FW, stride, pad, out_h, out_w)
        col_W = W.reshape(FN, -1).T
        out = np.dot(col, col_W) + b
        state.clear()
        state.update(col=col, col_W=col_W, x_shape=x.shape)
        return out.reshape(N, out_h, out_w, -1).transpose(0, 3, 1, 2)

    def conv_backward(self, dout, W, stride, pad, out_h, out_w, need_dx, state):
        """dout (N, FN, out_h, out_w) -> (dx or None, dW (FN, C, FH, FW), db (FN,))."""
        FN, C, FH, FW = W.shape
        dout = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
        db = np.sum(dout, axis=0)
        dW = np.dot(state["col"].T, dout).transpose(1, 0).reshape(FN, C, FH, FW)
        dx = None
        if need_dx:
            dcol = np.dot(dout, state["col_W"].T)
            dx = self.col2im(dcol, state["x_shape"], FH, FW, stride, pad, out_h, out_w)
        return dx, dW, db

    # -- Pooling (max) -----------------------------------------------------------------
    def pool_forward(self, x, pool_h, pool_w, stride, pad, out_h, out_w, state=None):
        """x (N, C, H, W) -> (out (N, C, out_h, out_w), where): the book's max over each
        window (zero padding included) and a record of where each maximum is, which
        ``pool_arg_max`` turns into the book's ``arg_max`` and ``pool_backward_where``
        takes. Here the record is the book's arg_max (N*out_h*out_w*C,) int64 itself.
        ``state``: a dict the layer keeps (the compiled backend's thread choices)."""
        N, C = x.shape[:2]
        col = self.im2col(x, pool_h, pool_w, stride, pad, out_h, out_w)
        col = col.reshape(-1, pool_h * pool_w)
        arg_max = np.argmax(col, axis=1).astype(np.int64, copy=False)
        out = np.max(col, axis=1)
        return out.reshape(N, out_h, out_w, C).transpose(0, 3, 1, 2), arg_max

    def pool_backward(self, dout, arg_max, input_shape, pool_h, pool_w, stride, pad, out_h,
                      out_w):
        """dout (N, C, out_h, out_w) -> dx (N, C, H, W): each window's gradient to its max
        (``arg_max`` in the book's layout)."""
        dout = dout.transpose(0, 2, 3, 1)
        pool_size = pool_h * pool_w
        dmax = np.zeros((dout.size, pool_size), dtype=dout.dtype)
        dmax[np.arange(arg_max.size), arg_max.flatten()] = dout.flatten()
        dmax = dmax.reshape(dout.shape + (pool_size,))
        dcol = dmax.reshape(dmax.shape[0] * dmax.shape[1] * dmax.shape[2], -1)
        return self.col2im(dcol, input_shape, pool_h, pool_w, stride, pad, out_h, out_w)

    def pool_backward_where(self, dout, where, input_shape, pool_h, pool_w, stride, pad,
                            out_h, out_w, state=None):
        """``pool_backward`` from a ``pool_forward`` record (of any backend)."""
        return self.pool_backward(dout, pool_arg_max(where), input_shape, pool_h, pool_w,
                                  stride, pad, out_h, out_w)


def pool_arg_max(where: np.ndarray) -> np.ndarray:
    """The book's ``arg_max`` (N*out_h*out_w*C,) int64 from a ``pool_forward`` record:
    that array itself, or the compiled 2 x 2 pooling's one byte per window in the
    images' (N, C, out_h, out_w) order, reordered."""
    if where.ndim == 4:
        return where.transpose(0, 2, 3, 1).reshape(-1).astype(np.int64)
    return where
