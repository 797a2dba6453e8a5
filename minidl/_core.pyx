# cython: language_level=3
"""minidl's core kernels: the design card's affine GEMM fallback, activations,
softmax with cross-entropy, finite differences, and the checks the other
kernels rely on (finite weights, labels in range).

Design
------
Every kernel is a small ``noexcept nogil`` C function over the ``floating``
fused type (float32 or float64), with a thin ``def`` wrapper so that Python
code and tests can call it. The wrappers take typed memoryviews: arguments
marked ``# IN`` are read, arguments marked ``# OUT`` are written and must be
allocated by the caller. The small kernels other modules share (activations,
softmax with cross-entropy) live in ``_common.pxd``.

The kernels trust their arguments: the module is compiled with bounds and
wraparound checks off (see ``setup.py``; ``MINIDL_DEBUG=1`` turns them back on).
``minidl.backend`` validates shapes, dtypes and label ranges before calling
anything here, so no kernel ever indexes out of bounds.

The pure-NumPy reference for every kernel lives in ``minidl.backend.numpy_ops``;
the tests hold each kernel against it.

The other subjects have modules of their own: ``_sparse`` (zero-skipping
products), ``_fused`` (whole training steps), ``_netgrad`` (network finite
differences).
"""

cimport cython
from cython.parallel cimport prange
from ._openmp cimport omp_get_max_threads  # OpenMP's, or 1 in a serial build
from libc.stdint cimport int64_t

import numpy as np
cimport numpy as cnp

from minidl._common cimport (
    floating, minidl_vmath_init, _relu_forward, _relu_backward, _sigmoid_forward,
    _sigmoid_backward, _finite_norm, _softmax_cross_entropy_forward,
    _softmax_cross_entropy_backward, _argmax_row,
)

cnp.import_array()

# Tile sizes of the blocked GEMM: a KC x NC panel of B (64 x 256 doubles =
# 128 KiB) stays in L2 while every row of A streams past it.
cdef enum:
    MC = 16
    KC = 64
    NC = 256
    PARALLEL_MIN_FLOPS = 1 << 20

minidl_vmath_init(2)


def _select_simd(int level):
    """This module's copy of _vmath.h's dispatch (``minidl.backend.use_simd`` sets
    every module's)."""
    minidl_vmath_init(level)

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
# Around the BLAS products of dense batches (minidl.engine.dense)
# --------------------------------------------------------------------------

ctypedef fused real_in:
    float
    double

ctypedef fused real_out:
    float
    double


def gather_rows(
    const real_in[:, ::1] x,        # IN (M, D)
    const int64_t[::1] rows,        # IN (N,) row indices in [0, M), checked by the caller
    real_out[:, ::1] out,           # OUT (N, D): x[rows] in out's dtype (NumPy's cast)
):
    """``out[:] = x[rows]``, converting as ``astype`` does (float32 images into a
    float64 network's batch without a float64 copy of the whole set)."""
    cdef Py_ssize_t i, j, d = x.shape[1]
    cdef const real_in* src
    cdef real_out* dst
    with nogil:
        for i in range(rows.shape[0]):
            src = &x[rows[i], 0] if d else NULL
            dst = &out[i, 0] if d else NULL
            for j in range(d):
                dst[j] = <real_out>src[j]


def bias_activate(
    floating[:, ::1] z,             # IN/OUT (N, M): x @ W, then act(x @ W + b)
    const floating[::1] b,          # IN (M,)
    int kind,                       # 0: none, 1: ReLU, 2: sigmoid
):
    """``z = act(z + b)`` in place: the Affine layer's bias and the activation after it."""
    cdef Py_ssize_t n = z.shape[0], m = z.shape[1], i, j
    cdef floating* row
    if n == 0 or m == 0:
        return
    with nogil:
        for i in range(n):
            row = &z[i, 0]
            for j in range(m):
                row[j] = row[j] + b[j]
            if kind == 1:
                _relu_forward(row, row, m)
            elif kind == 2:
                _sigmoid_forward(row, row, m)


