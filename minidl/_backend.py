"""Backend selection: the compiled kernels (default) or the NumPy reference.

``CythonOps`` overrides ``NumpyOps``'s hot operations with ``minidl._core``'s
kernels and falls back to the reference for the rest (thinc's pattern).

Choose with ``minidl.set_backend('numpy' | 'cython')`` or the environment
variable ``MINIDL_BACKEND``. The affine product uses NumPy's BLAS by default;
``MINIDL_GEMM=cython`` (or ``set_backend('cython', gemm='cython')``) selects
the tiled Cython GEMM instead.
"""

from __future__ import annotations

import os

import numpy as np

from ._reference import NumpyOps

try:
    from . import _core
except ImportError as exc:  # pragma: no cover - exercised only by a broken install
    raise ImportError(
        "minidl's compiled extension minidl._core could not be imported "
        f"({exc}). Reinstall minidl with `pip install .` from its source tree, "
        "which compiles it (a C compiler and the Python headers are needed)."
    ) from exc

from ._conv_cython import ConvCythonOps  # after _core's install check
from ._norm_cython import NormCythonOps

GEMM_CHOICES = ("blas", "cython")

# The zero-skipping affine kernels take products with at least this many input
# features and outputs, on inputs at most this dense (estimated from a few rows);
# BLAS takes the rest (a 50 -> 10 layer is faster there, whatever its zeros).
SPARSE_MIN_FEATURES = 64
SPARSE_MIN_OUTPUTS = 16
SPARSE_MAX_DENSITY = 0.5
# An Affine layer keeps its input's nonzero lists from forward for backward when
# the input has at most this many entries (a training batch; 12 bytes an entry).
KEEP_LISTS_MAX = 1 << 18
# Threads for the zero-skipping kernels (each uses fewer when its work is small).
# MINIDL_NUM_THREADS=n sets both numbers below. By default, the layer-by-layer
# kernels (NUM_THREADS) run on one thread: on the 2-core machine this was tuned
# on, a second thread made a layer-by-layer evaluation slower (OpenBLAS's own
# threads spin between the products beside it). The compiled whole passes
# (STEP_THREADS: minidl.train's steps, network.gradient/loss/accuracy on plain
# stacks) call no BLAS, and a second thread made them 12-30% faster there.
def _num_threads(value: str) -> int:
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"MINIDL_NUM_THREADS must be a whole number >= 1, got {value!r}")
    return int(value)


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_THREADS_SET = os.environ.get("MINIDL_NUM_THREADS")
NUM_THREADS = _num_threads(_THREADS_SET) if _THREADS_SET is not None else 1
STEP_THREADS = NUM_THREADS if _THREADS_SET is not None else min(2, _available_cpus())


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
    total = _core.nonzero_lists_into(x, idx, val, ptr)
    return idx[:total], val[:total], ptr


class CythonOps(ConvCythonOps, NormCythonOps, NumpyOps):  # conv, pooling, batch norm: _conv/_norm_cython
    name = "cython"

    def __init__(self, gemm: str = "blas"):
        if gemm not in GEMM_CHOICES:
            raise ValueError(f"gemm must be one of {GEMM_CHOICES}, got {gemm!r}")
        self.gemm_impl = gemm

    def __repr__(self) -> str:
        return f"CythonOps(gemm={self.gemm_impl!r})"

    # -- affine -------------------------------------------------------------
    def gemm(self, a, b):
        if self.gemm_impl == "blas":
            return super().gemm(a, b)
        out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
        _core.gemm(np.ascontiguousarray(a), np.ascontiguousarray(b), out)
        return out

    def _sparse_inputs(self, x, W) -> bool:
        """Whether the zero-skipping kernels should take ``x @ W``: x is mostly zeros
        (MNIST pixels, ReLU outputs), and the dtypes are ones the kernels take."""
        return (
            x.ndim == 2
            and x.shape[1] >= SPARSE_MIN_FEATURES
            and W.ndim == 2
            and W.shape[1] >= SPARSE_MIN_OUTPUTS
            and x.flags.c_contiguous
            and W.flags.c_contiguous
            and not (x.dtype == np.float64 and W.dtype == np.float32)
            and _core.nonzero_fraction(x) <= SPARSE_MAX_DENSITY
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
            _core.sparse_affine_forward(x, None, W, np.ascontiguousarray(b), out, NUM_THREADS,
                                        lists)
            return out
        out = self.gemm(x.astype(W.dtype, copy=False), W)
        _core.add_bias(out, np.ascontiguousarray(b))
        return out

    def affine_backward(self, x, W, dout, need_dx=True, state=None):
        dx = self.gemm(dout, W.T) if need_dx else None
        if self._sparse_inputs(x, W):
            dW = np.empty(W.shape, dtype=W.dtype)
            kept = state.get("lists") if state is not None else None
            lists = kept[1] if kept is not None and kept[0] is x else None
            _core.sparse_affine_backward_weights(
                x, None, np.ascontiguousarray(dout), dW, 0.0, NUM_THREADS, lists
            )
        else:
            dW = self.gemm(x.T.astype(W.dtype, copy=False), dout)
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


BACKENDS = ("cython", "numpy")
_ops: NumpyOps


def set_backend(name: str, *, gemm: str | None = None) -> None:
    """Run every layer on ``name`` ('cython' or 'numpy').

    ``gemm`` ('blas' or 'cython') picks the affine product of the Cython
    backend; by default ``MINIDL_GEMM`` or 'blas'.
    """
    global _ops
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
    if name == "numpy":
        if gemm is not None:
            raise ValueError("gemm= applies to the 'cython' backend only")
        _ops = NumpyOps()
    else:
        _ops = CythonOps(gemm or os.environ.get("MINIDL_GEMM", "blas"))


def get_backend() -> str:
    """The name of the backend in use."""
    return _ops.name


def ops() -> NumpyOps:
    """The backend object that layers call."""
    return _ops


set_backend(os.environ.get("MINIDL_BACKEND", "cython"))
