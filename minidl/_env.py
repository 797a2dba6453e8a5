"""minidl's environment settings, checked without importing anything heavy.

``MINIDL_BACKEND`` ('cython' or 'numpy'), ``MINIDL_GEMM`` ('blas' or 'cython', for the
'cython' backend) and ``MINIDL_NUM_THREADS`` (a whole number >= 1). ``minidl.backend``
reads them when it is first imported; ``import minidl`` checks them at once, so that a
typo fails at the top of a program, with the message the backend would give.
"""

from __future__ import annotations

import os

BACKENDS = ("cython", "numpy")
GEMM_CHOICES = ("blas", "cython")


def num_threads(value: str) -> int:
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"MINIDL_NUM_THREADS must be a whole number >= 1, got {value!r}")
    return int(value)


def check_backend(name: str) -> None:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")


def check_gemm(gemm: str) -> None:
    if gemm not in GEMM_CHOICES:
        raise ValueError(f"gemm must be one of {GEMM_CHOICES}, got {gemm!r}")


def check() -> None:
    """Raise the backend's ValueError for a bad MINIDL_* setting."""
    threads = os.environ.get("MINIDL_NUM_THREADS")
    if threads is not None:
        num_threads(threads)
    backend = os.environ.get("MINIDL_BACKEND", "cython")
    check_backend(backend)
    if backend == "cython":
        check_gemm(os.environ.get("MINIDL_GEMM", "blas"))
