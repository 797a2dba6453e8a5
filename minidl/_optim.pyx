# cython: language_level=3
"""minidl's optimizer kernels: the book's update rules in one pass over each parameter.

Design
------
The book's ``common/optimizer.py`` updates a parameter with two to seven NumPy
statements, each a pass over the array with a temporary. The kernels here run
the same statements element by element in one pass: for every element, the
book's statements in the book's order, every operation rounded in the dtype
NumPy computes it in. Elementwise IEEE arithmetic is the same wherever it runs
(NumPy's SIMD loops for +, -, *, / and sqrt round exactly, and this module is
built without fast-math or FMA contraction), so each kernel gives the book's
numbers bit for bit; the tests check that with ``assert_array_equal``.

The dtypes, as NumPy 2 computes the book's lines:

* float64 arrays: everything in double.
* float32 arrays with Python-number hyperparameters: those numbers are "weak"
  and become float32, so everything is float32, except Adam's last statement:
  its ``lr_t`` is a NumPy float64, which makes ``lr_t * m / (sqrt(v) + 1e-7)``
  a float64 array (``sqrt(v) + 1e-7`` itself is float32), and
  ``param -= ...`` subtracts in double and rounds the result to float32.

Scalars derived from the hyperparameters (``1 - beta1``, ``momentum * momentum``,
``(1 + momentum) * lr``) are computed by the caller in Python doubles, as the
book's expressions are, and rounded to the array's dtype here.

The loops are C (``_optim.h``, compiled for AVX2 and the baseline ISA, with
contraction into fused multiply-adds turned off); the ``def`` wrappers here
take ``floating`` memoryviews, check that all arrays have the parameter's
length and call the loop for their dtype without the GIL. Arguments marked
``# IN/OUT`` are updated in place. ``minidl._optim_cython`` checks dtypes,
layouts and overlaps before calling (any other case runs the book's NumPy
lines), so the loops may assume arrays that do not overlap.
"""

ctypedef fused floating:
    float
    double

cdef extern from "_optim.h" nogil:
    int mdl_optim_init(int use)
    void mdl_sgd_f64(double* p, const double* g, double lr, Py_ssize_t n)
    void mdl_sgd_f32(float* p, const float* g, float lr, Py_ssize_t n)
    void mdl_momentum_f64(double* p, const double* g, double* v, double lr, double m,
                          Py_ssize_t n)
    void mdl_momentum_f32(float* p, const float* g, float* v, float lr, float m, Py_ssize_t n)
    void mdl_nesterov_f64(double* p, const double* g, double* v, double lr, double m,
                          double mm, double a, Py_ssize_t n)
    void mdl_nesterov_f32(float* p, const float* g, float* v, float lr, float m, float mm,
                          float a, Py_ssize_t n)
    void mdl_adagrad_f64(double* p, const double* g, double* h, double lr, Py_ssize_t n)
    void mdl_adagrad_f32(float* p, const float* g, float* h, float lr, Py_ssize_t n)
    void mdl_rmsprop_f64(double* p, const double* g, double* h, double lr, double d, double c,
                         Py_ssize_t n)
    void mdl_rmsprop_f32(float* p, const float* g, float* h, float lr, float d, float c,
                         Py_ssize_t n)
    void mdl_adam_f64(double* p, const double* g, double* m, double* v, double lr_t, double b1,
                      double b2, Py_ssize_t n)
    void mdl_adam_f32(float* p, const float* g, float* m, float* v, double lr_t, float b1,
                      float b2, Py_ssize_t n)

SIMD = "avx2" if mdl_optim_init(1) else "baseline"


def use_simd(bint avx2=True) -> str:
    """Select the AVX2 loops (where the CPU has them) or the baseline ones (for the tests)."""
    global SIMD
    SIMD = "avx2" if mdl_optim_init(avx2) else "baseline"
    return SIMD


def _check(Py_ssize_t n, *arrays):
    for a in arrays:
        if a.shape[0] != n:
            raise ValueError(f"_optim: arrays of {a.shape[0]} and {n} elements")


