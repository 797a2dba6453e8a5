"""The book's networks: ``TwoLayerNet``, ``ThreeLayerNet`` and ``MultiLayerNet``.

All three are stacks of ``Affine`` and activation layers ending in
``SoftmaxWithLoss``. ``params`` is a plain dict (``W1``, ``b1``, ...) whose
arrays the ``Affine`` layers share, so ``params[key] -= lr * grad[key]``
trains the network; ``layers`` is an OrderedDict in forward order.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ._atomic import atomic_write
from ._checks import FLOAT_DTYPES
from ._fast_gradient import compiled_accuracy, compiled_gradient, compiled_loss
from .gradient import numerical_gradient
from .layers import Affine, Relu, Sigmoid, SoftmaxWithLoss
from .numgrad import numerical_gradient_of, use_fast_path

__all__ = ["MultiLayerNet", "ThreeLayerNet", "TwoLayerNet", "load_network"]

ACTIVATIONS = {"relu": Relu, "sigmoid": Sigmoid}
EVAL_CHUNK = 8192  # rows per forward pass in accuracy()
FORMAT_VERSION = 1


class _LayerNet:
    """What the three networks share: build, predict, loss, gradients, save."""

    def __init__(self, sizes, activation="relu", weight_init_std=0.01,
                 weight_decay_lambda=0.0, dtype=np.float64):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        sizes = [int(s) for s in sizes]
        if any(s < 1 for s in sizes):
            raise ValueError(f"layer sizes must be positive integers, got {sizes}")
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        self.sizes = sizes
        self.activation = activation
        self.weight_init_std = weight_init_std
        self.weight_decay_lambda = weight_decay_lambda
        self.dtype = dtype

        # initialise the weights (the global np.random state, as the book does)
        self.params = {}
        for i in range(1, len(sizes)):
            scale = _init_scale(weight_init_std, sizes[i - 1])
            W = scale * np.random.randn(sizes[i - 1], sizes[i])
            self.params[f"W{i}"] = W.astype(dtype, copy=False)
            self.params[f"b{i}"] = np.zeros(sizes[i], dtype=dtype)

        # build the layers
        self.layers = OrderedDict()
        n_affine = len(sizes) - 1
        for i in range(1, n_affine + 1):
            self.layers[f"Affine{i}"] = Affine(self.params[f"W{i}"], self.params[f"b{i}"])
            if i < n_affine:
                self.layers[self._activation_name(i)] = ACTIVATIONS[activation]()
        self.lastLayer = SoftmaxWithLoss()

    def _activation_name(self, i):
        return f"{self.activation.capitalize()}{i}"

    def __getstate__(self):
        # copies and pickles leave out the compiled pass's buffers (rebuilt on use)
        state = self.__dict__.copy()
        state.pop("_compiled_plan", None)
        return state

    @property
    def last_layer(self):  # MultiLayerNet's name for it in the book
        return self.lastLayer

    @property
    def n_affine(self):
        return len(self.sizes) - 1

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    # x: input data, t: labels
    def loss(self, x, t):
        if not self.weight_decay_lambda:  # one compiled forward pass when it can
            loss = compiled_loss(self, x, t)
            if loss is not None:
                return loss
        y = self.predict(x)
        loss = self.lastLayer.forward(y, t)
        if self.weight_decay_lambda:
            for i in range(1, self.n_affine + 1):
                W = self.params[f"W{i}"]
                loss += 0.5 * self.weight_decay_lambda * np.sum(W ** 2)
        return loss

    def accuracy(self, x, t):
        """Fraction of rows of ``x`` whose highest score is the label in ``t``.

        Evaluated in chunks of ``EVAL_CHUNK`` rows, so that a whole dataset never
        needs its activations (or a float64 copy of its images) at once; plain
        stacks on sparse inputs count in compiled chunks (``minidl._fast_gradient``).
        """
        accuracy = compiled_accuracy(self, x, t)  # plain stacks on sparse inputs
        if accuracy is not None:
            return accuracy
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        correct = 0
        for start in range(0, x.shape[0], EVAL_CHUNK):
            y = self.predict(x[start:start + EVAL_CHUNK])
            correct += int(np.sum(np.argmax(y, axis=1) == t[start:start + EVAL_CHUNK]))
        accuracy = correct / float(x.shape[0])
        return accuracy

    # x: input data, t: labels
    def numerical_gradient(self, x, t, method="auto"):
        """Central differences of the loss for every parameter, h = 1e-4.

        ``method='generic'`` runs the book's loop below (2 full losses per
        entry); 'auto' (default) computes the same numbers from one cached
        forward pass with ``minidl.numgrad`` when the network is a standard
        stack, else the loop; 'fast' insists on ``minidl.numgrad`` (which
        evaluates float32 networks' losses in float64: see its docstring).
        """
        if use_fast_path(self, method):
            return numerical_gradient_of(self, x, t)
        loss_W = lambda W: self.loss(x, t)

        grads = {}
        for key in self.params:
            grads[key] = numerical_gradient(loss_W, self.params[key])
        return grads

    def gradient(self, x, t):
        """Gradients of the loss for every parameter, by backpropagation.

        A plain stack on a sparse batch runs in one compiled call that leaves the
        layers as the code below does (``minidl._fast_gradient``); the rest runs
        the book's code.
        """
        grads = compiled_gradient(self, x, t)
        if grads is not None:
            return grads

        # forward
        self.loss(x, t)

        # backward
        dout = 1
        dout = self.lastLayer.backward(dout)

        layers = list(self.layers.values())
        layers.reverse()
        for layer in layers[:-1]:
            dout = layer.backward(dout)
        layers[-1].backward(dout, need_dx=False)  # nobody uses the input's gradient

        grads = {}
        for i in range(1, self.n_affine + 1):
            affine = self.layers[f"Affine{i}"]
            grads[f"W{i}"] = affine.dW
            if self.weight_decay_lambda:
                grads[f"W{i}"] = affine.dW + self.weight_decay_lambda * affine.W
            grads[f"b{i}"] = affine.db
        return grads

    # -- saving and loading ------------------------------------------------------
    def architecture(self) -> dict:
        return {
            "class": type(self).__name__,
            "sizes": self.sizes,
            "activation": self.activation,
            "weight_decay_lambda": self.weight_decay_lambda,
            "dtype": self.dtype.name,
        }

    def save(self, path) -> None:
        """Write parameters and architecture to ``path`` (``.npz``, no pickle), atomically."""
        meta = json.dumps({"format": FORMAT_VERSION, **self.architecture()})
        with atomic_write(Path(path)) as fh:
            np.savez(fh, __architecture__=np.array(meta), **self.params)

    @classmethod
    def load(cls, path):
        """Rebuild a network saved with ``save`` (whichever of the three it was)."""
        return load_network(path)


def _init_scale(weight_init_std, fan_in):
    """The book's MultiLayerNet choice: a number, or 'relu'/'he', 'sigmoid'/'xavier'."""
    if isinstance(weight_init_std, str):
        key = weight_init_std.lower()
        if key in ("relu", "he"):
            return np.sqrt(2.0 / fan_in)  # recommended with ReLU
        if key in ("sigmoid", "xavier"):
            return np.sqrt(1.0 / fan_in)  # recommended with sigmoid
        raise ValueError(f"weight_init_std: unknown initialisation {weight_init_std!r}")
    return float(weight_init_std)


class TwoLayerNet(_LayerNet):
    """input -> Affine1 -> Relu1 -> Affine2 -> softmax with loss."""

    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01,
                 activation="relu", dtype=np.float64):
        super().__init__([input_size, hidden_size, output_size], activation,
                         weight_init_std, dtype=dtype)


