"""The calling thread's BLAS threads, for minidl's dense products.

OpenBLAS 0.3.27 and newer (NumPy 2's wheels carry one) has
``openblas_set_num_threads_local``: a thread count for the calling thread only,
returning the one it replaces. minidl's dense passes use it to run their
products on the threads the engine's thread choice picks, leaving NumPy's own
setting for every other product of the program (and for other threads). Where
NumPy's BLAS is not such an OpenBLAS (MKL, Accelerate, an older OpenBLAS),
``available()`` is False and ``set_local`` does nothing.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["available", "local", "set_local"]


def _loaded_openblas():
    """``openblas_set_num_threads_local`` of an OpenBLAS already loaded (NumPy's), or None."""
    import numpy  # noqa: F401  (NumPy loads its BLAS)

    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps
                     if "openblas" in line.rsplit("/", 1)[-1].lower()}
    except OSError:  # not Linux
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | os.RTLD_LAZY)
        except OSError:
            continue
        fn = getattr(lib, "openblas_set_num_threads_local", None)
        if fn is not None:
            fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
            return fn
    return None


_set_local = _loaded_openblas()


def available() -> bool:
    """Whether minidl can set NumPy's BLAS threads for the calling thread."""
    return _set_local is not None


def set_local(n: int) -> int:
    """Run the calling thread's BLAS products on ``n`` threads; returns the count it
    replaces (0 when NumPy's BLAS offers no such setting, which changes nothing)."""
    return _set_local(n) if _set_local is not None else 0


class local:
    """``with local(n):`` the calling thread's BLAS products on ``n`` threads, the
    count before restored after."""

    __slots__ = ("before", "n")

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        self.before = set_local(self.n)

    def __exit__(self, *exc):
        set_local(self.before)
