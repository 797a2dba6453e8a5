"""Convolution and pooling on minidl's kernels (``minidl._conv``) and NumPy's BLAS.

``ConvCythonOps`` overrides ``ConvNumpyOps`` (the book's im2col code) for
``CythonOps``. The convolution is the book's matrix product, transposed and
taken a group of images at a time: ``_conv.unfold`` lays the group's windows out
as columns (C*FH*FW, n*out_h*out_w), one ``W.reshape(FN, -1) @ col`` computes the
group's outputs, and ``_conv.images_from_product`` cuts the product's rows into
the book's (N, FN, out_h, out_w) images with the bias added. Backward, the
windows are unfolded again from the input (cheaper than keeping them: they are
as large as the output), the output's gradient goes back to the product's layout
(``db`` summed on the way), and one product each gives the group's share of
``dW`` and of the windows' gradient, which ``_conv.fold`` adds back into the
input's. Max pooling reads the images directly.

Each method hands the kernels C-contiguous arrays of one dtype; the kernels
check the buffers' shapes against the geometry and run without bounds checks.
"""

from __future__ import annotations

import numpy as np

from . import _conv, _convblock
from ._conv_numpy import ConvNumpyOps
from .backend import blas_threads

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


# The convolution runs on groups of images whose windows and product take about this
# many bytes: the intermediates then stay in cache instead of going through memory
# (a float64 SimpleConvNet step 44 -> 34 ms, a DeepConvNet forward pass 3.5x faster on
# one thread here), and the products stay large enough for OpenBLAS's threads (with
# groups of one image, their spinning between calls made 2-thread runs slower again).
CHUNK_BYTES = 4 << 20