def sgd(
    floating[::1] param,            # IN/OUT the parameter
    const floating[::1] grad,       # IN
    double lr,
):
    """param -= lr * grad"""
    cdef Py_ssize_t n = param.shape[0]
    _check(n, grad)
    if n == 0:
        return
    with nogil:
        if floating is float:
            mdl_sgd_f32(&param[0], &grad[0], <float>lr, n)
        else:
            mdl_sgd_f64(&param[0], &grad[0], lr, n)


def momentum(
    floating[::1] param,            # IN/OUT
    const floating[::1] grad,       # IN
    floating[::1] v,                # IN/OUT the velocity
    double lr, double momentum_,
):
    """v = momentum * v - lr * grad; param += v"""
    cdef Py_ssize_t n = param.shape[0]
    _check(n, grad, v)
    if n == 0:
        return
    with nogil:
        if floating is float:
            mdl_momentum_f32(&param[0], &grad[0], &v[0], <float>lr, <float>momentum_, n)
        else:
            mdl_momentum_f64(&param[0], &grad[0], &v[0], lr, momentum_, n)


def nesterov(
    floating[::1] param,            # IN/OUT
    const floating[::1] grad,       # IN
    floating[::1] v,                # IN/OUT
    double lr, double momentum_,
    double momentum_sq,             # momentum * momentum (a Python double, as the book's)
    double one_plus_momentum_lr,    # (1 + momentum) * lr (likewise)
):
    """param += momentum * momentum * v; param -= (1 + momentum) * lr * grad;
    v *= momentum; v -= lr * grad"""
    cdef Py_ssize_t n = param.shape[0]
    _check(n, grad, v)
    if n == 0:
        return
    with nogil:
        if floating is float:
            mdl_nesterov_f32(&param[0], &grad[0], &v[0], <float>lr, <float>momentum_,
                             <float>momentum_sq, <float>one_plus_momentum_lr, n)
        else:
            mdl_nesterov_f64(&param[0], &grad[0], &v[0], lr, momentum_, momentum_sq,
                             one_plus_momentum_lr, n)


def adagrad(
    floating[::1] param,            # IN/OUT
    const floating[::1] grad,       # IN
    floating[::1] h,                # IN/OUT the sum of squared gradients
    double lr,
):
    """h += grad * grad; param -= lr * grad / (sqrt(h) + 1e-7)"""
    cdef Py_ssize_t n = param.shape[0]
    _check(n, grad, h)
    if n == 0:
        return
    with nogil:
        if floating is float:
            mdl_adagrad_f32(&param[0], &grad[0], &h[0], <float>lr, n)
        else:
            mdl_adagrad_f64(&param[0], &grad[0], &h[0], lr, n)


def rmsprop(
    floating[::1] param,            # IN/OUT
    const floating[::1] grad,       # IN
    floating[::1] h,                # IN/OUT the decayed sum of squared gradients
    double lr, double decay_rate,
    double one_minus_decay,         # 1 - decay_rate (a Python double, as the book's)
):
    """h *= decay_rate; h += (1 - decay_rate) * grad * grad;
    param -= lr * grad / (sqrt(h) + 1e-7)"""
    cdef Py_ssize_t n = param.shape[0]
    _check(n, grad, h)
    if n == 0:
        return
    with nogil:
        if floating is float:
            mdl_rmsprop_f32(&param[0], &grad[0], &h[0], <float>lr, <float>decay_rate,
                            <float>one_minus_decay, n)
        else:
            mdl_rmsprop_f64(&param[0], &grad[0], &h[0], lr, decay_rate, one_minus_decay, n)


