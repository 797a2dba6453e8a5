# cython: language_level=3
"""What minidl's kernel modules share: fused types, the cross-entropy epsilon,
the C micro-kernels of ``_vmath.h`` and ``_sparse.h``, and the small inline
kernels that more than one module runs (activations, softmax with
cross-entropy, the dispatch of the zero-skipping kernels by dtype).

Each module that cimports this gets its own copy of the C headers' static
functions, and of their choice of instruction set: ``minidl.backend.use_simd``
sets it in every module at once.

Everything here trusts its arguments (bounds checks are off): the callers in
Python validate shapes, dtypes and indices first.
"""

from libc.math cimport log
from libc.stdint cimport int32_t, int64_t

ctypedef fused floating:  # the dtype a layer computes in
    float
    double

ctypedef fused xfloat:  # an input's dtype, which may be narrower than the weights'
    float
    double

cdef extern from *:
    """
    /* The book adds 1e-7 inside the log of cross_entropy_error; minidl keeps it
     * so that losses agree with the book's to rounding. */
    static const double MDL_CE_EPS = 1e-7;
    """
    const double MDL_CE_EPS


cdef extern from "_vmath.h" nogil:
    void minidl_vmath_init(int isa)
    void minidl_sigmoid_f64(const double* x, double* out, Py_ssize_t n)
    void minidl_sigmoid_f32(const float* x, float* out, Py_ssize_t n)
    void minidl_exp_shifted_f64(const double* x, double m, double* out, Py_ssize_t n)
    void minidl_exp_shifted_f32(const float* x, float m, float* out, Py_ssize_t n)
    int minidl_finite_norm_f64(const double* x, Py_ssize_t n)
    int minidl_finite_norm_f32(const float* x, Py_ssize_t n)


cdef extern from "_sparse.h" nogil:
    const char* minidl_sparse_init(int isa)
    Py_ssize_t minidl_count_f32(const float* x, Py_ssize_t n)
    Py_ssize_t minidl_count_f64(const double* x, Py_ssize_t n)
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


# -- activations (elementwise, over flat C-contiguous buffers) ------------------------

cdef inline void _relu_forward(const floating* x, floating* out, Py_ssize_t n) noexcept nogil:
    # NaN passes through, as in the book (its mask is x <= 0)
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = x[i]
        out[i] = 0 if v <= 0 else v


cdef inline void _relu_backward(const floating* dout, const floating* out, floating* dx,
                                Py_ssize_t n) noexcept nogil:
    # dout[i] read whatever the mask: a select the compiler vectorizes, not a branch
    # (a conditional read is a branch, mispredicted on every other element of a
    # ReLU layer's output: 8 ms instead of 1 for 1.7 million elements)
    cdef Py_ssize_t i
    cdef floating d
    for i in range(n):
        d = dout[i]
        dx[i] = 0 if out[i] <= 0 else d


cdef inline void _sigmoid_forward(const floating* x, floating* out, Py_ssize_t n) noexcept nogil:
    # two branches so that exp never overflows, with exp on vectors (see _vmath.h)
    if floating is float:
        minidl_sigmoid_f32(x, out, n)
    else:
        minidl_sigmoid_f64(x, out, n)


cdef inline void _sigmoid_backward(const floating* dout, const floating* out, floating* dx,
                                   Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        dx[i] = dout[i] * (1 - out[i]) * out[i]


cdef inline bint _finite_norm(const floating* x, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return minidl_finite_norm_f32(x, n)
    else:
        return minidl_finite_norm_f64(x, n)


# -- softmax with cross-entropy ------------------------------------------------------

cdef inline void _softmax_cross_entropy_forward(
    const floating* x,          # IN (n, c) scores
    const int64_t* labels,      # IN (n,) class indices in [0, c)
    Py_ssize_t n, Py_ssize_t c,
    floating* y,                # OUT (n, c) softmax probabilities
    floating* row_loss,         # OUT (n,) -log(y[i, t_i] + 1e-7)
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
        row_loss[i] = -log(yi[labels[i]] + <floating>MDL_CE_EPS)


cdef inline void _softmax_cross_entropy_backward(
    const floating* y,          # IN (n, c) softmax probabilities
    const int64_t* labels,      # IN (n,)
    Py_ssize_t n, Py_ssize_t c,
    double dout,                # IN upstream gradient of the mean loss
    floating* dx,               # OUT (n, c) = (y - onehot(t)) / n * dout
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


# -- the zero-skipping kernels of _sparse.h, by dtype ---------------------------------

cdef inline Py_ssize_t _count_nonzeros(const xfloat* x, Py_ssize_t n) noexcept nogil:
    # the nonzeros of x[0:n] (NaN counts)
    if xfloat is float:
        return minidl_count_f32(x, n)
    else:
        return minidl_count_f64(x, n)


cdef inline void _nz(const xfloat* x, Py_ssize_t ldx, Py_ssize_t i0, Py_ssize_t i1,
                     Py_ssize_t K, int32_t* idx, xfloat* val, int64_t* ptr) noexcept nogil:
    # nonzero lists of rows i0..i1 (ldx 0: x is the one row to list, as row i0)
    if xfloat is float:
        minidl_nz_f32(x, ldx, i0, i1, K, idx, val, ptr)
    else:
        minidl_nz_f64(x, ldx, i0, i1, K, idx, val, ptr)


cdef inline void _csc(const int32_t* idx, const xfloat* val, const int64_t* ptr,
                      const int64_t* rows, Py_ssize_t n, Py_ssize_t K, int32_t* cptr,
                      int32_t* cidx, xfloat* cval) noexcept nogil:
    # the column lists (CSC) of the rows' lists, for dW = x.T @ dout
    if xfloat is float:
        minidl_csc_f32(idx, val, ptr, rows, n, K, cptr, cidx, cval)
    else:
        minidl_csc_f64(idx, val, ptr, rows, n, K, cptr, cidx, cval)


cdef inline void _spmm(const int64_t* rows, Py_ssize_t i0, Py_ssize_t i1, const int32_t* idx,
                       const xfloat* val, const int64_t* ptr, const floating* W,
                       Py_ssize_t ldw, Py_ssize_t H, const floating* b, floating* out,
                       Py_ssize_t ldo) noexcept nogil:
    # out[i] = b + x[rows[i]] @ W over the lists, for i in i0..i1
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
    # dst[k] (+)= scale * (x.T @ dout)[k] over the column lists, for k in k0..k1
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


cdef inline Py_ssize_t _argmax_row(const floating* row, Py_ssize_t c) noexcept nogil:
    # np.argmax of one row: the first maximum, or the first NaN (NumPy takes NaN as
    # the maximum)
    cdef Py_ssize_t j, best = 0
    cdef floating v, top = row[0]
    if top != top:
        return 0
    for j in range(1, c):
        v = row[j]
        if v != v:
            return j
        if v > top:
            top = v
            best = j
    return best
