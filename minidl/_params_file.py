"""The book's ``save_params`` / ``load_params`` files, without ``pickle.load``.

The book pickles ``network.params`` (a dict of arrays) to whatever name the
script gives, ``params.pkl`` by default. minidl writes the same dict as a NumPy
``.npz`` under that very name (so scripts that save and load by name keep
working), atomically, and says so once; it reads its own ``.npz`` files
(``allow_pickle=False``) or the book's pickles through
``minidl._safe_pickle.SafeUnpickler``, which builds nothing but dicts, lists,
arrays and numbers.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ._atomic import atomic_write
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


def read_params(file_name) -> dict:
    """The dict of arrays in ``file_name``: minidl's ``.npz`` or the book's pickle.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the
    file when it is neither, or when the pickle asks for anything but arrays.
    """
    path = os.fspath(file_name)
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(0)
        if head == _ZIP_MAGIC:
            try:
                with np.load(fh, allow_pickle=False) as data:
                    params = {key: data[key] for key in data.files}
            except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
                raise ValueError(f"{path}: not a readable parameter file ({exc})") from None
        else:
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
    return params