def adam(
    floating[::1] param,            # IN/OUT
    const floating[::1] grad,       # IN
    floating[::1] m,                # IN/OUT the first moment
    floating[::1] v,                # IN/OUT the second moment
    double lr_t,                    # this update's bias-corrected step size
    double one_minus_beta1,         # 1 - beta1
    double one_minus_beta2,         # 1 - beta2
):
    """m += (1 - beta1) * (grad - m); v += (1 - beta2) * (grad**2 - v);
    param -= lr_t * m / (sqrt(v) + 1e-7)"""
    cdef Py_ssize_t n = param.shape[0]
    _check(n, grad, m, v)
    if n == 0:
        return
    with nogil:
        if floating is float:
            mdl_adam_f32(&param[0], &grad[0], &m[0], &v[0], lr_t, <float>one_minus_beta1,
                         <float>one_minus_beta2, n)
        else:
            mdl_adam_f64(&param[0], &grad[0], &m[0], &v[0], lr_t, one_minus_beta1,
                         one_minus_beta2, n)


# --------------------------------------------------------------------------
# Every parameter of an update in one call
# --------------------------------------------------------------------------

cimport numpy as cnp

cnp.import_array()

cdef enum:
    RULE_SGD = 0
    RULE_MOMENTUM = 1
    RULE_NESTEROV = 2
    RULE_ADAGRAD = 3
    RULE_RMSPROP = 4
    RULE_ADAM = 5

RULES = {"SGD": RULE_SGD, "Momentum": RULE_MOMENTUM, "Nesterov": RULE_NESTEROV,
         "AdaGrad": RULE_ADAGRAD, "RMSprop": RULE_RMSPROP, "Adam": RULE_ADAM}
_STATES = (0, 1, 1, 1, 1, 2)  # state arrays per parameter, by rule


cdef bint _fits(object a, cnp.ndarray like, bint write):
    """``a`` is an ndarray of ``like``'s dtype (native, aligned) and shape, C-contiguous
    (and writeable when ``write``)."""
    if type(a) is not cnp.ndarray:
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if (cnp.PyArray_TYPE(arr) != cnp.PyArray_TYPE(like) or not cnp.PyArray_ISNOTSWAPPED(arr)
            or not cnp.PyArray_ISCARRAY_RO(arr) or not cnp.PyArray_SAMESHAPE(arr, like)):
        return False
    return not write or cnp.PyArray_ISWRITEABLE(arr)


cdef bint _apart(char** lo, Py_ssize_t* size, Py_ssize_t n) noexcept:
    """No two of the ``n`` byte ranges ``[lo[i], lo[i] + size[i])`` overlap."""
    cdef Py_ssize_t i, j
    for i in range(n):
        for j in range(i + 1, n):
            if lo[i] < lo[j] + size[j] and lo[j] < lo[i] + size[i]:
                return False
    return True