class ThreeLayerNet(_LayerNet):
    """input -> Affine1 -> Relu1 -> Affine2 -> Relu2 -> Affine3 -> softmax with loss."""

    def __init__(self, input_size, hidden_size, hidden_size2, output_size,
                 weight_init_std=0.01, activation="relu", dtype=np.float64):
        super().__init__([input_size, hidden_size, hidden_size2, output_size], activation,
                         weight_init_std, dtype=dtype)


class MultiLayerNet(_LayerNet):
    """A fully connected network with any number of hidden layers.

    ``hidden_size_list``: sizes of the hidden layers, e.g. ``[100, 50]``;
    ``activation``: 'relu' or 'sigmoid'; ``weight_init_std``: a number, or
    'relu'/'he' or 'sigmoid'/'xavier' for scaled initialisation;
    ``weight_decay_lambda``: L2 weight decay.
    """

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std=0.01, weight_decay_lambda=0.0, dtype=np.float64):
        if isinstance(hidden_size_list, int):
            hidden_size_list = [hidden_size_list]
        super().__init__([input_size, *hidden_size_list, output_size], activation,
                         weight_init_std, weight_decay_lambda, dtype)
        self.input_size = input_size
        self.hidden_size_list = list(hidden_size_list)
        self.output_size = output_size
        self.hidden_layer_num = len(self.hidden_size_list)

    def _activation_name(self, i):
        return f"Activation_function{i}"


def load_network(path):
    """Rebuild a network from a file written by ``save``.

    Raises ``ValueError`` naming the file when it is not a readable minidl model.
    """
    try:
        with np.load(os.fspath(path), allow_pickle=False) as data:
            return _load_from(data, path)
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable minidl model file ({exc})") from None


def _load_from(data, path):
    if "__architecture__" not in data.files:
        raise ValueError(f"{path}: not a minidl model file (no architecture record)")
    try:
        meta = json.loads(str(data["__architecture__"]))
        kind, sizes = meta["class"], meta["sizes"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: damaged architecture record ({exc})") from None
    if not isinstance(sizes, list) or not all(isinstance(s, int) for s in sizes):
        raise ValueError(f"{path}: damaged architecture record (sizes {sizes!r})")
    common = {"activation": meta.get("activation", "relu"), "dtype": meta.get("dtype", "float64")}
    rng_state = np.random.get_state()  # building draws weights; loading must not move the seed
    try:
        net = _build(kind, sizes, meta, common, path)
    finally:
        np.random.set_state(rng_state)
    for key, value in net.params.items():
        if key not in data.files:
            raise ValueError(f"{path}: parameter {key} is missing")
        saved = data[key]
        if saved.shape != value.shape:
            raise ValueError(f"{path}: parameter {key} has shape {saved.shape}, "
                             f"expected {value.shape}")
        value[...] = saved  # in place: the layers share these arrays
    return net


def _build(kind, sizes, meta, common, path):
    if kind == "TwoLayerNet" and len(sizes) == 3:
        return TwoLayerNet(*sizes, **common)
    if kind == "ThreeLayerNet" and len(sizes) == 4:
        return ThreeLayerNet(*sizes, **common)
    if kind == "MultiLayerNet" and len(sizes) >= 2:
        return MultiLayerNet(sizes[0], sizes[1:-1], sizes[-1],
                             weight_decay_lambda=meta.get("weight_decay_lambda", 0.0), **common)
    raise ValueError(f"{path}: unknown network {kind!r} with sizes {sizes}")
