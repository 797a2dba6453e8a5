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

from cython.parallel cimport prange
from libc.stdlib cimport free, malloc, qsort

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
    int num_threads=1,
) -> bool:
    """One rule's update of every parameter, or False with nothing changed when any
    parameter is not a case the loops take: every array of one float dtype (the
    first parameter's, float32 or float64), native, aligned and C-contiguous, each
    parameter's gradient and state of its shape, and no two of one parameter's
    arrays overlapping (``minidl._optim_cython`` checks the scalars' dtypes).
    The parameters are updated one after another, in order, as the book's loop
    does. Scalars by rule: SGD, AdaGrad (lr); Momentum (lr, momentum); Nesterov
    (lr, momentum, momentum**2, (1 + momentum) * lr); RMSprop (lr, decay_rate,
    1 - decay_rate); Adam (lr_t, 1 - beta1, 1 - beta2).

    ``num_threads`` > 1: the elements are shared out between that many threads in
    pieces (of 16 elements or a multiple), when the update has THREADS_MIN elements
    or more and no two of its arrays share memory (then the order cannot matter);
    each element gets the same operations wherever it runs, so the numbers are the
    same on any count."""
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
    cdef bint f32 = cnp.PyArray_TYPE(p0) == cnp.NPY_FLOAT32
    cdef Py_ssize_t width = 4 if f32 else 8, total = 0, count = 0, piece, start, w
    for i in range(n):
        total += cnp.PyArray_SIZE(<cnp.ndarray>params[i])
    if num_threads < 1:
        num_threads = 1
    # pieces of one parameter each, PIECE_MIN elements or more (a multiple of 16),
    # about four a thread for the dynamic schedule
    piece = max(<Py_ssize_t>PIECE_MIN, (total // (4 * num_threads) + 15) // 16 * 16)
    for i in range(n):
        count += (cnp.PyArray_SIZE(<cnp.ndarray>params[i]) + piece - 1) // piece
    cdef _Piece* pieces = <_Piece*>malloc(max(count, <Py_ssize_t>1) * sizeof(_Piece))
    if pieces == NULL:
        raise MemoryError()
    count = 0
    for i in range(n):
        p = <cnp.ndarray>params[i]
        start = 0
        while start < cnp.PyArray_SIZE(p):
            pieces[count].n = min(piece, cnp.PyArray_SIZE(p) - start)
            pieces[count].p = <char*>cnp.PyArray_DATA(p) + start * width
            pieces[count].g = <char*>cnp.PyArray_DATA(<cnp.ndarray>grads[i]) + start * width
            pieces[count].s1 = (<char*>cnp.PyArray_DATA(<cnp.ndarray>first[i]) + start * width
                                if states >= 1 else NULL)
            pieces[count].s2 = (<char*>cnp.PyArray_DATA(<cnp.ndarray>second[i]) + start * width
                                if states == 2 else NULL)
            start += pieces[count].n
            count += 1
    if total < THREADS_MIN_ or (num_threads > 1 and not _parameters_apart(
            params, grads, first, second, states)):
        num_threads = 1  # (parameters that share memory: one after another, in order)
    try:
        with nogil:
            if num_threads == 1:  # in order, as the book's loop
                for w in range(count):
                    _update_piece(rule, f32, &pieces[w], a, b, c, d)
            else:
                for w in prange(count, num_threads=num_threads, schedule="dynamic"):
                    _update_piece(rule, f32, &pieces[w], a, b, c, d)
    finally:
        free(pieces)
    return True


cdef int _by_start(const void* x, const void* y) noexcept nogil:
    cdef char* a = (<char**>x)[0]
    cdef char* b = (<char**>y)[0]
    return -1 if a < b else (1 if a > b else 0)


cdef bint _parameters_apart(list params, list grads, list first, list second,
                            Py_ssize_t states) except -1:
    """No two arrays of the whole update share a byte (then the parameters may be
    updated in any order, in parallel)."""
    cdef Py_ssize_t n = len(params), m = 0, i, k
    cdef char** ranges = <char**>malloc(2 * n * (2 + states) * sizeof(char*))
    if ranges == NULL:
        raise MemoryError()
    cdef list arrays
    try:
        for i in range(n):
            arrays = [params[i], grads[i]]
            if states >= 1:
                arrays.append(first[i])
            if states == 2:
                arrays.append(second[i])
            for k in range(2 + states):
                ranges[2 * m] = <char*>cnp.PyArray_DATA(<cnp.ndarray>arrays[k])
                ranges[2 * m + 1] = ranges[2 * m] + cnp.PyArray_NBYTES(<cnp.ndarray>arrays[k])
                m += 1
        qsort(ranges, m, 2 * sizeof(char*), _by_start)
        for k in range(m - 1):
            if ranges[2 * k + 2] < ranges[2 * k + 1]:
                return False
        return True
    finally:
        free(ranges)


cdef struct _Piece:  # a run of one parameter's elements, with its gradient's and states'
    char* p
    char* g
    char* s1
    char* s2
    Py_ssize_t n


cdef enum:
    PIECE_MIN = 16384   # elements: smaller pieces cost more in scheduling than they share
    THREADS_MIN_ = 32768  # elements of a whole update worth a second thread
THREADS_MIN = THREADS_MIN_


cdef inline void _update_piece(int rule, bint f32, _Piece* q, double a, double b, double c,
                               double d) noexcept nogil:
    if f32:
        _update_f32(rule, <float*>q.p, <const float*>q.g, <float*>q.s1, <float*>q.s2,
                    a, b, c, d, q.n)
    else:
        _update_f64(rule, <double*>q.p, <const double*>q.g, <double*>q.s1, <double*>q.s2,
                    a, b, c, d, q.n)


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
