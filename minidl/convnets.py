"""The book's convolutional networks: ``SimpleConvNet`` (``ch07/simple_convnet.py``)
and ``DeepConvNet`` (``ch08/deep_convnet.py``), re-exported by ``minidl.networks``.

As the book's: ``params`` is a plain dict whose arrays the layers share (so
``params[key] -= lr * grad[key]`` and ``optimizer.update(params, grads)``
train the network), the initial weights are drawn from NumPy's global
generator in the book's order (a seeded script starts from the book's
weights), and the layers are the book's, under its names.

Differences, each where the book's code would fail or be wrong:
- sizes that do not fit (an odd convolution output before the 2 x 2
  pooling, a filter larger than the input) are a ``ValueError`` at
  construction, where the book builds a network that fails in ``predict``;
- ``accuracy(x, t, batch_size)`` also counts the last ``len(x) % batch_size``
  rows (the book skips them but divides by ``len(x)``);
- ``save_params`` writes a NumPy ``.npz`` (no pickle) under the name given;
  ``load_params`` reads those and the book's pickled files, safely
  (``minidl._params_file``).

``dtype=np.float32`` builds a float32 network (the same draws, rounded).
"""

from __future__ import annotations

import itertools
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ._accuracy import accuracy_inputs
from ._atomic import atomic_write
from ._block import backward as block_backward
from ._block import forward_layers, is_block
from ._model_file import FORMAT_VERSION
from ._params_file import read_params, write_params
from ._serial import network_state, serialized
from .backend.checks import FLOAT_DTYPES
from .gradient import numerical_gradient as _numerical_gradient
from .layers import Affine, Convolution, Dropout, Pooling, Relu, SoftmaxWithLoss
from .util import conv_output_size

__all__ = ["CONVNETS", "DeepConvNet", "SimpleConvNet", "build_convnet", "convnet_param_shapes"]

CONVNETS = ("SimpleConvNet", "DeepConvNet")

_CONV_KEYS = ("filter_num", "filter_size", "pad", "stride")
_METHODS = ("auto", "generic", "fast")


def _conv_param(what: str, conv_param) -> tuple[int, int, int, int]:
    try:
        return tuple(int(conv_param[key]) for key in _CONV_KEYS)
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{what}: conv_param must give integers for {list(_CONV_KEYS)}, "
                         f"got {conv_param!r}") from None


def _network_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def _pooled(what: str, size: int, where: str) -> int:
    """The output length of the networks' 2 x 2 pooling (stride 2) over ``size``."""
    if size % 2:
        raise ValueError(f"{what}: the 2x2 pooling (stride 2) after {where} needs an even size, "
                         f"got {size}; the book's code would drop the last row and column")
    return size // 2


def _simple_geometry(what, input_dim, conv_param):
    """SimpleConvNet's sizes: (C, H, W), the convolution's parameters, the pooled width."""
    filter_num, filter_size, pad, stride = _conv_param(what, conv_param)
    channels, height, width = (int(s) for s in input_dim)
    conv_h = conv_output_size(height, filter_size, stride, pad)
    conv_w = conv_output_size(width, filter_size, stride, pad)
    where = f"the convolution ({conv_h}x{conv_w})"
    pool_output_size = filter_num * _pooled(what, conv_h, where) * _pooled(what, conv_w, where)
    return (channels, height, width), (filter_num, filter_size, pad, stride), pool_output_size


def _deep_geometry(what, input_dim, conv_params):
    """DeepConvNet's sizes: (C, H, W), the six convolutions' parameters, the width the
    first affine layer takes (the feature map after three conv-conv-pool blocks)."""
    conv_params = [_conv_param(what, p) for p in conv_params]
    channels, height, width = (int(s) for s in input_dim)
    h, w = height, width
    for idx, (_, filter_size, pad, stride) in enumerate(conv_params):
        h = conv_output_size(h, filter_size, stride, pad)
        w = conv_output_size(w, filter_size, stride, pad)
        if idx % 2 == 1:
            where = f"conv{idx + 1} ({h}x{w})"
            h, w = _pooled(what, h, where), _pooled(what, w, where)
    return (channels, height, width), conv_params, conv_params[-1][0] * h * w