def update_all(
    int rule,                       # RULES[...]
    list params,                    # IN/OUT the parameters, in the update's order
    list grads,                     # IN their gradients
    list first,                     # IN/OUT the rule's first state per parameter (v, h, m), or None
    list second,                    # IN/OUT Adam's v, or None
    double a, double b=0, double c=0, double d=0,   # the rule's scalars, as its def above
) -> bool:
    """One rule's update of every parameter, or False with nothing changed when any
    parameter is not a case the loops take: every array of one float dtype (the
    first parameter's, float32 or float64), native, aligned and C-contiguous, each
    parameter's gradient and state of its shape, and no two of one parameter's
    arrays overlapping (``minidl._optim_cython`` checks the scalars' dtypes).
    The parameters are updated one after another, in order, as the book's loop
    does. Scalars by rule: SGD, AdaGrad (lr); Momentum (lr, momentum); Nesterov
    (lr, momentum, momentum**2, (1 + momentum) * lr); RMSprop (lr, decay_rate,
    1 - decay_rate); Adam (lr_t, 1 - beta1, 1 - beta2)."""
    if rule < RULE_SGD or rule > RULE_ADAM:
        raise ValueError(f"_optim.update_all: unknown rule {rule}")
    cdef Py_ssize_t i, k, n = len(params), states = _STATES[rule]
    if (len(grads) != n or (states >= 1 and (first is None or len(first) != n))
            or (states == 2 and (second is None or len(second) != n))):
        raise ValueError("_optim.update_all: params, grads and states of different lengths")
    if n == 0:
        return True
    cdef cnp.ndarray p0, p
    cdef char* lo[4]
    cdef Py_ssize_t size[4]
    cdef list arrays
    if type(params[0]) is not cnp.ndarray:
        return False
    p0 = <cnp.ndarray>params[0]
    if cnp.PyArray_TYPE(p0) != cnp.NPY_FLOAT32 and cnp.PyArray_TYPE(p0) != cnp.NPY_FLOAT64:
        return False
    for i in range(n):  # every check before any update
        if type(params[i]) is not cnp.ndarray:
            return False
        p = <cnp.ndarray>params[i]
        if cnp.PyArray_TYPE(p) != cnp.PyArray_TYPE(p0) or not _fits(p, p, True):
            return False
        if not _fits(grads[i], p, False):
            return False
        if states >= 1 and not _fits(first[i], p, True):
            return False
        if states == 2 and not _fits(second[i], p, True):
            return False
        arrays = [p, grads[i]]
        if states >= 1:
            arrays.append(first[i])
        if states == 2:
            arrays.append(second[i])
        for k in range(2 + states):
            lo[k] = <char*>cnp.PyArray_DATA(<cnp.ndarray>arrays[k])
            size[k] = cnp.PyArray_NBYTES(<cnp.ndarray>arrays[k])
        if not _apart(lo, size, 2 + states):
            return False
    for i in range(n):
        p = <cnp.ndarray>params[i]
        k = cnp.PyArray_SIZE(p)
        if k == 0:
            continue
        if cnp.PyArray_TYPE(p0) == cnp.NPY_FLOAT32:
            _update_f32(rule, <float*>cnp.PyArray_DATA(p),
                        <const float*>cnp.PyArray_DATA(<cnp.ndarray>grads[i]),
                        <float*>cnp.PyArray_DATA(<cnp.ndarray>first[i]) if states >= 1 else NULL,
                        <float*>cnp.PyArray_DATA(<cnp.ndarray>second[i]) if states == 2 else NULL,
                        a, b, c, d, k)
        else:
            _update_f64(rule, <double*>cnp.PyArray_DATA(p),
                        <const double*>cnp.PyArray_DATA(<cnp.ndarray>grads[i]),
                        <double*>cnp.PyArray_DATA(<cnp.ndarray>first[i]) if states >= 1 else NULL,
                        <double*>cnp.PyArray_DATA(<cnp.ndarray>second[i]) if states == 2 else NULL,
                        a, b, c, d, k)
    return True


cdef void _update_f64(int rule, double* p, const double* g, double* s1, double* s2, double a,
                      double b, double c, double d, Py_ssize_t n) noexcept nogil:
    if rule == RULE_SGD:
        mdl_sgd_f64(p, g, a, n)
    elif rule == RULE_MOMENTUM:
        mdl_momentum_f64(p, g, s1, a, b, n)
    elif rule == RULE_NESTEROV:
        mdl_nesterov_f64(p, g, s1, a, b, c, d, n)
    elif rule == RULE_ADAGRAD:
        mdl_adagrad_f64(p, g, s1, a, n)
    elif rule == RULE_RMSPROP:
        mdl_rmsprop_f64(p, g, s1, a, b, c, n)
    else:
        mdl_adam_f64(p, g, s1, s2, a, b, c, n)


cdef void _update_f32(int rule, float* p, const float* g, float* s1, float* s2, double a,
                      double b, double c, double d, Py_ssize_t n) noexcept nogil:
    if rule == RULE_SGD:
        mdl_sgd_f32(p, g, <float>a, n)
    elif rule == RULE_MOMENTUM:
        mdl_momentum_f32(p, g, s1, <float>a, <float>b, n)
    elif rule == RULE_NESTEROV:
        mdl_nesterov_f32(p, g, s1, <float>a, <float>b, <float>c, <float>d, n)
    elif rule == RULE_ADAGRAD:
        mdl_adagrad_f32(p, g, s1, <float>a, n)
    elif rule == RULE_RMSPROP:
        mdl_rmsprop_f32(p, g, s1, <float>a, <float>b, <float>c, n)
    else:
        mdl_adam_f32(p, g, s1, s2, a, <float>b, <float>c, n)  # lr_t stays double (as in adam)
