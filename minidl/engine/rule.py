"""The one rule: when a compiled pass may stand in for the book's code.

minidl's compiled passes (a network's whole ``gradient``, ``loss`` and
``accuracy`` in one call, ``minidl.train``'s whole steps, the exact network
numerical gradient) compute what the book's layer-by-layer code computes, for
one kind of network: minidl's own ``TwoLayerNet``/``ThreeLayerNet``/``MultiLayerNet``
as built, and ``MultiLayerNetExtend`` without Dropout (MultiLayerNet's stack, or
with batch normalisation Affine, BatchNorm, activation, ..., Affine: a stack with
``norms``, which only the network passes take, not ``minidl.train``'s steps nor the
exact numerical gradient). This module decides, for a network and for an input, whether that is
what is in front of it; every shortcut asks here and nowhere else, and anything
refused runs the book's code.

A network is taken when:

- it is one of minidl's networks and none of its methods (``predict``, ``loss``,
  ``gradient``, ``accuracy``, ``numerical_gradient``) is overridden, by a
  subclass or on the instance (a ``MultiLayerNetExtend``'s are its own class's),
  and it does not use Dropout (``use_dropout`` false);
- ``network.layers`` holds exactly Affine, activation, Affine, ..., Affine, of
  minidl's own classes (``Affine``; ``Relu`` or ``Sigmoid``, one kind throughout),
  with a ``BatchNormalization`` between each hidden Affine and its activation
  when (and only when) ``use_batchnorm`` is set and the caller takes ``norms``,
  none with its own ``forward``/``backward``, and ``lastLayer`` is minidl's
  ``SoftmaxWithLoss``;
- each Affine layer computes with the very arrays in ``params`` (``W1``, ``b1``,
  ...), each BatchNormalization with ``gamma1``, ``beta1``, ..., all float32 or
  float64, of chained shapes, and ``params`` holds nothing else;
- ``weight_decay_lambda`` is a finite number.

An input is taken (``batch``) when ``x`` is an array of ``(N, ...)`` with the
first layer's width whose dtype NumPy's promotion with the weights turns into
the weights' dtype (float32 images, uint8, float16, ...; float64 images with a
float32 network compute in float64 in the book, so they are refused), and the
labels are class indices in range or exact one-hot rows. Soft labels, bad
labels and anything else run the book's code (which gives the book's answer or
its error).

The compiled side (``minidl.engine.passes``, ``.runner``) adds what only it
knows: whether the weights are finite (its kernels skip zero inputs, where NumPy
would compute 0 * inf = NaN), how many layers and rows its buffers take.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..backend import ops
from ..backend.checks import FLOAT_DTYPES, labels_as_indices, native
from ..layers import Affine, BatchNormalization, Relu, Sigmoid, SoftmaxWithLoss

__all__ = ["Batch", "Stack", "batch", "examine", "why_not"]

# What a network or a layer must not override for a compiled pass to stand in for it.
NETWORK_METHODS = ("predict", "loss", "gradient", "accuracy", "numerical_gradient")
LAYER_METHODS = ("forward", "backward")
ACTIVATIONS = (Relu, Sigmoid)


class Stack:
    """A network found to be the book's stack, and what was checked to find it.

    ``still_holds(net)`` re-checks, by identity, what finding it took: the same
    layers dict holding the same layers and last layer, the same parameter
    arrays in the layers and in ``params``, with the shapes, strides, dtypes and
    flags they had (arrays can be reshaped in place). The stack keeps every one
    of those objects alive, so their ``id``s stand for them.
    """

    __slots__ = (
        "W",
        "activations",
        "affines",
        "b",
        "decay_term",
        "dtype",
        "last",
        "layer_ids",
        "layers",
        "layers_dict",
        "layout",
        "norm_ids",
        "norm_params",
        "norms",
        "param_ids",
        "param_keys",
        "params",
        "params_dict",
        "sigmoid",
        "sizes",
        "stack_ids",
        "weight_decay",
    )

    def __init__(self, net, affines, activations, weight_decay, decay_term, norms=()):
        self.layers_dict, self.last, self.params_dict = net.layers, net.lastLayer, net.params
        self.layers = tuple(net.layers.values())
        self.layer_ids = tuple(map(id, self.layers))
        self.param_keys = tuple(net.params)
        self.param_ids = tuple(map(id, net.params.values()))
        self.affines, self.activations = affines, activations
        self.sigmoid = bool(activations) and type(activations[0]) is Sigmoid
        self.W = tuple(a.W for a in affines)
        self.b = tuple(a.b for a in affines)
        self.weight_decay = weight_decay  # lambda, 0 where the book's loss has no L2 term
        self.decay_term = decay_term  # the book's loss adds 0.5 lambda sum(W ** 2), even at 0
        self.params = tuple(p for pair in zip(self.W, self.b) for p in pair)  # W1, b1, W2, ...
        self.stack_ids = tuple(map(id, self.params))
        # BatchNormalization layers between the hidden Affine layers and their
        # activations (none in MultiLayerNet's stack), and their gamma1, beta1, ...
        self.norms = norms
        self.norm_params = tuple(p for n in norms for p in (n.gamma, n.beta))
        self.norm_ids = tuple(map(id, self.norm_params))
        self.layout = _layout(self.params + self.norm_params)
        self.sizes = (self.W[0].shape[0],) + tuple(w.shape[1] for w in self.W)
        dtypes = {p.dtype for p in self.params + self.norm_params}
        # the parameters' one dtype, or None when they mix float32 and float64
        self.dtype = dtypes.pop() if len(dtypes) == 1 else None

    @property
    def n_affine(self) -> int:
        return len(self.affines)

    def still_holds(self, net) -> bool:
        return (net.layers is self.layers_dict and net.lastLayer is self.last
                and net.params is self.params_dict
                and tuple(map(id, self.layers_dict.values())) == self.layer_ids
                and tuple(self.params_dict) == self.param_keys
                and tuple(map(id, self.params_dict.values())) == self.param_ids
                and tuple(id(p) for a in self.affines for p in (a.W, a.b)) == self.stack_ids
                and tuple(id(p) for n in self.norms for p in (n.gamma, n.beta)) == self.norm_ids
                and not (vars(net).keys() & _METHOD_NAMES)
                and (net.weight_decay_lambda if self.decay_term else 0) == self.weight_decay
                and _layout(self.params + self.norm_params) == self.layout)


_METHOD_NAMES = frozenset(NETWORK_METHODS)


def _layout(params) -> tuple:
    return tuple((p.shape, p.strides, p.dtype, p.flags.c_contiguous, p.flags.writeable)
                 for p in params)


def examine(net, norms: bool = False) -> Stack | str:
    """The network's ``Stack`` when compiled passes may stand in for its code, else
    the reason (one line, naming what is different). ``norms``: the caller takes
    stacks with batch normalisation (the network passes do; ``minidl.train``'s
    steps and the exact numerical gradient do not)."""
    cls = type(net)
    book = getattr(cls, "_BOOK_METHODS", None)  # set by minidl.networks' base class
    if book is None:
        return f"{cls.__name__} is not one of minidl's networks"
    for name in NETWORK_METHODS:
        if name in vars(net):
            return f"{name} is replaced on this {cls.__name__}"
        if getattr(cls, name, None) is not book[name]:
            return f"{cls.__name__} overrides {name}"
    if getattr(net, "use_dropout", False):
        return "it uses Dropout (use_dropout): the layer-by-layer code runs"
    normalized = bool(getattr(net, "use_batchnorm", False))
    if normalized and not norms:
        return ("it uses batch normalisation (use_batchnorm): this compiled path takes "
                "Affine/activation stacks only (the network's own passes take it)")
    layers = getattr(net, "layers", None)
    if not isinstance(layers, dict):
        return "network.layers is not a dict of layers"
    items = list(layers.items())
    # a hidden layer is Affine, (BatchNormalization,) activation; then the last Affine
    period = 3 if normalized else 2
    for i, (name, layer) in enumerate(items):
        role = i % period
        if role == 0 and type(layer) is not Affine:
            return (f"layer {name!r} is a {type(layer).__name__} where the compiled passes "
                    "expect minidl's Affine")
        if role == period - 1 and type(layer) not in ACTIVATIONS:
            return (f"layer {name!r} is a {type(layer).__name__} where the compiled passes "
                    "expect minidl's Relu or Sigmoid")
        if 0 < role < period - 1 and type(layer) is not BatchNormalization:
            return (f"layer {name!r} is a {type(layer).__name__} where the compiled passes "
                    "expect minidl's BatchNormalization (use_batchnorm is set)")
        for method in LAYER_METHODS:
            if method in vars(layer):
                return f"layer {name!r} has a {method} of its own"
    if len(items) % period != 1:
        return (f"its {len(items)} layers do not end with an Affine layer after whole "
                f"{'Affine/BatchNorm/activation' if normalized else 'Affine/activation'} groups")
    affines = tuple(layer for _, layer in items[0::period])
    activations = tuple(layer for _, layer in items[period - 1::period])
    norm_layers = tuple(layer for _, layer in items[1::period]) if normalized else ()
    if len({type(a) for a in activations}) > 1:
        return "its activations mix Relu and Sigmoid"
    last = getattr(net, "lastLayer", None)
    if type(last) is not SoftmaxWithLoss:
        return f"its last layer is a {type(last).__name__}, not minidl's SoftmaxWithLoss"
    for method in LAYER_METHODS:
        if method in vars(last):
            return f"its last layer has a {method} of its own"

    n = len(affines)
    if n != getattr(net, "n_affine", None):  # the layers' count its own methods iterate over
        return (f"its layers hold {n} Affine layers where its sizes say "
                f"{getattr(net, 'n_affine', '?')} (layers added or removed by hand)")
    params = getattr(net, "params", None)
    keys = {f"{p}{i}" for i in range(1, n + 1) for p in ("W", "b")}
    keys |= {f"{p}{i}" for i in range(1, len(norm_layers) + 1) for p in ("gamma", "beta")}
    if not isinstance(params, dict) or set(params) != keys:
        return f"its params are {sorted(params) if isinstance(params, dict) else params!r}, " \
               f"expected {sorted(keys)}"
    for i, layer in enumerate(affines, 1):
        for p in ("W", "b"):
            if getattr(layer, p) is not params[f"{p}{i}"]:
                return f"Affine{i}.{p} is not params['{p}{i}']: the book's code computes with " \
                       "the layer's array"
    W = tuple(a.W for a in affines)
    b = tuple(a.b for a in affines)
    for i, (w, v) in enumerate(zip(W, b), 1):
        for key, p in ((f"W{i}", w), (f"b{i}", v)):
            if not isinstance(p, np.ndarray) or p.dtype not in FLOAT_DTYPES:
                return f"params['{key}'] is not a native float32 or float64 array"
        if w.ndim != 2 or v.shape != (w.shape[1],):
            return f"params['W{i}'] {w.shape} and params['b{i}'] {v.shape} do not fit"
        if i < n and w.shape[1] != W[i].shape[0]:
            return f"params['W{i}'] {w.shape} does not feed params['W{i + 1}'] {W[i].shape}"
    for i, layer in enumerate(norm_layers, 1):
        for p in ("gamma", "beta"):
            value = getattr(layer, p)
            if value is not params[f"{p}{i}"]:
                return (f"BatchNorm{i}.{p} is not params['{p}{i}']: the book's code computes "
                        "with the layer's array")
            if not isinstance(value, np.ndarray) or value.dtype not in FLOAT_DTYPES:
                return f"params['{p}{i}'] is not a native float32 or float64 array"
            if value.shape != (W[i - 1].shape[1],):
                return (f"params['{p}{i}'] {value.shape} does not fit params['W{i}'] "
                        f"{W[i - 1].shape}")
    decay_term = bool(getattr(net, "loss_has_weight_decay", False))
    wd = getattr(net, "weight_decay_lambda", 0) if decay_term else 0
    if not isinstance(wd, (int, float, np.integer, np.floating)) or not math.isfinite(wd):
        return f"weight_decay_lambda {wd!r} is not a finite number"
    return Stack(net, affines, activations, wd, decay_term, norm_layers)


def why_not(net) -> str | None:
    """Why minidl's compiled passes (``network.gradient``, ``loss``, ``accuracy``) do
    not stand in for ``net``'s code (its structure, before any input), or None
    when they may."""
    found = examine(net, norms=True)
    return found if isinstance(found, str) else None


class Batch(NamedTuple):
    """An input the compiled passes take: ``x`` as (N, width) in a dtype their
    kernels read (float32, or the network's), ``labels`` as int64 class indices."""

    x: np.ndarray
    labels: np.ndarray
    one_hot: bool
    shape: tuple  # x's shape as given


def input_rows(stack: Stack, x, max_entries: int | None = None) -> np.ndarray | None:
    """``x`` as (N, width) rows the kernels read, or None: see ``batch``."""
    dtype = stack.dtype
    if dtype is None or not isinstance(x, np.ndarray) or x.ndim < 2 or x.shape[0] < 1:
        return None
    n, width = x.shape[0], math.prod(x.shape[1:])
    if width != stack.W[0].shape[0] or (max_entries is not None and n * width > max_entries):
        return None
    if x.dtype != np.float32 and x.dtype != dtype and (
            x.dtype.kind not in "biuf" or np.promote_types(x.dtype, dtype) != dtype):
        return None  # the book computes in another dtype (or cannot compute)
    x = native(x).reshape(n, width)
    if x.dtype not in (np.float32, dtype):
        x = x.astype(dtype)  # uint8, float16, ...: NumPy's promotion, exactly
    return np.ascontiguousarray(x)


def batch(stack: Stack, x, t, max_entries: int | None = None) -> Batch | None:
    """``(x, t)`` as a ``Batch`` the compiled passes take, or None (the book's
    code runs, and gives the book's answer or error)."""
    x2 = input_rows(stack, x, max_entries)
    if x2 is None:
        return None
    labels, one_hot = hard_labels(t, len(x2), stack.W[-1].shape[1])
    if labels is None or (one_hot and np.promote_types(t.dtype, stack.dtype) != stack.dtype):
        return None  # (float64 one-hot rows make the book's backward pass float64)
    return Batch(x=x2, labels=labels, one_hot=one_hot, shape=x.shape)


def hard_labels(t, n: int, n_classes: int):
    """(int64 class indices, one-hot?) for class indices in range or exact one-hot
    rows (N, classes), as ``SoftmaxWithLoss`` reads them; (None, False) for
    anything else, which the layers handle (soft labels) or refuse."""
    t = np.asarray(t)
    if t.size == n * n_classes and n_classes > 1:  # SoftmaxWithLoss's one-hot rule
        if t.dtype.kind not in "biuf" or t.shape != (n, n_classes):
            return None, False
        labels = ops().one_hot_indices(t)
        return (None, False) if labels is None else (labels, True)
    if t.dtype.kind not in "iu" or t.shape != (n,):
        return None, False
    try:
        return labels_as_indices(t, n, n_classes), False
    except ValueError:  # out of range: the layers raise the error
        return None, False
