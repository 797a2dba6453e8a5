"""The book's networks: ``TwoLayerNet``, ``ThreeLayerNet``, ``MultiLayerNet`` and
``MultiLayerNetExtend``.

The first three are stacks of ``Affine`` and activation layers ending in
``SoftmaxWithLoss``; ``MultiLayerNetExtend`` adds the book's ``BatchNormalization``
and ``Dropout`` layers. ``params`` is a plain dict (``W1``, ``b1``, ...) whose
arrays the layers share, so ``params[key] -= lr * grad[key]`` (or an optimizer's
``update``) trains the network; ``layers`` is an OrderedDict in forward order.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np

from . import _extend_numgrad
from ._accuracy import accuracy_inputs
from ._atomic import atomic_write
from ._model_file import FORMAT_VERSION, ModelFile
from ._serial import lock_of, network_state, serialized
from .backend import ops
from .backend.checks import FLOAT_DTYPES
from .convnets import CONVNETS, DeepConvNet, SimpleConvNet, build_convnet, convnet_param_shapes
from .functions import weight_decay_loss
from .gradcheck import fast_numerical_gradient
from .gradient import numerical_gradient
from .layers import Affine, BatchNormalization, Dropout, Relu, Sigmoid, SoftmaxWithLoss

__all__ = ["DeepConvNet", "MultiLayerNet", "MultiLayerNetExtend", "SimpleConvNet",
           "ThreeLayerNet", "TwoLayerNet", "load_network"]

ACTIVATIONS = {"relu": Relu, "sigmoid": Sigmoid}
EVAL_CHUNK = 8192  # rows per forward pass in accuracy()


class _LayerNet:
    """What the three networks share: build, predict, loss, gradients, save.

    Each method asks ``ops().fused(self)`` first: minidl's compiled passes, which
    ``minidl.engine`` lets stand in for the code below only when they compute what
    it computes (see ``minidl.engine.rule``); otherwise the code below runs. A
    network's methods hold its lock, so that two threads using one network get,
    call by call, what serial calls give.
    """

    def __init__(self, sizes, activation="relu", weight_init_std=0.01,
                 weight_decay_lambda=0.0, dtype=np.float64):
        self._init_weights(sizes, activation, weight_init_std, weight_decay_lambda, dtype)

        # build the layers
        self.layers = OrderedDict()
        n_affine = self.n_affine
        for i in range(1, n_affine + 1):
            self.layers[f"Affine{i}"] = Affine(self.params[f"W{i}"], self.params[f"b{i}"])
            if i < n_affine:
                self.layers[self._activation_name(i)] = ACTIVATIONS[activation]()
        self.lastLayer = SoftmaxWithLoss()

    def _init_weights(self, sizes, activation, weight_init_std, weight_decay_lambda, dtype):
        """Check the architecture and draw ``params`` (W1, b1, W2, b2, ...) as the book does."""
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        sizes = [int(s) for s in sizes]
        if any(s < 1 for s in sizes):
            raise ValueError(f"layer sizes must be positive integers, got {sizes}")
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        _check_weight_decay(weight_decay_lambda)
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

    def _activation_name(self, i):
        return f"{self.activation.capitalize()}{i}"

    def __repr__(self) -> str:
        # what a student needs to tell networks apart, not the arrays
        parts = []
        sizes = getattr(self, "sizes", None)
        if sizes:
            parts.append("-".join(str(s) for s in sizes))
        if getattr(self, "activation", None):
            parts.append(str(self.activation))
        if getattr(self, "dtype", None) is not None:
            parts.append(np.dtype(self.dtype).name)
        n = sum(int(np.size(p)) for p in getattr(self, "params", {}).values())
        parts.append(f"{n:,} parameters")
        if getattr(self, "weight_decay_lambda", 0):
            parts.append(f"weight decay {self.weight_decay_lambda:g}")
        return f"{type(self).__name__}({', '.join(parts)})"

    @property
    def _lock(self):
        """The lock a call on this network holds (``minidl._serial``)."""
        return lock_of(self)

    def __getstate__(self):
        return network_state(self)  # copies and pickles leave out the lock

    @property
    def last_layer(self):  # MultiLayerNet's name for it in the book
        return self.lastLayer

    @last_layer.setter
    def last_layer(self, layer):
        self.lastLayer = layer

    @property
    def n_affine(self):
        return len(self.sizes) - 1

    @serialized
    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    # x: input data, t: labels
    @serialized
    def loss(self, x, t):
        fused = ops().fused(self)  # one compiled forward pass, when it may
        loss = fused.loss(x, t) if fused is not None else None
        if loss is not None:
            return loss
        y = self.predict(x)
        return self.lastLayer.forward(y, t) + self._weight_decay()

    # whether the book's loss for this network adds the L2 penalty (MultiLayerNet's
    # does, even at lambda 0: 0 * sum(W ** 2); the two- and three-layer nets' do not)
    loss_has_weight_decay = False

    def _weight_decay(self):
        """The book's L2 penalty, 0.5 * lambda * sum(W ** 2) over the weights, in its order."""
        if not self.loss_has_weight_decay:
            return 0
        weights = [self.params[f"W{i}"] for i in range(1, self.n_affine + 1)]
        return weight_decay_loss(weights, self.weight_decay_lambda)

    @serialized
    def accuracy(self, x, t):
        """Fraction of rows of ``x`` whose highest score is the label in ``t``.

        Evaluated in chunks of ``EVAL_CHUNK`` rows, so that a whole dataset never
        needs its activations (or a float64 copy of its images) at once.
        """
        x, t = accuracy_inputs(x, t)
        fused = ops().fused(self)  # counted in compiled chunks, when it may
        accuracy = fused.accuracy(x, t) if fused is not None else None
        if accuracy is not None:
            return accuracy
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        correct = 0
        for start in range(0, x.shape[0], EVAL_CHUNK):
            y = self.predict(x[start:start + EVAL_CHUNK])
            correct += int(np.sum(np.argmax(y, axis=1) == t[start:start + EVAL_CHUNK]))
        return correct / float(x.shape[0])

    # x: input data, t: labels
    @serialized
    def numerical_gradient(self, x, t, method="auto"):
        """Central differences of the loss for every parameter, h = 1e-4.

        ``method='generic'`` runs the book's loop below (2 full losses per
        entry); 'auto' (default) computes the same numbers from one cached
        forward pass (``minidl.engine.netgrad``) when the network is a standard
        stack, else the loop; 'fast' insists on the cached pass (which
        evaluates float32 networks' losses in float64: see its docstring).
        """
        grads = fast_numerical_gradient(self, x, t, method)
        if grads is not None:
            return grads
        loss_W = lambda W: self.loss(x, t)

        grads = {}
        for key in self.params:
            grads[key] = numerical_gradient(loss_W, self.params[key])
        return grads

    @serialized
    def gradient(self, x, t):
        """Gradients of the loss for every parameter, by backpropagation.

        A plain stack on a sparse batch runs in one compiled call that leaves the
        layers as the code below does (``minidl.engine``); the rest runs the
        book's code.
        """
        fused = ops().fused(self)
        grads = fused.gradient(x, t) if fused is not None else None
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
        if type(layers[-1]) is Affine:
            layers[-1].backward(dout, need_dx=False)  # nobody uses the input's gradient
        else:
            layers[-1].backward(dout)

        grads = {}
        for i in range(1, self.n_affine + 1):
            affine = self.layers[f"Affine{i}"]
            grads[f"W{i}"] = affine.dW
            if self.loss_has_weight_decay and self.weight_decay_lambda:
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
            np.savez(fh, __architecture__=np.array(meta), **self.params, **self._saved_state())

    def _saved_state(self) -> dict:
        """Arrays beyond ``params`` that ``save`` writes (MultiLayerNetExtend's running
        statistics); ``_restore_state`` reads them back."""
        return {}

    def _restore_state(self, data, path) -> None:
        pass

    @classmethod
    def load(cls, path):
        """Rebuild a network saved with ``save`` (whichever of the three it was)."""
        return load_network(path)


