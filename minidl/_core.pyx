# cython: language_level=3
"""minidl's compiled kernels.

Design
------
Every kernel is a small ``noexcept nogil`` C function over the ``floating``
fused type (float32 or float64), with a thin ``cpdef``/``def`` wrapper so that
Python code and tests can call it. The wrappers take typed memoryviews:
arguments marked ``# IN`` are read, arguments marked ``# OUT`` are written and
must be allocated by the caller.

The kernels trust their arguments: the module is compiled with bounds and
wraparound checks off (see ``setup.py``; ``MINIDL_DEBUG=1`` turns them back on).
``minidl._backend`` validates shapes, dtypes and label ranges before calling
anything here, so no kernel ever indexes out of bounds.

The pure-NumPy reference for every kernel lives in ``minidl._reference``; the
tests hold each kernel against it.
"""

cimport cython
from cython.parallel cimport prange
from ._openmp cimport omp_get_max_threads  # OpenMP's, or 1 in a serial build
from libc.math cimport log
from libc.stdint cimport int64_t

import numpy as np
cimport numpy as cnp

cnp.import_array()

ctypedef fused floating:
    float
    double

# The book adds 1e-7 inside the log of cross_entropy_error; we keep it so that
# losses agree with the book's to rounding.
cdef double CE_EPS = 1e-7

# Tile sizes of the blocked GEMM: a KC x NC panel of B (64 x 256 doubles =
# 128 KiB) stays in L2 while every row of A streams past it.
cdef enum:
    MC = 16
    KC = 64
    NC = 256
    PARALLEL_MIN_FLOPS = 1 << 20


# --------------------------------------------------------------------------
# GEMM: the fallback for the affine product
# --------------------------------------------------------------------------

cdef void _gemm_panel(
    const floating* a,          # IN row i of A, K elements
    const floating* B,          # IN (K, N) row-major
    floating* c,                # OUT row i of C, N elements, accumulated into
    Py_ssize_t N,
    Py_ssize_t k0, Py_ssize_t k1,
    Py_ssize_t j0, Py_ssize_t j1,
) noexcept nogil:
    """c[j0:j1] += a[k0:k1] @ B[k0:k1, j0:j1], with a contiguous inner loop."""
    cdef Py_ssize_t k, j
    cdef floating v
    cdef const floating* brow
    for k in range(k0, k1):
        v = a[k]
        if v == 0:
            continue  # ReLU activations and MNIST pixels are mostly zeros
        brow = B + k * N
        for j in range(j0, j1):
            c[j] += v * brow[j]


def gemm(
    const floating[:, ::1] A,   # IN (M, K)
    const floating[:, ::1] B,   # IN (K, N)
    floating[:, ::1] C,         # OUT (M, N), overwritten with A @ B
):
    """Blocked matrix product ``C = A @ B``.

    One parallel region per call, over strips of MC rows of ``C``; within a
    strip the KC x NC panels of ``B`` are visited in turn. Small products run
    on one thread: starting threads costs more than they would save.
    """
    cdef Py_ssize_t M = A.shape[0], K = A.shape[1], N = B.shape[1]
    cdef Py_ssize_t i, s, n_strips, k0, j0, k1, j1, i1
    cdef int n_threads = 1 if M * N * K < PARALLEL_MIN_FLOPS else 0
    if M == 0 or N == 0:
        return
    cdef floating* c = &C[0, 0]
    cdef const floating* a
    cdef const floating* b
    with nogil:
        for i in range(M * N):
            c[i] = 0
    if K == 0:
        return
    a = &A[0, 0]
    b = &B[0, 0]
    if n_threads == 0:
        n_threads = omp_get_max_threads()
    with nogil:
        n_strips = (M + MC - 1) // MC
        for s in prange(n_strips, schedule="static", num_threads=n_threads):
            i1 = min((s + 1) * MC, M)
            j0 = 0
            while j0 < N:
                j1 = min(j0 + <Py_ssize_t>NC, N)
                k0 = 0
                while k0 < K:
                    k1 = min(k0 + <Py_ssize_t>KC, K)
                    for i in range(s * MC, i1):
                        _gemm_panel(a + i * K, b, c + i * N, N, k0, k1, j0, j1)
                    k0 = k1
                j0 = j1


def add_bias(
    floating[:, ::1] out,        # IN/OUT (N, M)
    const floating[::1] b,       # IN (M,)
):
    """``out += b`` row by row."""
    cdef Py_ssize_t n = out.shape[0], m = out.shape[1], i, j
    with nogil:
        for i in range(n):
            for j in range(m):
                out[i, j] += b[j]


# --------------------------------------------------------------------------
# Activations (elementwise, over flattened C-contiguous buffers)
# --------------------------------------------------------------------------

