"""minidl's cache folder and the parsed-array cache kept in it.

The cache folder is ``$XDG_CACHE_HOME/minidl`` (default ``~/.cache/minidl``). Downloads go there,
laid out like any data folder, and parsed arrays go to ``parsed/<dataset>.npz``: the uint8 arrays
as read (before normalising or one-hot encoding; CIFAR-10 in colour and in grayscale), saved
uncompressed so that a second load takes a fraction of a second, with the fingerprint of the source they came from (paths, sizes and
modification times), so that a changed or moved source is parsed again. Every read checks the
arrays against what the source holds (shapes from its headers, uint8, labels within the classes),
each array's header before its data: a damaged or altered cache is parsed again, with a warning.
Files are written to a temporary name and renamed into place; a cache that cannot be written is
skipped with a warning.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .._atomic import atomic_write
from .._npz import NpzReader

FORMAT = "minidl-parsed-v1"
KEYS = ("x_train", "t_train", "x_test", "t_test")  # CIFAR-10 adds x_train_gray, x_test_gray
_MAX_SOURCE = 1 << 20  # bytes of the stored fingerprint (a few paths and numbers)


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/minidl``, or ``~/.cache/minidl``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says to ignore a relative path.
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "minidl"


def parsed_path(name: str) -> Path:
    return cache_dir() / "parsed" / f"{name}.npz"


def fingerprint(files: list[Path]) -> str:
    """What identifies a source: each file's resolved path, size and modification time."""
    parts = [FORMAT]
    for f in files:
        st = f.stat()
        parts.append(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def _stored_fingerprint(npz: NpzReader) -> str | None:
    shape, dtype = npz.header("source")
    if shape != () or dtype.kind != "U" or dtype.itemsize > _MAX_SOURCE:
        return None
    return str(npz.read("source")[()])


def is_cached(name: str, source: str) -> bool:
    path = parsed_path(name)
    if not path.is_file():
        return False
    try:
        with NpzReader(path) as npz:
            return _stored_fingerprint(npz) == source
    except (OSError, ValueError, KeyError):
        return False


def _header_problem(headers: dict, shapes: dict | None) -> str | None:
    """What in the arrays' (shape, dtype) headers is not as expected, or None."""
    for key, (shape, dtype) in headers.items():
        want = shapes[key] if shapes else shape
        if dtype != np.uint8 or shape != want:
            return f"{key} is {dtype} {shape}, expected uint8 {want}"
    return None


def _label_problem(arrays: dict, n_classes: int | None) -> str | None:
    for key, a in arrays.items():
        if n_classes is not None and key.startswith("t_") and a.size and a.max() >= n_classes:
            return f"{key} holds label {int(a.max())}, not a class (0 to {n_classes - 1})"
    return None


def load(
    name: str, source: str, keys: tuple[str, ...],
    shapes: dict[str, tuple[int, ...]] | None = None, n_classes: int | None = None,
) -> dict[str, np.ndarray] | None:
    """The cached arrays ``keys`` of ``name`` when they came from ``source``; None otherwise.

    ``shapes`` (key -> shape) are what the source holds and ``n_classes`` bounds the labels:
    checked on every read, each array's header before its data, so that a damaged or altered
    cache is parsed again (with a warning) instead of being returned.
    """
    path = parsed_path(name)
    if not path.is_file():
        return None
    try:
        with NpzReader(path) as npz:
            if _stored_fingerprint(npz) != source:
                return None
            problem = _header_problem({key: npz.header(key) for key in keys}, shapes)
            arrays = {} if problem else {key: npz.read(key) for key in keys}
    except (OSError, ValueError, KeyError):
        return None  # unreadable or incomplete: parse the source again and overwrite it
    problem = problem or _label_problem(arrays, n_classes)
    if problem is not None:
        warnings.warn(f"minidl: the dataset cache {path} does not match its source ({problem}); "
                      "parsing the source again", stacklevel=3)
        return None
    return arrays


def save(name: str, source: str, arrays: dict[str, np.ndarray]) -> None:
    """Write the parsed arrays atomically; warn and go on when the cache is not writable."""
    path = parsed_path(name)
    try:
        with atomic_write(path) as f:
            np.savez(f, source=np.array(source), **arrays)
    except OSError as e:
        warnings.warn(f"minidl: could not write the dataset cache {path}: {e}", stacklevel=3)
