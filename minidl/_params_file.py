"""The book's ``save_params`` / ``load_params`` files, without ``pickle.load``.

The book pickles ``network.params`` (a dict of arrays) to whatever name the
script gives, ``params.pkl`` by default. minidl writes the same dict as a NumPy
``.npz`` under that very name (so scripts that save and load by name keep
working), atomically, and says so once; it reads its own ``.npz`` files or the
book's pickles through ``minidl._safe_pickle.SafeUnpickler``, which builds
nothing but dicts, lists, arrays and numbers.

An ``.npz`` is read with ``minidl._npz.NpzReader``, not ``np.load``: every
array's header (name, shape, dtype) is checked against the parameters the
network expects before its data is read, so a small hostile file declaring a
huge array (``np.load`` allocates what the header says), an object array or
parameters of another network is refused without allocating anything. A
pickle holds its arrays' bytes in the file itself; its arrays are checked the
same way once built.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np

from ._atomic import atomic_write
from ._npz import NpzError, NpzReader
from ._safe_pickle import RefusedPickle, SafeUnpickler

__all__ = ["read_params", "write_params"]

_ZIP_MAGIC = b"PK\x03\x04"  # an .npz is a zip archive
_told_npz = False  # the one-time message of write_params


def write_params(params: dict, file_name) -> None:
    """Write ``params`` (name -> array) as ``.npz`` to ``file_name``, atomically."""
    global _told_npz
    path = Path(os.fspath(file_name))
    arrays = {}
    for key, value in params.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise TypeError(f"save_params: params must map names to arrays, got {key!r}: "
                            f"{type(value).__name__}")
        arrays[key] = value
    with atomic_write(path) as fh:
        np.savez(fh, **arrays)
    if not _told_npz:
        _told_npz = True
        warnings.warn(
            f"minidl saved the parameters to {str(path)!r} as a NumPy .npz archive (no pickle), "
            "whatever the file's name; load_params reads it back (and the book's pickled "
            "parameter files too, safely). This message is shown once.",
            UserWarning, stacklevel=3)


def _check(path, key, shape, dtype, expected) -> None:
    """Refuse an array the network cannot take, from its shape and dtype alone."""
    if dtype.kind not in "fiu":
        raise ValueError(f"{path}: parameter {key} holds {dtype} values, not real numbers")
    if expected is None:
        return
    if key not in expected:
        raise ValueError(f"{path}: parameter {key} does not belong to this network (its "
                         f"parameters are {list(expected)})")
    if tuple(shape) != tuple(expected[key]):
        raise ValueError(f"{path}: parameter {key} has shape {tuple(shape)}, this network's "
                         f"has {tuple(expected[key])}")


def read_params(file_name, expected: dict | None = None) -> dict:
    """The dict of arrays in ``file_name``: minidl's ``.npz`` or the book's pickle.

    ``expected`` (name -> shape), when given, is what the network holds: an array of
    another name or shape is refused (for an ``.npz``, from its header, before its data
    is read), as is any array of neither real floats nor integers. Raises
    ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file when it
    is neither kind of file, when the pickle asks for anything but arrays, or when an
    array does not fit.
    """
    path = os.fspath(file_name)
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head == _ZIP_MAGIC:
        try:
            with NpzReader(path) as npz:
                headers = {key: npz.header(key) for key in npz.files}
                for key, (shape, dtype) in headers.items():
                    _check(path, key, shape, dtype, expected)
                return {key: npz.read(key) for key in npz.files}
        except NpzError as exc:
            raise ValueError(f"{exc}; not a readable parameter file") from None  # names path
    with open(path, "rb") as fh:
        try:
            params = SafeUnpickler(fh, what="a parameter file").load()
        except RefusedPickle as exc:
            raise ValueError(f"{path}: refused, unsafe pickle: {exc}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, OverflowError, MemoryError) as exc:
            raise ValueError(f"{path}: neither a minidl .npz nor a pickled parameter dict "
                             f"({type(exc).__name__}: {exc})") from None
    if not isinstance(params, dict) or not all(
            isinstance(k, str) and isinstance(v, np.ndarray) for k, v in params.items()):
        raise ValueError(f"{path}: expected a dict of NumPy arrays (the book's network.params), "
                         f"got {type(params).__name__}")
    for key, value in params.items():
        _check(path, key, value.shape, value.dtype, expected)
    return params