def _check_weight_decay(weight_decay_lambda):
    if isinstance(weight_decay_lambda, (bool, np.bool_)) or not isinstance(
            weight_decay_lambda, (int, float, np.integer, np.floating)):
        raise TypeError(f"weight_decay_lambda must be a number, got {weight_decay_lambda!r}")
    if not 0 <= weight_decay_lambda < np.inf:  # (NaN fails too)
        raise ValueError(f"weight_decay_lambda must be a finite number >= 0, "
                         f"got {weight_decay_lambda}")


# what the one rule (minidl.engine.rule) checks a network has not overridden
_LayerNet._BOOK_METHODS = {name: getattr(_LayerNet, name) for name in
                           ("predict", "loss", "gradient", "accuracy", "numerical_gradient")}


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
    """A fully connected network with any number of hidden layers (``common/multi_layer_net.py``).

    ``hidden_size_list``: sizes of the hidden layers, e.g. ``[100, 50]``;
    ``activation``: 'relu' or 'sigmoid'; ``weight_init_std``: a number, or
    'relu'/'he' (He's sqrt(2 / n), the default, as the book's) or
    'sigmoid'/'xavier' (Xavier's sqrt(1 / n)), n the layer's fan-in;
    ``weight_decay_lambda``: L2 weight decay, ``0.5 * lambda * sum(W ** 2)``
    added to the loss and ``lambda * W`` to each weight's gradient.
    Layers: ``Affine1``, ``Activation_function1``, ..., then ``last_layer``.
    """

    loss_has_weight_decay = True

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, dtype=np.float64):
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


