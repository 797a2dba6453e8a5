# cython: language_level=3
"""Whole training steps of a stack of affine layers, each in one call.

Design
------
One call runs the whole step of the course's loop on a stack of affine layers:
forward, softmax with cross-entropy, backward, the update ``p -= lr * grad`` of
every parameter (or the gradients, for another update rule), and the batch
loss after the update (a second forward pass), with no Python in between.
Every affine product goes through the zero-skipping kernels of ``_sparse.h``,
so each layer's input is first turned into nonzero lists: the batch's rows are
gathered from the dataset's lists (or scanned from its rows), and the hidden
activations are scanned as they are made. Arithmetic is the layers': the
results agree with ``network.gradient`` and the update up to rounding.

Python (``minidl.engine``) decides when a step may stand in for the book's
code and validates everything the step indexes with; the step itself trusts
its buffers (bounds checks off).
"""

cimport cython
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport isfinite
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memcpy

import numpy as np
cimport numpy as cnp

from minidl._common cimport (
    floating, xfloat, minidl_sparse_init, minidl_vmath_init, minidl_prefetch_list,
    _nz, _csc, _spmm, _spmmt, _relu_forward, _relu_backward, _sigmoid_forward,
    _sigmoid_backward, _softmax_cross_entropy_forward, _softmax_cross_entropy_backward,
    _finite_norm, _argmax_row,
)

cnp.import_array()

minidl_sparse_init(2)
minidl_vmath_init(2)


def _select_simd(int level):
    """This module's copy of the C kernels' dispatch (``minidl.backend.use_simd``
    sets every module's)."""
    minidl_sparse_init(level)
    minidl_vmath_init(level)


cdef enum:
    MAX_LAYERS_ = 32
MAX_LAYERS = MAX_LAYERS_  # affine layers in one network (deeper ones: the layer code)


cdef struct Lists:  # nonzero lists (CSR) of one layer's input for a batch
    int32_t* idx
    void* val  # the layer's dtype, or the dataset's for the first layer
    int64_t* ptr  # n + 1 offsets


cdef struct StepPlan:
    int n_layers
    int n_threads  # for the products (every layer's) and the batch's lists
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
    int skipped_update  # the last TASK_SGD_STEP's loss was not finite: nothing was updated
    const int32_t* d_idx  # its nonzero lists, or NULL: scan the rows
    const void* d_val
    const int64_t* d_ptr


cdef enum:
    PIECES = 10  # pieces of a batch's rows (or of W's) shared out between threads
    HIDDEN_SPLIT_MIN = 250000  # dense multiply-adds of a hidden product worth two threads
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


cdef inline Py_ssize_t _layer_threads(StepPlan* p, Py_ssize_t n, Py_ssize_t K,
                                      Py_ssize_t H) noexcept nogil:
    # a hidden layer's products (K inputs, H outputs) are shared out only when big
    # enough to pay for the threads' meeting at their end: chapter 6's 100-wide
    # layers (128 x 100 x 100 multiply-adds when dense) are; the course network's
    # 50 -> 10 output layer (100 x 50 x 10) is not (a meeting per product made its
    # MNIST steps slower)
    if n * K * H < HIDDEN_SPLIT_MIN:
        return 1
    return _step_threads(p, n)


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