def _chunk(N: int, per_image: int) -> int:
    """Images per group: at least one, at most N."""
    return max(1, min(N, CHUNK_BYTES // per_image))


def _on_chosen_blas_threads(state: dict, key: str, run, *args):
    """``run(*args)`` with its products on the BLAS threads the layer chose for them.

    A layer's pass makes one product per group of images, dozens per batch: on a
    busy machine each waits for a descheduled OpenBLAS thread at its end (a
    DeepConvNet step took 4.8 s on two BLAS threads and 0.38 s on one), on an
    idle one the second thread helps the larger products. So each layer measures
    both, as the compiled passes do (``minidl.engine.threads``): one choice per
    ``key`` (its forward, its backward), kept in the layer's ``state``.
    """
    choice = state.get(key)
    if choice is None:
        choice = state[key] = _thread_choice()
    return choice.timed(_on_blas_threads, run, *args)


def _on_chosen_threads(state, key: str, kernel, *args):
    """``kernel(*args, threads)`` on the OpenMP threads a layer chose by measuring.

    The 2 x 2 pooling passes stream the convolution's whole output through memory
    (14 MB in float64 for SimpleConvNet's batch of 100), which one core's share of
    the memory bandwidth bounds: on an idle two-core machine two threads took them
    from 3.2 to 1.8 ms forward and 2.5 to 1.4 ms backward; beside a busy process the
    second thread can wait a time slice. So the layer measures both, as the
    convolution's products do. ``state`` None (a direct call): ``NUM_THREADS``.
    """
    if state is None:
        return kernel(*args, NUM_THREADS)
    choice = state.get(key)
    if choice is None:
        choice = state[key] = _thread_choice()
    return choice.timed(_with_threads, kernel, *args)


def _thread_choice():
    # imported here: minidl.engine imports minidl.layers, which imports the backend,
    # whose CythonOps imports this module (importing minidl.layers first would loop)
    from .engine.threads import ThreadChoice

    return ThreadChoice()


def _with_threads(threads: int, kernel, *args):
    return kernel(*args, threads)


def _on_blas_threads(threads: int, run, *args):
    with blas_threads.local(threads):
        return run(*args)


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
        return _on_chosen_blas_threads(state, "forward threads", self._conv_forward_groups,
                                       x, W, b, stride, pad, out_h, out_w, state)

    def conv_relu_pool_forward(self, x, W, b, stride, pad, out_h, out_w, state):
        """``pool_forward(relu_forward(conv_forward(x, ...)), 2, 2, 2, 0, ...)`` in one pass
        over the images (``_convblock.product_relu_pool``), the same numbers, for an even
        out_h and out_w: (the ReLU's output (N, FN, out_h, out_w), the pooled images (N,
        FN, out_h // 2, out_w // 2), the pooling's record of its maxima)."""
        return _on_chosen_blas_threads(state, "forward threads", self._conv_forward_groups,
                                       x, W, b, stride, pad, out_h, out_w, state, True)

    def _conv_forward_groups(self, x, W, b, stride, pad, out_h, out_w, state, block=False):
        x = _c(x)
        FN, C, FH, FW = W.shape
        N, K, P = x.shape[0], C * FH * FW, out_h * out_w
        W_col, b = _c(W.reshape(FN, K)), _c(b)
        out = np.empty((N, FN, P), dtype=x.dtype)
        if block:
            images = out.reshape(N, FN, out_h, out_w)
            pooled = np.empty((N, FN, out_h // 2, out_w // 2), dtype=x.dtype)
            where = np.empty(pooled.shape, dtype=np.uint8)
        step = _chunk(N, (FN + K) * P * x.itemsize)
        for n0 in range(0, N, step):
            n1 = min(n0 + step, N)
            col = _buffer(state, "col", (K, (n1 - n0) * P), x.dtype)
            _conv.unfold(x[n0:n1], FH, FW, stride, pad, col, out_h, out_w, NUM_THREADS)
            prod = _buffer(state, "prod", (FN, (n1 - n0) * P), x.dtype)
            np.matmul(W_col, col, out=prod)
            if block:
                _convblock.product_relu_pool(prod, b, images[n0:n1], pooled[n0:n1],
                                             where[n0:n1], NUM_THREADS)
            else:
                _conv.images_from_product(prod, b, out[n0:n1], NUM_THREADS)
        state["x"] = x
        if block:
            return images, pooled, where
        return out.reshape(N, FN, out_h, out_w)

    def conv_backward(self, dout, W, stride, pad, out_h, out_w, need_dx, state):
        return _on_chosen_blas_threads(state, "backward threads", self._conv_backward_groups,
                                       dout, W, stride, pad, out_h, out_w, need_dx, state)

    def conv_relu_pool_backward(self, dout, where, out, W, stride, pad, out_h, out_w, need_dx,
                                state):
        """``conv_backward`` of ``relu_backward(pool_backward_where(dout, where), out)`` for
        the 2 x 2 pooling's record ``where``: the three in one pass over the images
        (``_convblock.unpool_relu_product``), the same numbers. ``dout`` (N, FN, out_h // 2,
        out_w // 2), ``out`` (N, FN, out_h, out_w) the ReLU's output, C-contiguous."""
        return _on_chosen_blas_threads(state, "backward threads", self._conv_backward_groups,
                                       dout, W, stride, pad, out_h, out_w, need_dx, state,
                                       (where, out))

    def _conv_backward_groups(self, dout, W, stride, pad, out_h, out_w, need_dx, state,
                              pooled=None):
        FN, C, FH, FW = W.shape
        x = state["x"]
        N, K, P = x.shape[0], C * FH * FW, out_h * out_w
        if pooled is None:
            dout = _c(dout.reshape(N, FN, P))
        W_col = _c(W.reshape(FN, K))
        dW = np.zeros((FN, K), dtype=x.dtype)
        db = np.zeros(FN, dtype=np.float64)
        db_part = np.empty(FN, dtype=x.dtype)
        dx = np.empty(x.shape, dtype=x.dtype) if need_dx else None
        step = _chunk(N, (FN + 2 * K) * P * x.itemsize)
        for n0 in range(0, N, step):
            n1 = min(n0 + step, N)
            col = _buffer(state, "col", (K, (n1 - n0) * P), x.dtype)
            _conv.unfold(x[n0:n1], FH, FW, stride, pad, col, out_h, out_w, NUM_THREADS)
            dprod = _buffer(state, "prod", (FN, (n1 - n0) * P), x.dtype)
            if pooled is None:
                _conv.product_from_images(dout[n0:n1], dprod, db_part)
            else:
                where, out = pooled
                _convblock.unpool_relu_product(dout[n0:n1], where[n0:n1], out[n0:n1], dprod,
                                               db_part)
            db += db_part
            dW += np.matmul(dprod, col.T)
            if need_dx:
                dcol = _buffer(state, "dcol", (K, (n1 - n0) * P), x.dtype)
                np.matmul(W_col.T, dprod, out=dcol)
                _conv.fold(dcol, FH, FW, stride, pad, dx[n0:n1], out_h, out_w, NUM_THREADS)
        return dx, dW.reshape(FN, C, FH, FW), db.astype(x.dtype)

    # -- Pooling (max) -----------------------------------------------------------------
    def pool_forward(self, x, pool_h, pool_w, stride, pad, out_h, out_w, state=None):
        x = _c(x)
        N, C = x.shape[:2]
        out = np.empty((N, C, out_h, out_w), dtype=x.dtype)
        if (pool_h, pool_w, stride, pad) == (2, 2, 2, 0):  # the networks' pooling
            where = np.empty((N, C, out_h, out_w), dtype=np.uint8)
            _on_chosen_threads(state, "forward threads", _conv.maxpool2x2_forward,
                               x, out, where)
            return out, where
        arg_max = np.empty(N * out_h * out_w * C, dtype=np.int64)
        _conv.maxpool_forward(x, pool_h, pool_w, stride, pad, out, arg_max, NUM_THREADS)
        return out, arg_max

    def pool_backward(self, dout, arg_max, input_shape, pool_h, pool_w, stride, pad, out_h,
                      out_w):
        dx = np.empty(input_shape, dtype=dout.dtype)
        _conv.maxpool_backward(_c(dout), np.ascontiguousarray(arg_max, dtype=np.int64),
                               pool_h, pool_w, stride, pad, dx, NUM_THREADS)
        return dx

    def pool_backward_where(self, dout, where, input_shape, pool_h, pool_w, stride, pad,
                            out_h, out_w, state=None):
        if where.ndim != 4:  # the book's layout
            return self.pool_backward(dout, where, input_shape, pool_h, pool_w, stride, pad,
                                      out_h, out_w)
        dx = np.empty(input_shape, dtype=dout.dtype)
        _on_chosen_threads(state, "backward threads", _conv.maxpool2x2_backward,
                           _c(dout), where, dx)
        return dx
