"""Numerical gradients by central differences (the book's ``common/gradient.py``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import _backend
from ._checks import FLOAT_DTYPES, float_dtype
from ._reference import NumpyOps
from .numgrad import GradientCheckReport, H, gradient_check

__all__ = ["GradientCheckReport", "H", "gradient_check", "numerical_gradient"]


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
    float_dtype("numerical_gradient: x", x)
    if not x.flags.writeable:
        raise ValueError("numerical_gradient: x is read-only; it must be perturbed in place")
    if x.dtype not in FLOAT_DTYPES:  # non-native byte order: only NumPy's own loop reads it
        return NumpyOps().numerical_gradient(f, x, H)
    return _backend.ops().numerical_gradient(f, x, H)