def column_sums(
    const floating[:, ::1] d,       # IN (N, M), N >= 1
    floating[::1] out,              # OUT (M,): d.sum(axis=0)
):
    """``out[:] = d.sum(axis=0)`` (a bias gradient) as NumPy adds it for a C-contiguous
    ``d``: from 0, each row in turn (the same numbers, bit for bit, -0.0 sums
    included), without a reduction's set-up (5 us for a 100 x 50 batch; this: 2)."""
    cdef Py_ssize_t n = d.shape[0], m = d.shape[1], i, j
    cdef const floating* row
    cdef floating* o
    if n == 0 or out.shape[0] != m:
        raise ValueError(f"column_sums: {n} rows of {m} into {out.shape[0]} sums")
    if m == 0:
        return
    with nogil:
        o = &out[0]
        for j in range(m):
            o[j] = 0
        for i in range(n):
            row = &d[i, 0]
            for j in range(m):
                o[j] = o[j] + row[j]


def activation_backward(
    floating[:, ::1] d,             # IN/OUT (N, M): the gradient of the activation's output
    const floating[:, ::1] out,     # IN (N, M): the activation's forward output
    int kind,                       # 1: ReLU, 2: sigmoid
):
    """``d`` becomes the gradient of the activation's input, in place (ReLU: 0 where
    the output is <= 0; sigmoid: d * (1 - y) * y), as the book's layers compute it."""
    cdef Py_ssize_t n = d.shape[0] * d.shape[1]
    if n == 0:
        return
    with nogil:
        if kind == 1:
            _relu_backward(&d[0, 0], &out[0, 0], &d[0, 0], n)
        elif kind == 2:
            _sigmoid_backward(&d[0, 0], &out[0, 0], &d[0, 0], n)


def count_correct_scores(
    const floating[:, ::1] scores,  # IN (N, C)
    const int64_t[::1] labels,      # IN (N,)
) -> int:
    """How many rows have ``np.argmax(row) == label``: the first maximum, or the
    first NaN (NumPy's argmax takes NaN as the maximum)."""
    cdef Py_ssize_t i, n = scores.shape[0], c = scores.shape[1]
    cdef Py_ssize_t correct = 0
    if n == 0 or c == 0:
        return 0
    with nogil:
        for i in range(n):
            correct += _argmax_row(&scores[i, 0], c) == labels[i]
    return correct


# --------------------------------------------------------------------------
# Activations (elementwise, over flattened C-contiguous buffers)
# --------------------------------------------------------------------------

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
# Checks the zero-skipping kernels rely on
# --------------------------------------------------------------------------

def finite_norm(const floating[::1] x) -> bool:   # IN
    """Whether ``sum(x ** 2)`` (in x's dtype) is finite: no NaN, no infinity, no
    overflowing squares. The zero-skipping kernels skip the weight rows of zero
    inputs, where NumPy would compute 0 * inf = NaN, and the book's MultiLayerNet
    adds 0 * sum(W ** 2) to its loss: they stand in for NumPy only on weights
    that pass this."""
    cdef bint ok = True
    if x.shape[0]:
        with nogil:
            ok = _finite_norm(&x[0], x.shape[0])
    return ok


def one_hot_indices(
    const floating[:, ::1] t,   # IN (N, C) label rows
    int64_t[::1] out,           # OUT (N,) the column of each row's 1
) -> bool:
    """Whether every row of ``t`` is exactly one-hot (one 1, every other entry 0;
    NaN is neither); ``out`` then holds each row's class."""
    cdef Py_ssize_t i, j, hot, n = t.shape[0], c = t.shape[1]
    cdef bint ok = True
    cdef floating v
    with nogil:
        for i in range(n):
            hot = -1
            for j in range(c):
                v = t[i, j]
                if v == 1:
                    ok = ok and hot < 0
                    hot = j
                elif v != 0:
                    ok = False
            ok = ok and hot >= 0
            out[i] = hot
    return ok


def indices_in_range(const int64_t[::1] t, int64_t limit) -> bool:
    """Whether every entry of ``t`` is in [0, limit) (class labels, before a kernel
    indexes with them)."""
    cdef Py_ssize_t i
    cdef bint bad = False
    with nogil:
        for i in range(t.shape[0]):
            bad = bad or t[i] < 0 or t[i] >= limit
    return not bad
