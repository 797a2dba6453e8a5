"""Backend selection: the compiled kernels (default) or the pure-NumPy reference.

Everything numeric in minidl goes through ``ops()``: the layers' arithmetic,
the finite differences, and the compiled whole-network passes
(``ops().fused(network)``, ``ops().step_runner(...)``). ``NumpyOps``
(``minidl.backend.numpy_ops``) computes all of it the book's way and imports
nothing compiled; ``CythonOps`` (``minidl.backend.cython_ops``) overrides the hot
operations with minidl's kernels and falls back to the reference for the rest
(thinc's pattern). The tests hold one against the other.

Choose with ``minidl.set_backend('numpy' | 'cython')`` or the environment
variable ``MINIDL_BACKEND``. The affine product uses NumPy's BLAS by default;
``MINIDL_GEMM=cython`` (or ``set_backend('cython', gemm='cython')``) selects
minidl's tiled GEMM for every dense affine product instead. ``MINIDL_NUM_THREADS=n``
sets the compiled kernels' threads. The backend is set up when it is first used
(``ops()``), not on import: ``import minidl.layers`` loads no compiled kernel.
"""

from __future__ import annotations

import os

from .._env import BACKENDS, GEMM_CHOICES, check_backend, check_gemm
from .._env import num_threads as _num_threads
from .numpy_ops import NumpyOps

__all__ = ["BACKENDS", "GEMM_CHOICES", "get_backend", "ops", "set_backend", "use_simd"]


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# Threads for the compiled kernels. MINIDL_NUM_THREADS=n sets both numbers. By
# default the layer-by-layer kernels (NUM_THREADS) run on one thread: on the
# 2-core machine this was tuned on, a second thread made a layer-by-layer
# evaluation slower (OpenBLAS's own threads spin between the products beside it).
# The compiled whole passes (STEP_THREADS: minidl.train's steps, a network's
# gradient/loss/accuracy) call no BLAS, and a second thread made them faster there.
_THREADS_SET = os.environ.get("MINIDL_NUM_THREADS")
NUM_THREADS = _num_threads(_THREADS_SET) if _THREADS_SET is not None else 1
STEP_THREADS = NUM_THREADS if _THREADS_SET is not None else min(2, _available_cpus())
# Set by the user: the compiled passes run on exactly that many threads. Otherwise
# each pass measures one thread against STEP_THREADS as it runs and takes the
# faster (minidl.engine.threads: a busy neighbour process makes one thread faster).
THREADS_FIXED = _THREADS_SET is not None

# made on first use (``ops()``), so that importing a module that computes through the
# backend does not load the compiled kernels until something is computed
_ops: NumpyOps | None = None


def set_backend(name: str, *, gemm: str | None = None) -> None:
    """Run everything on ``name`` ('cython' or 'numpy').

    ``gemm`` ('blas' or 'cython') picks the dense affine product of the Cython
    backend; by default ``MINIDL_GEMM`` or 'blas'.
    """
    global _ops
    check_backend(name)
    if name == "numpy":
        if gemm is not None:
            raise ValueError("gemm= applies to the 'cython' backend only")
        _ops = NumpyOps()
        return
    gemm = gemm or os.environ.get("MINIDL_GEMM", "blas")
    check_gemm(gemm)
    try:
        from .cython_ops import CythonOps
    except ImportError as exc:  # pragma: no cover - only a broken install gets here
        raise ImportError(
            f"minidl's compiled kernels could not be imported ({exc}). Reinstall minidl "
            "with `pip install .` from its source tree, which compiles them (a C compiler "
            "and the Python headers are needed), or use the pure-NumPy reference with "
            "MINIDL_BACKEND=numpy."
        ) from exc
    _ops = CythonOps(gemm)


def get_backend() -> str:
    """The name of the backend in use."""
    return ops().name


def ops() -> NumpyOps:
    """The backend object that layers, networks and training call."""
    if _ops is None:
        set_backend(os.environ.get("MINIDL_BACKEND", "cython"))
    return _ops


def use_simd(level: str = "best") -> str:
    """The compiled kernels' instruction set: 'best' (AVX2+FMA when the CPU has
    them), 'baseline' (16-byte vectors) or 'scalar' (plain C), in every kernel
    module at once. For tests and benchmarks; returns the name of the kernels."""
    from .cython_ops import use_simd as _use_simd

    return _use_simd(level)