cdef inline void _relu_forward(const floating* x, floating* out, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = x[i]
        out[i] = 0 if v <= 0 else v


cdef inline void _relu_backward(const floating* dout, const floating* out, floating* dx,
                                Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        dx[i] = 0 if out[i] <= 0 else dout[i]


cdef extern from "_vmath.h" nogil:
    void minidl_vmath_init(int isa)
    void minidl_sigmoid_f64(const double* x, double* out, Py_ssize_t n)
    void minidl_sigmoid_f32(const float* x, float* out, Py_ssize_t n)
    void minidl_exp_shifted_f64(const double* x, double m, double* out, Py_ssize_t n)
    void minidl_exp_shifted_f32(const float* x, float m, float* out, Py_ssize_t n)


cdef inline void _sigmoid_forward(const floating* x, floating* out, Py_ssize_t n) noexcept nogil:
    # _sigmoid's two branches, with exp on vectors (see _vmath.h)
    if floating is float:
        minidl_sigmoid_f32(x, out, n)
    else:
        minidl_sigmoid_f64(x, out, n)


cdef inline void _sigmoid_backward(const floating* dout, const floating* out, floating* dx,
                                   Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        dx[i] = dout[i] * (1 - out[i]) * out[i]


def relu_forward(
    const floating[::1] x,      # IN
    floating[::1] out,          # OUT
):
    """out = x where x > 0, else 0 (NaN passes through, as in the book)."""
    if x.shape[0]:
        with nogil:
            _relu_forward(&x[0], &out[0], x.shape[0])


def relu_backward(
    const floating[::1] dout,   # IN
    const floating[::1] out,    # IN, the forward output
    floating[::1] dx,           # OUT
):
    """dx = dout where the forward output was > 0, else 0 (gradient 0 at 0)."""
    if dout.shape[0]:
        with nogil:
            _relu_backward(&dout[0], &out[0], &dx[0], dout.shape[0])


def sigmoid_forward(
    const floating[::1] x,      # IN
    floating[::1] out,          # OUT
):
    """out = 1 / (1 + exp(-x)), computed without overflow."""
    if x.shape[0]:
        with nogil:
            _sigmoid_forward(&x[0], &out[0], x.shape[0])


def sigmoid_backward(
    const floating[::1] dout,   # IN
    const floating[::1] out,    # IN, the forward output y
    floating[::1] dx,           # OUT
):
    """dx = dout * (1 - y) * y, as the book's Sigmoid layer."""
    if dout.shape[0]:
        with nogil:
            _sigmoid_backward(&dout[0], &out[0], &dx[0], dout.shape[0])


# --------------------------------------------------------------------------
# Softmax with cross-entropy
# --------------------------------------------------------------------------

cdef void _softmax_cross_entropy_forward(
    const floating* x, const int64_t* labels, Py_ssize_t n, Py_ssize_t c,
    floating* y, floating* row_loss,
) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef floating m, s
    cdef const floating* xi
    cdef floating* yi
    for i in range(n):
        xi = x + i * c
        yi = y + i * c
        m = xi[0]
        for j in range(1, c):
            if xi[j] > m:
                m = xi[j]
        if floating is double:  # yi = exp(xi - m), on vectors (_vmath.h)
            minidl_exp_shifted_f64(xi, m, yi, c)
        else:
            minidl_exp_shifted_f32(xi, m, yi, c)
        s = 0
        for j in range(c):
            s += yi[j]
        for j in range(c):
            yi[j] = yi[j] / s
        row_loss[i] = -log(yi[labels[i]] + <floating>CE_EPS)


cdef void _softmax_cross_entropy_backward(
    const floating* y, const int64_t* labels, Py_ssize_t n, Py_ssize_t c, double dout,
    floating* dx,
) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef floating nf = <floating>n
    cdef floating scale = <floating>dout
    for i in range(n):
        for j in range(c):
            dx[i * c + j] = y[i * c + j] / nf
        dx[i * c + labels[i]] = (y[i * c + labels[i]] - 1) / nf
        if dout != 1.0:
            for j in range(c):
                dx[i * c + j] = dx[i * c + j] * scale


def softmax_cross_entropy_forward(
    const floating[:, ::1] x,       # IN (N, C) scores
    const int64_t[::1] labels,      # IN (N,) class indices in [0, C)
    floating[:, ::1] y,             # OUT (N, C) softmax probabilities
    floating[::1] row_loss,         # OUT (N,) -log(y[i, t_i] + 1e-7)
):
    """Numerically stable softmax and per-row cross-entropy in one pass."""
    if x.shape[0] and x.shape[1]:
        with nogil:
            _softmax_cross_entropy_forward(&x[0, 0], &labels[0], x.shape[0], x.shape[1],
                                           &y[0, 0], &row_loss[0])


def softmax_cross_entropy_backward(
    const floating[:, ::1] y,       # IN (N, C) softmax probabilities
    const int64_t[::1] labels,      # IN (N,)
    double dout,                    # IN upstream gradient of the mean loss
    floating[:, ::1] dx,            # OUT (N, C)
):
    """dx = (y - onehot(t)) / N * dout, as the book's SoftmaxWithLoss."""
    if y.shape[0] and y.shape[1]:
        with nogil:
            _softmax_cross_entropy_backward(&y[0, 0], &labels[0], y.shape[0], y.shape[1], dout,
                                            &dx[0, 0])


# --------------------------------------------------------------------------
# Finite differences for any callable
# --------------------------------------------------------------------------

cdef inline double _read(char* p, int is_double) noexcept nogil:
    if is_double:
        return (<double*>p)[0]
    return (<float*>p)[0]


cdef inline void _write(char* p, int is_double, double v) noexcept nogil:
    if is_double:
        (<double*>p)[0] = v
    else:
        (<float*>p)[0] = <float>v


cdef inline void _write_step(char* p, int is_double, double v, double step) noexcept nogil:
    # v + step in x's dtype: for float32, float32 arithmetic, as NumPy 2 does for
    # the book's ``tmp_val + h`` (np.float32 + Python float stays float32).
    if is_double:
        (<double*>p)[0] = v + step
    else:
        (<float*>p)[0] = <float>v + <float>step


def numerical_gradient(f, cnp.ndarray x, double h, cnp.ndarray grad):
    """Central differences of ``f`` at ``x``, written into ``grad``.

    ``x`` (IN/OUT, any shape and strides, float32 or float64, writeable) is
    perturbed in place, one element at a time, in C order: ``x[i] + h``, then
    ``x[i] - h`` (computed in ``x``'s dtype, as the book's NumPy code does
    under NumPy 2), and restored afterwards, even when ``f`` raises. ``f`` is called as
    ``f(x)``. ``grad`` (OUT) is C-contiguous float64 with ``x.size`` elements.
    """
    if x.dtype.kind != "f" or not x.dtype.isnative or x.dtype.itemsize not in (4, 8):
        raise TypeError(f"numerical_gradient: x must be native float32 or float64, not {x.dtype}")
    cdef int nd = x.ndim
    cdef int is_double = x.dtype.itemsize == 8
    cdef char* data = <char*>cnp.PyArray_DATA(x)
    cdef cnp.npy_intp* shape = cnp.PyArray_DIMS(x)
    cdef cnp.npy_intp* strides = cnp.PyArray_STRIDES(x)
    cdef double[::1] g = grad.reshape(-1)
    cdef Py_ssize_t size = x.size, k
    cdef cnp.npy_intp[64] index  # NumPy allows at most 64 dimensions
    cdef cnp.npy_intp offset = 0
    cdef int d
    cdef char* p
    cdef double tmp, fxh1, fxh2
    for d in range(nd):
        index[d] = 0
    for k in range(size):
        p = data + offset
        tmp = _read(p, is_double)
        try:
            _write_step(p, is_double, tmp, h)
            fxh1 = f(x)
            _write_step(p, is_double, tmp, -h)
            fxh2 = f(x)
        finally:
            _write(p, is_double, tmp)
        g[k] = (fxh1 - fxh2) / (2 * h)
        # Advance the C-order multi-index and the byte offset that goes with it.
        d = nd - 1
        while d >= 0:
            index[d] += 1
            offset += strides[d]
            if index[d] < shape[d]:
                break
            offset -= strides[d] * shape[d]
            index[d] = 0
            d -= 1


# --------------------------------------------------------------------------
# Zero-skipping affine products (C micro-kernels in _sparse.h)
# --------------------------------------------------------------------------
#
# The affine products of the book's networks read inputs that are mostly exact
# zeros (MNIST pixels, ReLU outputs). These wrappers run the micro-kernels of
# _sparse.h (see its header comment): a nonzero list per input row, then the
# products over the nonzeros only, with the output row in SIMD registers.
# Input rows may be picked by an index array, so a training batch is read in
# place from the dataset, and the input may be float32 while the weights are
# float64 (NumPy's promotion: computed in float64).

from cython.parallel cimport parallel, threadid
from libc.stdint cimport int32_t

cdef extern from "_sparse.h" nogil:
    const char* minidl_sparse_init(int isa)
    void minidl_nz_f32(const float* x, Py_ssize_t ldx, Py_ssize_t i0, Py_ssize_t i1,
                       Py_ssize_t K, int32_t* idx, float* val, int64_t* ptr)
    void minidl_nz_f64(const double* x, Py_ssize_t ldx, Py_ssize_t i0, Py_ssize_t i1,
                       Py_ssize_t K, int32_t* idx, double* val, int64_t* ptr)
    void minidl_csc_f32(const int32_t* idx, const float* val, const int64_t* ptr,
                        const int64_t* rows, Py_ssize_t n, Py_ssize_t K, int32_t* cptr,
                        int32_t* cidx, float* cval)
    void minidl_csc_f64(const int32_t* idx, const double* val, const int64_t* ptr,
                        const int64_t* rows, Py_ssize_t n, Py_ssize_t K, int32_t* cptr,
                        int32_t* cidx, double* cval)
    void minidl_spmm_ff(const int64_t* rows, Py_ssize_t i0, Py_ssize_t i1, const int32_t* idx,
                        const float* val, const int64_t* ptr, const float* W, Py_ssize_t ldw,
                        Py_ssize_t H, const float* b, float* out, Py_ssize_t ldo)
    void minidl_spmm_fd(const int64_t* rows, Py_ssize_t i0, Py_ssize_t i1, const int32_t* idx,
                        const float* val, const int64_t* ptr, const double* W, Py_ssize_t ldw,
                        Py_ssize_t H, const double* b, double* out, Py_ssize_t ldo)
    void minidl_spmm_dd(const int64_t* rows, Py_ssize_t i0, Py_ssize_t i1, const int32_t* idx,
                        const double* val, const int64_t* ptr, const double* W, Py_ssize_t ldw,
                        Py_ssize_t H, const double* b, double* out, Py_ssize_t ldo)
    void minidl_spmmt_ff(const int32_t* cptr, const int32_t* cidx, const float* cval,
                         Py_ssize_t k0, Py_ssize_t k1, const float* dout, Py_ssize_t ldd,
                         Py_ssize_t H, float* dst, Py_ssize_t lddst, float scale, int accumulate)
    void minidl_spmmt_fd(const int32_t* cptr, const int32_t* cidx, const float* cval,
                         Py_ssize_t k0, Py_ssize_t k1, const double* dout, Py_ssize_t ldd,
                         Py_ssize_t H, double* dst, Py_ssize_t lddst, double scale,
                         int accumulate)
    void minidl_spmmt_dd(const int32_t* cptr, const int32_t* cidx, const double* cval,
                         Py_ssize_t k0, Py_ssize_t k1, const double* dout, Py_ssize_t ldd,
                         Py_ssize_t H, double* dst, Py_ssize_t lddst, double scale,
                         int accumulate)
    void minidl_prefetch_list(const int32_t* idx, const void* val, size_t vsize,
                              const int64_t* ptr, int64_t r)

ctypedef fused xfloat:  # an input's dtype, which may be narrower than the weights'
    float
    double

SIMD_ISA = minidl_sparse_init(2).decode()
minidl_vmath_init(2)
SIMD_LEVELS = {"scalar": 0, "baseline": 1, "best": 2}


def use_simd(str level="best") -> str:
    """Select the kernels of ``_sparse.h``: 'best' (AVX2+FMA when the CPU has them),
    'baseline' (16-byte vectors) or 'scalar' (plain C).

    For tests and benchmarks; returns the name of the kernels in use.
    """
    global SIMD_ISA
    if level not in SIMD_LEVELS:
        raise ValueError(f"level must be one of {sorted(SIMD_LEVELS)}, got {level!r}")
    SIMD_ISA = minidl_sparse_init(SIMD_LEVELS[level]).decode()
    minidl_vmath_init(SIMD_LEVELS[level])
    return SIMD_ISA


cdef inline void _nz(const xfloat* x, Py_ssize_t ldx, Py_ssize_t i0, Py_ssize_t i1,
                     Py_ssize_t K, int32_t* idx, xfloat* val, int64_t* ptr) noexcept nogil:
    if xfloat is float:
        minidl_nz_f32(x, ldx, i0, i1, K, idx, val, ptr)
    else:
        minidl_nz_f64(x, ldx, i0, i1, K, idx, val, ptr)


cdef inline void _csc(const int32_t* idx, const xfloat* val, const int64_t* ptr,
                      const int64_t* rows, Py_ssize_t n, Py_ssize_t K, int32_t* cptr,
                      int32_t* cidx, xfloat* cval) noexcept nogil:
    if xfloat is float:
        minidl_csc_f32(idx, val, ptr, rows, n, K, cptr, cidx, cval)
    else:
        minidl_csc_f64(idx, val, ptr, rows, n, K, cptr, cidx, cval)


cdef inline void _spmm(const int64_t* rows, Py_ssize_t i0, Py_ssize_t i1, const int32_t* idx,
                       const xfloat* val, const int64_t* ptr, const floating* W,
                       Py_ssize_t ldw, Py_ssize_t H, const floating* b, floating* out,
                       Py_ssize_t ldo) noexcept nogil:
    if floating is float:
        if xfloat is float:
            minidl_spmm_ff(rows, i0, i1, idx, val, ptr, W, ldw, H, b, out, ldo)
    else:
        if xfloat is float:
            minidl_spmm_fd(rows, i0, i1, idx, val, ptr, W, ldw, H, b, out, ldo)
        else:
            minidl_spmm_dd(rows, i0, i1, idx, val, ptr, W, ldw, H, b, out, ldo)


cdef inline void _spmmt(const int32_t* cptr, const int32_t* cidx, const xfloat* cval,
                        Py_ssize_t k0, Py_ssize_t k1, const floating* dout, Py_ssize_t ldd,
                        Py_ssize_t H, floating* dst, Py_ssize_t lddst, floating scale,
                        int accumulate) noexcept nogil:
    if floating is float:
        if xfloat is float:
            minidl_spmmt_ff(cptr, cidx, cval, k0, k1, dout, ldd, H, dst, lddst, scale,
                            accumulate)
    else:
        if xfloat is float:
            minidl_spmmt_fd(cptr, cidx, cval, k0, k1, dout, ldd, H, dst, lddst, scale,
                            accumulate)
        else:
            minidl_spmmt_dd(cptr, cidx, cval, k0, k1, dout, ldd, H, dst, lddst, scale,
                            accumulate)


def indices_in_range(const int64_t[::1] t, int64_t limit) -> bool:
    """Whether every entry of ``t`` is in [0, limit) (class labels, before a kernel
    indexes with them)."""
    cdef Py_ssize_t i
    cdef bint bad = False
    with nogil:
        for i in range(t.shape[0]):
            bad = bad or t[i] < 0 or t[i] >= limit
    return not bad


def nonzero_fraction(const xfloat[:, ::1] x, Py_ssize_t max_rows=8) -> float:
    """Fraction of nonzeros in up to ``max_rows`` rows spread over ``x`` (an estimate)."""
    cdef Py_ssize_t n = x.shape[0], K = x.shape[1], m, r, i, k, nnz = 0
    if n == 0 or K == 0:
        return 0.0
    m = min(n, max_rows)
    with nogil:
        for r in range(m):
            i = r * n // m
            for k in range(K):
                nnz += x[i, k] != 0
    return nnz / <double>(m * K)


cdef enum:
    SMALL_LISTS = 1 << 18  # entries of x up to which nonzero_lists makes one pass
    ROW_BLOCK = 64   # rows per call of the spmm kernel
    SCAN_BLOCK = 32  # rows scanned for nonzeros at a time when no lists are given


def nonzero_lists_into(
    const xfloat[:, ::1] x,      # IN (n, K)
    int32_t[::1] idx,            # OUT at least n * K + K entries
    xfloat[::1] val,             # OUT as many
    int64_t[::1] ptr,            # OUT n + 1
) -> int:
    """``nonzero_lists(x)`` written into the caller's buffers (reused across
    batches); returns the number of nonzeros: the lists are ``idx[:total]``,
    ``val[:total]`` and ``ptr``."""
    cdef Py_ssize_t n = x.shape[0], K = x.shape[1]
    if idx.shape[0] < n * K + K or val.shape[0] < n * K + K or ptr.shape[0] != n + 1:
        raise ValueError(f"nonzero_lists_into: buffers of {n * K + K} entries and {n + 1} "
                         f"offsets needed, got {idx.shape[0]}, {val.shape[0]}, {ptr.shape[0]}")
    ptr[0] = 0
    if n and K:
        with nogil:
            _nz(&x[0, 0], K, 0, n, K, &idx[0], &val[0], &ptr[0])
    else:
        ptr[:] = 0
    return ptr[n]


def nonzero_lists(const xfloat[:, ::1] x):
    """The nonzeros of every row of ``x``, as CSR lists.

    Returns ``(idx, val, ptr)``: int32 column indices, their values (x's dtype)
    and int64 row offsets (M + 1); row i's nonzeros are at ``ptr[i]:ptr[i + 1]``,
    columns increasing. Memory: 8 or 12 bytes per nonzero.
    """
    cdef Py_ssize_t n = x.shape[0], K = x.shape[1], i, i1, block = min(1024, x.shape[0])
    dtype = np.float32 if xfloat is float else np.float64
    cdef int64_t[::1] ptr = np.zeros(n + 1, dtype=np.int64)
    cdef int32_t[::1] idx
    cdef xfloat[::1] val
    if n == 0 or K == 0:
        return np.empty(0, dtype=np.int32), np.empty(0, dtype=dtype), np.asarray(ptr)
    if n * K <= SMALL_LISTS:  # a batch: one pass into room for every entry (+ K: see below)
        idx = np.empty(n * K + K, dtype=np.int32)
        val = np.empty(n * K + K, dtype=dtype)
        with nogil:
            _nz(&x[0, 0], K, 0, n, K, &idx[0], &val[0], &ptr[0])
        return np.asarray(idx)[:ptr[n]], np.asarray(val)[:ptr[n]], np.asarray(ptr)
    cdef int64_t[::1] counts = np.zeros(block + 1, dtype=np.int64)
    cdef int32_t[::1] sidx = np.empty(block * K, dtype=np.int32)
    cdef xfloat[::1] sval = np.empty(block * K, dtype=dtype)
    with nogil:  # count, in blocks of rows
        i = 0
        while i < n:
            i1 = min(i + block, n)
            _nz(&x[i, 0], K, 0, i1 - i, K, &sidx[0], &sval[0], &counts[0])
            ptr[i1] = ptr[i] + counts[i1 - i]
            i = i1
    del sidx, sval
    cdef Py_ssize_t total = ptr[n]
    # + K: the compaction loop may write (not count) up to K entries past a row's list
    idx = np.empty(total + K, dtype=np.int32)
    val = np.empty(total + K, dtype=dtype)
    with nogil:  # fill
        _nz(&x[0, 0], K, 0, n, K, &idx[0], &val[0], &ptr[0])
    return np.asarray(idx)[:total], np.asarray(val)[:total], np.asarray(ptr)



cdef inline Py_ssize_t _threads_for(Py_ssize_t work, int num_threads) noexcept nogil:
    # A training batch (~1e6 multiply-adds) runs on one thread: on a small shared
    # machine, waking a second one (while BLAS's own threads spin) costs more than
    # it saves. Evaluation-sized work (2e6 per thread and more) is split.
    if num_threads <= 1 or work < 4000000:
        return 1
    return min(<Py_ssize_t>num_threads, max(<Py_ssize_t>1, work // 2000000))


@cython.warn.unreachable(False)  # float64 x with float32 W: the specialisation only raises
def sparse_affine_forward(
    const xfloat[:, ::1] x,       # IN (M, K) inputs (unread when lists are given)
    const int64_t[::1] rows,      # IN (N,) the rows of x to use, in [0, M); None: all, in order
    const floating[:, ::1] W,     # IN (K, H)
    const floating[::1] b,        # IN (H,); None: no bias
    floating[:, ::1] out,         # OUT (N, H) = x[rows] @ W + b
    int num_threads=1,
    tuple lists=None,             # IN ``nonzero_lists(x)``, or None to scan x's rows here
):
    """``out = x[rows] @ W + b``, skipping the zero entries of ``x``."""
    if floating is float and xfloat is double:
        raise TypeError("float64 inputs with float32 weights: promote the weights first")
    cdef Py_ssize_t n = out.shape[0], K = x.shape[1], H = W.shape[1], i, i1, r, nt
    if n == 0 or H == 0:
        return
    dtype = np.float32 if xfloat is float else np.float64
    cdef const int64_t* rp = &rows[0] if rows is not None else NULL
    cdef const floating* bp = &b[0] if b is not None else NULL
    cdef const floating* Wp = &W[0, 0] if K > 0 else NULL
    cdef const int32_t[::1] li
    cdef const xfloat[::1] lv
    cdef const int64_t[::1] lp
    cdef int32_t[:, ::1] sidx
    cdef xfloat[:, ::1] sval
    cdef int64_t[:, ::1] sptr
    cdef int tid
    nt = _threads_for(n * K * H // 5, num_threads)  # ~1 in 5 inputs nonzero
    if lists is not None:  # precomputed lists: straight to the products
        li, lv, lp = lists
        if li.shape[0] == 0:
            li = np.zeros(1, dtype=np.int32)
            lv = np.zeros(1, dtype=dtype)
        # blocks of ROW_BLOCK rows; dynamic: a thread the OS has not scheduled yet
        # leaves its blocks to the others
        with nogil:
            for i in prange(0, n, ROW_BLOCK, schedule="dynamic", num_threads=nt):
                _spmm(rp, i, min(i + ROW_BLOCK, n), &li[0], &lv[0], &lp[0], Wp, H, H, bp,
                      &out[0, 0], H)
        return
    # scan the rows' nonzeros a block at a time into per-thread lists, then the products
    # (+ K: room for the compaction loop's writes past a block's last list)
    sidx = np.empty((nt, SCAN_BLOCK * K + K), dtype=np.int32)
    sval = np.empty((nt, SCAN_BLOCK * K + K), dtype=dtype)
    sptr = np.zeros((nt, SCAN_BLOCK + 1), dtype=np.int64)
    with nogil, parallel(num_threads=nt):
        tid = threadid()
        for i in prange(0, n, SCAN_BLOCK, schedule="dynamic"):
            i1 = min(i + SCAN_BLOCK, n)
            for r in range(i, i1):
                _nz(&x[rp[r] if rp != NULL else r, 0], 0, r - i, r - i + 1, K, &sidx[tid, 0],
                    &sval[tid, 0], &sptr[tid, 0])  # ldx 0: the row itself
            _spmm(NULL, 0, i1 - i, &sidx[tid, 0], &sval[tid, 0], &sptr[tid, 0], Wp, H, H, bp,
                  &out[i, 0], H)


@cython.warn.unreachable(False)  # float64 x with float32 W: the specialisation only raises
def sparse_affine_backward_weights(
    const xfloat[:, ::1] x,       # IN (M, K) inputs (unread when lists are given)
    const int64_t[::1] rows,      # IN (N,) the rows of x used, or None: all, in order
    const floating[:, ::1] dout,  # IN (N, H) gradient of the output
    floating[:, ::1] dst,         # OUT (K, H): dW = x[rows].T @ dout, or IN/OUT with lr
    double lr=0.0,                # > 0: SGD step dst -= lr * dW instead (dst holds W)
    int num_threads=1,
    tuple lists=None,             # IN ``nonzero_lists(x)``, or None to scan x's rows here
):
    """``dW = x[rows].T @ dout`` (or ``W -= lr * dW`` in place), skipping zeros of ``x``."""
    if floating is float and xfloat is double:
        raise TypeError("float64 inputs with float32 weights: promote the weights first")
    cdef Py_ssize_t n = dout.shape[0], K = x.shape[1], H = dout.shape[1]
    cdef Py_ssize_t c0, c1, i, r, t, nt, chunk = 256, m = min(n, chunk)
    if K == 0 or H == 0:
        return
    if n == 0:
        if lr == 0:
            dst[:, :] = 0
        return
    dtype = np.float32 if xfloat is float else np.float64
    cdef const int64_t* rp = &rows[0] if rows is not None else NULL
    cdef const floating* dp = &dout[0, 0]
    cdef const int32_t[::1] li
    cdef const xfloat[::1] lv
    cdef const int64_t[::1] lp
    cdef bint have_lists = lists is not None
    if have_lists:
        li, lv, lp = lists
        if li.shape[0] == 0:
            li = np.zeros(1, dtype=np.int32)
            lv = np.zeros(1, dtype=dtype)
    # scratch sized to the entries a chunk can have (with lists: exactly, so that a
    # training step allocates ~100 KB, not n*K entries)
    cdef Py_ssize_t most = m * K
    if have_lists:
        most = 0
        c0 = 0
        while c0 < n:
            c1 = min(c0 + chunk, n)
            t = 0
            for i in range(c0, c1):
                r = rp[i] if rp != NULL else i
                t += lp[r + 1] - lp[r]
            most = max(most, t)
            c0 = c1
    cdef int32_t[::1] bidx = np.empty(1 if have_lists else m * K + 1, dtype=np.int32)
    cdef xfloat[::1] bval = np.empty(1 if have_lists else m * K + 1, dtype=dtype)
    cdef int64_t[::1] bptr = np.zeros(m + 1, dtype=np.int64)
    cdef int32_t[::1] cptr = np.empty(K + 1, dtype=np.int32)
    cdef int32_t[::1] cidx = np.empty(most + 1, dtype=np.int32)
    cdef xfloat[::1] cval = np.empty(most + 1, dtype=dtype)
    cdef floating scale = <floating>(-lr if lr != 0 else 1)
    cdef int accumulate
    nt = _threads_for(K * H * 4, num_threads)
    with nogil:
        c0 = 0
        while c0 < n:  # rows in chunks, so that the scratch stays small
            c1 = min(c0 + chunk, n)
            if have_lists:
                _csc(&li[0], &lv[0], &lp[0], rp + c0 if rp != NULL else NULL, c1 - c0, K,
                     &cptr[0], &cidx[0], &cval[0])
            else:
                for i in range(c1 - c0):
                    r = rp[c0 + i] if rp != NULL else c0 + i
                    _nz(&x[r, 0], 0, i, i + 1, K, &bidx[0], &bval[0], &bptr[0])  # ldx 0
                _csc(&bidx[0], &bval[0], &bptr[0], NULL, c1 - c0, K, &cptr[0], &cidx[0],
                     &cval[0])
            accumulate = lr != 0 or c0 > 0
            for t in prange(nt, num_threads=nt, schedule="static"):
                _spmmt(&cptr[0], &cidx[0], &cval[0], t * K // nt, (t + 1) * K // nt,
                       dp + c0 * H, H, H, &dst[0, 0], H, scale, accumulate)
            c0 = c1


# --------------------------------------------------------------------------
# Whole SGD steps (minidl.training.Trainer)
# --------------------------------------------------------------------------
#
# One call runs the seed's whole step on a stack of affine layers: forward,
# softmax with cross-entropy, backward, the update ``p -= lr * grad`` of every
# parameter, and the batch loss after the update (a second forward pass), with no
# Python in between. Every affine product goes through the zero-skipping kernels
# above, so each layer's input is first turned into nonzero lists: the batch's
# rows are gathered from the dataset's lists (or scanned from its rows), and the
# hidden activations are scanned as they are made. Arithmetic is the layers':
# the results agree with ``network.gradient`` and the update up to rounding.

from libc.string cimport memcpy

cdef enum:
    MAX_LAYERS_ = 32
MAX_LAYERS = MAX_LAYERS_  # affine layers in one network (deeper ones take the Python step)


cdef struct Lists:  # nonzero lists (CSR) of one layer's input for a batch
    int32_t* idx
    void* val  # the layer's dtype, or the dataset's for the first layer
    int64_t* ptr  # n + 1 offsets


cdef struct StepPlan:
    int n_layers
    int n_threads  # for the first layer's products
    Py_ssize_t n_max  # the most rows a buffer holds
    int sigmoid
    Py_ssize_t sizes[MAX_LAYERS_ + 1]
    void* W[MAX_LAYERS_]  # the network's parameters, updated in place
    void* b[MAX_LAYERS_]
    void* act[MAX_LAYERS_]  # (n, sizes[l + 1]): activations of layer l, the scores last
    Lists inp[MAX_LAYERS_]  # lists of each layer's input
    Lists dz_lists  # lists of the gradient being propagated (for dz @ W.T)
    void* dz  # (n, max hidden width) gradient at a layer's output
    void* dx  # (n, max hidden width) gradient at its input
    void* WT  # a transposed weight matrix (layers above the first)
    int32_t* cptr  # column lists (CSC) of a hidden layer's input, for dW = x.T @ dz
    int32_t* cidx
    void* cval
    int32_t* cptr0  # the first layer's (built beside its forward product)
    int32_t* cidx0
    void* cval0
    void* y  # (n, classes) softmax output
    void* gW[MAX_LAYERS_]  # where gradient() writes dW and db
    void* gb[MAX_LAYERS_]
    void* row_loss  # (n,)
    const void* x  # the dataset (M, sizes[0]), rows picked by index
    Py_ssize_t n_rows
    const int32_t* d_idx  # its nonzero lists, or NULL: scan the rows
    const void* d_val
    const int64_t* d_ptr


cdef enum:
    PIECES = 10  # pieces of a batch's rows (or of W's) shared out between threads
    EVAL_ROWS = 128  # rows per chunk of an evaluation (count_correct)
    MAX_EVAL_THREADS = 8


cdef inline void _copy_lists(StepPlan* p, const int64_t* rows, Py_ssize_t i0, Py_ssize_t i1,
                             xfloat* val) noexcept nogil:
    """Copy the dataset's lists of batch rows i0..i1 to where p.inp[0].ptr puts them,
    asking for the lists a few rows ahead early (they are in DRAM)."""
    cdef Py_ssize_t i
    cdef int64_t r, cnt
    cdef Lists* out = &p.inp[0]
    cdef const xfloat* d_val = <const xfloat*>p.d_val
    for i in range(i0, min(i0 + 4, i1)):
        minidl_prefetch_list(p.d_idx, p.d_val, sizeof(xfloat), p.d_ptr, rows[i])
    for i in range(i0, i1):
        if i + 4 < i1:
            minidl_prefetch_list(p.d_idx, p.d_val, sizeof(xfloat), p.d_ptr, rows[i + 4])
        r = rows[i]
        cnt = p.d_ptr[r + 1] - p.d_ptr[r]
        memcpy(out.idx + out.ptr[i], p.d_idx + p.d_ptr[r], cnt * sizeof(int32_t))
        memcpy(val + out.ptr[i], d_val + p.d_ptr[r], cnt * sizeof(xfloat))


cdef inline void _batch_lists(StepPlan* p, const int64_t* rows, Py_ssize_t n,
                              const xfloat* x) noexcept nogil:
    """The first layer's input lists: the batch's rows of the dataset."""
    cdef Py_ssize_t i, t, nt, K = p.sizes[0]
    cdef int64_t r
    cdef Lists* out = &p.inp[0]
    cdef xfloat* val = <xfloat*>out.val
    out.ptr[0] = 0
    if p.d_idx == NULL:  # scan the rows (ldx 0: each call reads one row)
        for i in range(n):
            _nz(x + rows[i] * K, 0, i, i + 1, K, out.idx, val, out.ptr)
        return
    for i in range(n):  # where each row's list goes, then the copies, in pieces
        r = rows[i]      # shared out between the threads
        out.ptr[i + 1] = out.ptr[i] + (p.d_ptr[r + 1] - p.d_ptr[r])
    nt = _step_threads(p, n)
    if nt == 1:
        _copy_lists(p, rows, 0, n, val)
        return
    for t in prange(PIECES, num_threads=nt, schedule="dynamic"):
        _copy_lists(p, rows, t * n // PIECES, (t + 1) * n // PIECES, val)


cdef inline Py_ssize_t _step_threads(StepPlan* p, Py_ssize_t n) noexcept nogil:
    # a second thread pays for itself from a few dozen rows on
    return max(<Py_ssize_t>1, min(<Py_ssize_t>p.n_threads, n // 32))


cdef void _first_product(StepPlan* p, Py_ssize_t n, const floating* W0, const xfloat* x0,
                         bint columns) noexcept nogil:
    """act[0] = the first layer's product, its rows shared out between the threads in
    pieces (rows differ in their counts of nonzeros); with ``columns``, also the column
    lists of its input (p.cptr0...) for the weight gradient, built by one thread while
    the others start on the product. Each row is computed whole by one thread: the
    same sums whatever the thread count."""
    cdef Py_ssize_t nt = _step_threads(p, n), c, K = p.sizes[0], H = p.sizes[1]
    cdef Lists* inp = &p.inp[0]
    cdef floating* a = <floating*>p.act[0]
    if nt == 1:
        if columns:
            _csc(inp.idx, <const xfloat*>inp.val, inp.ptr, NULL, n, K, p.cptr0, p.cidx0,
                 <xfloat*>p.cval0)
        _spmm(NULL, 0, n, inp.idx, <const xfloat*>inp.val, inp.ptr, W0, H, H,
              <const floating*>p.b[0], a, H)
        return
    with parallel(num_threads=nt):
        if columns and threadid() == 0:
            _csc(inp.idx, <const xfloat*>inp.val, inp.ptr, NULL, n, K, p.cptr0, p.cidx0,
                 <xfloat*>p.cval0)
        for c in prange(PIECES, schedule="dynamic"):
            _spmm(NULL, c * n // PIECES, (c + 1) * n // PIECES, inp.idx,
                  <const xfloat*>inp.val, inp.ptr, W0, H, H, <const floating*>p.b[0], a, H)


cdef void _step_forward(StepPlan* p, Py_ssize_t n, const floating* W0,
                        const xfloat* x0, bint columns) noexcept nogil:
    """act[l] for every layer, from the first layer's lists in p.inp[0] (with
    ``columns``, the first layer's column lists too: see _first_product)."""
    cdef int l, L = p.n_layers
    cdef Py_ssize_t K, H
    cdef floating* a
    cdef Lists* inp
    for l in range(L):
        K, H = p.sizes[l], p.sizes[l + 1]
        a = <floating*>p.act[l]
        inp = &p.inp[l]
        if l == 0:
            _first_product(p, n, W0, x0, columns)
        else:
            inp.ptr[0] = 0
            _nz(<const floating*>p.act[l - 1], K, 0, n, K, inp.idx, <floating*>inp.val,
                inp.ptr)
            _spmm(NULL, 0, n, inp.idx, <const floating*>inp.val, inp.ptr,
                  <const floating*>p.W[l], H, H, <const floating*>p.b[l], a, H)
        if l < L - 1:
            if p.sigmoid:
                _sigmoid_forward(a, a, n * H)
            else:
                _relu_forward(a, a, n * H)


cdef inline void _column_sums(const floating* a, Py_ssize_t n, Py_ssize_t H,
                              floating* out) noexcept nogil:
    """out = a.sum(axis=0) for a (n, H), the sum in row order (the bias gradient)."""
    cdef Py_ssize_t i, j
    for j in range(H):
        out[j] = 0
    for i in range(n):
        for j in range(H):
            out[j] += a[i * H + j]


cdef void _step_backward(StepPlan* p, Py_ssize_t n, floating lr, bint update, floating* W0,
                         const xfloat* x) noexcept nogil:
    """Backward from p.dz (the scores' gradient), layer by layer.

    update: W -= lr * dW and b -= lr * db in place; else dW and db are written to
    p.gW and p.gb and the parameters are left alone.
    """
    cdef int l, L = p.n_layers
    cdef Py_ssize_t K, H, i, j, t, nt, k0, k1, pieces
    cdef floating* dz = <floating*>p.dz
    cdef floating* dx = <floating*>p.dx
    cdef floating* tmp
    cdef floating* W
    cdef floating* b
    cdef floating* WT = <floating*>p.WT
    cdef floating* db = <floating*>p.row_loss  # scratch, at least max(n, widths) long
    cdef floating* a
    cdef Lists* inp
    for l in range(L - 1, 0, -1):
        K, H = p.sizes[l], p.sizes[l + 1]
        W, b = <floating*>p.W[l], <floating*>p.b[l]
        a = <floating*>p.act[l - 1]
        inp = &p.inp[l]
        # dx = dz @ W.T, with W before its update: the rows of W.T are W's columns
        for i in range(K):
            for j in range(H):
                WT[j * K + i] = W[i * H + j]
        p.dz_lists.ptr[0] = 0
        _nz(<const floating*>dz, H, 0, n, H, p.dz_lists.idx, <floating*>p.dz_lists.val,
            p.dz_lists.ptr)
        _spmm(NULL, 0, n, p.dz_lists.idx, <const floating*>p.dz_lists.val, p.dz_lists.ptr,
              <const floating*>WT, K, K, <const floating*>NULL, dx, K)
        if p.sigmoid:
            _sigmoid_backward(dx, a, dx, n * K)
        else:
            _relu_backward(dx, a, dx, n * K)
        # dW = a.T @ dz over the columns of a's lists (fused with W -= lr * dW)
        _csc(inp.idx, <const floating*>inp.val, inp.ptr, NULL, n, K, p.cptr, p.cidx,
             <floating*>p.cval)
        if update:
            _spmmt(p.cptr, p.cidx, <const floating*>p.cval, 0, K, <const floating*>dz, H, H,
                   W, H, -lr, 1)
            _column_sums(dz, n, H, db)
            for j in range(H):
                b[j] -= lr * db[j]
        else:
            _spmmt(p.cptr, p.cidx, <const floating*>p.cval, 0, K, <const floating*>dz, H, H,
                   <floating*>p.gW[l], H, 1, 0)
            _column_sums(dz, n, H, <floating*>p.gb[l])
        tmp = dz
        dz = dx
        dx = tmp

    K, H = p.sizes[0], p.sizes[1]
    b = <floating*>p.b[0]
    # the big product, over the column lists built in the forward pass (p.cptr0...):
    # W's rows shared out between the threads in pieces (the image's middle columns
    # have the most nonzeros), each row of W whole by one thread
    nt = _step_threads(p, n)
    pieces = PIECES if nt > 1 else 1
    for t in prange(pieces, num_threads=nt, schedule="dynamic"):
        k0 = t * K // pieces
        k1 = (t + 1) * K // pieces
        if update:
            _spmmt(p.cptr0, p.cidx0, <const xfloat*>p.cval0, k0, k1, <const floating*>dz,
                   H, H, W0, H, -lr, 1)
        else:
            _spmmt(p.cptr0, p.cidx0, <const xfloat*>p.cval0, k0, k1, <const floating*>dz,
                   H, H, <floating*>p.gW[0], H, 1, 0)
    if update:
        _column_sums(dz, n, H, db)
        for j in range(H):
            b[j] -= lr * db[j]
    else:
        _column_sums(dz, n, H, <floating*>p.gb[0])


cdef double _forward_loss(StepPlan* p, const int64_t* labels, Py_ssize_t n, floating* W0,
                          const xfloat* x, bint columns) noexcept nogil:
    """Forward from the first layer's lists: p.y holds the softmax; returns the mean loss.
    ``columns``: build the first layer's column lists too (for a backward pass)."""
    cdef int L = p.n_layers
    cdef Py_ssize_t i
    cdef double loss = 0
    _step_forward(p, n, <const floating*>W0, x, columns)
    _softmax_cross_entropy_forward(<const floating*>p.act[L - 1], labels, n, p.sizes[L],
                                   <floating*>p.y, <floating*>p.row_loss)
    for i in range(n):
        loss += (<floating*>p.row_loss)[i]
    return loss / n


cdef double _loss_and_gradient(StepPlan* p, const int64_t* labels, Py_ssize_t n, floating* W0,
                               const xfloat* x) noexcept nogil:
    """The mean loss, and p.dz = its gradient with respect to the scores (the forward
    pass builds the first layer's column lists for the backward pass)."""
    cdef double loss = _forward_loss(p, labels, n, W0, x, True)
    _softmax_cross_entropy_backward(<const floating*>p.y, labels, n, p.sizes[p.n_layers], 1.0,
                                    <floating*>p.dz)
    return loss


cdef double _sgd_step(StepPlan* p, const int64_t* rows, const int64_t* labels, Py_ssize_t n,
                      double lr, floating* W0, const xfloat* x) noexcept nogil:
    """The seed's step on dataset rows: returns the batch loss after the update."""
    _batch_lists(p, rows, n, x)
    _loss_and_gradient(p, labels, n, W0, x)
    _step_backward(p, n, <floating>lr, True, W0, x)
    return _forward_loss(p, labels, n, W0, x, False)  # with the updated parameters


cdef double _gradient(StepPlan* p, const xfloat* xb, const int64_t* labels, Py_ssize_t n,
                      floating* W0, bint backward) noexcept nogil:
    """Loss and, with ``backward``, the gradients (into p.gW, p.gb) on the batch xb
    (n rows); no update."""
    cdef double loss
    p.inp[0].ptr[0] = 0
    _nz(xb, p.sizes[0], 0, n, p.sizes[0], p.inp[0].idx, <xfloat*>p.inp[0].val, p.inp[0].ptr)
    if not backward:
        return _forward_loss(p, labels, n, W0, xb, False)
    loss = _loss_and_gradient(p, labels, n, W0, xb)
    _step_backward(p, n, <floating>0, False, W0, xb)
    return loss


cdef Py_ssize_t _count_chunk(StepPlan* p, const xfloat* x, Py_ssize_t s, Py_ssize_t n,
                             const int32_t* li, const xfloat* lv, const int64_t* lp,
                             const int64_t* labels, floating* W0) noexcept nogil:
    """How many of the rows s..s+n of x (n <= p.n_max) score highest on their label;
    the first layer's lists are read in place from (li, lv, lp) or scanned from x.
    The highest score is np.argmax's: the first maximum, or the first NaN."""
    cdef Py_ssize_t i, j, best, correct = 0, K = p.sizes[0], C = p.sizes[p.n_layers]
    cdef Lists* inp = &p.inp[0]
    cdef Lists own = inp[0]  # the first layer's buffers, restored below
    cdef const floating* scores
    cdef floating v, top
    if li == NULL:
        inp.ptr[0] = 0
        _nz(x + s * K, K, 0, n, K, inp.idx, <xfloat*>inp.val, inp.ptr)
    else:  # rows s.. start at lp[s]
        inp.idx = <int32_t*>li
        inp.val = <void*>lv
        inp.ptr = <int64_t*>(lp + s)
    _step_forward(p, n, <const floating*>W0, x, False)
    inp[0] = own
    scores = <const floating*>p.act[p.n_layers - 1]
    for i in range(n):
        best = 0
        top = scores[i * C]
        if top == top:  # not NaN
            for j in range(1, C):
                v = scores[i * C + j]
                if v != v:
                    best = j
                    break
                if v > top:
                    top = v
                    best = j
        correct += best == labels[s + i]
    return correct


cdef Py_ssize_t _count_correct(StepPlan* plans, int nt, const xfloat* x, Py_ssize_t M,
                               const int32_t* li, const xfloat* lv, const int64_t* lp,
                               const int64_t* labels, floating* W0) noexcept nogil:
    """How many rows of x (M of them) score highest on their label: chunks of
    EVAL_ROWS rows shared out between nt threads, thread t computing whole chunks
    on plans[t] (its own buffers, one thread each). Every row's scores are
    the same whatever the thread count."""
    cdef Py_ssize_t c, chunks = (M + EVAL_ROWS - 1) // EVAL_ROWS, correct = 0
    for c in prange(chunks, num_threads=nt, schedule="dynamic"):
        correct += _count_chunk(&plans[threadid()], x, c * EVAL_ROWS,
                                min(<Py_ssize_t>EVAL_ROWS, M - c * EVAL_ROWS),
                                li, lv, lp, labels, W0)
    return correct


def _check_lists(what, lists, Py_ssize_t rows, Py_ssize_t K, dtype):
    """Refuse anything but nonzero lists of a (rows, K) array: the kernels index W
    and size their buffers by them, unchecked."""
    li, lv, lp = lists
    if (not all(isinstance(a, np.ndarray) and a.ndim == 1 and a.flags.c_contiguous
                for a in (li, lv, lp))
            or li.dtype != np.int32 or lv.dtype != dtype or lp.dtype != np.int64
            or lp.shape[0] != rows + 1 or li.shape != lv.shape or lp[0] != 0
            or lp[rows] != li.shape[0]):
        raise ValueError(f"{what}: lists must be nonzero_lists(x)")
    counts = np.diff(lp)
    if (len(counts) and (counts.min() < 0 or counts.max() > K)) or (
            len(li) and (li.min() < 0 or li.max() >= K)):
        raise ValueError(f"{what}: lists must be nonzero_lists(x)")


cdef inline void* _data(list keep, a):
    keep.append(a)
    return cnp.PyArray_DATA(a)


cdef void _make_lists(list keep, Lists* lists, Py_ssize_t n, Py_ssize_t K, dtype) except *:
    """Buffers for the nonzero lists of n rows of K columns (kept alive by ``keep``).
    The compaction in _nz may write up to K entries past a list: + K."""
    lists.idx = <int32_t*>_data(keep, np.empty(n * K + K, dtype=np.int32))
    lists.val = _data(keep, np.empty(n * K + K, dtype=dtype))
    lists.ptr = <int64_t*>_data(keep, np.zeros(n + 1, dtype=np.int64))


cdef class SGDStep:
    """Whole SGD steps of a stack of affine layers, each in one call (see above).

    ``W``, ``b``: the network's parameter arrays (C-contiguous, one dtype),
    updated in place by ``step``; ``x``: the dataset (M, W[0].shape[0]),
    C-contiguous float32 or float64 (float32 with a float32 network); ``lists``:
    ``nonzero_lists(x)``, or None to scan the batch's rows at each step;
    ``sigmoid``: the hidden activation (else ReLU); ``batch_size``: the largest
    batch ``step`` or ``gradient`` will be given; ``num_threads``: threads for
    the first layer's products and for ``count_correct``'s chunks (the results do
    not depend on it). Everything a step needs is
    allocated here. For ``gradient`` alone, ``x`` may have no rows: it gives the
    inputs' dtype.
    """

    cdef StepPlan plan
    cdef list keep  # every array the plan points into
    cdef readonly Py_ssize_t batch_size
    cdef readonly list activations  # (batch_size, width) buffers: the last batch's
    cdef readonly object probabilities  # hidden activations and softmax output
    cdef readonly tuple param_arrays  # the W and b arrays updated in place
    cdef readonly tuple sizes  # the layer widths the buffers were made for
    cdef readonly object x_dtype, dtype
    cdef object checked_lists  # the dataset's lists (their idx array), checked in __init__
    cdef readonly bint sigmoid
    cdef int net_double, x_double
    cdef StepPlan eval_plans[MAX_EVAL_THREADS]  # count_correct's, one a thread (made once)
    cdef int n_eval_plans

    def __init__(self, list W, list b, x, tuple lists, bint sigmoid, Py_ssize_t batch_size,
                 int num_threads=1):
        cdef int L = len(W), l
        cdef Py_ssize_t hmax, wt
        cdef StepPlan* p
        if not 1 <= L <= MAX_LAYERS_ or len(b) != L:
            raise ValueError(f"SGDStep: 1 to {MAX_LAYERS} layers with a bias each, got "
                             f"{len(W)} weights and {len(b)} biases")
        dtype = W[0].dtype
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"SGDStep: parameters must be float32 or float64, not {dtype}")
        sizes = [W[0].shape[0]] + [w.shape[1] if w.ndim == 2 else -1 for w in W]
        for l in range(L):
            w, bb = W[l], b[l]
            if (not isinstance(w, np.ndarray) or not isinstance(bb, np.ndarray)
                    or w.dtype != dtype or bb.dtype != dtype or w.ndim != 2
                    or w.shape[0] != sizes[l] or bb.shape != (sizes[l + 1],)
                    or not w.flags.c_contiguous or not w.flags.writeable
                    or not bb.flags.c_contiguous or not bb.flags.writeable):
                raise ValueError(f"SGDStep: layer {l + 1}'s W and b must be writeable "
                                 f"C-contiguous {dtype} arrays of chained shapes")
        if min(sizes) < 1 or batch_size < 1:
            raise ValueError(f"SGDStep: sizes {sizes} and batch size {batch_size} must be >= 1")
        if (not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != sizes[0]
                or x.dtype not in (np.float32, np.float64) or not x.flags.c_contiguous
                or (x.dtype == np.float64 and dtype == np.float32)):
            raise ValueError(f"SGDStep: x must be a C-contiguous float32 (or, with a float64 "
                             f"network, float64) array of {sizes[0]} columns")
        xdtype = x.dtype
        self.keep = []
        self.batch_size = batch_size
        self.net_double = dtype == np.float64
        self.x_double = xdtype == np.float64
        p = &self.plan
        p.n_layers = L
        p.n_max = batch_size
        p.n_threads = max(1, num_threads)
        p.sigmoid = sigmoid
        for l in range(L + 1):
            p.sizes[l] = sizes[l]
        n = batch_size
        hmax = max(sizes[1:])
        wt = max([sizes[l] * sizes[l + 1] for l in range(1, L)] or [1])
        self.activations = []
        self.param_arrays = tuple(W) + tuple(b)
        self.sizes = tuple(sizes)
        self.x_dtype, self.dtype, self.sigmoid = xdtype, dtype, sigmoid
        for l in range(L):
            p.W[l] = _data(self.keep, W[l])
            p.b[l] = _data(self.keep, b[l])
            self.activations.append(np.empty((n, sizes[l + 1]), dtype=dtype))
            p.act[l] = _data(self.keep, self.activations[l])
            _make_lists(self.keep, &p.inp[l], n, sizes[l], xdtype if l == 0 else dtype)
        _make_lists(self.keep, &p.dz_lists, n, hmax, dtype)
        p.dz = _data(self.keep, np.empty(n * hmax, dtype=dtype))
        p.dx = _data(self.keep, np.empty(n * hmax, dtype=dtype))
        p.WT = _data(self.keep, np.empty(wt, dtype=dtype))
        p.cptr0 = <int32_t*>_data(self.keep, np.empty(sizes[0] + 1, dtype=np.int32))
        p.cidx0 = <int32_t*>_data(self.keep, np.empty(n * sizes[0] + 1, dtype=np.int32))
        p.cval0 = _data(self.keep, np.empty(n * sizes[0] + 1, dtype=xdtype))
        p.cptr = <int32_t*>_data(self.keep, np.empty(hmax + 1, dtype=np.int32))
        p.cidx = <int32_t*>_data(self.keep, np.empty(n * hmax + 1, dtype=np.int32))
        p.cval = _data(self.keep, np.empty(n * hmax + 1, dtype=dtype))
        self.probabilities = np.empty((n, sizes[L]), dtype=dtype)
        p.y = _data(self.keep, self.probabilities)
        p.row_loss = _data(self.keep, np.empty(max(n, hmax), dtype=dtype))  # also db
        p.x = _data(self.keep, x)
        p.n_rows = x.shape[0]
        p.d_idx, p.d_val, p.d_ptr = NULL, NULL, NULL
        if lists is not None:
            _check_lists("SGDStep", lists, x.shape[0], sizes[0], xdtype)
            li, lv, lp = lists
            self.checked_lists = li
            if li.shape[0] == 0:  # no nonzeros at all: valid pointers to nothing
                li, lv = np.zeros(1, dtype=np.int32), np.zeros(1, dtype=xdtype)
            p.d_idx = <const int32_t*>_data(self.keep, li)
            p.d_val = _data(self.keep, lv)
            p.d_ptr = <const int64_t*>_data(self.keep, lp)

    def step(self, const int64_t[::1] rows, const int64_t[::1] labels, double lr) -> float:
        """One SGD step on the batch ``x[rows]`` with class indices ``labels``;
        returns the batch loss after the update."""
        cdef Py_ssize_t n = rows.shape[0], i, C = self.plan.sizes[self.plan.n_layers]
        cdef Py_ssize_t M = self.plan.n_rows
        cdef bint bad = False
        cdef double loss
        cdef StepPlan* p = &self.plan
        if not 1 <= n <= self.batch_size or labels.shape[0] != n:
            raise ValueError(f"SGDStep.step: {n} rows and {labels.shape[0]} labels "
                             f"(need the same number, 1 to {self.batch_size})")
        with nogil:
            for i in range(n):
                bad = bad or rows[i] < 0 or rows[i] >= M or labels[i] < 0 or labels[i] >= C
        if bad:
            raise ValueError(f"SGDStep.step: rows must be in [0, {M}) and labels in [0, {C})")
        with nogil:
            if not self.net_double:
                loss = _sgd_step(p, &rows[0], &labels[0], n, lr, <float*>p.W[0],
                                 <const float*>p.x)
            elif self.x_double:
                loss = _sgd_step(p, &rows[0], &labels[0], n, lr, <double*>p.W[0],
                                 <const double*>p.x)
            else:
                loss = _sgd_step(p, &rows[0], &labels[0], n, lr, <double*>p.W[0],
                                 <const float*>p.x)
        return loss

    def gradient(self, x, const int64_t[::1] labels, list gW=None, list gb=None) -> float:
        """Loss and gradients of the batch ``x`` (its rows in order) with class
        indices ``labels``: dW and db are written into the arrays ``gW`` and
        ``gb`` (shaped as W and b); the parameters are left alone. Returns the
        mean loss; ``activations`` and ``probabilities`` then hold the batch's
        forward pass (their first ``len(x)`` rows). ``gW = gb = None``: the loss
        and forward pass only."""
        cdef Py_ssize_t n, i, C = self.plan.sizes[self.plan.n_layers]
        cdef int l, L = self.plan.n_layers
        cdef bint bad = False
        cdef double loss
        cdef StepPlan* p = &self.plan
        if (not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != p.sizes[0]
                or x.dtype != self.x_dtype or not x.flags.c_contiguous):
            raise ValueError(f"SGDStep.gradient: x must be a C-contiguous {self.x_dtype} "
                             f"array of {p.sizes[0]} columns")
        n = x.shape[0]
        if not 1 <= n <= self.batch_size or labels.shape[0] != n:
            raise ValueError(f"SGDStep.gradient: {n} rows and {labels.shape[0]} labels "
                             f"(need the same number, 1 to {self.batch_size})")
        cdef bint backward = gW is not None or gb is not None
        if backward and (gW is None or gb is None or len(gW) != L or len(gb) != L):
            raise ValueError("SGDStep.gradient: one dW and one db array per layer")
        for l in range(L if backward else 0):
            for g, shape in ((gW[l], (p.sizes[l], p.sizes[l + 1])), (gb[l], (p.sizes[l + 1],))):
                if (not isinstance(g, np.ndarray) or g.dtype != self.dtype or g.shape != shape
                        or not g.flags.c_contiguous or not g.flags.writeable):
                    raise ValueError(f"SGDStep.gradient: gradients must be writeable "
                                     f"C-contiguous {self.dtype} arrays shaped as W and b")
            p.gW[l] = cnp.PyArray_DATA(gW[l])
            p.gb[l] = cnp.PyArray_DATA(gb[l])
        with nogil:
            for i in range(n):
                bad = bad or labels[i] < 0 or labels[i] >= C
        if bad:
            raise ValueError(f"SGDStep.gradient: labels must be in [0, {C})")
        cdef const void* xp = cnp.PyArray_DATA(x)
        with nogil:
            if not self.net_double:
                loss = _gradient(p, <const float*>xp, &labels[0], n, <float*>p.W[0], backward)
            elif self.x_double:
                loss = _gradient(p, <const double*>xp, &labels[0], n, <double*>p.W[0],
                                 backward)
            else:
                loss = _gradient(p, <const float*>xp, &labels[0], n, <double*>p.W[0],
                                 backward)
        return loss

    def count_correct(self, x, const int64_t[::1] labels, tuple lists=None) -> int:
        """How many rows of ``x`` (C-contiguous, the inputs' dtype) have their
        highest score (``np.argmax``'s) at ``labels``; ``lists``: ``nonzero_lists(x)``
        or None to scan the rows. The parameters are left alone."""
        cdef StepPlan* p = &self.plan
        cdef Py_ssize_t M, correct
        cdef const int32_t* li = NULL
        cdef const void* lv = NULL
        cdef const int64_t* lp = NULL
        if (not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != p.sizes[0]
                or x.dtype != self.x_dtype or not x.flags.c_contiguous):
            raise ValueError(f"SGDStep.count_correct: x must be a C-contiguous {self.x_dtype} "
                             f"array of {p.sizes[0]} columns")
        M = x.shape[0]
        if labels.shape[0] != M:
            raise ValueError(f"SGDStep.count_correct: {M} rows and {labels.shape[0]} labels")
        if M == 0:
            return 0
        if lists is not None:
            if lists[0] is not self.checked_lists:  # the dataset's were checked once
                _check_lists("SGDStep.count_correct", lists, M, p.sizes[0], self.x_dtype)
            li_a, lv_a, lp_a = lists
            if li_a.shape[0] == 0:
                li_a, lv_a = np.zeros(1, dtype=np.int32), np.zeros(1, dtype=self.x_dtype)
            li = <const int32_t*>cnp.PyArray_DATA(li_a)
            lv = cnp.PyArray_DATA(lv_a)
            lp = <const int64_t*>cnp.PyArray_DATA(lp_a)
        cdef const void* xp = cnp.PyArray_DATA(x)
        cdef int nt = self._eval_threads(M)
        with nogil:
            if not self.net_double:
                correct = _count_correct(self.eval_plans, nt, <const float*>xp, M, li,
                                         <const float*>lv, lp, &labels[0], <float*>p.W[0])
            elif self.x_double:
                correct = _count_correct(self.eval_plans, nt, <const double*>xp, M, li,
                                         <const double*>lv, lp, &labels[0], <double*>p.W[0])
            else:
                correct = _count_correct(self.eval_plans, nt, <const float*>xp, M, li,
                                         <const float*>lv, lp, &labels[0], <double*>p.W[0])
        return correct

    cdef int _eval_threads(self, Py_ssize_t M) except -1:
        """Threads for evaluating M rows; makes (once) the forward-only plans they
        run on: the network's parameters, buffers of their own for EVAL_ROWS rows."""
        cdef int t, l, L = self.plan.n_layers
        cdef Py_ssize_t n = EVAL_ROWS, K
        cdef StepPlan* q
        if self.n_eval_plans == 0:
            for t in range(min(self.plan.n_threads, MAX_EVAL_THREADS)):
                q = &self.eval_plans[t]
                q[0] = self.plan
                q.n_threads, q.n_max = 1, n
                for l in range(L):
                    K = self.plan.sizes[l]
                    q.act[l] = _data(self.keep, np.empty(n * self.plan.sizes[l + 1],
                                                         dtype=self.dtype))
                    _make_lists(self.keep, &q.inp[l], n, K, self.x_dtype if l == 0 else self.dtype)
                # what only a step uses stays out of reach: no buffer is shared
                q.dz = q.dx = q.WT = q.cval = q.cval0 = q.y = q.row_loss = NULL
                q.cptr = q.cidx = q.cptr0 = q.cidx0 = NULL
                q.dz_lists.idx, q.dz_lists.val, q.dz_lists.ptr = NULL, NULL, NULL
                self.n_eval_plans = t + 1
        return <int>max(1, min(self.n_eval_plans, (M + n - 1) // n))