class MultiLayerNetExtend(_LayerNet):
    """MultiLayerNet with Dropout and batch normalisation (``common/multi_layer_net_extend.py``).

    The book's arguments, plus ``dtype``: ``use_dropout`` puts a
    ``Dropout(dropout_ration)`` after each hidden activation, ``use_batchnorm``
    a ``BatchNormalization(gamma{i}, beta{i})`` between each hidden Affine and
    its activation (``gamma`` starts at ones, ``beta`` at zeros, both in
    ``params``). Layers: ``Affine1``, ``BatchNorm1``, ``Activation_function1``,
    ``Dropout1``, ..., the last ``Affine``, then ``last_layer``.

    ``predict(x, train_flg=False)`` and ``loss(x, t, train_flg=False)`` pass
    ``train_flg`` to the Dropout and BatchNorm layers (by name, as the book's);
    ``gradient`` runs them in training mode (drawing new masks, moving the
    running statistics) and ``accuracy`` in test mode, as the book does.
    ``numerical_gradient`` is the book's loop on ``loss(x, t, train_flg=True)``:
    with Dropout every evaluation draws a new mask, as in the book.

    Without Dropout (``use_dropout`` false) its ``gradient``, ``loss`` and
    ``accuracy`` run on minidl's compiled passes when the one rule
    (``minidl.engine.rule``) takes it, as MultiLayerNet's do: without batch
    normalisation it is MultiLayerNet's stack, with it Affine, BatchNorm,
    activation, ... on NumPy's BLAS and minidl's BatchNorm kernels
    (``minidl.engine.normalized``), the layers left holding what the code below
    leaves. With Dropout (whose masks ``np.random`` draws layer by layer), or
    whatever the rule refuses, the layer-by-layer code below runs.
    """

    loss_has_weight_decay = True

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, use_dropout=False,
                 dropout_ration=0.5, use_batchnorm=False, dtype=np.float64):
        if isinstance(hidden_size_list, int):
            hidden_size_list = [hidden_size_list]
        hidden_size_list = list(hidden_size_list)
        self._init_weights([input_size, *hidden_size_list, output_size], activation,
                           weight_init_std, weight_decay_lambda, dtype)
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size_list = hidden_size_list
        self.hidden_layer_num = len(hidden_size_list)
        self.use_dropout = bool(use_dropout)
        self.dropout_ration = dropout_ration
        self.use_batchnorm = bool(use_batchnorm)

        # build the layers, in the book's order (gamma/beta join params after the weights)
        activation_layer = ACTIVATIONS[activation]
        self.layers = OrderedDict()
        for idx in range(1, self.hidden_layer_num + 1):
            self.layers[f"Affine{idx}"] = Affine(self.params[f"W{idx}"], self.params[f"b{idx}"])
            if self.use_batchnorm:
                self.params[f"gamma{idx}"] = np.ones(hidden_size_list[idx - 1], dtype=self.dtype)
                self.params[f"beta{idx}"] = np.zeros(hidden_size_list[idx - 1], dtype=self.dtype)
                self.layers[f"BatchNorm{idx}"] = BatchNormalization(self.params[f"gamma{idx}"],
                                                                    self.params[f"beta{idx}"])

            self.layers[f"Activation_function{idx}"] = activation_layer()

            if self.use_dropout:
                self.layers[f"Dropout{idx}"] = Dropout(dropout_ration)

        idx = self.hidden_layer_num + 1
        self.layers[f"Affine{idx}"] = Affine(self.params[f"W{idx}"], self.params[f"b{idx}"])

        self.lastLayer = SoftmaxWithLoss()

    @serialized
    def predict(self, x, train_flg=False):
        for key, layer in self.layers.items():
            if "Dropout" in key or "BatchNorm" in key:
                x = layer.forward(x, train_flg)
            else:
                x = layer.forward(x)

        return x

    def _fused(self):
        """The compiled passes, for a network without Dropout that the one rule
        takes, else None."""
        if self.use_dropout:
            return None
        return ops().fused(self)

    @serialized
    def loss(self, x, t, train_flg=False):
        """Cross-entropy of ``predict(x, train_flg)`` against ``t``, plus the weight decay."""
        fused = self._fused()  # one compiled forward pass, when it may
        loss = fused.loss(x, t, train_flg) if fused is not None else None
        if loss is not None:
            return loss
        y = self.predict(x, train_flg)
        return self.lastLayer.forward(y, t) + self._weight_decay()

    @serialized
    def accuracy(self, x, t):
        """Fraction of rows whose highest score (in test mode) is the label; in chunks
        of ``EVAL_CHUNK`` rows, which in test mode are independent of each other."""
        x, t = accuracy_inputs(x, t)
        fused = self._fused()  # counted in compiled chunks, when it may
        accuracy = fused.accuracy(x, t) if fused is not None else None
        if accuracy is not None:
            return accuracy
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        correct = 0
        for start in range(0, x.shape[0], EVAL_CHUNK):
            y = self.predict(x[start:start + EVAL_CHUNK], train_flg=False)
            correct += int(np.sum(np.argmax(y, axis=1) == t[start:start + EVAL_CHUNK]))
        return correct / float(x.shape[0])

    @serialized
    def numerical_gradient(self, x, t, method="auto"):
        """Central differences of ``loss(x, t, train_flg=True)`` for every entry, h = 1e-4.

        Keys in the book's order (W1, b1, gamma1, beta1, W2, ...).
        ``method='generic'`` runs the book's loop below (two evaluations of the
        loss per entry); 'auto' (default) computes the same numbers from one
        cached forward pass (``minidl._extend_numgrad``), and leaves the
        BatchNorm layers' running statistics as the loop does, when the network
        is float64, without Dropout (whose masks the loop redraws at every
        evaluation) and as built; 'fast' insists on the cached pass.
        """
        if method not in ("auto", "fast", "generic"):
            raise ValueError(f"numerical_gradient: method must be 'auto', 'fast' or "
                             f"'generic', got {method!r}")
        if method != "generic":
            problem = _extend_numgrad.problem(self)
            if problem is None:
                return _extend_numgrad.numerical_gradient(self, x, t)
            if method == "fast":
                raise ValueError(f"numerical_gradient(method='fast'): {problem}")
        loss_W = lambda W: self.loss(x, t, train_flg=True)

        grads = {}
        for idx in range(1, self.hidden_layer_num + 2):
            for key in self._param_keys(idx):
                grads[key] = numerical_gradient(loss_W, self.params[key])
        return grads

    @serialized
    def gradient(self, x, t):
        """Gradients of ``loss(x, t, train_flg=True)`` by backpropagation (the book's order)."""
        fused = self._fused()  # one compiled call, when it may (as MultiLayerNet's)
        grads = fused.gradient(x, t) if fused is not None else None
        if grads is not None:
            return grads

        # forward
        self.loss(x, t, train_flg=True)

        # backward
        dout = 1
        dout = self.lastLayer.backward(dout)

        layers = list(self.layers.values())
        layers.reverse()
        for layer in layers[:-1]:
            dout = layer.backward(dout)
        if type(layers[-1]) is Affine:
            layers[-1].backward(dout, need_dx=False)  # nobody uses the input's gradient
        else:
            layers[-1].backward(dout)

        grads = {}
        for idx in range(1, self.hidden_layer_num + 2):
            affine = self.layers[f"Affine{idx}"]
            grads[f"W{idx}"] = affine.dW + self.weight_decay_lambda * self.params[f"W{idx}"]
            grads[f"b{idx}"] = affine.db

            if self.use_batchnorm and idx != self.hidden_layer_num + 1:
                grads[f"gamma{idx}"] = self.layers[f"BatchNorm{idx}"].dgamma
                grads[f"beta{idx}"] = self.layers[f"BatchNorm{idx}"].dbeta

        return grads

    def _param_keys(self, idx):
        if self.use_batchnorm and idx != self.hidden_layer_num + 1:
            return (f"W{idx}", f"b{idx}", f"gamma{idx}", f"beta{idx}")
        return (f"W{idx}", f"b{idx}")

    # -- saving and loading: the architecture, and BatchNorm's running statistics ---------
    def architecture(self) -> dict:
        return {**super().architecture(), "use_dropout": self.use_dropout,
                "dropout_ration": self.dropout_ration, "use_batchnorm": self.use_batchnorm}

    def _saved_state(self) -> dict:
        state = {}
        for name, layer in self.layers.items():
            if isinstance(layer, BatchNormalization) and layer.running_mean is not None:
                state[f"{name}.running_mean"] = layer.running_mean
                state[f"{name}.running_var"] = layer.running_var
        return state

    def _restore_state(self, data, path) -> None:
        for name, layer in self.layers.items():
            if isinstance(layer, BatchNormalization) and f"{name}.running_mean" in data.files:
                for stat in ("running_mean", "running_var"):
                    saved = data[f"{name}.{stat}"]
                    if saved.shape != layer.gamma.shape or saved.dtype.kind != "f":
                        raise ValueError(f"{path}: {name}.{stat} has shape {saved.shape} "
                                         f"and dtype {saved.dtype}, expected "
                                         f"{layer.gamma.shape} floats")
                    setattr(layer, stat, saved.copy())


