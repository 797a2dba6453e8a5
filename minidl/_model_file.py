"""Reading a model file that a network's ``save`` wrote, checked before anything is built.

A model file is a ``.npz`` (no pickle) holding ``__architecture__``, a JSON record
(``format``, ``class``, ``sizes``, ``activation``, ``dtype``, ``weight_decay_lambda`` and the
class's own options), and one array per parameter. ``ModelFile`` refuses with a
``ValueError`` naming the file and the problem: a file that is not a zip archive (rather than
NumPy's "pickled data" message), an unknown format version, a record unlike what ``save``
writes (sizes that are not positive integers, a ``weight_decay_lambda`` that is not a finite
number, an unknown dtype), and, from the arrays' headers alone, parameters of other shapes
than the declared sizes give or that are not real floating point (complex weights, integers,
objects). A file declaring [784, 400000, 10] over small arrays is refused before any weight of
the declared network is drawn.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from ._npz import NpzError, NpzReader

FORMAT_VERSION = 1
ARCHITECTURE = "__architecture__"
DTYPES = ("float32", "float64")
_MAX_RECORD = 1 << 20  # characters of the JSON record


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class ModelFile:
    """An open model file: ``meta`` (the checked record), ``files``, ``check_params`` and
    ``file[key]`` (an array, real floating point). Use as a context manager."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            self._npz = NpzReader(self.path)
        except NpzError:
            raise ValueError(f"{self.path}: not a minidl model file (a model is the .npz "
                             "archive that save() writes; this is not a zip archive)") from None
        try:
            self.meta = self._read_meta()
        except BaseException:
            self._npz.close()
            raise
        self.files = self._npz.files

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._npz.close()

    def __contains__(self, key: str) -> bool:
        return key in self._npz

    def _damaged(self, why: str) -> ValueError:
        return ValueError(f"{self.path}: damaged architecture record ({why})")

    def _read_meta(self) -> dict:
        if ARCHITECTURE not in self._npz:
            raise ValueError(f"{self.path}: not a minidl model file (no architecture record)")
        shape, dtype = self._npz.header(ARCHITECTURE)
        if shape != () or dtype.kind != "U" or dtype.itemsize > 4 * _MAX_RECORD:
            raise self._damaged(f"{dtype} {shape} instead of a text")
        try:
            meta = json.loads(str(self._npz.read(ARCHITECTURE)[()]))
        except ValueError as e:
            raise self._damaged(f"not JSON: {e}") from None
        if not isinstance(meta, dict):
            raise self._damaged(f"a JSON {type(meta).__name__}, not an object")
        version = meta.get("format")
        if version is None:
            raise self._damaged("no format version")
        if version != FORMAT_VERSION or not isinstance(version, int) or isinstance(version, bool):
            raise ValueError(f"{self.path}: model file format {version!r}, but this minidl "
                             f"reads format {FORMAT_VERSION} (saved by another version?)")
        kind, sizes = meta.get("class"), meta.get("sizes")
        if not isinstance(kind, str):
            raise self._damaged(f"class {kind!r}")
        if not (isinstance(sizes, list) and sizes and all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes)):
            raise self._damaged(f"sizes {sizes!r} are not positive integers")
        meta.setdefault("dtype", "float64")
        if meta["dtype"] not in DTYPES:
            raise self._damaged(f"dtype {meta['dtype']!r} is not float32 or float64")
        decay = meta.setdefault("weight_decay_lambda", 0.0)
        if not (_is_number(decay) and math.isfinite(decay) and decay >= 0):
            raise self._damaged(f"weight_decay_lambda {decay!r} is not a finite number >= 0")
        if not isinstance(meta.setdefault("activation", "relu"), str):
            raise self._damaged(f"activation {meta['activation']!r}")
        return meta

    def _check_float(self, key: str, dtype: np.dtype) -> None:
        if dtype.kind != "f":
            raise ValueError(f"{self.path}: parameter {key} is {dtype}, not real floating point "
                             "(float32 or float64)")

    def check_params(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Each parameter present with the shape the record's sizes give and the record's
        dtype; only the arrays' headers are read."""
        declared = np.dtype(self.meta["dtype"])
        for key, want in shapes.items():
            if key not in self._npz:
                raise ValueError(f"{self.path}: parameter {key} is missing")
            shape, dtype = self._npz.header(key)
            self._check_float(key, dtype)
            if shape != tuple(want):
                raise ValueError(f"{self.path}: parameter {key} has shape {shape}, "
                                 f"expected {tuple(want)}")
            if dtype.newbyteorder("=") != declared:
                raise ValueError(f"{self.path}: parameter {key} is {dtype}, but the "
                                 f"architecture record says {declared}")

    def __getitem__(self, key: str) -> np.ndarray:
        """Array ``key``; ``KeyError`` if absent, ``ValueError`` unless real floating point."""
        self._check_float(key, self._npz.header(key)[1])
        return self._npz.read(key)
