"""The compiled backend: ``NumpyOps`` with its hot operations on minidl's kernels.

``CythonOps`` overrides what the kernels do faster (thinc's pattern) and falls
back to the NumPy reference for the rest. Inputs that are mostly zeros (MNIST's
pixels, ReLU outputs) go to the zero-skipping kernels (``minidl._sparse``); the
rest to BLAS (NumPy's) or, with ``gemm='cython'``, to minidl's tiled GEMM.
Whole-network passes (``fused``) and whole training steps (``step_runner``)
come from ``minidl.engine``, which decides when they may stand in for the
book's code.
"""

from __future__ import annotations

import numpy as np

from .. import _core, _fused, _sparse
from .._conv_cython import ConvCythonOps
from .._norm_cython import NormCythonOps
from . import GEMM_CHOICES, NUM_THREADS
from .numpy_ops import NumpyOps

# The zero-skipping affine kernels take products with at least this many input
# features and outputs, on inputs at most this dense (estimated from a few rows);
# BLAS takes the rest (a 50 -> 10 layer is faster there, whatever its zeros).
SPARSE_MIN_FEATURES = 64
SPARSE_MIN_OUTPUTS = 16
# Zero-skipping beats BLAS's products below these fractions of nonzero inputs: a
# 784-50-10 network's gradient and loss on 100 rows, one thread, CPU time, dense
# over sparse: float64 0.39 at 15% nonzeros, 0.67 at 35%, 0.88 at 49%; float32
# 0.53, 0.87, 1.25 at 50% (BLAS's float32 products are twice as fast).
SPARSE_MAX_DENSITY = {np.dtype(np.float64): 0.5, np.dtype(np.float32): 0.4}


def zero_skipping_pays(density: float, dtype) -> bool:
    """Whether inputs with this fraction of nonzeros are faster through the
    zero-skipping kernels than through BLAS, for products in ``dtype``."""
    return density <= SPARSE_MAX_DENSITY.get(np.dtype(dtype), 0.0)


# An Affine layer keeps its input's nonzero lists from forward for backward when
# the input has at most this many entries (a training batch; 12 bytes an entry).
KEEP_LISTS_MAX = 1 << 18

SIMD_LEVELS = {"scalar": 0, "baseline": 1, "best": 2}


def use_simd(level: str = "best") -> str:
    """Select the C kernels' instruction set in every kernel module; returns the
    kernels' name ('avx2', 'sse2', 'vector' or 'scalar')."""
    if level not in SIMD_LEVELS:
        raise ValueError(f"level must be one of {sorted(SIMD_LEVELS)}, got {level!r}")
    code = SIMD_LEVELS[level]
    _core._select_simd(code)
    _fused._select_simd(code)
    return _sparse._select_simd(code)


def simd_name() -> str:
    """The name of the kernels in use."""
    return _sparse.SIMD_ISA


def _flat(a: np.ndarray) -> np.ndarray:
    """A C-contiguous 1-D view of ``a`` (a copy only when ``a`` is not C-contiguous)."""
    return np.ascontiguousarray(a).reshape(-1)


def _nonzero_lists_kept(x, state):
    """``x``'s nonzero lists, in buffers that ``state`` keeps from batch to batch
    (a fresh ~1 MB array per batch would cost its page faults every time)."""
    n, k = x.shape
    need = n * k + k
    idx, val, ptr = state.get("buffers", (None, None, None))
    if idx is None or len(idx) < need or val.dtype != x.dtype:
        idx = np.empty(need, dtype=np.int32)
        val = np.empty(need, dtype=x.dtype)
    if ptr is None or len(ptr) != n + 1:
        ptr = np.empty(n + 1, dtype=np.int64)
    state["buffers"] = (idx, val, ptr)
    total = _sparse.nonzero_lists_into(x, idx, val, ptr)
    return idx[:total], val[:total], ptr


