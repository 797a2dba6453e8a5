/* minidl/_openmp.h: OpenMP when the compiler has it, serial stand-ins when not.
 *
 * `cimport openmp` would put an unconditional `#include <omp.h>` into the
 * generated C, and the build would fail where the compiler has no OpenMP
 * (Apple clang without libomp). The kernels declare the few omp functions they
 * call through this header instead (minidl/_openmp.pxd). Cython's prange and
 * parallel blocks need nothing from here: without OpenMP they compile to plain
 * loops that run on the calling thread, and threadid() is 0.
 *
 * MINIDL_OPENMP is the OpenMP version the build was compiled with (the value of
 * _OPENMP, e.g. 201511 for 4.5), or 0 for a serial build. setup.py decides which
 * by trying the compiler's OpenMP flag; minidl.show_config() reports it.
 */
#ifndef MINIDL_OPENMP_H
#define MINIDL_OPENMP_H

#ifdef _OPENMP
#include <omp.h>
#define MINIDL_OPENMP _OPENMP
#else
#define MINIDL_OPENMP 0
/* A serial build runs every loop on one thread. */
static int omp_get_max_threads(void) { return 1; }
static int omp_get_num_procs(void) { return 1; }
#endif

#endif /* MINIDL_OPENMP_H */