class _ConvNet:
    """What both networks share: loss, accuracy, gradients and parameter files. Their
    methods hold the network's lock (``minidl._serial``): one call at a time."""

    def __getstate__(self):
        return network_state(self)  # copies and pickles leave out the lock

    def __repr__(self) -> str:
        # as the dense networks': the geometry and size, not the arrays
        channels, height, width, hidden, classes = self._sizes
        filters = ", ".join(f"{p['filter_num']} {p['filter_size']}x{p['filter_size']}"
                            for p in self._conv_params)
        n = sum(int(np.size(p)) for p in self.params.values())
        return (f"{type(self).__name__}({channels}x{height}x{width}, filters {filters}, "
                f"hidden {hidden}, {classes} classes, {self.dtype.name}, {n:,} parameters)")

    @serialized
    def loss(self, x, t):
        y = self.predict(x)
        return self.last_layer.forward(y, t)

    @serialized
    def accuracy(self, x, t, batch_size=100):
        """Fraction of rows of ``x`` whose highest score is the label in ``t``,
        predicted ``batch_size`` rows at a time (all rows, the last partial batch too)."""
        x, t = accuracy_inputs(x, t)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        acc = 0.0
        for i in range(0, x.shape[0], batch_size):
            tx = x[i:i + batch_size]
            tt = t[i:i + batch_size]
            y = self._predict_eval(tx)
            y = np.argmax(y, axis=1)
            acc += np.sum(y == tt)
        return acc / x.shape[0]

    @serialized
    def numerical_gradient(self, x, t, method="auto"):
        """Central differences of the loss for every parameter (the book's loop, h = 1e-4).

        Convolutional networks always run the book's loop: ``method`` 'auto' and
        'generic' both mean it, and 'fast' (minidl's network-level kernel, which
        knows dense stacks only) is a ``ValueError``.
        """
        if method not in _METHODS:
            raise ValueError(f"numerical_gradient: method must be one of {_METHODS}, "
                             f"got {method!r}")
        if method == "fast":
            raise ValueError(f"numerical_gradient(method='fast'): {type(self).__name__} is "
                             "a convolutional network, which only the book's loop "
                             "(method='generic') computes")
        loss_w = lambda w: self.loss(x, t)

        grads = {}
        for key in self.params:
            grads[key] = _numerical_gradient(loss_w, self.params[key])
        return grads

    @serialized
    def gradient(self, x, t):
        """Gradients of the loss for every parameter, by backpropagation."""
        # forward
        self.loss(x, t)

        # backward
        dout = 1
        dout = self.last_layer.backward(dout)

        # from the last layer to the first; a conv - relu - pool block in one call
        # (minidl._block: one pass over the images where that is the same), and the
        # first layer's input gradient not computed (nobody uses it)
        layers = list(self._layer_list())
        i = len(layers)
        while i > 0:
            if i >= 3 and is_block(layers[i - 3:i]):
                dout = block_backward(*layers[i - 3:i], dout, need_dx=i > 3)
                i -= 3
            elif i == 1 and isinstance(layers[0], (Convolution, Affine)):
                layers[0].backward(dout, need_dx=False)
                i -= 1
            else:
                dout = layers[i - 1].backward(dout)
                i -= 1

        grads = {}
        for i, layer in enumerate(self._param_layers(), start=1):
            grads[f"W{i}"], grads[f"b{i}"] = layer.dW, layer.db
        return grads

    def save_params(self, file_name="params.pkl"):
        """Write ``params`` to ``file_name`` as a NumPy ``.npz`` (no pickle), atomically."""
        write_params(self.params, file_name)

    def load_params(self, file_name="params.pkl"):
        """Read parameters saved by ``save_params``, or the book's pickled ones (safely)."""
        # names and shapes checked against this network's before any data is read
        params = read_params(file_name, {k: v.shape for k, v in self.params.items()})
        for key, val in params.items():
            self.params[key] = val.astype(self.dtype)  # a new array, as the book assigns

        for i, layer in enumerate(self._param_layers(), start=1):
            layer.W = self.params[f"W{i}"]
            layer.b = self.params[f"b{i}"]

    # -- minidl's model files (minidl.networks.load_network reads them back) --------------
    def architecture(self) -> dict:
        """What rebuilds this network: its class, ``sizes`` (C, H, W, hidden, classes),
        its convolution parameters and dtype."""
        return {"class": type(self).__name__, "sizes": list(self._sizes),
                "conv_params": [dict(p) for p in self._conv_params], "dtype": self.dtype.name}

    def save(self, path) -> None:
        """Write parameters and architecture to ``path`` (``.npz``, no pickle), atomically."""
        meta = json.dumps({"format": FORMAT_VERSION, **self.architecture()})
        with atomic_write(Path(path)) as fh:
            np.savez(fh, __architecture__=np.array(meta), **self.params)

    def _restore_state(self, data, path) -> None:
        pass  # nothing beyond params