class CythonOps(ConvCythonOps, NormCythonOps, NumpyOps):  # conv, pooling, batch norm: _conv/_norm_cython
    name = "cython"

    def __init__(self, gemm: str = "blas"):
        if gemm not in GEMM_CHOICES:
            raise ValueError(f"gemm must be one of {GEMM_CHOICES}, got {gemm!r}")
        self.gemm_impl = gemm

    def __repr__(self) -> str:
        return f"CythonOps(gemm={self.gemm_impl!r})"

    # -- whole-network shortcuts --------------------------------------------------
    def fused(self, network):
        from ..engine.passes import passes_for

        return passes_for(network)

    def step_runner(self, network, x, t, optimizer=None, lr=0.1):
        from ..engine.runner import runner_for

        return runner_for(network, x, t, optimizer, lr)

    # -- checks ----------------------------------------------------------------------
    def labels_in_range(self, labels, n_classes):
        return _core.indices_in_range(labels, n_classes)

    def one_hot_indices(self, rows):
        if rows.dtype not in (np.float32, np.float64) or not rows.flags.c_contiguous:
            return super().one_hot_indices(rows)
        out = np.empty(rows.shape[0], dtype=np.int64)
        return out if _core.one_hot_indices(rows, out) else None

    # -- affine -------------------------------------------------------------
    def gemm(self, a, b):
        if self.gemm_impl == "blas":
            return super().gemm(a, b)
        out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
        _core.gemm(np.ascontiguousarray(a), np.ascontiguousarray(b), out)
        return out

    def _sparse_inputs(self, x, W) -> bool:
        """Whether the zero-skipping kernels should take ``x @ W``: x is mostly zeros
        (MNIST pixels, ReLU outputs), the dtypes are ones the kernels take, and W is
        finite (a skipped zero times an infinite weight would be NaN in NumPy)."""
        return (
            x.ndim == 2
            and x.shape[1] >= SPARSE_MIN_FEATURES
            and W.ndim == 2
            and W.shape[1] >= SPARSE_MIN_OUTPUTS
            and x.flags.c_contiguous
            and W.flags.c_contiguous
            and x.dtype in (np.float32, W.dtype)
            and zero_skipping_pays(_sparse.nonzero_fraction(x), W.dtype)
            and _core.finite_norm(W.reshape(-1))
        )

    def affine_forward(self, x, W, b, state=None):
        """x (N, D) @ W (D, M) + b; x may be float32 with float64 W (computed in float64).

        ``state``: a dict the calling layer keeps; a batch's nonzero lists are left
        in it for ``affine_backward`` of the same ``x`` (in buffers kept there too).
        """
        if state is not None:
            state.pop("lists", None)
        if self._sparse_inputs(x, W):
            out = np.empty((x.shape[0], W.shape[1]), dtype=W.dtype)
            lists = None
            if state is not None and x.size <= KEEP_LISTS_MAX:  # a batch, not an evaluation
                lists = _nonzero_lists_kept(x, state)
                state["lists"] = (x, lists)
            _sparse.sparse_affine_forward(x, None, W, np.ascontiguousarray(b), out, NUM_THREADS,
                                          lists)
            return out
        out = self.gemm(x.astype(W.dtype, copy=False), W)
        _core.add_bias(out, np.ascontiguousarray(b))
        return out

    def affine_backward(self, x, W, dout, need_dx=True, state=None):
        dout = np.ascontiguousarray(dout)
        dx = self.gemm(dout, W.T) if need_dx else None
        # dW = x.T @ dout skips x's zeros: the terms skipped are zero times a row of
        # dout, so dout must be finite (as W must be in the forward product)
        if self._sparse_inputs(x, dout):
            dW = np.empty((x.shape[1], dout.shape[1]), dtype=dout.dtype)
            kept = state.get("lists") if state is not None else None
            lists = kept[1] if kept is not None and kept[0] is x else None
            _sparse.sparse_affine_backward_weights(x, None, dout, dW, 0.0, NUM_THREADS, lists)
        else:
            dW = self.gemm(x.T.astype(dout.dtype, copy=False), dout)
        db = dout.sum(axis=0)
        return dx, dW, db

    # -- activations ----------------------------------------------------------
    def relu_forward(self, x):
        out = np.empty(x.shape, dtype=x.dtype)
        _core.relu_forward(_flat(x), out.reshape(-1))
        return out

    def relu_backward(self, dout, out):
        dx = np.empty(dout.shape, dtype=dout.dtype)
        _core.relu_backward(_flat(dout), _flat(out), dx.reshape(-1))
        return dx

    def sigmoid_forward(self, x):
        out = np.empty(x.shape, dtype=x.dtype)
        _core.sigmoid_forward(_flat(x), out.reshape(-1))
        return out

    def sigmoid_backward(self, dout, out):
        dx = np.empty(dout.shape, dtype=dout.dtype)
        _core.sigmoid_backward(_flat(dout), _flat(out), dx.reshape(-1))
        return dx

    # -- softmax with cross-entropy --------------------------------------------
    def softmax_cross_entropy_forward(self, x, labels):
        x = np.ascontiguousarray(x)
        y = np.empty_like(x)
        row_loss = np.empty(x.shape[0], dtype=x.dtype)
        _core.softmax_cross_entropy_forward(x, np.ascontiguousarray(labels), y, row_loss)
        return row_loss.sum() / x.shape[0], y

    def softmax_cross_entropy_backward(self, y, labels, dout=1.0):
        dx = np.empty(y.shape, dtype=y.dtype)
        _core.softmax_cross_entropy_backward(
            np.ascontiguousarray(y), np.ascontiguousarray(labels), float(dout), dx
        )
        return dx

    # -- finite differences -----------------------------------------------------
    def numerical_gradient(self, f, x, h=1e-4):
        grad = np.empty(x.shape, dtype=np.float64)
        _core.numerical_gradient(f, x, h, grad)
        return grad.astype(x.dtype, copy=False)
