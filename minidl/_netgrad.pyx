# cython: language_level=3
"""Exact network-level finite differences: the kernel behind ``minidl.numgrad``.

Design
------
The book's ``network.numerical_gradient(x, t)`` sets one parameter ``p`` to
``p + h`` and to ``p - h`` (h = 1e-4, stored in the parameter's dtype), reruns
the whole forward pass for each, and takes ``(L+ - L-) / 2h``: two full forward
passes per parameter entry. Almost all of that work recomputes values the
perturbation cannot change.

Perturbing ``W_l[i, j]`` (or ``b_l[j]``) by ``d = fl(p + h) - p`` (the change
actually stored, not ``h``) changes only the pre-activation ``z_l[:, j]``, by
``a_l[r, i] * d``, and only in the rows ``r`` whose layer input ``a_l[r, i]`` is
non-zero (every row, with input 1, for ``b_l[j]``). So, with the forward pass
cached once,

    L+ - L-  =  (1/N) * sum over affected rows r of log(y-_r / y+_r)

where ``y±_r = softmax(scores±_r)[t_r] + 1e-7`` is re-evaluated for row ``r``
alone (the loss of a row is ``-log(y_r)``). Summing per-row differences avoids
the cancellation of subtracting two totals of about 2.3, as the book's loop
does; each is ``log1p(q)`` with ``q = (y- - y+) / y+`` (the subtraction is exact),
summed as its series when ``|q| <= 2^-10`` (remainder under ``|q| 2^-60``).
A row whose changed unit keeps its activation (a ReLU that stays at 0) has
exactly its cached ``y``, as in the book's full recomputation, and costs
nothing: per row, the ReLU units below ``-max|a_l[r, :]| * max|d|`` are not even
visited, since no perturbation of the layer can wake them.

How ``y±_r`` is re-evaluated, cheapest first (all in float64):

1. Perturbed layer = the scores (``l = L-1``): one score moves by ``dz``, so
   ``y' = E_t' / (S + E_j * expm1(dz))`` from the cached ``E_u = exp(s_u - m)``
   and ``S = sum E_u`` of the row.
2. Perturbed layer below the scores: the exact activation change ``da`` of unit
   ``j`` moves the row's scores along a fixed direction ``D`` (``W_{l+1}[j, :]``
   for the last hidden layer; through the ReLU masks of the layers between,
   ``W_{l+1}[j, :] diag(mask) W_{l+2} ...``, provided no ReLU input between
   changes sign, which a per-(row, unit) threshold ``tau`` on ``|da|`` ensures).
   Then ``y' = E_t / sum_u E_u exp(da (D_u - D_t))``, and with the moments
   ``M_k = sum_u E_u (D_u - D_t)^k / k!`` cached per (row, unit) this is the
   polynomial ``sum_k M_k da^k`` of degree K = 6. It is used only when
   ``|da (D_u - D_t)| <= 2^-7`` for every u, where the Taylor remainder of exp is
   below ``2^-49 / 7! < 3.6e-19`` relative, under half an ulp of float64: the
   same accuracy as calling exp. (With h = 1e-4 and pixels in [0, 1] that
   holds unless weights differ by about 80; otherwise case 3 runs.)
3. Otherwise, the general path: the changed unit, then every layer above for
   this row, updated incrementally (``z_{m+1}' = z_{m+1} + (a' - a) @ W_{m+1}``
   over the units whose activation changed), then softmax with a fresh max-shift.

Each ``y±`` is thus the book's quantity on the same operands up to the order of
floating-point operations (about 1e-16 relative), which the division by 2h
turns into about 1e-12 on the gradient. Nothing is linearised or truncated
beyond float64 rounding.

Layout and threads. A layer's inputs ``a_l`` are given column by column (CSC:
``colptr``/``rows``/``vals``, non-zeros only) with one extra column of ones for
the bias, so ``W_l`` and ``b_l`` are one loop: work item ``i`` is row ``i`` of
``W_l``, or ``b_l`` when ``i == n_in``. Items run in parallel (``prange``,
dynamic schedule: the number of non-zero pixels varies a lot). The case-2
tables of a layer, (N, n_out, K + 3), are filled in parallel over rows before
its items run, into one buffer reused by every layer. Each thread owns one
slice of a scratch array allocated once per call; nothing is allocated per
parameter. Each entry's sum is done by one thread in a fixed row order, so the
result does not depend on the number of threads.

Like ``minidl._core``, the kernel trusts its arguments (bounds checks are off):
``minidl.numgrad`` validates shapes, dtypes, labels and finiteness first.
"""