cdef void _hidden_product(StepPlan* p, Py_ssize_t n, int l, floating* a) noexcept nogil:
    """act[l] = (layer l's input lists) @ W[l] + b[l] for a hidden layer's input, its
    rows shared out between the threads in pieces, each row whole by one thread (the
    same sums whatever the thread count)."""
    cdef Py_ssize_t H = p.sizes[l + 1], nt = _layer_threads(p, n, p.sizes[l], H), c
    cdef Lists* inp = &p.inp[l]
    if nt == 1:
        _spmm(NULL, 0, n, inp.idx, <const floating*>inp.val, inp.ptr,
              <const floating*>p.W[l], H, H, <const floating*>p.b[l], a, H)
        return
    for c in prange(PIECES, num_threads=nt, schedule="dynamic"):
        _spmm(NULL, c * n // PIECES, (c + 1) * n // PIECES, inp.idx,
              <const floating*>inp.val, inp.ptr, <const floating*>p.W[l], H, H,
              <const floating*>p.b[l], a, H)


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
            _hidden_product(p, n, l, a)
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
        # dx's rows in pieces shared out between the threads (each row whole by one
        # thread), while one of them turns a's lists into columns for dW = a.T @ dz
        nt = _layer_threads(p, n, K, H)
        if nt == 1:
            _spmm(NULL, 0, n, p.dz_lists.idx, <const floating*>p.dz_lists.val,
                  p.dz_lists.ptr, <const floating*>WT, K, K, <const floating*>NULL, dx, K)
            _csc(inp.idx, <const floating*>inp.val, inp.ptr, NULL, n, K, p.cptr, p.cidx,
                 <floating*>p.cval)
        else:
            with parallel(num_threads=nt):
                if threadid() == 0:
                    _csc(inp.idx, <const floating*>inp.val, inp.ptr, NULL, n, K, p.cptr,
                         p.cidx, <floating*>p.cval)
                for t in prange(PIECES, schedule="dynamic"):
                    _spmm(NULL, t * n // PIECES, (t + 1) * n // PIECES, p.dz_lists.idx,
                          <const floating*>p.dz_lists.val, p.dz_lists.ptr,
                          <const floating*>WT, K, K, <const floating*>NULL, dx, K)
        if p.sigmoid:
            _sigmoid_backward(dx, a, dx, n * K)
        else:
            _relu_backward(dx, a, dx, n * K)
        # dW = a.T @ dz over the columns of a's lists (fused with W -= lr * dW), W's
        # rows in pieces shared out between the threads, each row whole by one thread
        pieces = PIECES if nt > 1 else 1
        for t in prange(pieces, num_threads=nt, schedule="dynamic"):
            k0 = t * K // pieces
            k1 = (t + 1) * K // pieces
            if update:
                _spmmt(p.cptr, p.cidx, <const floating*>p.cval, k0, k1, <const floating*>dz,
                       H, H, W, H, -lr, 1)
            else:
                _spmmt(p.cptr, p.cidx, <const floating*>p.cval, k0, k1, <const floating*>dz,
                       H, H, <floating*>p.gW[l], H, 1, 0)
        if update:
            _column_sums(dz, n, H, db)
            for j in range(H):
                b[j] -= lr * db[j]
        else:
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


cdef enum:  # what _task runs
    TASK_SGD_STEP = 0       # dataset rows: forward, backward fused with p -= lr * grad, loss after
    TASK_ROWS_GRADIENT = 1  # dataset rows: forward, backward into p.gW and p.gb; loss before
    TASK_KEPT_LOSS = 2      # the loss of the batch whose first lists p.inp[0] still holds
    TASK_LOSS = 3           # a batch of its own (xb): the forward pass and loss
    TASK_GRADIENT = 4       # a batch of its own (xb): loss and gradients (into p.gW, p.gb)


cdef double _task(StepPlan* p, int task, const int64_t* rows, const int64_t* labels,
                  Py_ssize_t n, double lr, const xfloat* xb, floating* W0,
                  const xfloat* x) noexcept nogil:
    """One of the tasks above on n rows; returns the mean loss it names. ``x`` is the
    dataset (for rows), ``xb`` a batch of its own (n rows)."""
    cdef double loss
    if task == TASK_SGD_STEP or task == TASK_ROWS_GRADIENT:
        _batch_lists(p, rows, n, x)
    elif task != TASK_KEPT_LOSS:
        p.inp[0].ptr[0] = 0
        _nz(xb, p.sizes[0], 0, n, p.sizes[0], p.inp[0].idx, <xfloat*>p.inp[0].val, p.inp[0].ptr)
    if task == TASK_KEPT_LOSS or task == TASK_LOSS:
        return _forward_loss(p, labels, n, W0, x, False)
    loss = _loss_and_gradient(p, labels, n, W0, x)
    if task == TASK_SGD_STEP:
        # a non-finite loss means non-finite gradients, whose zero-skipped terms
        # (0 * inf) NumPy would turn into NaN: no update here, the caller's NumPy does it
        p.skipped_update = not (loss - loss == 0)
        if p.skipped_update:
            return loss
        _step_backward(p, n, <floating>lr, True, W0, x)
        return _forward_loss(p, labels, n, W0, x, False)  # with the updated parameters
    _step_backward(p, n, <floating>0, False, W0, x)
    return loss


