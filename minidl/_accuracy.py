"""The arguments of the networks' ``accuracy``, checked before anything is predicted."""

from __future__ import annotations

import numpy as np

from .backend.checks import as_array, batch_size_of


def accuracy_inputs(x, t) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``t`` as arrays, with one label (a class index or a one-hot row) per row of ``x``.

    The book's ``accuracy`` divides by ``x.shape[0]`` and compares ``argmax`` with ``t`` by
    broadcasting: no rows gave a ZeroDivisionError, a single label was compared with every row,
    and one-hot labels of another shape gave NumPy's broadcast error or a count above 1.
    """
    x = as_array("accuracy: x", x)
    n = batch_size_of("accuracy: x", x)
    t = np.asarray(t)
    if t.ndim == 1 and t.shape[0] != n:
        raise ValueError(f"accuracy: {t.shape[0]} labels for the {n} rows of x")
    if t.ndim != 1 and (t.ndim != 2 or t.shape[0] != n):
        raise ValueError(f"accuracy: labels must be class indices of shape ({n},) or one-hot rows "
                         f"of shape ({n}, classes), got shape {t.shape}")
    return x, t
