# cython: language_level=3
"""minidl's batch-normalisation kernels: the book's BatchNormalization, fused.

Design
------
The book's layer (``common/layers.py``) computes, for x of shape (N, D)::

    forward (training):  mu = mean(x, axis=0); xc = x - mu; var = mean(xc**2, axis=0)
                         std = sqrt(var + 10e-7); xn = xc / std; out = gamma * xn + beta
    forward (test):      out = gamma * (x - running_mean) / sqrt(running_var + 10e-7) + beta
    backward:            dbeta = sum(dout); dgamma = sum(xn * dout); dxn = gamma * dout
                         dxc = dxn / std; dstd = -sum(dxn * xc / (std * std))
                         dvar = 0.5 * dstd / std; dxc += (2 / N) * xc * dvar
                         dmu = sum(dxc); dx = dxc - dmu / N          (sums over axis 0)

in about a dozen NumPy passes, each allocating an (N, D) temporary. The kernels
here run the same formulas in two or three passes over the rows, with the
column sums accumulated row by row (a contiguous inner loop over D) in the
array's dtype, as NumPy's axis-0 reductions do; every other operation is the
book's, in its order, so results agree with the NumPy reference
(``minidl._norm_numpy``) to rounding (the tests hold them at rtol 1e-6 for
float32, 1e-12 for float64). The running statistics are updated by the caller
(D numbers, the book's two lines).

The loops are C (``_norm.h``, with restrict pointers so that the compiler
vectorises them, compiled for AVX2 and the baseline ISA, no contraction into
fused multiply-adds); the ``def`` wrappers here take ``floating`` memoryviews
and call the loop for their dtype without the GIL. Arguments marked ``# IN``
are read, ``# OUT`` are written and allocated by the caller. The wrappers check
that every buffer has the shape x gives (the module is compiled without bounds
checks, see ``setup.py``) and that no output overlaps another buffer (ValueError);
``minidl._norm_cython`` checks dtypes and layouts before calling.
"""

cdef extern from "_norm.h" nogil:
    int mdl_norm_init(int use)
    void mdl_bn_forward_train_f64(const double* x, const double* gamma, const double* beta,
                                  Py_ssize_t N, Py_ssize_t D, double* mu, double* var,
                                  double* std, double* xc, double* xn, double* out)
    void mdl_bn_forward_train_f32(const float* x, const float* gamma, const float* beta,
                                  Py_ssize_t N, Py_ssize_t D, float* mu, float* var,
                                  float* std, float* xc, float* xn, float* out)
    void mdl_bn_forward_test_f64(const double* x, const double* gamma, const double* beta,
                                 const double* running_mean, const double* running_var,
                                 Py_ssize_t N, Py_ssize_t D, double* scale, double* out)
    void mdl_bn_forward_test_f32(const float* x, const float* gamma, const float* beta,
                                 const float* running_mean, const float* running_var,
                                 Py_ssize_t N, Py_ssize_t D, float* scale, float* out)
    void mdl_bn_backward_f64(const double* dout, const double* gamma, const double* xc,
                             const double* xn, const double* std, Py_ssize_t N, Py_ssize_t D,
                             double* dgamma, double* dbeta, double* dvar, double* dmu,
                             double* dx)
    void mdl_bn_backward_f32(const float* dout, const float* gamma, const float* xc,
                             const float* xn, const float* std, Py_ssize_t N, Py_ssize_t D,
                             float* dgamma, float* dbeta, float* dvar, float* dmu, float* dx)

ctypedef fused floating:
    float
    double

SIMD = "avx2" if mdl_norm_init(1) else "baseline"


def use_simd(bint avx2=True) -> str:
    """Select the AVX2 loops (where the CPU has them) or the baseline ones (for the tests)."""
    global SIMD
    SIMD = "avx2" if mdl_norm_init(avx2) else "baseline"
    return SIMD


