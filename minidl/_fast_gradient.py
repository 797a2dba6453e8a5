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
    plan = _plan_of(net)
    if plan is None or not isinstance(x, np.ndarray) or x.ndim < 2:
        return None
    x2 = _sparse_rows(x, plan.params[0], MAX_ENTRIES)
    if x2 is None:
        return None
    n = len(x2)
    labels, one_hot = _hard_labels(t, n, plan.n_classes)
    if labels is None:
        return None
    return plan.step_for(x.dtype, n), x2, labels, one_hot, plan.affines, plan.activations


def compiled_accuracy(net, x, t):
    """``net.accuracy(x, t)``, counted in compiled chunks, or None when not covered.

    The parameters and the layers are left alone (only the result is computed).
    """
    if _backend.get_backend() != "cython" or not isinstance(x, np.ndarray) or x.ndim < 2:
        return None
    plan = _plan_of(net)
    if plan is None:
        return None
    x2 = _sparse_rows(x, plan.params[0], None)  # any number of rows: counted in chunks
    if x2 is None:
        return None
    n = len(x2)
    t = np.asarray(t)
    if t.ndim != 1:
        t = np.argmax(t, axis=1)  # as the book's accuracy
    if t.shape != (n,) or t.dtype.kind not in "iu":
        return None
    step = plan.step_for(x.dtype, 1)
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


class _Plan:
    """A network's plain stack as ``_plain_stack`` found it, and its compiled pass.

    Kept on the network (``net._compiled_plan``) so that the next call checks in
    a few identity tests (``still_holds``) what finding it took: the same layers
    dict holding the same layers and last layer, the same W and b arrays in the
    affine layers, with the shapes, strides and dtypes they had (arrays can be
    reshaped in place). Anything else and the stack is examined afresh.
    """

    __slots__ = (
        "activations",
        "affines",
        "last",
        "layers",
        "layout",
        "n_classes",
        "params",
        "sigmoid",
        "step",
        "values",
    )

    def __init__(self, net, affines, activations, sigmoid):
        self.layers, self.values, self.last = net.layers, tuple(net.layers.values()), net.lastLayer
        self.affines, self.activations, self.sigmoid = affines, activations, sigmoid
        self.params = tuple(p for a in affines for p in (a.W, a.b))  # W1, b1, W2, ...
        self.layout = _layout(self.params)
        self.n_classes = affines[-1].W.shape[1]
        self.step = None

    def still_holds(self, net):
        return (net.layers is self.layers and net.lastLayer is self.last
                and tuple(self.layers.values()) == self.values  # layers compare by identity
                and all(a.W is W and a.b is b
                        for a, W, b in zip(self.affines, self.params[0::2], self.params[1::2]))
                and _layout(self.params) == self.layout)

    def step_for(self, x_dtype, n):
        """The compiled pass for inputs of ``x_dtype``, with buffers for ``n`` rows."""
        step = self.step
        if step is None or step.batch_size < n or step.x_dtype != x_dtype:
            W, b = list(self.params[0::2]), list(self.params[1::2])
            step = _core.SGDStep(W, b, np.empty((0, W[0].shape[0]), dtype=x_dtype), None,
                                 self.sigmoid, max(n, 100), _backend.STEP_THREADS)
            self.step = step
        return step


def _layout(params):
    return tuple((p.shape, p.strides, p.dtype) for p in params)


def _plan_of(net):
    """The network's ``_Plan`` (kept from the last call while it still holds), or None
    when the network is not a plain stack."""
    plan = net.__dict__.get("_compiled_plan")
    if plan is not None and plan.still_holds(net):
        return plan
    stack = _plain_stack(net)
    plan = None if stack is None else _Plan(net, *stack)
    net._compiled_plan = plan
    return plan


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
    return labels_as_indices(t, n, n_classes), False
