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

Every kernel is a ``noexcept nogil`` C function over the ``floating`` fused
type with a thin ``def`` wrapper; arguments marked ``# IN`` are read, ``# OUT``
are written and allocated by the caller. The wrappers check that every buffer
has the shape x gives (the module is compiled without bounds checks, see
``setup.py``); ``minidl._norm_cython`` checks dtypes and layouts before calling.
"""

from libc.math cimport sqrt

ctypedef fused floating:
    float
    double

# The book's epsilon inside the square root (its code writes 10e-7).
cdef double BN_EPS = 10e-7


cdef void _forward_train(
    const floating* x,          # IN (N, D)
    const floating* gamma,      # IN (D,)
    const floating* beta,       # IN (D,)
    Py_ssize_t N, Py_ssize_t D,
    floating* mu,               # OUT (D,) batch mean
    floating* var,              # OUT (D,) batch variance
    floating* std,              # OUT (D,) sqrt(var + 10e-7)
    floating* xc,               # OUT (N, D) x - mu
    floating* xn,               # OUT (N, D) xc / std
    floating* out,              # OUT (N, D) gamma * xn + beta
) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef floating d
    cdef floating eps = <floating>BN_EPS
    for j in range(D):
        mu[j] = 0
        var[j] = 0
    for i in range(N):
        for j in range(D):
            mu[j] += x[i * D + j]
    for j in range(D):
        mu[j] = mu[j] / N
    for i in range(N):
        for j in range(D):
            d = x[i * D + j] - mu[j]
            xc[i * D + j] = d
            var[j] += d * d
    for j in range(D):
        var[j] = var[j] / N
        std[j] = <floating>sqrt(var[j] + eps)
    for i in range(N):
        for j in range(D):
            d = xc[i * D + j] / std[j]
            xn[i * D + j] = d
            out[i * D + j] = gamma[j] * d + beta[j]


cdef void _forward_test(
    const floating* x,              # IN (N, D)
    const floating* gamma,          # IN (D,)
    const floating* beta,           # IN (D,)
    const floating* running_mean,   # IN (D,)
    const floating* running_var,    # IN (D,)
    Py_ssize_t N, Py_ssize_t D,
    floating* scale,                # OUT (D,) scratch: sqrt(running_var + 10e-7)
    floating* out,                  # OUT (N, D)
) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef floating eps = <floating>BN_EPS
    for j in range(D):
        scale[j] = <floating>sqrt(running_var[j] + eps)
    for i in range(N):
        for j in range(D):
            out[i * D + j] = gamma[j] * ((x[i * D + j] - running_mean[j]) / scale[j]) + beta[j]


cdef void _backward(
    const floating* dout,       # IN (N, D)
    const floating* gamma,      # IN (D,)
    const floating* xc,         # IN (N, D) from the training forward
    const floating* xn,         # IN (N, D)
    const floating* std,        # IN (D,)
    Py_ssize_t N, Py_ssize_t D,
    floating* dgamma,           # OUT (D,)
    floating* dbeta,            # OUT (D,)
    floating* dvar,             # OUT (D,) scratch: the variance's gradient
    floating* dmu,              # OUT (D,) scratch: the mean's gradient
    floating* dx,               # OUT (N, D)
) noexcept nogil:
    cdef Py_ssize_t i, j, k
    cdef floating g, dxn
    cdef floating two_over_n = <floating>(2.0 / N)
    for j in range(D):
        dgamma[j] = 0
        dbeta[j] = 0
        dvar[j] = 0  # first -dstd: sum(dxn * xc / (std * std))
        dmu[j] = 0
    for i in range(N):
        for j in range(D):
            k = i * D + j
            g = dout[k]
            dbeta[j] += g
            dgamma[j] += xn[k] * g
            dvar[j] += (gamma[j] * g) * xc[k] / (std[j] * std[j])
    for j in range(D):
        dvar[j] = <floating>0.5 * (-dvar[j]) / std[j]
    for i in range(N):
        for j in range(D):
            k = i * D + j
            dxn = gamma[j] * dout[k]
            g = dxn / std[j] + two_over_n * xc[k] * dvar[j]
            dx[k] = g
            dmu[j] += g
    for j in range(D):
        dmu[j] = dmu[j] / N
    for i in range(N):
        for j in range(D):
            dx[i * D + j] -= dmu[j]


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
    """The book's training forward pass for x (N, D), N >= 1; see the module docstring."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1]
    if N < 1:
        raise ValueError("_norm.forward_train: empty batch")
    for name, a in (("gamma", gamma), ("beta", beta), ("mu", mu), ("var", var), ("std", std)):
        _check_rows(name, a.shape[0], D)
    for name, a in (("xc", xc), ("xn", xn), ("out", out)):
        if a.shape[0] != N or a.shape[1] != D:
            raise ValueError(f"_norm.forward_train: {name} must be ({N}, {D})")
    with nogil:
        _forward_train(&x[0, 0], &gamma[0], &beta[0], N, D, &mu[0], &var[0], &std[0],
                       &xc[0, 0], &xn[0, 0], &out[0, 0])


def forward_test(
    const floating[:, ::1] x,               # IN (N, D)
    const floating[::1] gamma,              # IN (D,)
    const floating[::1] beta,               # IN (D,)
    const floating[::1] running_mean,       # IN (D,)
    const floating[::1] running_var,        # IN (D,)
    floating[::1] scale,                    # OUT (D,) scratch
    floating[:, ::1] out,                   # OUT (N, D)
):
    """The book's test-mode forward pass (the running statistics) for x (N, D)."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1]
    for name, a in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                    ("running_var", running_var), ("scale", scale)):
        _check_rows(name, a.shape[0], D)
    if out.shape[0] != N or out.shape[1] != D:
        raise ValueError(f"_norm.forward_test: out must be ({N}, {D})")
    if N == 0:
        return
    with nogil:
        _forward_test(&x[0, 0], &gamma[0], &beta[0], &running_mean[0], &running_var[0], N, D,
                      &scale[0], &out[0, 0])


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
    """The book's backward pass; see the module docstring."""
    cdef Py_ssize_t N = dout.shape[0], D = dout.shape[1]
    if N < 1:
        raise ValueError("_norm.backward: empty batch")
    for name, a in (("gamma", gamma), ("std", std), ("dgamma", dgamma), ("dbeta", dbeta),
                    ("dvar", dvar), ("dmu", dmu)):
        _check_rows(name, a.shape[0], D)
    for name, a in (("xc", xc), ("xn", xn), ("dx", dx)):
        if a.shape[0] != N or a.shape[1] != D:
            raise ValueError(f"_norm.backward: {name} must be ({N}, {D})")
    with nogil:
        _backward(&dout[0, 0], &gamma[0], &xc[0, 0], &xn[0, 0], &std[0], N, D, &dgamma[0],
                  &dbeta[0], &dvar[0], &dmu[0], &dx[0, 0])