cimport cython
from . cimport _openmp as openmp  # OpenMP's functions, or serial stand-ins
from cython.parallel cimport prange, threadid
from libc.math cimport INFINITY, exp, expm1, fabs, log, log1p
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport free, malloc

import numpy as np

# The book adds 1e-7 inside the log of cross_entropy_error.
cdef double CE_EPS = 1e-7

cdef enum:
    K = 6           # degree of the polynomial for exp in case 2
    NT = K + 3      # table entries per (row, unit): K + 1 coefficients, tau, dmax
    T_TAU = K + 1
    T_DMAX = K + 2

# Case 2 runs when |da * (D_u - D_t)| <= RHO for all u (remainder < 3.6e-19 relative).
cdef double RHO = 0.0078125  # 2**-7
# Keep clear of the sign-change threshold by more than the rounding of tau itself.
cdef double TAU_MARGIN = 1 - 1e-9
# Case 1 runs for |dz| <= LAST_MAX (far from any overflow of E_j * exp(dz)).
cdef double LAST_MAX = 1.0
# log1p(q) is summed as its series (degree 6) for |q| <= Q_MAX.
cdef double Q_MAX = 0.0009765625  # 2**-10

ACT_RELU = 0
ACT_SIGMOID = 1
POLY_DEGREE = K
SHORTCUT_LAST = 1       # case 1
SHORTCUT_TABLES = 2     # case 2
SHORTCUT_LIVE = 4       # skip ReLU units no perturbation can wake
SHORTCUTS_ALL = 7


cdef struct Net:
    # The cached forward pass of one batch, layers numbered 0 .. L-1.
    int L                       # number of affine layers
    int act                     # ACT_RELU or ACT_SIGMOID
    Py_ssize_t N                # batch size
    Py_ssize_t* size            # size[0 .. L]: input width, hidden widths, classes
    Py_ssize_t width            # max(size)
    Py_ssize_t width_h          # max(size[1:])
    const double** W            # W[l]: (size[l], size[l+1]) row-major
    const double** b            # b[l]: (size[l+1],)
    const double** z            # z[l]: (N, size[l+1]) pre-activations of layer l
    const double** a            # a[l]: (N, size[l]) input of layer l; a[0] = x
    const Py_ssize_t** colptr   # colptr[l]: (size[l] + 2,) CSC of a[l] plus a bias column
    const Py_ssize_t** rows     # rows[l]: (nnz,) batch row of each non-zero
    const double** vals         # vals[l]: (nnz,) its value
    const uint8_t* W_f32        # W_f32[l]: W[l] is stored as float32 (perturbation rounding)
    const uint8_t* b_f32
    const int64_t* labels       # (N,) class indices
    double* E                   # (N, C) exp(s - max s) of the cached scores
    double* S                   # (N,) sum of E over the row
    double* y                   # (N,) cached softmax(s)[t] + 1e-7
    double* table               # (N, size[l+1], NT) case-2 tables of the current layer
    Py_ssize_t* live            # (N, size[l+1]) per row, the units that can change
    Py_ssize_t* n_live          # (N,) how many
    int has_table               # the current layer has tables (case 2 available)
    int last_shortcut           # case 1 allowed
    double h                    # the step, 1e-4
    double wd                   # weight decay lambda (0: none)


# --------------------------------------------------------------------------
# Row-level pieces
# --------------------------------------------------------------------------

cdef inline double _sigmoid(double v) noexcept nogil:
    # Two branches so that exp never overflows (as minidl._core).
    cdef double e
    if v >= 0:
        return 1 / (1 + exp(-v))
    e = exp(v)
    return e / (1 + e)


cdef inline double _act(double v, int act) noexcept nogil:
    if act == 0:
        return v if v > 0 else 0.0  # the book's Relu: x <= 0 -> 0
    return _sigmoid(v)