# the methods the one rule checks this class's networks have not overridden (its own)
MultiLayerNetExtend._BOOK_METHODS = {name: getattr(MultiLayerNetExtend, name) for name in
                                     _LayerNet._BOOK_METHODS}


def load_network(path):
    """Rebuild a network from a file written by ``save``.

    The file is checked before the network is built (``minidl._model_file``): the format
    version, the architecture record, and every parameter's shape and dtype from the arrays'
    headers against the declared sizes. Raises ``ValueError`` naming the file and the problem
    when it is not a minidl model this version reads; ``FileNotFoundError`` when it is absent.
    """
    with ModelFile(path) as data:
        meta = data.meta
        data.check_params(_param_shapes(meta, data.path))
        common = {"activation": meta["activation"], "dtype": meta["dtype"]}
        rng_state = np.random.get_state()  # building draws weights; loading must not move it
        try:
            net = _build(meta["class"], meta["sizes"], meta, common, data.path)
        except (ValueError, TypeError) as exc:  # an option the constructor refuses
            raise ValueError(f"{data.path}: damaged architecture record ({exc})") from None
        finally:
            np.random.set_state(rng_state)
        for key, value in net.params.items():
            value[...] = data[key]  # in place: the layers share these arrays
        net._restore_state(data, data.path)
    return net