def _record(kind: str, sizes: list, meta: dict, path) -> tuple:
    """(C, H, W), hidden, classes and the convolutions' parameters of a model file's record."""
    conv_params = meta.get("conv_params")
    count = {"SimpleConvNet": 1, "DeepConvNet": 6}[kind]
    if len(sizes) != 5 or not (isinstance(conv_params, list) and len(conv_params) == count
                               and all(isinstance(p, dict) for p in conv_params)):
        raise ValueError(f"{path}: damaged architecture record ({kind} with sizes {sizes} and "
                         f"conv_params {conv_params!r})")
    return tuple(sizes[:3]), sizes[3], sizes[4], conv_params


def convnet_param_shapes(kind: str, sizes: list, meta: dict, path) -> dict:
    """The shape of every parameter a model file's ConvNet has, before building it."""
    input_dim, hidden, classes, conv_params = _record(kind, sizes, meta, path)
    try:
        if kind == "SimpleConvNet":
            (C, _, _), (FN, FS, _, _), pooled = _simple_geometry(kind, input_dim, conv_params[0])
            shapes = {"W1": (FN, C, FS, FS), "b1": (FN,)}
            widths = [pooled, hidden, classes]
        else:
            (C, _, _), convs, affine_input = _deep_geometry(kind, input_dim, conv_params)
            shapes = {}
            for i, (FN, FS, _, _) in enumerate(convs, start=1):
                shapes[f"W{i}"], shapes[f"b{i}"] = (FN, C, FS, FS), (FN,)
                C = FN
            widths = [affine_input, hidden, classes]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: damaged architecture record ({exc})") from None
    first = len(shapes) // 2 + 1
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths), start=first):
        shapes[f"W{i}"], shapes[f"b{i}"] = (n_in, n_out), (n_out,)
    return shapes


def build_convnet(kind: str, sizes: list, meta: dict, dtype) -> _ConvNet:
    """The network an ``architecture()`` record describes (weights freshly drawn)."""
    input_dim, hidden, classes, conv_params = _record(kind, sizes, meta, kind)
    if kind == "SimpleConvNet":
        return SimpleConvNet(input_dim, conv_params[0], hidden, classes, dtype=dtype)
    return DeepConvNet(input_dim, *conv_params, hidden_size=hidden, output_size=classes,
                       dtype=dtype)


