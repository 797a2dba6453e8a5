"""The book's code for the compatibility tests: its ``common/`` layers, functions
and ``numerical_gradient`` (transcribed once, in ``bench/book_numpy.py``, which the
benchmarks use as their baseline too) and ``ch05/two_layer_net.py``, whose class
body runs on the book's modules or on minidl's: a program run on both must agree."""

import importlib.util
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np

_path = Path(__file__).resolve().parents[1] / "bench" / "book_numpy.py"
_spec = importlib.util.spec_from_file_location("book_numpy", _path)
book_numpy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(book_numpy)

# chapter 6 (optimizers, Dropout, BatchNormalization, MultiLayerNet(Extend), Trainer),
# which builds on book_numpy's layers by that name
sys.modules.setdefault("book_numpy", book_numpy)
_spec = importlib.util.spec_from_file_location("book_ch6", _path.with_name("book_ch6.py"))
book_ch6 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(book_ch6)


# The book's ch05/two_layer_net.py, with its imports as parameters so that the
# very same class body runs on the book's modules or on minidl's.
TWO_LAYER_NET_SOURCE = '''
class TwoLayerNet:

    def __init__(self, input_size, hidden_size, output_size, weight_init_std = 0.01):
        self.params = {}
        self.params['W1'] = weight_init_std * np.random.randn(input_size, hidden_size)
        self.params['b1'] = np.zeros(hidden_size)
        self.params['W2'] = weight_init_std * np.random.randn(hidden_size, output_size)
        self.params['b2'] = np.zeros(output_size)

        self.layers = OrderedDict()
        self.layers['Affine1'] = Affine(self.params['W1'], self.params['b1'])
        self.layers['Relu1'] = Relu()
        self.layers['Affine2'] = Affine(self.params['W2'], self.params['b2'])

        self.lastLayer = SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        y = self.predict(x)
        return self.lastLayer.forward(y, t)

    def accuracy(self, x, t):
        y = self.predict(x)
        y = np.argmax(y, axis=1)
        if t.ndim != 1 : t = np.argmax(t, axis=1)
        accuracy = np.sum(y == t) / float(x.shape[0])
        return accuracy

    def numerical_gradient(self, x, t):
        loss_W = lambda W: self.loss(x, t)
        grads = {}
        grads['W1'] = numerical_gradient(loss_W, self.params['W1'])
        grads['b1'] = numerical_gradient(loss_W, self.params['b1'])
        grads['W2'] = numerical_gradient(loss_W, self.params['W2'])
        grads['b2'] = numerical_gradient(loss_W, self.params['b2'])
        return grads

    def gradient(self, x, t):
        self.loss(x, t)
        dout = 1
        dout = self.lastLayer.backward(dout)
        layers = list(self.layers.values())
        layers.reverse()
        for layer in layers:
            dout = layer.backward(dout)
        grads = {}
        grads['W1'], grads['b1'] = self.layers['Affine1'].dW, self.layers['Affine1'].db
        grads['W2'], grads['b2'] = self.layers['Affine2'].dW, self.layers['Affine2'].db
        return grads
'''


def two_layer_net_class(namespace):
    """The book's TwoLayerNet, defined against the names in ``namespace``."""
    scope = {"np": np, "OrderedDict": OrderedDict, **namespace}
    exec(TWO_LAYER_NET_SOURCE, scope)  # noqa: S102 - our own transcription of the book
    return scope["TwoLayerNet"]


BOOK = {"Affine": book_numpy.Affine, "Relu": book_numpy.Relu,
        "SoftmaxWithLoss": book_numpy.SoftmaxWithLoss,
        "numerical_gradient": book_numpy.numerical_gradient}