# The layer-stack networks load_network builds, with the number of sizes each takes.
_SIZES_TAKEN = {"TwoLayerNet": (3, 3), "ThreeLayerNet": (4, 4),
                "MultiLayerNet": (2, None), "MultiLayerNetExtend": (2, None)}


def _param_shapes(meta, path):
    """The shape of every parameter the record's network has, before building it."""
    kind, sizes = meta["class"], meta["sizes"]
    if kind in CONVNETS:  # the book's ConvNets (minidl.convnets)
        return convnet_param_shapes(kind, sizes, meta, path)
    low, high = _SIZES_TAKEN.get(kind, (None, None))
    if low is None or len(sizes) < low or (high is not None and len(sizes) > high):
        raise ValueError(f"{path}: unknown network {kind!r} with sizes {sizes}")
    for option in ("use_dropout", "use_batchnorm"):
        if not isinstance(meta.get(option, False), bool):
            raise ValueError(  # noqa: TRY004 - a damaged file, not a wrong argument
                f"{path}: damaged architecture record ({option} "
                f"{meta[option]!r} is not true or false)")
    batchnorm = kind == "MultiLayerNetExtend" and meta.get("use_batchnorm", False)
    shapes = {}
    for i in range(1, len(sizes)):
        shapes[f"W{i}"], shapes[f"b{i}"] = (sizes[i - 1], sizes[i]), (sizes[i],)
        if batchnorm and i < len(sizes) - 1:
            shapes[f"gamma{i}"] = shapes[f"beta{i}"] = (sizes[i],)
    return shapes


def _build(kind, sizes, meta, common, path):
    if kind in CONVNETS:
        return build_convnet(kind, sizes, meta, common["dtype"])
    if kind == "TwoLayerNet" and len(sizes) == 3:
        return TwoLayerNet(*sizes, **common)
    if kind == "ThreeLayerNet" and len(sizes) == 4:
        return ThreeLayerNet(*sizes, **common)
    if kind == "MultiLayerNet" and len(sizes) >= 2:
        return MultiLayerNet(sizes[0], sizes[1:-1], sizes[-1],
                             weight_decay_lambda=meta["weight_decay_lambda"], **common)
    if kind == "MultiLayerNetExtend" and len(sizes) >= 2:
        return MultiLayerNetExtend(
            sizes[0], sizes[1:-1], sizes[-1],
            weight_decay_lambda=meta["weight_decay_lambda"],
            use_dropout=meta.get("use_dropout", False),
            dropout_ration=meta.get("dropout_ration", 0.5),
            use_batchnorm=meta.get("use_batchnorm", False), **common)
    raise ValueError(f"{path}: unknown network {kind!r} with sizes {sizes}")