class SimpleConvNet(_ConvNet):
    """A simple ConvNet: conv - relu - pool - affine - relu - affine - softmax.

    ``input_dim``: (C, H, W) of one image (MNIST: (1, 28, 28));
    ``conv_param``: the convolution's ``filter_num``, ``filter_size`` (square),
    ``pad`` and ``stride``; ``hidden_size``: width of the hidden affine layer;
    ``output_size``: classes; ``weight_init_std``: standard deviation of the
    initial weights. Layers: ``Conv1``, ``Relu1``, ``Pool1`` (2 x 2, stride 2),
    ``Affine1``, ``Relu2``, ``Affine2``; ``params`` W1, b1 (the filters, FN x C x
    FH x FW), W2, b2, W3, b3.
    """

    # the book's signature, dict default included (never modified)
    def __init__(self, input_dim=(1, 28, 28),
                 conv_param={'filter_num': 30, 'filter_size': 5, 'pad': 0, 'stride': 1},  # noqa: B006
                 hidden_size=100, output_size=10, weight_init_std=0.01, dtype=np.float64):
        (channels, height, width), (filter_num, filter_size, filter_pad, filter_stride), \
            pool_output_size = _simple_geometry("SimpleConvNet", input_dim, conv_param)
        self.dtype = dtype = _network_dtype(dtype)
        self._sizes = (channels, height, width, int(hidden_size), int(output_size))
        self._conv_params = [dict(zip(_CONV_KEYS, (filter_num, filter_size, filter_pad,
                                                   filter_stride)))]

        # initialise the weights (the book's draws, in its order)
        self.params = {}
        self.params['W1'] = weight_init_std * \
            np.random.randn(filter_num, channels, filter_size, filter_size)
        self.params['b1'] = np.zeros(filter_num)
        self.params['W2'] = weight_init_std * np.random.randn(pool_output_size, hidden_size)
        self.params['b2'] = np.zeros(hidden_size)
        self.params['W3'] = weight_init_std * np.random.randn(hidden_size, output_size)
        self.params['b3'] = np.zeros(output_size)
        for key in self.params:
            self.params[key] = self.params[key].astype(dtype, copy=False)

        # build the layers
        self.layers = OrderedDict()
        self.layers['Conv1'] = Convolution(self.params['W1'], self.params['b1'],
                                           filter_stride, filter_pad)
        self.layers['Relu1'] = Relu()
        self.layers['Pool1'] = Pooling(pool_h=2, pool_w=2, stride=2)
        self.layers['Affine1'] = Affine(self.params['W2'], self.params['b2'])
        self.layers['Relu2'] = Relu()
        self.layers['Affine2'] = Affine(self.params['W3'], self.params['b3'])

        self.last_layer = SoftmaxWithLoss()

    @serialized
    def predict(self, x):
        # layer by layer; the conv - relu - pool block in one call (minidl._block)
        return forward_layers(list(self.layers.values()), x)

    def _predict_eval(self, x):
        return self.predict(x)

    def _layer_list(self):
        return self.layers.values()

    def _param_layers(self):
        return [self.layers[key] for key in ('Conv1', 'Affine1', 'Affine2')]


