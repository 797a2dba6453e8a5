"""The book's helpers (``common/util.py``): curve smoothing, shuffling, and the
im2col / col2im pair that turns a convolution into one matrix product.

Shapes follow the book: images are ``(N, C, H, W)``, filters ``FH x FW``; the
output of a convolution or pooling window is ``out_h x out_w`` with

    out_h = (H + 2*pad - FH) / stride + 1

``im2col`` gives one row per output position, ``(N*out_h*out_w, C*FH*FW)``,
ordered (n, y, x) by rows and (c, fy, fx) by columns; ``col2im`` adds such rows
back into an image (where windows overlap, their values add up), which is the
backward pass of ``im2col``.

Where the book's code would silently go wrong, minidl raises a ``ValueError``
naming the sizes: a filter larger than the padded input (the book fails with a
NumPy reshape error or a negative dimension) and a stride that does not divide
``H + 2*pad - FH`` (the book's ``//`` drops the last rows or columns of the
padded input without saying so). ``im2col`` and ``col2im`` run on the selected
backend (``minidl.set_backend``); float32 stays float32, any other real input
is computed in float64 as the book's ``np.zeros`` does.
"""

from __future__ import annotations

import operator

import numpy as np

from .backend import ops
from .backend.checks import as_array

__all__ = ["col2im", "conv_output_size", "im2col", "shuffle_dataset", "smooth_curve"]

_SMOOTH_WINDOW = 11  # the book's window_len