cdef int _overlap(const char** lo, const Py_ssize_t* size, int n_written, int n) noexcept:
    """The index of a written buffer (the first n_written) that overlaps another, or -1."""
    cdef int i, j
    for i in range(n_written):
        if size[i] == 0:
            continue
        for j in range(n):
            if j != i and size[j] and lo[i] < lo[j] + size[j] and lo[j] < lo[i] + size[i]:
                return i
    return -1


def _check_rows(name, Py_ssize_t got, Py_ssize_t expected):
    if got != expected:
        raise ValueError(f"_norm: {name} has {got} values, expected {expected}")


def forward_train(
    const floating[:, ::1] x,       # IN (N, D)
    const floating[::1] gamma,      # IN (D,)
    const floating[::1] beta,       # IN (D,)
    floating[::1] mu,               # OUT (D,)
    floating[::1] var,              # OUT (D,)
    floating[::1] std,              # OUT (D,)
    floating[:, ::1] xc,            # OUT (N, D)
    floating[:, ::1] xn,            # OUT (N, D)
    floating[:, ::1] out,           # OUT (N, D)
):
    """The book's training forward pass for x (N, D), N >= 1; see the module docstring.
    No output may overlap another buffer."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1]
    cdef const char* lo[9]
    cdef Py_ssize_t size[9]
    cdef Py_ssize_t isz = sizeof(floating)
    if N < 1:
        raise ValueError("_norm.forward_train: empty batch")
    for name, a in (("gamma", gamma), ("beta", beta), ("mu", mu), ("var", var), ("std", std)):
        _check_rows(name, a.shape[0], D)
    for name, a in (("xc", xc), ("xn", xn), ("out", out)):
        if a.shape[0] != N or a.shape[1] != D:
            raise ValueError(f"_norm.forward_train: {name} must be ({N}, {D})")
    if D == 0:
        return
    lo[0], lo[1], lo[2] = <const char*>&mu[0], <const char*>&var[0], <const char*>&std[0]
    lo[3], lo[4], lo[5] = <const char*>&xc[0, 0], <const char*>&xn[0, 0], <const char*>&out[0, 0]
    lo[6], lo[7], lo[8] = <const char*>&x[0, 0], <const char*>&gamma[0], <const char*>&beta[0]
    for i in range(9):
        size[i] = (D if i in (0, 1, 2, 7, 8) else N * D) * isz
    bad = _overlap(lo, size, 6, 9)
    if bad >= 0:
        raise ValueError(f"_norm.forward_train: {('mu', 'var', 'std', 'xc', 'xn', 'out')[bad]}"
                         " overlaps another array")
    with nogil:
        if floating is float:
            mdl_bn_forward_train_f32(&x[0, 0], &gamma[0], &beta[0], N, D, &mu[0], &var[0],
                                     &std[0], &xc[0, 0], &xn[0, 0], &out[0, 0])
        else:
            mdl_bn_forward_train_f64(&x[0, 0], &gamma[0], &beta[0], N, D, &mu[0], &var[0],
                                     &std[0], &xc[0, 0], &xn[0, 0], &out[0, 0])


def forward_test(
    const floating[:, ::1] x,               # IN (N, D)
    const floating[::1] gamma,              # IN (D,)
    const floating[::1] beta,               # IN (D,)
    const floating[::1] running_mean,       # IN (D,)
    const floating[::1] running_var,        # IN (D,)
    floating[::1] scale,                    # OUT (D,) scratch
    floating[:, ::1] out,                   # OUT (N, D)
):
    """The book's test-mode forward pass (the running statistics) for x (N, D).
    No output may overlap another buffer."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1]
    cdef const char* lo[7]
    cdef Py_ssize_t size[7]
    cdef Py_ssize_t isz = sizeof(floating)
    for name, a in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                    ("running_var", running_var), ("scale", scale)):
        _check_rows(name, a.shape[0], D)
    if out.shape[0] != N or out.shape[1] != D:
        raise ValueError(f"_norm.forward_test: out must be ({N}, {D})")
    if N == 0 or D == 0:
        return
    lo[0], lo[1], lo[2] = <const char*>&scale[0], <const char*>&out[0, 0], <const char*>&x[0, 0]
    lo[3], lo[4] = <const char*>&gamma[0], <const char*>&beta[0]
    lo[5], lo[6] = <const char*>&running_mean[0], <const char*>&running_var[0]
    for i in range(7):
        size[i] = (N * D if i in (1, 2) else D) * isz
    bad = _overlap(lo, size, 2, 7)
    if bad >= 0:
        raise ValueError(f"_norm.forward_test: {('scale', 'out')[bad]} overlaps another array")
    with nogil:
        if floating is float:
            mdl_bn_forward_test_f32(&x[0, 0], &gamma[0], &beta[0], &running_mean[0],
                                    &running_var[0], N, D, &scale[0], &out[0, 0])
        else:
            mdl_bn_forward_test_f64(&x[0, 0], &gamma[0], &beta[0], &running_mean[0],
                                    &running_var[0], N, D, &scale[0], &out[0, 0])


