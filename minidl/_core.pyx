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
cimport openmp
from openmp cimport omp_get_max_threads
from libc.math cimport exp, expf, log
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

def relu_forward(
    const floating[::1] x,      # IN
    floating[::1] out,          # OUT
):
    """out = x where x > 0, else 0 (NaN passes through, as in the book)."""
    cdef Py_ssize_t i, n = x.shape[0]
    cdef floating v
    with nogil:
        for i in range(n):
            v = x[i]
            out[i] = 0 if v <= 0 else v


def relu_backward(
    const floating[::1] dout,   # IN
    const floating[::1] out,    # IN, the forward output
    floating[::1] dx,           # OUT
):
    """dx = dout where the forward output was > 0, else 0 (gradient 0 at 0)."""
    cdef Py_ssize_t i, n = dout.shape[0]
    with nogil:
        for i in range(n):
            dx[i] = 0 if out[i] <= 0 else dout[i]


cdef inline floating _exp(floating v) noexcept nogil:
    if floating is float:
        return expf(v)  # single precision: twice as fast as exp, and what float32 asks for
    return exp(v)


cdef inline floating _sigmoid(floating v) noexcept nogil:
    # Two branches so that exp never overflows.
    cdef floating e
    if v >= 0:
        return 1 / (1 + _exp(-v))
    e = _exp(v)
    return e / (1 + e)


def sigmoid_forward(
    const floating[::1] x,      # IN
    floating[::1] out,          # OUT
):
    """out = 1 / (1 + exp(-x)), computed without overflow."""
    cdef Py_ssize_t i, n = x.shape[0]
    with nogil:
        for i in range(n):
            out[i] = _sigmoid(x[i])


def sigmoid_backward(
    const floating[::1] dout,   # IN
    const floating[::1] out,    # IN, the forward output y
    floating[::1] dx,           # OUT
):
    """dx = dout * (1 - y) * y, as the book's Sigmoid layer."""
    cdef Py_ssize_t i, n = dout.shape[0]
    with nogil:
        for i in range(n):
            dx[i] = dout[i] * (1 - out[i]) * out[i]


# --------------------------------------------------------------------------
# Softmax with cross-entropy
# --------------------------------------------------------------------------

def softmax_cross_entropy_forward(
    const floating[:, ::1] x,       # IN (N, C) scores
    const int64_t[::1] labels,      # IN (N,) class indices in [0, C)
    floating[:, ::1] y,             # OUT (N, C) softmax probabilities
    floating[::1] row_loss,         # OUT (N,) -log(y[i, t_i] + 1e-7)
):
    """Numerically stable softmax and per-row cross-entropy in one pass."""
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], i, j
    cdef floating m, s
    with nogil:
        for i in range(n):
            m = x[i, 0]
            for j in range(1, c):
                if x[i, j] > m:
                    m = x[i, j]
            s = 0
            for j in range(c):
                y[i, j] = exp(x[i, j] - m)
                s += y[i, j]
            for j in range(c):
                y[i, j] = y[i, j] / s
            row_loss[i] = -log(y[i, labels[i]] + <floating>CE_EPS)


def softmax_cross_entropy_backward(
    const floating[:, ::1] y,       # IN (N, C) softmax probabilities
    const int64_t[::1] labels,      # IN (N,)
    double dout,                    # IN upstream gradient of the mean loss
    floating[:, ::1] dx,            # OUT (N, C)
):
    """dx = (y - onehot(t)) / N * dout, as the book's SoftmaxWithLoss."""
    cdef Py_ssize_t n = y.shape[0], c = y.shape[1], i, j
    cdef floating nf = <floating>n
    cdef floating scale = <floating>dout
    with nogil:
        for i in range(n):
            for j in range(c):
                dx[i, j] = y[i, j] / nf
            dx[i, labels[i]] = (y[i, labels[i]] - 1) / nf
            if dout != 1.0:
                for j in range(c):
                    dx[i, j] = dx[i, j] * scale


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

ctypedef fused xfloat:  # an input's dtype, which may be narrower than the weights'
    float
    double

SIMD_ISA = minidl_sparse_init(2).decode()
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


def nonzero_lists(const xfloat[:, ::1] x):
    """The nonzeros of every row of ``x``, as CSR lists.

    Returns ``(idx, val, ptr)``: int32 column indices, their values (x's dtype)
    and int64 row offsets (M + 1); row i's nonzeros are at ``ptr[i]:ptr[i + 1]``,
    columns increasing. Memory: 8 or 12 bytes per nonzero.
    """
    cdef Py_ssize_t n = x.shape[0], K = x.shape[1], i, i1, block = 1024
    dtype = np.float32 if xfloat is float else np.float64
    cdef int64_t[::1] ptr = np.zeros(n + 1, dtype=np.int64)
    if n == 0 or K == 0:
        return np.empty(0, dtype=np.int32), np.empty(0, dtype=dtype), np.asarray(ptr)
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
    cdef int32_t[::1] idx = np.empty(total + K, dtype=np.int32)
    cdef xfloat[::1] val = np.empty(total + K, dtype=dtype)
    with nogil:  # fill
        _nz(&x[0, 0], K, 0, n, K, &idx[0], &val[0], &ptr[0])
    return np.asarray(idx)[:total], np.asarray(val)[:total], np.asarray(ptr)


cdef enum:
    ROW_BLOCK = 64   # rows per call of the spmm kernel
    SCAN_BLOCK = 32  # rows scanned for nonzeros at a time when no lists are given


cdef inline Py_ssize_t _threads_for(Py_ssize_t work, int num_threads) noexcept nogil:
    # A training batch (~1e6 multiply-adds) runs on one thread: on a small shared
    # machine, waking a second one (while BLAS's own threads spin) costs more than
    # it saves. Evaluation-sized work (2e6 per thread and more) is split.
    if num_threads <= 1 or work < 4000000:
        return 1
    return min(<Py_ssize_t>num_threads, max(<Py_ssize_t>1, work // 2000000))


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


def column_sums(
    const floating[:, ::1] a,     # IN (N, H)
    floating[::1] out,            # OUT (H,) = a.sum(axis=0)
):
    """Column sums, accumulated in row order (the bias gradient)."""
    cdef Py_ssize_t n = a.shape[0], h = a.shape[1], i, j
    with nogil:
        for j in range(h):
            out[j] = 0
        for i in range(n):
            for j in range(h):
                out[j] += a[i, j]
