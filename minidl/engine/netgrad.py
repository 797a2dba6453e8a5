"""The exact network numerical gradient: the Python side of ``minidl._netgrad``.

The book's ``network.numerical_gradient(x, t)`` perturbs every parameter entry
to ``p + h`` and ``p - h`` (h = 1e-4) and reruns the full forward pass for each:
for a 784-50-10 network that is 2 x 39,760 forward passes, about 13 s per
gradient. ``numerical_gradient`` here computes the same numbers,
``(L(p + h) - L(p - h)) / 2h`` for every entry with nothing approximated, from
one cached forward pass: a perturbation of ``W1[i, j]`` changes hidden unit
``j`` only, and only in the batch rows where pixel ``i`` is non-zero, so only
those rows and the layers above them are recomputed (see ``_netgrad.pyx``).

For every entry ``p``: ``p + h`` is stored as the book stores it (computed in
the parameter's dtype, as NumPy 2 does), and ``L`` is the network's loss on
``(x, t)`` (mean cross-entropy, plus ``0.5 * weight_decay_lambda * sum(W ** 2)``
over the weights). For float64 networks the result equals the book's loop
within about 1e-12 (rounding of summation order). Float32 networks: the
perturbation is the one float32 storage gives, but the losses are evaluated in
float64 rather than float32, so the result is free of the float32 rounding
noise (about 1e-3) that the book's loop carries; it is not bit-for-bit the
book's float32 number.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _netgrad
from ..backend.checks import batch_size_of, compute_dtype, labels_as_indices, one_hot_rows
from ..gradient import H
from .rule import Stack

SHORTCUTS_ALL = _netgrad.SHORTCUTS_ALL


def numerical_gradient(stack: Stack, x, t, track_kinks=False, shortcuts=SHORTCUTS_ALL,
                       n_threads=0):
    """(grads, kink masks or None) for the network of ``stack`` on ``(x, t)``, or None
    when an input or a parameter is not finite (the book's loop then gives its
    NaNs). Bad input raises the error the book's loop would meet, said clearly.

    ``x``: (N, ...) real numbers, N >= 1, the first layer's width per row; ``t``:
    class indices (N,) or one-hot rows (N, classes; argmax is the class, as in
    the book's loss). The grads dict is like ``params``, each array in its
    parameter's shape and dtype; kinks (with ``track_kinks``) mark the entries
    whose ``p +- h`` changes the sign of some ReLU input in the batch.

    ``shortcuts`` and ``n_threads`` exist for the tests: every shortcut of the
    kernel can be switched off, and the thread count must not change the result.
    """
    sizes = stack.sizes
    L = len(sizes) - 1
    x, labels = _validate_batch("numerical_gradient", sizes, x, t)
    if not np.isfinite(x).all() or not all(np.isfinite(p).all() for p in stack.params):
        return None
    if stack.decay_term and not all(np.isfinite(np.dot(w.ravel(), w.ravel())) for w in stack.W):
        return None  # the book's loss adds 0 * sum(W ** 2): NaN everywhere, its loop says
    act = _netgrad.ACT_SIGMOID if stack.sigmoid else _netgrad.ACT_RELU

    # the cached forward pass, in float64
    W = [np.ascontiguousarray(w, dtype=np.float64) for w in stack.W]
    b = [np.ascontiguousarray(v, dtype=np.float64) for v in stack.b]
    a, z = [x], []
    for l in range(L):
        zl = a[l] @ W[l]
        zl += b[l]
        z.append(zl)
        if l < L - 1:
            al = np.empty_like(zl)
            _netgrad.activate(zl, al, act)
            a.append(al)
    csc = [_columns(al) for al in a]

    def float32_flags(params):
        return np.array([p.dtype == np.float32 for p in params], dtype=np.uint8)

    gW = [np.empty(w.shape) for w in W]
    gb = [np.empty(v.shape) for v in b]
    kW = [np.empty(w.shape, np.uint8) for w in W] if track_kinks else None
    kb = [np.empty(v.shape, np.uint8) for v in b] if track_kinks else None
    _netgrad.network_gradient(
        W, b, z, a, [c[0] for c in csc], [c[1] for c in csc], [c[2] for c in csc],
        float32_flags(stack.W), float32_flags(stack.b), labels, act, H,
        float(stack.weight_decay), gW, gb, kW, kb, n_threads, shortcuts,
    )
    grads, kinks = {}, {} if track_kinks else None
    for l in range(L):  # the book's order: W1, b1, W2, ...
        for key, g, k, p in ((f"W{l + 1}", gW[l], kW, stack.W[l]),
                             (f"b{l + 1}", gb[l], kb, stack.b[l])):
            grads[key] = g.astype(p.dtype, copy=False)
            if track_kinks:
                kinks[key] = k[l].astype(bool)
    return grads, kinks


def _validate_batch(what, sizes, x, t):
    """x as C-contiguous float64 (N, sizes[0]) and t as int64 class indices (N,)."""
    if not isinstance(x, np.ndarray):
        x = np.asarray(x, dtype=np.float64)
    compute_dtype(f"{what}: x", x)
    n = batch_size_of(f"{what}: x", x)
    width = math.prod(x.shape[1:])
    if x.ndim < 2 or width != sizes[0]:
        raise ValueError(f"{what}: x of shape {x.shape} has {width} features per sample, "
                         f"but the network's input size is {sizes[0]}")
    n_classes = sizes[-1]
    t = np.asarray(t)
    rows = one_hot_rows(t, (n, n_classes))
    if rows is not None:  # one-hot (or soft) rows: the book's loss takes their argmax
        labels = rows.argmax(axis=1).astype(np.int64)
    else:
        labels = labels_as_indices(t, n, n_classes)
    x = np.ascontiguousarray(x.reshape(n, width), dtype=np.float64)
    return x, np.ascontiguousarray(labels)


def _columns(a):
    """The non-zeros of ``a`` (N, M) column by column, plus a bias column of ones.

    Returns (colptr (M + 2,), rows, vals): the non-zeros of column i are
    ``rows[colptr[i]:colptr[i+1]]`` with values ``vals[...]``; column M is the
    bias input, 1 in every row.
    """
    n, m = a.shape
    cols, rows = np.nonzero(a.T)  # column-major order, rows ascending within a column
    colptr = np.zeros(m + 2, dtype=np.intp)
    np.cumsum(np.bincount(cols, minlength=m), out=colptr[1:m + 1])
    colptr[m + 1] = colptr[m] + n
    all_rows = np.concatenate([rows, np.arange(n)]).astype(np.intp)
    vals = np.concatenate([a[rows, cols], np.ones(n)])
    return colptr, all_rows, vals