class DeepConvNet(_ConvNet):
    """The book's ConvNet of chapter 8 (over 99% on MNIST):

        conv - relu - conv - relu - pool -
        conv - relu - conv - relu - pool -
        conv - relu - conv - relu - pool -
        affine - relu - dropout - affine - dropout - softmax

    ``layers`` is a list, as in the book (the parameter layers are at indices
    0, 2, 5, 7, 10, 12, 15 and 18). Weights start from He's initialisation with
    the book's fan-ins; ``predict(x, train_flg=False)``; ``loss`` runs the
    dropout layers in training mode, as the book's does.
    """

    # the book's fan-ins for He's initialisation, written for its default parameters
    # ("TODO: compute automatically" in the book; kept, so that its draws are ours)
    _PRE_NODE_NUMS = (1 * 3 * 3, 16 * 3 * 3, 16 * 3 * 3, 32 * 3 * 3, 32 * 3 * 3, 64 * 3 * 3,
                      64 * 4 * 4)
    _PARAM_LAYER_INDICES = (0, 2, 5, 7, 10, 12, 15, 18)

    # the book's signature, dict defaults included (never modified)
    def __init__(self, input_dim=(1, 28, 28),
                 conv_param_1={'filter_num': 16, 'filter_size': 3, 'pad': 1, 'stride': 1},  # noqa: B006
                 conv_param_2={'filter_num': 16, 'filter_size': 3, 'pad': 1, 'stride': 1},  # noqa: B006
                 conv_param_3={'filter_num': 32, 'filter_size': 3, 'pad': 1, 'stride': 1},  # noqa: B006
                 conv_param_4={'filter_num': 32, 'filter_size': 3, 'pad': 2, 'stride': 1},  # noqa: B006
                 conv_param_5={'filter_num': 64, 'filter_size': 3, 'pad': 1, 'stride': 1},  # noqa: B006
                 conv_param_6={'filter_num': 64, 'filter_size': 3, 'pad': 1, 'stride': 1},  # noqa: B006
                 hidden_size=50, output_size=10, dtype=np.float64):
        (channels, height, width), conv_params, affine_input = _deep_geometry(
            "DeepConvNet", input_dim, (conv_param_1, conv_param_2, conv_param_3, conv_param_4,
                                       conv_param_5, conv_param_6))
        self.dtype = dtype = _network_dtype(dtype)
        self._sizes = (channels, height, width, int(hidden_size), int(output_size))
        self._conv_params = [dict(zip(_CONV_KEYS, p)) for p in conv_params]

        # initialise the weights (He's, the book's draws in its order)
        pre_node_nums = np.array([*self._PRE_NODE_NUMS, hidden_size])
        weight_init_scales = np.sqrt(2.0 / pre_node_nums)  # recommended with ReLU
        self.params = {}
        pre_channel_num = channels
        for idx, (filter_num, filter_size, _, _) in enumerate(conv_params):
            self.params['W' + str(idx + 1)] = weight_init_scales[idx] * np.random.randn(
                filter_num, pre_channel_num, filter_size, filter_size)
            self.params['b' + str(idx + 1)] = np.zeros(filter_num)
            pre_channel_num = filter_num
        self.params['W7'] = weight_init_scales[6] * np.random.randn(affine_input, hidden_size)
        self.params['b7'] = np.zeros(hidden_size)
        self.params['W8'] = weight_init_scales[7] * np.random.randn(hidden_size, output_size)
        self.params['b8'] = np.zeros(output_size)
        for key in self.params:
            self.params[key] = self.params[key].astype(dtype, copy=False)

        # build the layers
        self.layers = []
        for idx, (_, _, pad, stride) in enumerate(conv_params):
            self.layers.append(Convolution(self.params['W' + str(idx + 1)],
                                           self.params['b' + str(idx + 1)], stride, pad))
            self.layers.append(Relu())
            if idx % 2 == 1:
                self.layers.append(Pooling(pool_h=2, pool_w=2, stride=2))
        self.layers.append(Affine(self.params['W7'], self.params['b7']))
        self.layers.append(Relu())
        self.layers.append(Dropout(0.5))
        self.layers.append(Affine(self.params['W8'], self.params['b8']))
        self.layers.append(Dropout(0.5))

        self.last_layer = SoftmaxWithLoss()

    @serialized
    def predict(self, x, train_flg=False):
        # layer by layer, the dropout layers told train_flg; each conv - relu - pool
        # block in one call (minidl._block)
        return forward_layers(self.layers, x, train_flg)

    @serialized
    def loss(self, x, t):
        y = self.predict(x, train_flg=True)
        return self.last_layer.forward(y, t)

    def _predict_eval(self, x):
        return self.predict(x, train_flg=False)

    def _layer_list(self):
        return self.layers

    def _param_layers(self):
        return [self.layers[i] for i in self._PARAM_LAYER_INDICES]
