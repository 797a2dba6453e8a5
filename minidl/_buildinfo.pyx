# cython: language_level=3
"""Facts about this build that only its compiler knew (``minidl.show_config`` reads them).

Compiled by setup.py with the same flags as the kernels, so ``OPENMP_VERSION`` is
what ``minidl._core`` and ``minidl._netgrad`` were built with: the OpenMP
version (``_OPENMP``, e.g. 201511 for OpenMP 4.5), or 0 for a serial build,
whose parallel loops run on the calling thread.
"""

from ._openmp cimport MINIDL_OPENMP, omp_get_max_threads, omp_get_num_procs

OPENMP_VERSION = MINIDL_OPENMP


def openmp_max_threads() -> int:
    """``omp_get_max_threads()``: the threads a parallel loop may use (1 in a serial build)."""
    return omp_get_max_threads()


def openmp_num_procs() -> int:
    """``omp_get_num_procs()``: the processors OpenMP sees (1 in a serial build)."""
    return omp_get_num_procs()