cdef inline double _softmax_y(
    const double* s,            # IN (c,) scores of one row
    Py_ssize_t c,
    int64_t label,
) noexcept nogil:
    """softmax(s)[label] + 1e-7, softmax shifted by the row maximum (the book's)."""
    cdef Py_ssize_t u
    cdef double m = s[0], tot = 0, e_label = 0, e
    for u in range(1, c):
        if s[u] > m:
            m = s[u]
    for u in range(c):
        e = exp(s[u] - m)
        tot += e
        if u == label:
            e_label = e
    return e_label / tot + CE_EPS


cdef inline double _log_ratio(double num, double den) noexcept nogil:
    """log(num / den) for positive num, den, accurate when they are close.

    ``num - den`` is exact when the two are within a factor 2 (Sterbenz), so
    ``q = (num - den) / den`` carries one rounding, and ``log1p(q)`` is summed
    as its series when ``|q| <= 2^-10`` (remainder below ``|q| * 2^-60 / 7``,
    far under an ulp) instead of calling the library.
    """
    cdef double q = (num - den) / den
    if fabs(q) > Q_MAX:
        return log1p(q)
    return q * (1 - q * (0.5 - q * (1.0 / 3 - q * (0.25 - q * (0.2 - q * (1.0 / 6))))))


cdef inline double _perturbed(double p, double step, int f32) noexcept nogil:
    """p + step as the book stores it: float64, or float32 arithmetic (NumPy 2)."""
    if f32:
        return <double>(<float>p + <float>step)
    return p + step


cdef double _y_general(
    const Net* net,
    Py_ssize_t r,               # IN batch row
    int l,                      # IN layer whose pre-activation changes (l < L-1)
    Py_ssize_t j,               # IN unit of that layer
    double da,                  # IN change of the activation a[l+1][r, j], non-zero
    double* cur,                # scratch (width)
    double* nxt,                # scratch (width)
    uint8_t* kink,              # OUT set to 1 if a ReLU input changes sign
) noexcept nogil:
    """Case 3: redo every layer above unit j of layer l for row r, then the softmax."""
    cdef int L = net.L, act = net.act, m = l + 1
    cdef Py_ssize_t n_in, n_out = net.size[m + 1], u, v
    cdef double d
    cdef const double* zr = net.z[m] + r * n_out
    cdef const double* ar
    cdef const double* wrow = net.W[m] + j * n_out
    cdef double* tmp
    # layer l+1: every unit moves by da * W[l+1][j, :]
    for v in range(n_out):
        cur[v] = zr[v] + da * wrow[v]
    # cur holds z'[m][r, :]; push the activation changes through the layers above
    while m < L - 1:
        n_in = net.size[m + 1]
        n_out = net.size[m + 2]
        zr = net.z[m + 1] + r * n_out
        for v in range(n_out):
            nxt[v] = zr[v]
        ar = net.a[m + 1] + r * n_in
        zr = net.z[m] + r * n_in
        for u in range(n_in):
            if act == 0 and (zr[u] > 0) != (cur[u] > 0):
                kink[0] = 1
            d = _act(cur[u], act) - ar[u]
            if d != 0:
                wrow = net.W[m + 1] + u * n_out
                for v in range(n_out):
                    nxt[v] += d * wrow[v]
        tmp = cur
        cur = nxt
        nxt = tmp
        m += 1
    return _softmax_y(cur, net.size[L], net.labels[r])