def backward(
    const floating[:, ::1] dout,    # IN (N, D)
    const floating[::1] gamma,      # IN (D,)
    const floating[:, ::1] xc,      # IN (N, D)
    const floating[:, ::1] xn,      # IN (N, D)
    const floating[::1] std,        # IN (D,)
    floating[::1] dgamma,           # OUT (D,)
    floating[::1] dbeta,            # OUT (D,)
    floating[::1] dvar,             # OUT (D,) scratch
    floating[::1] dmu,              # OUT (D,) scratch
    floating[:, ::1] dx,            # OUT (N, D)
):
    """The book's backward pass; see the module docstring. No output may overlap
    another buffer."""
    cdef Py_ssize_t N = dout.shape[0], D = dout.shape[1]
    cdef const char* lo[10]
    cdef Py_ssize_t size[10]
    cdef Py_ssize_t isz = sizeof(floating)
    if N < 1:
        raise ValueError("_norm.backward: empty batch")
    for name, a in (("gamma", gamma), ("std", std), ("dgamma", dgamma), ("dbeta", dbeta),
                    ("dvar", dvar), ("dmu", dmu)):
        _check_rows(name, a.shape[0], D)
    for name, a in (("xc", xc), ("xn", xn), ("dx", dx)):
        if a.shape[0] != N or a.shape[1] != D:
            raise ValueError(f"_norm.backward: {name} must be ({N}, {D})")
    if D == 0:
        return
    lo[0], lo[1], lo[2] = <const char*>&dgamma[0], <const char*>&dbeta[0], <const char*>&dvar[0]
    lo[3], lo[4], lo[5] = <const char*>&dmu[0], <const char*>&dx[0, 0], <const char*>&dout[0, 0]
    lo[6], lo[7], lo[8] = <const char*>&gamma[0], <const char*>&xc[0, 0], <const char*>&xn[0, 0]
    lo[9] = <const char*>&std[0]
    for i in range(10):
        size[i] = (N * D if i in (4, 5, 7, 8) else D) * isz
    bad = _overlap(lo, size, 5, 10)
    if bad >= 0:
        raise ValueError(f"_norm.backward: {('dgamma', 'dbeta', 'dvar', 'dmu', 'dx')[bad]} "
                         "overlaps another array")
    with nogil:
        if floating is float:
            mdl_bn_backward_f32(&dout[0, 0], &gamma[0], &xc[0, 0], &xn[0, 0], &std[0], N, D,
                                &dgamma[0], &dbeta[0], &dvar[0], &dmu[0], &dx[0, 0])
        else:
            mdl_bn_backward_f64(&dout[0, 0], &gamma[0], &xc[0, 0], &xn[0, 0], &std[0], N, D,
                                &dgamma[0], &dbeta[0], &dvar[0], &dmu[0], &dx[0, 0])
