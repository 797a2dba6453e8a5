"""minidl's cache folder and the parsed-array cache kept in it.

The cache folder is ``$XDG_CACHE_HOME/minidl`` (default ``~/.cache/minidl``). Downloads go there,
laid out like any data folder, and parsed arrays go to ``parsed/<dataset>.npz``: the uint8 arrays
as read (before normalising or one-hot encoding; CIFAR-10 in colour and in grayscale), saved
uncompressed so that a second load takes a fraction of a second, with the fingerprint of the source they came from (paths, sizes and
modification times), so that a changed or moved source is parsed again. Files are written to a
temporary name and renamed into place; a cache that cannot be written is skipped with a warning.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .._atomic import atomic_write

FORMAT = "minidl-parsed-v1"
KEYS = ("x_train", "t_train", "x_test", "t_test")  # CIFAR-10 adds x_train_gray, x_test_gray


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


def _stored_fingerprint(npz) -> str:
    return str(npz["source"][()])


def is_cached(name: str, source: str) -> bool:
    path = parsed_path(name)
    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as npz:
            return _stored_fingerprint(npz) == source
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return False


def load(name: str, source: str, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The cached arrays ``keys`` of ``name`` when they came from ``source``; None otherwise."""
    path = parsed_path(name)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if _stored_fingerprint(npz) != source:
                return None
            arrays = {key: npz[key] for key in keys}  # reads only these members
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None  # unreadable or incomplete: parse the source again and overwrite it
    if any(a.dtype != np.uint8 for a in arrays.values()):
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