cdef inline double _y_after(
    const Net* net,
    Py_ssize_t r,               # IN batch row
    int l,                      # IN layer whose pre-activation changes
    Py_ssize_t j,               # IN unit of that layer
    double dz,                  # IN change of z[l][r, j]
    double* cur,                # scratch (width)
    double* nxt,                # scratch (width)
    uint8_t* kink,              # OUT set to 1 if a ReLU input changes sign
) noexcept nogil:
    """softmax(scores)[t_r] + 1e-7 of row r after z[l][r, j] += dz."""
    cdef int L = net.L
    cdef Py_ssize_t n, c, u
    cdef int64_t t = net.labels[r]
    cdef double z0, zn, da, em1, et, p
    cdef const double* zr
    cdef const double* tab
    if l == L - 1:  # the scores themselves
        c = net.size[L]
        if net.last_shortcut and fabs(dz) <= LAST_MAX:  # case 1
            em1 = expm1(dz)
            et = net.E[r * c + t]
            if j == t:
                et = et + et * em1
            return et / (net.S[r] + net.E[r * c + j] * em1) + CE_EPS
        zr = net.z[l] + r * c
        for u in range(c):
            cur[u] = zr[u]
        cur[j] += dz
        return _softmax_y(cur, c, t)

    # hidden unit j of layer l: its exact activation change
    n = net.size[l + 1]
    z0 = net.z[l][r * n + j]
    zn = z0 + dz
    da = _act(zn, net.act) - net.a[l + 1][r * n + j]
    if net.act == 0 and (z0 > 0) != (zn > 0):
        kink[0] = 1
    if da == 0:
        return net.y[r]  # nothing downstream changes
    if net.has_table:  # case 2
        tab = net.table + (r * n + j) * NT
        if fabs(da) < tab[T_TAU] and fabs(da) * tab[T_DMAX] <= RHO:
            p = tab[K]
            for u in range(K - 1, -1, -1):
                p = p * da + tab[u]
            return net.E[r * net.size[L] + t] / p + CE_EPS
    return _y_general(net, r, l, j, da, cur, nxt, kink)


cdef void _fill_tables(
    const Net* net,
    int l,                      # IN layer (l <= L-2)
    Py_ssize_t r,               # IN batch row
    double* v,                  # scratch (width_h)
    double* w,                  # scratch (width_h)
) noexcept nogil:
    """Case-2 tables of row r for every unit j of layer l: moments, tau, dmax."""
    cdef int L = net.L, m
    cdef Py_ssize_t n = net.size[l + 1], c = net.size[L], nm, nn, j, u, q, k
    cdef int64_t t = net.labels[r]
    cdef double tau, q_tau, dmax, dy, pw, vu, fact
    cdef const double* zr
    cdef const double* er = net.E + r * c
    cdef const double* wrow
    cdef double* tab
    cdef double* tmp
    cdef double* cur
    cdef double* nxt
    for j in range(n):
        tab = net.table + (r * n + j) * NT
        # the change of z[l+1][r, :] per unit of da: W[l+1][j, :]
        nm = net.size[l + 2]
        wrow = net.W[l + 1] + j * nm
        cur = v
        nxt = w
        for u in range(nm):
            cur[u] = wrow[u]
        tau = INFINITY
        m = l + 1
        while m < L - 1:  # through the ReLU masks of the hidden layers above
            nn = net.size[m + 2]
            zr = net.z[m] + r * nm
            for q in range(nn):
                nxt[q] = 0
            for u in range(nm):
                vu = cur[u]
                if vu == 0:
                    continue
                q_tau = fabs(zr[u]) / fabs(vu)  # |da| beyond this flips unit u
                if q_tau < tau:
                    tau = q_tau
                if zr[u] > 0:
                    wrow = net.W[m + 1] + u * nn
                    for q in range(nn):
                        nxt[q] += vu * wrow[q]
            tmp = cur
            cur = nxt
            nxt = tmp
            nm = nn
            m += 1
        # cur = D, the direction of the scores; moments about D_t
        dmax = 0
        for k in range(K + 1):
            tab[k] = 0
        for u in range(c):
            dy = cur[u] - cur[t]
            if fabs(dy) > dmax:
                dmax = fabs(dy)
            pw = er[u]
            for k in range(K + 1):
                tab[k] += pw
                pw *= dy
        fact = 1
        for k in range(2, K + 1):
            fact *= k
            tab[k] /= fact
        tab[T_TAU] = tau * TAU_MARGIN
        tab[T_DMAX] = dmax


