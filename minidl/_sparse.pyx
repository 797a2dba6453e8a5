# cython: language_level=3
"""Zero-skipping affine products: ``x @ W + b`` and ``x.T @ dout`` over the
nonzero entries of ``x`` only.

Design
------
The affine products of the book's networks read inputs that are mostly exact
zeros (MNIST pixels, ReLU outputs). These wrappers run the C micro-kernels of
``_sparse.h`` (see its header comment; declared in ``_common.pxd``): a nonzero
list per input row, then the products over the nonzeros only, with the output
row in SIMD registers. Input rows may be picked by an index array, so a
training batch is read in place from the dataset, and the input may be float32
while the weights are float64 (NumPy's promotion: computed in float64).

A term skipped is an exact zero times a weight: the sums equal NumPy's up to
rounding as long as the weights are finite (0 * inf is NaN, a skipped term is
nothing). Callers check ``minidl._core.finite_norm`` on the weights first.

Arguments marked ``# IN`` are read, ``# OUT`` written; the kernels trust them
(bounds checks off): ``minidl.backend`` validates shapes, dtypes and indices.
"""

cimport cython
from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport int32_t, int64_t

import numpy as np

from minidl._common cimport (
    floating, xfloat, minidl_sparse_init, _count_nonzeros, _nz, _csc, _spmm, _spmmt,
)

SIMD_ISA = minidl_sparse_init(2).decode()
SIMD_LEVELS = {"scalar": 0, "baseline": 1, "best": 2}


def _select_simd(int level) -> str:
    """This module's copy of _sparse.h's dispatch; returns the kernels' name
    (``minidl.backend.use_simd`` sets every module's)."""
    global SIMD_ISA
    SIMD_ISA = minidl_sparse_init(level).decode()
    return SIMD_ISA


def nonzero_fraction(const xfloat[:, ::1] x, Py_ssize_t max_rows=8) -> float:
    """Fraction of nonzeros in up to ``max_rows`` rows spread over ``x`` (an estimate)."""
    cdef Py_ssize_t n = x.shape[0], K = x.shape[1], m, r, nnz = 0
    if n == 0 or K == 0:
        return 0.0
    m = min(n, max_rows)
    with nogil:
        for r in range(m):
            nnz += _count_nonzeros(&x[r * n // m, 0], K)
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
    if sizeof(xfloat) > sizeof(floating):  # (a run-time test: no unreachable code)
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
    if sizeof(xfloat) > sizeof(floating):  # (a run-time test: no unreachable code)
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
            if have_lists and rp != NULL:  # the chunk's rows, picked from the lists
                _csc(&li[0], &lv[0], &lp[0], rp + c0, c1 - c0, K, &cptr[0], &cidx[0],
                     &cval[0])
            elif have_lists:  # the chunk's rows are the lists' rows c0..c1
                _csc(&li[0], &lv[0], &lp[c0], NULL, c1 - c0, K, &cptr[0], &cidx[0], &cval[0])
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
