"""``network.gradient`` and ``network.loss`` in one compiled call, for the book's stacks.

``_LayerNet.gradient`` asks ``compiled_gradient`` first, ``_LayerNet.loss``
asks ``compiled_loss`` and ``_LayerNet.accuracy`` ``compiled_accuracy``. When the network is a
plain stack of minidl's own layers (Affine, ReLU or sigmoid, softmax with loss,
no weight decay) on the Cython backend, and the batch is a sparse-enough array
of hard labels, the forward and backward passes run in ``_core.SGDStep.gradient``:
the batch's nonzeros are listed once and reused by both passes, and no Python
runs between layers. Afterwards the layers hold what the layer-by-layer pass
would have left (inputs, outputs, ``dW``/``db``, the loss and softmax output),
so ``layer.backward`` and the book's attribute reads work as before. Anything
else returns None and the book's code runs.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from . import _backend, _core
from ._checks import labels_as_indices
from .layers import Affine, Relu, Sigmoid, SoftmaxWithLoss

# Largest batch (entries of x) the compiled pass takes: its buffers hold a
# nonzero list as long as the whole batch (12 bytes an entry).
MAX_ENTRIES = 1 << 20


def compiled_gradient(net, x, t):
    """The gradients dict of ``net.gradient(x, t)``, or None when not covered."""
    run = _prepare(net, x, t)
    if run is None:
        return None
    step, x2, labels, affines = run[0], run[1], run[2], run[4]
    gW = [np.empty_like(a.W) for a in affines]
    gb = [np.empty_like(a.b) for a in affines]
    loss = step.gradient(x2, labels, gW, gb)
    _leave_layers(net, x, t, loss, run)
    grads = {}
    for i, layer in enumerate(affines):
        layer.dW, layer.db = gW[i], gb[i]
        grads[f"W{i + 1}"] = gW[i]
        grads[f"b{i + 1}"] = gb[i]
    return grads


def compiled_loss(net, x, t):
    """``net.loss(x, t)`` (forward only), or None when not covered."""
    run = _prepare(net, x, t)
    if run is None:
        return None
    step, x2, labels = run[:3]
    loss = step.gradient(x2, labels)
    return _leave_layers(net, x, t, loss, run)


def _prepare(net, x, t):
    """(step, x as 2-D, labels, one-hot?, affines, activations) or None."""
    if net.weight_decay_lambda or _backend.get_backend() != "cython":
        return None
    plan = _plain_stack(net)
    if plan is None or not isinstance(x, np.ndarray) or x.ndim < 2:
        return None
    affines, activations, sigmoid = plan
    W = [a.W for a in affines]
    b = [a.b for a in affines]
    x2 = _sparse_rows(x, W[0], MAX_ENTRIES)
    if x2 is None:
        return None
    n = len(x2)
    labels, one_hot = _hard_labels(t, n, W[-1].shape[1])
    if labels is None:
        return None
    step = _step_for(net, W, b, sigmoid, x.dtype, n)
    return step, x2, labels, one_hot, affines, activations


def compiled_accuracy(net, x, t):
    """``net.accuracy(x, t)``, counted in compiled chunks, or None when not covered.

    The parameters and the layers are left alone (only the result is computed).
    """
    if _backend.get_backend() != "cython" or not isinstance(x, np.ndarray) or x.ndim < 2:
        return None
    plan = _plain_stack(net)
    if plan is None:
        return None
    affines, _activations, sigmoid = plan
    W = [a.W for a in affines]
    x2 = _sparse_rows(x, W[0], None)  # any number of rows: counted in chunks
    if x2 is None:
        return None
    n = len(x2)
    t = np.asarray(t)
    if t.ndim != 1:
        t = np.argmax(t, axis=1)  # as the book's accuracy
    if t.shape != (n,) or t.dtype.kind not in "iu":
        return None
    step = _step_for(net, W, [a.b for a in affines], sigmoid, x.dtype, 1)
    return step.count_correct(x2, np.ascontiguousarray(t, dtype=np.int64)) / float(n)


def _sparse_rows(x, W0, max_entries):
    """``x`` as (N, W0 rows) when the compiled pass takes it (float32 or W0's dtype,
    C-contiguous, at most ``max_entries`` entries, mostly zeros), else None."""
    n, width = x.shape[0], math.prod(x.shape[1:])
    if (n < 1 or width != W0.shape[0] or x.dtype not in (np.float32, W0.dtype)
            or not x.flags.c_contiguous
            or (max_entries is not None and n * width > max_entries)):
        return None
    x2 = x.reshape(n, width)
    if _core.nonzero_fraction(x2) > _backend.SPARSE_MAX_DENSITY:
        return None  # dense inputs: BLAS, layer by layer
    return x2


def _step_for(net, W, b, sigmoid, x_dtype, n):
    """The network's compiled step for inputs of ``x_dtype``, batches up to ``n``."""
    step = getattr(net, "_compiled_step", None)
    params = (*W, *b)
    if (step is None or step.batch_size < n or step.x_dtype != x_dtype
            or step.sigmoid != sigmoid or len(step.param_arrays) != len(params)
            or any(p is not q for p, q in zip(step.param_arrays, params))
            or step.sizes != (W[0].shape[0], *(w.shape[1] for w in W))):  # reshaped in place
        step = _core.SGDStep(W, b, np.empty((0, W[0].shape[0]), dtype=x_dtype), None, sigmoid,
                             max(n, 100), _backend.STEP_THREADS)
        net._compiled_step = step
    return step