cdef void _fill_live(
    const Net* net,
    int l,                      # IN layer
    Py_ssize_t r,               # IN batch row
    double step_max,            # IN max |fl(p +- h) - p| over W[l] and b[l]
) noexcept nogil:
    """List the units of layer l that some perturbation can change in row r.

    A ReLU unit with z <= -max|a[l][r, :]| * step_max (inputs including the
    bias's 1) stays <= 0 under every perturbation of the layer: its row
    keeps its cached loss, so it is skipped. Scores and sigmoid units all count.
    """
    cdef Py_ssize_t n_in = net.size[l], n = net.size[l + 1], i, j, cnt = 0
    cdef const double* ar = net.a[l] + r * n_in
    cdef const double* zr = net.z[l] + r * n
    cdef Py_ssize_t* live = net.live + r * n
    cdef double amax = 1, bound
    if l == net.L - 1 or net.act != 0 or step_max < 0:
        for j in range(n):
            live[j] = j
        net.n_live[r] = n
        return
    for i in range(n_in):
        if fabs(ar[i]) > amax:
            amax = fabs(ar[i])
    # (1 + 1e-9): the rounding of a * step itself
    bound = amax * step_max * (1 + 1e-9)
    for j in range(n):
        if zr[j] > -bound:
            live[cnt] = j
            cnt += 1
    net.n_live[r] = cnt


cdef double _max_step(const double* p, Py_ssize_t n, double h, int f32) noexcept nogil:
    """max |fl(p + h) - p|, |fl(p - h) - p| over n parameters."""
    cdef Py_ssize_t k
    cdef double m = 0, d
    for k in range(n):
        d = fabs(_perturbed(p[k], h, f32) - p[k])
        if d > m:
            m = d
        d = fabs(_perturbed(p[k], -h, f32) - p[k])
        if d > m:
            m = d
    return m


cdef void _work_item(
    const Net* net,
    int l,                      # IN layer
    Py_ssize_t i,               # IN row i of W[l], or b[l] when i == size[l]
    double* scratch,            # this thread's scratch, 4 * width
    double* g,                  # OUT (size[l+1],) gradient of that row
    uint8_t* kinks,             # OUT (size[l+1],) kink flags of that row, or NULL
) noexcept nogil:
    cdef Py_ssize_t n_in = net.size[l], n_out = net.size[l + 1], j, jj, k, r
    cdef const Py_ssize_t* live
    cdef bint is_bias = i == n_in
    cdef const double* p = net.b[l] if is_bias else net.W[l] + i * n_out
    cdef int f32 = net.b_f32[l] if is_bias else net.W_f32[l]
    cdef double h = net.h, v, yp, ym, pp, pm
    cdef uint8_t flag = 0
    cdef double* dplus = scratch
    cdef double* dminus = scratch + net.width
    cdef double* cur = scratch + 2 * net.width
    cdef double* nxt = scratch + 3 * net.width

    for j in range(n_out):
        dplus[j] = _perturbed(p[j], h, f32) - p[j]
        dminus[j] = _perturbed(p[j], -h, f32) - p[j]
        g[j] = 0
        if kinks != NULL:
            kinks[j] = 0
    # rows outer, units inner: the row's cached values stay in cache
    for k in range(net.colptr[l][i], net.colptr[l][i + 1]):
        r = net.rows[l][k]
        v = net.vals[l][k]
        live = net.live + r * n_out
        for jj in range(net.n_live[r]):
            j = live[jj]
            flag = 0
            yp = _y_after(net, r, l, j, v * dplus[j], cur, nxt, &flag)
            ym = _y_after(net, r, l, j, v * dminus[j], cur, nxt, &flag)
            if yp != ym:
                g[j] += _log_ratio(ym, yp)  # loss+ - loss- of this row
            if flag and kinks != NULL:
                kinks[j] = 1
    for j in range(n_out):
        g[j] = g[j] / net.N / (2 * h)
        if net.wd != 0 and not is_bias:
            # the book's loss adds 0.5 * lambda * sum(W ** 2) over every W
            pp = p[j] + dplus[j]
            pm = p[j] + dminus[j]
            g[j] += 0.5 * net.wd * (pp * pp - pm * pm) / (2 * h)


# --------------------------------------------------------------------------
# Python entry points
# --------------------------------------------------------------------------

def activate(
    const double[:, ::1] z,     # IN (N, M) pre-activations
    double[:, ::1] out,         # OUT (N, M)
    int act,                    # IN ACT_RELU or ACT_SIGMOID
):
    """The activation the kernel uses, for the cached forward pass."""
    cdef Py_ssize_t i, j
    with nogil:
        for i in range(z.shape[0]):
            for j in range(z.shape[1]):
                out[i, j] = _act(z[i, j], act)