cdef Py_ssize_t _count_chunk(StepPlan* p, const xfloat* x, Py_ssize_t s, Py_ssize_t n,
                             const int32_t* li, const xfloat* lv, const int64_t* lp,
                             const int64_t* labels, floating* W0) noexcept nogil:
    """How many of the rows s..s+n of x (n <= p.n_max) score highest on their label;
    the first layer's lists are read in place from (li, lv, lp) or scanned from x.
    The highest score is np.argmax's: the first maximum, or the first NaN."""
    cdef Py_ssize_t i, correct = 0, K = p.sizes[0], C = p.sizes[p.n_layers]
    cdef Lists* inp = &p.inp[0]
    cdef Lists own = inp[0]  # the first layer's buffers, restored below
    cdef const floating* scores
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
        correct += _argmax_row(scores + i * C, C) == labels[s + i]
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
    every layer's products and for ``count_correct``'s chunks (the results do
    not depend on it). Everything a step needs is
    allocated here. For ``gradient`` alone, ``x`` may have no rows: it gives the
    inputs' dtype.
    """

    cdef StepPlan plan
    cdef list keep  # every array the plan points into (but those held below)
    cdef readonly Py_ssize_t batch_size
    cdef readonly tuple activations  # (batch_size, width) buffers: the last batch's
    cdef readonly object probabilities  # hidden activations and softmax output (not in
    #                                     keep: hand_over replaces them)
    cdef readonly tuple param_arrays  # the W and b arrays updated in place
    cdef readonly tuple sizes  # the layer widths the buffers were made for
    cdef readonly object x_dtype, dtype
    cdef object checked_lists  # the dataset's lists (their idx array), checked in __init__
    cdef readonly bint sigmoid
    cdef int net_double, x_double
    cdef StepPlan eval_plans[MAX_EVAL_THREADS]  # count_correct's, one a thread (made once)
    cdef int n_eval_plans
    cdef Py_ssize_t kept_rows  # rows of the batch whose lists p.inp[0] holds (rows_gradient)
    cdef readonly int max_threads  # num_threads: what ``threads`` may be set to, at most
    # after gradient or rows_gradient: every db it wrote is finite (with a finite loss,
    # every backward gradient was: a non-finite one reaches its layer's db)
    cdef readonly bint bias_gradients_finite

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
        self.max_threads = p.n_threads
        p.sigmoid = sigmoid
        for l in range(L + 1):
            p.sizes[l] = sizes[l]
        n = batch_size
        hmax = max(sizes[1:])
        wt = max([sizes[l] * sizes[l + 1] for l in range(1, L)] or [1])
        activations = []
        self.param_arrays = tuple(W) + tuple(b)
        self.sizes = tuple(sizes)
        self.x_dtype, self.dtype, self.sigmoid = xdtype, dtype, sigmoid
        for l in range(L):
            p.W[l] = _data(self.keep, W[l])
            p.b[l] = _data(self.keep, b[l])
            activations.append(np.empty((n, sizes[l + 1]), dtype=dtype))
            p.act[l] = cnp.PyArray_DATA(activations[l])
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
        self.activations = tuple(activations)
        self.probabilities = np.empty((n, sizes[L]), dtype=dtype)
        p.y = cnp.PyArray_DATA(self.probabilities)
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

    cdef double _run(self, int task, const int64_t* rows, const int64_t* labels, Py_ssize_t n,
                     double lr, const void* xb) noexcept:
        """_task for the network's and the inputs' dtypes."""
        cdef StepPlan* p = &self.plan
        cdef double loss
        with nogil:
            if not self.net_double:
                loss = _task(p, task, rows, labels, n, lr, <const float*>xb, <float*>p.W[0],
                             <const float*>p.x)
            elif self.x_double:
                loss = _task(p, task, rows, labels, n, lr, <const double*>xb, <double*>p.W[0],
                             <const double*>p.x)
            else:
                loss = _task(p, task, rows, labels, n, lr, <const float*>xb, <double*>p.W[0],
                             <const float*>p.x)
        return loss

    cdef _check_batch(self, str what, Py_ssize_t n, const int64_t[::1] labels,
                      const int64_t[::1] rows):
        """Refuse what the kernels would index out of bounds with."""
        cdef Py_ssize_t i, M = self.plan.n_rows, C = self.plan.sizes[self.plan.n_layers]
        cdef bint bad = False
        if not 1 <= n <= self.batch_size or labels.shape[0] != n:
            raise ValueError(f"SGDStep.{what}: {n} rows and {labels.shape[0]} labels "
                             f"(need the same number, 1 to {self.batch_size})")
        with nogil:
            for i in range(n):
                bad = bad or labels[i] < 0 or labels[i] >= C
                if rows is not None:
                    bad = bad or rows[i] < 0 or rows[i] >= M
        if bad:
            raise ValueError(f"SGDStep.{what}: rows must be in [0, {M}) and labels in [0, {C})")

    cdef _set_gradients(self, str what, list gW, list gb):
        """Point the plan's gradient outputs at the arrays gW and gb (shaped as W and b)."""
        cdef int l, L = self.plan.n_layers
        cdef StepPlan* p = &self.plan
        if gW is None or gb is None or len(gW) != L or len(gb) != L:
            raise ValueError(f"SGDStep.{what}: one dW and one db array per layer")
        for l in range(L):
            for g, shape in ((gW[l], (p.sizes[l], p.sizes[l + 1])), (gb[l], (p.sizes[l + 1],))):
                if (not isinstance(g, np.ndarray) or g.dtype != self.dtype or g.shape != shape
                        or not g.flags.c_contiguous or not g.flags.writeable):
                    raise ValueError(f"SGDStep.{what}: gradients must be writeable "
                                     f"C-contiguous {self.dtype} arrays shaped as W and b")
            p.gW[l] = cnp.PyArray_DATA(gW[l])
            p.gb[l] = cnp.PyArray_DATA(gb[l])

    cdef bint _biases_finite(self) noexcept:
        """Whether the db arrays the last pass wrote (p.gb, alive during the call that
        wrote them) hold no NaN and no infinity."""
        cdef StepPlan* p = &self.plan
        cdef int l
        cdef Py_ssize_t j
        with nogil:
            for l in range(p.n_layers):
                for j in range(p.sizes[l + 1]):
                    if self.net_double:
                        if not isfinite((<double*>p.gb[l])[j]):
                            return False
                    elif not isfinite((<float*>p.gb[l])[j]):
                        return False
        return True

    @property
    def threads(self) -> int:
        """Threads the next calls run on (1 to ``max_threads``; the results do not
        depend on it)."""
        return self.plan.n_threads

    @threads.setter
    def threads(self, int n):
        self.plan.n_threads = max(1, min(n, self.max_threads))

    @property
    def skipped_update(self) -> bool:
        """Whether the last ``step`` left the parameters alone: its loss before the
        update was not finite (NaN or infinity), and its return value is that loss."""
        return self.plan.skipped_update != 0

    def step(self, const int64_t[::1] rows, const int64_t[::1] labels, double lr) -> float:
        """One SGD step on the batch ``x[rows]`` with class indices ``labels``;
        returns the batch loss after the update (see ``skipped_update``)."""
        self._check_batch("step", rows.shape[0], labels, rows)
        self.kept_rows = 0
        return self._run(TASK_SGD_STEP, &rows[0], &labels[0], rows.shape[0], lr, NULL)

    def rows_gradient(self, const int64_t[::1] rows, const int64_t[::1] labels, list gW,
                      list gb) -> float:
        """Loss and gradients of the batch ``x[rows]``: dW and db into ``gW`` and ``gb``
        (shaped as W and b); the parameters are left alone. Returns the loss before
        any update; ``loss_after_update`` then gives the loss of the same batch."""
        self._check_batch("rows_gradient", rows.shape[0], labels, rows)
        self._set_gradients("rows_gradient", gW, gb)
        loss = self._run(TASK_ROWS_GRADIENT, &rows[0], &labels[0], rows.shape[0], 0, NULL)
        self.kept_rows = rows.shape[0]
        self.bias_gradients_finite = self._biases_finite()
        return loss

    def loss_after_update(self, const int64_t[::1] labels) -> float:
        """The loss of the batch of the last ``rows_gradient`` with the parameters as
        they are now (after an update), from the batch's lists kept since."""
        if self.kept_rows == 0 or labels.shape[0] != self.kept_rows:
            raise ValueError("SGDStep.loss_after_update: call rows_gradient first, with "
                             "the same labels")
        self._check_batch("loss_after_update", labels.shape[0], labels, None)
        return self._run(TASK_KEPT_LOSS, NULL, &labels[0], labels.shape[0], 0, NULL)

    def gradient(self, x, const int64_t[::1] labels, list gW=None, list gb=None) -> float:
        """Loss and gradients of the batch ``x`` (its rows in order) with class
        indices ``labels``: dW and db are written into the arrays ``gW`` and
        ``gb`` (shaped as W and b); the parameters are left alone. Returns the
        mean loss; ``activations`` and ``probabilities`` then hold the batch's
        forward pass (their first ``len(x)`` rows). ``gW = gb = None``: the loss
        and forward pass only."""
        cdef StepPlan* p = &self.plan
        if (not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != p.sizes[0]
                or x.dtype != self.x_dtype or not x.flags.c_contiguous):
            raise ValueError(f"SGDStep.gradient: x must be a C-contiguous {self.x_dtype} "
                             f"array of {p.sizes[0]} columns")
        n = x.shape[0]
        self._check_batch("gradient", n, labels, None)
        backward = gW is not None or gb is not None
        if backward:
            self._set_gradients("gradient", gW, gb)
        self.kept_rows = 0
        loss = self._run(TASK_GRADIENT if backward else TASK_LOSS, NULL, &labels[0], n, 0,
                         cnp.PyArray_DATA(x))
        self.bias_gradients_finite = backward and self._biases_finite()
        return loss

    def hand_over(self, Py_ssize_t n):
        """The last pass's hidden activations and softmax output (their first ``n``
        rows), handed over: the step takes fresh buffers for its next pass, so the
        arrays returned are never written again (the layers keep them, as the
        book's forward pass leaves new arrays behind). Cheaper than a copy: the
        copy read and wrote every activation once more (chapter 6's 5-layer
        network: 40 us a call of 1000)."""
        cdef StepPlan* p = &self.plan
        cdef int l, L = p.n_layers
        if not 0 <= n <= self.batch_size:
            raise ValueError(f"SGDStep.hand_over: {n} rows of {self.batch_size}")
        hidden = [a[:n] for a in self.activations[:L - 1]]
        y = self.probabilities[:n]
        fresh = [np.empty_like(a) for a in self.activations[:L - 1]]
        self.activations = tuple(fresh) + self.activations[L - 1:]
        for l in range(L - 1):
            p.act[l] = cnp.PyArray_DATA(fresh[l])
        self.probabilities = np.empty_like(self.probabilities)
        p.y = cnp.PyArray_DATA(self.probabilities)
        return hidden, y

    def params_finite(self) -> bool:
        """Whether every W and b holds no NaN and no infinity (the zero-skipping
        kernels are exact only for finite weights)."""
        cdef int l
        cdef bint ok = True
        cdef StepPlan* p = &self.plan
        with nogil:
            for l in range(p.n_layers):
                if self.net_double:
                    ok = ok and _finite_norm(<double*>p.W[l], p.sizes[l] * p.sizes[l + 1])
                    ok = ok and _finite_norm(<double*>p.b[l], p.sizes[l + 1])
                else:
                    ok = ok and _finite_norm(<float*>p.W[l], p.sizes[l] * p.sizes[l + 1])
                    ok = ok and _finite_norm(<float*>p.b[l], p.sizes[l + 1])
        return ok

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
            for t in range(min(self.max_threads, MAX_EVAL_THREADS)):
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
        return <int>max(1, min(self.n_eval_plans, self.plan.n_threads, (M + n - 1) // n))