def _leave_layers(net, x, t, loss, run):
    """Set the layers' forward state as the layer-by-layer pass does; returns the loss."""
    step, x2, labels, one_hot, affines, activations = run
    n, dtype = len(x2), affines[0].W.dtype
    inputs = [x2] + [a[:n].copy() for a in step.activations[:-1]]
    for i, layer in enumerate(affines):
        layer.x = inputs[i]
        layer.original_x_shape = x.shape if i == 0 else inputs[i].shape
        layer._dtype = dtype
        layer._state.pop("lists", None)
    for layer, out in zip(activations, inputs[1:]):
        layer.out = out
    last = net.lastLayer
    last.loss = dtype.type(loss)
    last.y = step.probabilities[:n].copy()
    last.t = t.reshape(n, -1) if one_hot else t
    last.labels = labels
    last.one_hot = one_hot
    return last.loss


def _plain_stack(net):
    """(affine layers, activation layers, sigmoid?) of a plain stack, else None."""
    layers = list(net.layers.values())
    if len(layers) % 2 != 1 or len(layers) // 2 + 1 > _core.MAX_LAYERS:
        return None
    if type(net.lastLayer) is not SoftmaxWithLoss:
        return None
    affines, activations = layers[0::2], layers[1::2]
    if len(affines) != net.n_affine:  # layers added by hand: the book's code decides
        return None
    if any(type(a) is not Affine for a in affines):
        return None
    kinds = {type(a) for a in activations}
    if not kinds <= {Relu, Sigmoid} or len(kinds) > 1:
        return None
    dtype = affines[0].W.dtype
    if dtype not in (np.float32, np.float64):
        return None
    for a in affines:
        for p in (a.W, a.b):
            if (not isinstance(p, np.ndarray) or p.dtype != dtype or not p.flags.c_contiguous
                    or not p.flags.writeable):
                return None
        if a.W.ndim != 2 or a.b.shape != (a.W.shape[1],):
            return None
    if any(a.W.shape[1] != c.W.shape[0] for a, c in itertools.pairwise(affines)):
        return None
    return affines, activations, Sigmoid in kinds


def _hard_labels(t, n, n_classes):
    """(int64 class indices, one-hot?) for class indices or exact one-hot rows,
    as SoftmaxWithLoss reads them; (None, False) for anything else (soft labels),
    which the layers handle. Bad labels raise the layers' errors."""
    t = np.asarray(t)
    if t.size == n * n_classes and n_classes > 1:  # SoftmaxWithLoss's one-hot rule
        if t.dtype.kind not in "biuf":
            return None, False
        rows = t.reshape(n, n_classes)
        if not (np.all((rows == 0) | (rows == 1)) and np.all(rows.sum(axis=1) == 1)):
            return None, False
        return rows.argmax(axis=1).astype(np.int64), True
    return np.ascontiguousarray(labels_as_indices(t, n, n_classes)), False