def row_losses(
    const double[:, ::1] scores,    # IN (N, C)
    const int64_t[::1] labels,      # IN (N,)
    double[::1] out,                # OUT (N,) -log(softmax(scores)[r, t_r] + 1e-7)
):
    """Every row's cross-entropy, computed as the kernel computes it."""
    cdef Py_ssize_t r, c = scores.shape[1]
    with nogil:
        for r in range(scores.shape[0]):
            out[r] = -log(_softmax_y(&scores[r, 0], c, labels[r]))


def network_gradient(
    list W,                 # IN L arrays (size[l], size[l+1]) float64, C-contiguous
    list b,                 # IN L arrays (size[l+1],)
    list z,                 # IN L arrays (N, size[l+1]): cached pre-activations
    list a,                 # IN L arrays (N, size[l]): cached layer inputs, a[0] = x
    list colptr,            # IN L arrays (size[l] + 2,) intp: CSC of a[l] + a bias column
    list rows,              # IN L arrays (nnz_l,) intp
    list vals,              # IN L arrays (nnz_l,) float64
    const uint8_t[::1] W_f32,   # IN (L,) W[l] is float32: perturb in float32
    const uint8_t[::1] b_f32,   # IN (L,)
    const int64_t[::1] labels,  # IN (N,) class indices in [0, size[L])
    int act,                # IN ACT_RELU or ACT_SIGMOID
    double h,               # IN step
    double weight_decay,    # IN lambda of the L2 term (0: none)
    list gW,                # OUT L arrays like W, float64
    list gb,                # OUT L arrays like b, float64
    list kW,                # OUT L uint8 arrays like W (kink flags), or None
    list kb,                # OUT L uint8 arrays like b, or None
    int n_threads=0,        # IN threads (0: OpenMP's default)
    int shortcuts=7,        # IN bits: 1 case 1, 2 case 2, 4 skip dead units (tests turn them off)
):
    """Central differences of the book's loss for every W[l] and b[l], into gW, gb.

    ``gW[l][i, j] = (L(W[l][i, j] + h) - L(W[l][i, j] - h)) / 2h`` with the
    perturbed value stored as the book stores it, computed from the cached
    forward pass (see the module docstring). With ``kW``/``kb``, also flags the
    entries whose +h or -h perturbation changes the sign of some ReLU input.
    """
    cdef int L = len(W), l
    cdef Py_ssize_t i, r, tid, n_items, N = labels.shape[0], C, u, width, width_h
    cdef double m
    cdef Net net
    cdef const double[:, ::1] mv2
    cdef const double[::1] mv1
    cdef const Py_ssize_t[::1] mvi
    cdef double[:, ::1] gw_mv
    cdef double[::1] gb_mv
    cdef uint8_t[:, ::1] kw_mv
    cdef uint8_t[::1] kb_mv
    cdef double[:, ::1] scratch
    cdef double[::1] E, S, y, table
    cdef Py_ssize_t[::1] live, n_live
    cdef double step_max
    cdef double* gw_ptr
    cdef double* gb_ptr
    cdef uint8_t* kw_ptr
    cdef uint8_t* kb_ptr
    cdef bint track = kW is not None

    if n_threads <= 0:
        n_threads = openmp.omp_get_max_threads()
    net.L = L
    net.act = act
    net.N = N
    net.labels = &labels[0]
    net.h = h
    net.wd = weight_decay
    net.W_f32 = &W_f32[0]
    net.b_f32 = &b_f32[0]
    net.size = <Py_ssize_t*>malloc((L + 1) * sizeof(Py_ssize_t))
    net.W = <const double**>malloc(L * sizeof(double*))
    net.b = <const double**>malloc(L * sizeof(double*))
    net.z = <const double**>malloc(L * sizeof(double*))
    net.a = <const double**>malloc(L * sizeof(double*))
    net.colptr = <const Py_ssize_t**>malloc(L * sizeof(Py_ssize_t*))
    net.rows = <const Py_ssize_t**>malloc(L * sizeof(Py_ssize_t*))
    net.vals = <const double**>malloc(L * sizeof(double*))
    try:
        if (net.size == NULL or net.W == NULL or net.b == NULL or net.z == NULL
                or net.a == NULL or net.colptr == NULL or net.rows == NULL or net.vals == NULL):
            raise MemoryError()
        # The lists keep the arrays alive for the whole call.
        for l in range(L):
            mv2 = W[l]
            net.W[l] = &mv2[0, 0]
            net.size[l] = mv2.shape[0]
            net.size[l + 1] = mv2.shape[1]
            mv1 = b[l]
            net.b[l] = &mv1[0]
            mv2 = z[l]
            net.z[l] = &mv2[0, 0]
            mv2 = a[l]
            net.a[l] = &mv2[0, 0]
            mvi = colptr[l]
            net.colptr[l] = &mvi[0]
            mvi = rows[l]
            net.rows[l] = &mvi[0]
            mv1 = vals[l]
            net.vals[l] = &mv1[0]
        width = net.size[0]
        width_h = 1
        for l in range(1, L + 1):
            width = max(width, net.size[l])
            width_h = max(width_h, net.size[l])
        net.width = width
        net.width_h = width_h
        C = net.size[L]

        # The cached softmax of every row: E, S and y.
        E = np.empty(N * C)
        S = np.empty(N)
        y = np.empty(N)
        net.E = &E[0]
        net.S = &S[0]
        net.y = &y[0]
        mv2 = z[L - 1]
        with nogil:
            for r in range(N):
                net.y[r] = _softmax_y(&mv2[r, 0], C, net.labels[r])
                m = mv2[r, 0]
                for u in range(1, C):
                    if mv2[r, u] > m:
                        m = mv2[r, u]
                net.S[r] = 0
                for u in range(C):
                    net.E[r * C + u] = exp(mv2[r, u] - m)
                    net.S[r] += net.E[r * C + u]

        # one buffer for the case-2 tables of any layer, one scratch row per thread
        table = np.empty(max(N * width_h * NT, 1))
        net.table = &table[0]
        scratch = np.empty((n_threads, max(4 * width, 2 * width_h)))
        live = np.empty(N * width_h, dtype=np.intp)
        n_live = np.empty(N, dtype=np.intp)
        net.live = &live[0]
        net.n_live = &n_live[0]

        net.last_shortcut = shortcuts & 1
        for l in range(L):
            net.has_table = (shortcuts & 2) and l < L - 1 and (act == 0 or l == L - 2)
            if net.has_table:
                with nogil:
                    for r in prange(N, schedule="static", num_threads=n_threads):
                        tid = threadid()
                        _fill_tables(&net, l, r, &scratch[tid, 0], &scratch[tid, width_h])
            step_max = max(
                _max_step(net.W[l], net.size[l] * net.size[l + 1], h, net.W_f32[l]),
                _max_step(net.b[l], net.size[l + 1], h, net.b_f32[l]))
            if not shortcuts & 4:
                step_max = -1  # every unit of every row is live
            with nogil:
                for r in prange(N, schedule="static", num_threads=n_threads):
                    _fill_live(&net, l, r, step_max)
            gw_mv = gW[l]
            gb_mv = gb[l]
            gw_ptr = &gw_mv[0, 0]
            gb_ptr = &gb_mv[0]
            kw_ptr = NULL
            kb_ptr = NULL
            if track:
                kw_mv = kW[l]
                kb_mv = kb[l]
                kw_ptr = &kw_mv[0, 0]
                kb_ptr = &kb_mv[0]
            n_items = net.size[l] + 1  # the rows of W[l], then b[l]
            with nogil:
                for i in prange(n_items, schedule="dynamic", num_threads=n_threads):
                    tid = threadid()
                    if i < net.size[l]:
                        _work_item(&net, l, i, &scratch[tid, 0],
                                   gw_ptr + i * net.size[l + 1],
                                   kw_ptr + i * net.size[l + 1] if track else NULL)
                    else:
                        _work_item(&net, l, i, &scratch[tid, 0], gb_ptr,
                                   kb_ptr if track else NULL)
    finally:
        free(net.size)
        free(net.W)
        free(net.b)
        free(net.z)
        free(net.a)
        free(net.colptr)
        free(net.rows)
        free(net.vals)

