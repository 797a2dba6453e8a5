"""Numerical gradients by central differences (the book's ``common/gradient.py``).

``gradient_check`` and ``GradientCheckReport`` (``minidl.gradcheck``) are
importable from here too.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .backend import ops
from .backend.checks import FLOAT_DTYPES, compute_dtype, float_dtype
from .backend.numpy_ops import REFERENCE
from .gradcheck import GradientCheckReport, gradient_check

__all__ = ["GradientCheckReport", "H", "gradient_check", "numerical_gradient",
           "numerical_gradient_2d"]

H = 1e-4  # the book's step


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray) -> np.ndarray:
    """Gradient of ``f`` at ``x`` by central differences with h = 1e-4.

    Each element of ``x`` (any shape, views included) is set to ``x + h`` and
    ``x - h`` in place, ``f(x)`` is called for each, and the element is
    restored, also when ``f`` raises. Because the very buffer is perturbed, the
    book's idiom works: ``numerical_gradient(lambda W: net.loss(x, t), net.params['W1'])``.

    Returns an array of ``x``'s shape and dtype.
    """
    if not callable(f):
        raise TypeError(f"numerical_gradient: f must be callable, got {type(f).__name__}")
    dtype = compute_dtype("numerical_gradient: x", x)
    if dtype.kind != "f":
        raise TypeError(f"numerical_gradient: x must have a float dtype to be perturbed by h, "
                        f"not {x.dtype}")
    if not x.flags.writeable:
        raise ValueError("numerical_gradient: x is read-only; it must be perturbed in place")
    if x.dtype not in FLOAT_DTYPES:  # float16, non-native byte order: NumPy's own loop
        return REFERENCE.numerical_gradient(f, x, H)
    return ops().numerical_gradient(f, x, H)


def _numerical_gradient_1d(f: Callable[[np.ndarray], float], x: np.ndarray) -> np.ndarray:
    """The book's gradient of ``f`` at a 1-D ``x``: ``x[idx]`` set to ``float(x[idx]) + h``
    and ``x[idx] - h`` in turn (h = 1e-4), ``f(x)`` for each, then restored (also when
    ``f`` raises)."""
    _check_callable_and_writeable("_numerical_gradient_1d", f, x)
    if x.ndim != 1:
        raise ValueError(f"_numerical_gradient_1d: x must be 1-D, got shape {x.shape}")
    h = H
    grad = np.zeros_like(x)

    for idx in range(x.size):
        tmp_val = x[idx]
        try:
            x[idx] = float(tmp_val) + h
            fxh1 = f(x)  # f(x+h)

            x[idx] = tmp_val - h
            fxh2 = f(x)  # f(x-h)
        finally:
            x[idx] = tmp_val  # restore the value
        grad[idx] = (fxh1 - fxh2) / (2 * h)

    return grad


def numerical_gradient_2d(f: Callable[[np.ndarray], float], X: np.ndarray) -> np.ndarray:
    """The book's ``numerical_gradient_2d``: for a 2-D ``X``, the gradient of ``f`` at each
    row, ``f`` being called with the row (1-D) as ch04's ``gradient_2d.py`` does; for a
    1-D ``X``, the gradient at ``X``. Returns an array of ``X``'s shape and dtype."""
    _check_callable_and_writeable("numerical_gradient_2d", f, X)
    if X.ndim == 1:
        return _numerical_gradient_1d(f, X)
    if X.ndim != 2:
        raise ValueError(f"numerical_gradient_2d: X must be 1-D or 2-D, got shape {X.shape}")
    grad = np.zeros_like(X)

    for idx, x in enumerate(X):
        grad[idx] = _numerical_gradient_1d(f, x)

    return grad


def _check_callable_and_writeable(what, f, x):
    if not callable(f):
        raise TypeError(f"{what}: f must be callable, got {type(f).__name__}")
    float_dtype(f"{what}: x", x)
    if not x.flags.writeable:
        raise ValueError(f"{what}: x is read-only; it must be perturbed in place")
