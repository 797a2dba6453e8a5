# The omp functions minidl's kernels call, through minidl/_openmp.h: OpenMP's own
# when the build has it, serial stand-ins (one thread) when not. Use this instead
# of `cimport openmp`, which would make <omp.h> a hard requirement of the build.

cdef extern from "_openmp.h" nogil:
    const int MINIDL_OPENMP  # _OPENMP's version (e.g. 201511), or 0 for a serial build
    int omp_get_max_threads()
    int omp_get_num_procs()