def smooth_curve(x):
    """The book's moving average for plotting a loss curve: a Kaiser window of
    11 points (beta 2), the ends mirrored so that the result has ``len(x)`` points.

    ``x``: a 1-D sequence of at least 11 values (the book's code returns a
    shorter, or empty, curve for fewer). Returns a float64 array of that length.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"smooth_curve: expected a 1-D sequence, got shape {x.shape}")
    if x.shape[0] < _SMOOTH_WINDOW:
        raise ValueError(
            f"smooth_curve: needs at least {_SMOOTH_WINDOW} points (its window), got {x.shape[0]}; "
            "the book's code would return a shorter curve than its input"
        )
    window_len = _SMOOTH_WINDOW
    s = np.r_[x[window_len - 1:0:-1], x, x[-1:-window_len:-1]]
    w = np.kaiser(window_len, 2)
    y = np.convolve(w / w.sum(), s, mode="valid")
    return y[5:len(y) - 5]


def shuffle_dataset(x, t):
    """``x`` (N, ...) and ``t`` (N, ...) in the same random order.

    Draws ``np.random.permutation(N)`` from NumPy's global generator, as the
    book does, so a seeded script gets the book's order. Returns new arrays.
    """
    x, t = np.asarray(x), np.asarray(t)
    if x.ndim == 0 or t.ndim == 0 or x.shape[0] != t.shape[0]:
        raise ValueError(
            "shuffle_dataset: x and t must have the same number of rows, "
            f"got shapes {x.shape} and {t.shape}"
        )
    permutation = np.random.permutation(x.shape[0])
    return x[permutation], t[permutation]


def _size(what: str, name: str, value, minimum: int) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{what}: {name} must be an integer, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{what}: {name} must be >= {minimum}, got {value}")
    return value


def _output_length(what: str, axis: str, size: int, filter_size: int, stride: int,
                   pad: int) -> int:
    """The number of window positions along one axis, or a ValueError saying why none fit."""
    span = size + 2 * pad - filter_size
    if span < 0:
        raise ValueError(
            f"{what}: the filter {axis} {filter_size} is larger than the padded input "
            f"{axis} {size} + 2*{pad} = {size + 2 * pad}"
        )
    if span % stride:
        raise ValueError(
            f"{what}: stride {stride} does not divide the input {axis} {size} + 2*pad {2 * pad} "
            f"- filter {filter_size} = {span}; the book's code would silently drop the last "
            f"{span % stride} row(s)/column(s) of the padded input (output {axis} "
            f"{span // stride + 1}). Choose pad, stride or filter so that it divides"
        )
    return span // stride + 1


def conv_output_size(input_size, filter_size, stride=1, pad=0):
    """``(input_size + 2*pad - filter_size) / stride + 1``, the output length of a
    convolution or pooling window along one axis.

    The book's division gives a float (``24.0``), and a fraction when the stride
    does not divide; minidl returns the same value as an ``int``, and raises a
    ``ValueError`` naming the sizes where no whole number of windows fits.
    """
    what = "conv_output_size"
    input_size = _size(what, "input_size", input_size, 1)
    filter_size = _size(what, "filter_size", filter_size, 1)
    stride = _size(what, "stride", stride, 1)
    pad = _size(what, "pad", pad, 0)
    return _output_length(what, "size", input_size, filter_size, stride, pad)


def conv_geometry(what: str, input_shape, filter_h, filter_w, stride, pad):
    """Checked ``(N, C, H, W), filter_h, filter_w, stride, pad, out_h, out_w``
    for a window of ``filter_h x filter_w`` over inputs of ``input_shape``."""
    if len(input_shape) != 4:
        raise ValueError(f"{what}: expected input of shape (N, C, H, W), got {tuple(input_shape)}")
    N, C, H, W = (_size(what, name, v, 0) for name, v in zip("NCHW", input_shape))
    if C == 0 or H == 0 or W == 0:
        raise ValueError(f"{what}: input of shape {(N, C, H, W)} has no pixels")
    filter_h = _size(what, "filter_h", filter_h, 1)
    filter_w = _size(what, "filter_w", filter_w, 1)
    stride = _size(what, "stride", stride, 1)
    pad = _size(what, "pad", pad, 0)
    out_h = _output_length(what, "height", H, filter_h, stride, pad)
    out_w = _output_length(what, "width", W, filter_w, stride, pad)
    return (N, C, H, W), filter_h, filter_w, stride, pad, out_h, out_w


def window_dtype(what: str, a: np.ndarray) -> np.dtype:
    """float32 stays float32; other real inputs compute in float64 (the book's np.zeros)."""
    if a.dtype == np.float32 or a.dtype == np.float64:
        return a.dtype
    if a.dtype.kind in "biuf":
        return np.dtype(np.float64)
    raise TypeError(f"{what}: unsupported dtype {a.dtype}; minidl computes in float32 or float64")


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """Unfold image patches into rows.

    ``input_data``: (N, C, H, W). Returns ``col`` of shape
    ``(N*out_h*out_w, C*filter_h*filter_w)``: row ``(n*out_h + y)*out_w + x``
    holds the window whose top-left corner is at ``(y*stride - pad, x*stride - pad)``,
    channel by channel, zeros where it overlaps the padding.
    """
    what = "im2col"
    x = as_array(what, input_data)
    if x.ndim != 4:
        raise ValueError(f"{what}: expected input_data of shape (N, C, H, W), got {x.shape}")
    _, fh, fw, stride, pad, out_h, out_w = conv_geometry(
        what, x.shape, filter_h, filter_w, stride, pad)
    x = x.astype(window_dtype(what, x), copy=False)
    return ops().im2col(x, fh, fw, stride, pad, out_h, out_w)


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """Fold rows back into images: the adjoint of ``im2col`` (overlaps add up).

    ``col``: (N*out_h*out_w, C*filter_h*filter_w), or any shape with that many
    elements (the book reshapes it). ``input_shape``: (N, C, H, W) of the image
    ``im2col`` was given. Returns an array of ``input_shape`` (padding removed).
    """
    what = "col2im"
    col = as_array(what, col)
    try:
        input_shape = tuple(input_shape)
    except TypeError:
        raise TypeError(f"{what}: input_shape must be (N, C, H, W), got {input_shape!r}") from None
    shape, fh, fw, stride, pad, out_h, out_w = conv_geometry(
        what, input_shape, filter_h, filter_w, stride, pad)
    N, C = shape[:2]
    rows, cols = N * out_h * out_w, C * fh * fw
    if col.size != rows * cols:
        raise ValueError(
            f"{what}: col must have {rows} x {cols} = {rows * cols} elements for input shape "
            f"{shape} (N*out_h*out_w rows, C*filter_h*filter_w columns), got shape {col.shape}"
        )
    col = col.reshape(rows, cols).astype(window_dtype(what, col), copy=False)
    return ops().col2im(col, shape, fh, fw, stride, pad, out_h, out_w)

