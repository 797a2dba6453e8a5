"""Input validation, done in Python before any kernel runs.

The compiled kernels run without bounds checks, so every shape, dtype and label
range is checked here and refused with a ``TypeError`` or ``ValueError`` that
names the problem. Dtypes follow NumPy's promotion, as the book's code does:
uint8 or float16 images with float64 weights compute in float64; what the
kernels do not take (float16 alone, integers alone, longdouble) runs on the
NumPy reference, which computes what the book's NumPy code computes.
"""

from __future__ import annotations

import numpy as np

# the package, not its names: a module of it may import this one while it is set up
from .. import backend as _backend

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F32, _F64 = FLOAT_DTYPES
_FLOAT_DTYPE_SET = frozenset(FLOAT_DTYPES)
_NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats: what NumPy computes with


def compute_dtype(what: str, *arrays) -> np.dtype:
    """The dtype NumPy's promotion gives ``arrays`` (native byte order).

    Refuses what the book's arithmetic cannot mean: complex, object, string or
    time arrays (a ``TypeError`` naming the dtype).
    """
    for a in arrays:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{what}: expected a NumPy array, got {type(a).__name__}")
    # the common cases (native float32/float64 only) without NumPy's promotion machinery
    dtypes = {a.dtype for a in arrays}
    if dtypes <= _FLOAT_DTYPE_SET:
        return _F64 if _F64 in dtypes else _F32
    for a in arrays:
        if a.dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"{what}: unsupported dtype {a.dtype} (minidl computes with real "
                            "numbers: floats, integers or booleans)")
    return np.result_type(*arrays)


def float_dtype(what: str, *arrays) -> np.dtype:
    """``compute_dtype``, which must be float32 or float64 (for callers that only
    have kernels)."""
    dtype = compute_dtype(what, *arrays)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{what}: unsupported dtype {dtype} (from {', '.join(str(a.dtype) for a in arrays)}); "
            "minidl computes in float32 or float64 here"
        )
    return dtype


def ops_for(dtype: np.dtype):
    """The backend to compute in ``dtype`` with: the selected one for float32 and
    float64, the NumPy reference (the book's arithmetic, any dtype) otherwise."""
    # (called for every layer's pass: no import statement here, which costs a microsecond)
    if dtype in _FLOAT_DTYPE_SET:
        return _backend.ops()
    return _backend.numpy_ops.REFERENCE


def native(x: np.ndarray) -> np.ndarray:
    """``x`` in native byte order (a copy only when it is not)."""
    return x if x.dtype.isnative else x.astype(x.dtype.newbyteorder("="))


def as_array(what: str, x) -> np.ndarray:
    """``x`` as a NumPy array: lists and numbers are converted, anything else refused."""
    if isinstance(x, (list, tuple, float, int)):
        return np.asarray(x, dtype=np.float64)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what}: expected a NumPy array, got {type(x).__name__}")
    return x


def float_array(what: str, x) -> np.ndarray:
    """``x`` as an array of float32 or float64 (for callers that only have kernels)."""
    x = as_array(what, x)
    float_dtype(what, x)
    return x


def numeric_array(what: str, x) -> np.ndarray:
    """``x`` as an array of a dtype NumPy computes with (see ``compute_dtype``)."""
    x = as_array(what, x)
    compute_dtype(what, x)
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
    if not _backend.ops().labels_in_range(labels, n_classes):
        bad = t[(labels < 0) | (labels >= n_classes)][0]
        raise ValueError(f"labels: class index {bad} out of range [0, {n_classes})")
    return labels


def one_hot_rows(t: np.ndarray, shape: tuple) -> np.ndarray | None:
    """``t`` as one-hot (or soft) label rows of the scores' ``shape`` (N, C), or
    None when ``t`` holds class indices.

    The book's rule: labels with as many entries as the scores are rows of
    probabilities. Their shape must then be the scores' (or, for one sample,
    (C,)): the book's code fails on any other, so minidl says which.
    """
    n, n_classes = shape
    if t.size != n * n_classes or n_classes <= 1:
        return None
    if t.dtype.kind not in "biuf":
        raise TypeError(f"labels: one-hot rows of dtype {t.dtype}")
    if t.shape != shape and not (n == 1 and t.shape == (n_classes,)):
        raise ValueError(f"labels: one-hot rows must have the scores' shape {shape}, "
                         f"got {t.shape}")
    return t.reshape(shape)
