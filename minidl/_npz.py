"""Reading ``.npz`` files that may be damaged or hostile: each array's header (shape, dtype)
before its data, no pickle, no allocation larger than what the file really holds.

``np.load`` reads a member's data as soon as it is asked for, allocating what its header
declares; a header declaring terabytes, an object array or a file that is not a zip at all then
fails late, or with NumPy's "pickled data" message. ``NpzReader`` lets the caller check shapes
and dtypes against what it expects first (models: the declared sizes; the dataset cache: the
source's counts), and refuses a header whose data would not fit in the member that holds it.
"""

from __future__ import annotations

import os
import zipfile
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format

_CHUNK = 1 << 20


class NpzError(ValueError):
    """The file is not a readable ``.npz``, or one of its arrays is damaged."""


def _read_header(f: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = npy_format.read_magic(f)
    if version == (1, 0):
        return npy_format.read_array_header_1_0(f)
    if version == (2, 0):
        return npy_format.read_array_header_2_0(f)
    raise ValueError(f"unsupported .npy format version {version}")


class NpzReader:
    """An open ``.npz``: ``files`` (the array names), ``header(key)`` and ``read(key)``.

    Every error is an ``NpzError`` (a ``ValueError``) naming the file, except a missing file
    (``FileNotFoundError``). Use as a context manager.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except FileNotFoundError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise NpzError(f"{self.path}: not a .npz file (not a zip archive: {e})") from None
        self._members = {name[:-4]: name for name in self._zip.namelist()
                         if name.endswith(".npy")}
        self.files = list(self._members)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    def __contains__(self, key: str) -> bool:
        return key in self._members

    def header(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        """(shape, dtype) of array ``key``, read without its data; ``KeyError`` if absent."""
        f, shape, _, dtype, _ = self._open(key)
        f.close()
        return shape, dtype

    def _open(self, key: str):
        member = self._members[key]
        info = self._zip.getinfo(member)
        try:
            f = self._zip.open(member)
            shape, fortran, dtype = _read_header(f)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, SyntaxError) as e:
            raise NpzError(f"{self.path}: array {key} is damaged ({e})") from None
        if dtype.hasobject:
            f.close()
            raise NpzError(f"{self.path}: array {key} holds Python objects ({dtype}), which "
                           "only pickle could read; refused")
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        held = info.file_size - f.tell()
        if nbytes != held:
            f.close()
            raise NpzError(f"{self.path}: array {key} declares {shape} {dtype} "
                           f"({nbytes} bytes) but its member holds {held} bytes of data")
        return f, shape, fortran, dtype, nbytes

    def read(self, key: str) -> np.ndarray:
        """Array ``key``, read once its header has been checked against the member's size."""
        f, shape, fortran, dtype, nbytes = self._open(key)
        buffer = np.empty(nbytes, dtype=np.uint8)
        view, done = memoryview(buffer), 0
        try:
            with f:
                while done < nbytes:
                    n = f.readinto(view[done:done + _CHUNK])
                    if not n:
                        break
                    done += n
        except (OSError, EOFError, zipfile.BadZipFile) as e:  # CRC error, truncated stream
            raise NpzError(f"{self.path}: array {key} is damaged ({e})") from None
        if done < nbytes:
            raise NpzError(f"{self.path}: array {key} is truncated ({done} of {nbytes} bytes)")
        if dtype.itemsize == 0:
            return np.empty(shape, dtype=dtype)
        return buffer.view(dtype).reshape(shape, order="F" if fortran else "C")
