"""Input validation, done in Python before any kernel runs.

The compiled kernels run without bounds checks, so every shape, dtype and label
range is checked here and refused with a ``TypeError`` or ``ValueError`` that
names the problem.
"""

from __future__ import annotations

import numpy as np

from . import _core

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F32, _F64 = FLOAT_DTYPES
_FLOAT_DTYPE_SET = frozenset(FLOAT_DTYPES)


def float_dtype(what: str, *arrays) -> np.dtype:
    """The dtype NumPy's promotion gives ``arrays``; it must be float32 or float64."""
    for a in arrays:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{what}: expected a NumPy array, got {type(a).__name__}")
    # the common cases (native float32/float64 only) without NumPy's promotion machinery
    dtypes = {a.dtype for a in arrays}
    if dtypes <= _FLOAT_DTYPE_SET:
        return _F64 if _F64 in dtypes else _F32
    dtype = np.result_type(*arrays)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{what}: unsupported dtype {dtype} (from {', '.join(str(a.dtype) for a in arrays)}); "
            "minidl computes in float32 or float64"
        )
    return dtype


def as_array(what: str, x) -> np.ndarray:
    """``x`` as a NumPy array: lists and numbers are converted, anything else refused."""
    if isinstance(x, (list, tuple, float, int)):
        return np.asarray(x, dtype=np.float64)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what}: expected a NumPy array, got {type(x).__name__}")
    return x


def float_array(what: str, x) -> np.ndarray:
    """``x`` as an array of float32 or float64 (no copy when it already is one)."""
    x = as_array(what, x)
    float_dtype(what, x)
    return x


def batch_size_of(what: str, x: np.ndarray) -> int:
    if x.ndim == 0:
        raise ValueError(f"{what}: expected a batch of shape (N, ...), got a scalar")
    if x.shape[0] == 0:
        raise ValueError(f"{what}: empty batch (shape {x.shape})")
    return x.shape[0]


def labels_as_indices(t, n: int, n_classes: int) -> np.ndarray:
    """Integer class labels (N,) as int64, checked against N and the class count."""
    t = np.asarray(t)
    if t.dtype.kind not in "iu":
        raise TypeError(
            f"labels: expected integer class indices or one-hot rows of shape ({n}, {n_classes}), "
            f"got dtype {t.dtype} and shape {t.shape}"
        )
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"labels: expected shape ({n},) for a batch of {n}, got {t.shape}")
    labels = np.ascontiguousarray(t, dtype=np.int64)  # (uint64 past int64's range: < 0)
    if not _core.indices_in_range(labels, n_classes):
        bad = t[(t < 0) | (t >= n_classes)][0]
        raise ValueError(f"labels: class index {bad} out of range [0, {n_classes})")
    return labels
