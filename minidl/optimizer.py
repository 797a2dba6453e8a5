"""The book's update rules (``common/optimizer.py``): SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam.

Each rule is one small class with the book's constructor and attribute names
(``lr``, ``momentum``, ``v``, ``h``, ``m``, ``iter``, ...). ``update(params,
grads)`` changes the arrays in ``params`` in place, with the book's arithmetic
line for line, so that a seeded run gives the book's numbers. The per-parameter
state (``v``, ``h``, ``m``) is a dict keyed by parameter name, created on the
first update as ``np.zeros_like`` of each parameter, as in the book: print it,
inspect it, reset it with ``optimizer.v = None``.

What the base class adds to the book: ``update`` checks its input (``params``
and ``grads`` with the same keys and shapes, arrays that can be updated in
place, finite non-negative hyperparameters) and raises a ``ValueError`` or
``TypeError`` that names the problem instead of failing deep inside NumPy; and
on the compiled backend, the six rules run each parameter's statements in one
pass of C (``minidl._optim``) wherever that gives the book's numbers bit for
bit (one dtype, contiguous arrays; see ``minidl._optim_cython``), the lines
below everywhere else.

A new rule is one class (DeZero's pattern)::

    class SignSGD(Optimizer):
        hyperparameters = ("lr",)

        def __init__(self, lr=0.01):
            self.lr = lr
            self.check_hyperparameters()

        def update_one(self, key, param, grad):
            param -= self.lr * np.sign(grad)

and one entry in ``OPTIMIZERS`` for ``make_optimizer`` (and the book's Trainer)
to find it by name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import ClassVar

import numpy as np

from . import backend as _backend

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "AdaGrad",
    "Adam",
    "Momentum",
    "Nesterov",
    "Optimizer",
    "RMSprop",
    "make_optimizer",
    # the book's `from common.optimizer import *` also gives its scripts `np`
    "np",
]


class Optimizer:
    """What every rule shares: ``update`` checks its input, then calls ``update_one`` per parameter.

    Subclasses set ``hyperparameters`` (attribute names checked to be finite
    numbers in their ``bounds``) and ``state_names`` (the per-parameter state
    dicts, e.g. ``("v",)``: ``None`` until the first update fills them with
    ``np.zeros_like`` of each parameter), and implement ``update_one``.
    """

    hyperparameters: ClassVar[tuple[str, ...]] = ()
    # (low, high, high included?) for each hyperparameter; default [0, inf)
    bounds: ClassVar[dict[str, tuple[float, float, bool]]] = {}
    state_names: ClassVar[tuple[str, ...]] = ()

    def update(self, params, grads) -> None:
        """Update every array in ``params`` in place from ``grads`` (the same keys and shapes).

        ``params``: a dict of NumPy float arrays (a network's ``params``);
        ``grads``: a dict of arrays of the same shapes (what
        ``network.gradient`` returns). Dtypes follow NumPy's promotion, as the
        book's code does: float32 parameters stay float32. A parameter may also
        be a plain number, as in the book's ``ch06/optimizer_compare_naive.py``
        (``params['x'] = -7.0``, gradients numbers too): it is replaced in
        ``params`` by the updated value (a NumPy scalar), as the book's
        ``params[key] -= ...`` replaces it.
        """
        self.check_hyperparameters()
        _check_params_and_grads(type(self).__name__, params, grads)
        self._init_state(params)
        self.begin_update()
        kernel = _kernel_for(self)
        if kernel is not None and _update_all(self, params, grads):
            return  # every parameter in one compiled call, each as its kernel below
        for key in params:  # in params' order, as the book
            param, grad = params[key], grads[key]
            if not isinstance(param, np.ndarray):  # a number: updated as a 0-d array
                value = np.array(param, dtype=_scalar_dtype(param))
                self.update_one(key, value, grad)
                params[key] = value[()]
            # the compiled kernel runs update_one's arithmetic in one pass, where it gives
            # the very same numbers (minidl._optim_cython); else update_one runs
            elif kernel is None or not kernel(self, key, param, grad):
                self.update_one(key, param, grad)

    def begin_update(self) -> None:
        """Called once per ``update``, before the parameters (Adam counts its steps here)."""

    def update_one(self, key: str, param: np.ndarray, grad) -> None:
        """Update ``param`` (the array ``params[key]``) in place from ``grad``."""
        raise NotImplementedError(f"{type(self).__name__} must implement update_one")

    # -- the checks --------------------------------------------------------------------
    def check_hyperparameters(self) -> None:
        """Raise if a hyperparameter is not a finite number within its bounds."""
        for name in self.hyperparameters:
            value = getattr(self, name)
            what = f"{type(self).__name__}: {name}"
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
                raise TypeError(f"{what} must be a number, got {value!r}")
            low, high, high_ok = self.bounds.get(name, (0.0, math.inf, False))
            if not math.isfinite(value):
                raise ValueError(f"{what} must be a finite number, got {value}")
            if value < low or value > high or (value == high and not high_ok):
                closing = "]" if high_ok else ")"
                raise ValueError(f"{what} must be in [{low}, {high}{closing}, got {value}")

    def _init_state(self, params) -> None:
        """The book's lazy state: zeros like each parameter, on the first update."""
        if not self.state_names:
            return
        if getattr(self, self.state_names[0]) is None:
            for name in self.state_names:
                setattr(self, name, {key: np.zeros_like(val) for key, val in params.items()})
            return
        # a later update: the state must cover these parameters (the book would fail with
        # a KeyError or a broadcasting error deep inside NumPy)
        for name in self.state_names:
            state = getattr(self, name)
            for key, param in params.items():
                kept = state.get(key, _MISSING) if isinstance(state, dict) else _MISSING
                if kept is not _MISSING and type(kept) is np.ndarray and type(
                        param) is np.ndarray and kept.shape == param.shape:
                    continue  # (the common case, without np.shape's cost)
                if key not in state:
                    raise ValueError(
                        f"{type(self).__name__}: params['{key}'] has no entry in the optimizer's "
                        f"state {name!r} (keys {sorted(state)}); an optimizer keeps the state of "
                        "the network it first updated: make a new one for another network, or "
                        f"reset it with optimizer.{name} = None"
                    )
                if np.shape(state[key]) != np.shape(param):
                    raise ValueError(
                        f"{type(self).__name__}: params['{key}'] has shape {np.shape(param)} but "
                        f"the optimizer's state {name}['{key}'] has shape "
                        f"{np.shape(state[key])}; reset it with optimizer.{name} = None"
                    )

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.hyperparameters)
        return f"{type(self).__name__}({args})"


_MISSING = object()


def _kernel_for(optimizer):
    """The compiled kernel for ``optimizer``'s rule on the Cython backend, or None."""
    if _backend.get_backend() != "cython":
        return None
    return _compiled().kernel_for(optimizer)


def _update_all(optimizer, params, grads) -> bool:
    return _compiled().update_all(optimizer, params, grads)


def _compiled():
    """minidl._optim_cython, imported on first use (it imports this module's classes)."""
    global _optim_cython
    if _optim_cython is None:
        from . import _optim_cython
    return _optim_cython


_optim_cython = None


def _check_params_and_grads(what: str, params, grads) -> None:
    if not isinstance(params, Mapping):
        raise TypeError(f"{what}.update: params must be a dict of arrays, got "
                        f"{type(params).__name__}")
    if not isinstance(grads, Mapping):
        raise TypeError(f"{what}.update: grads must be a dict of arrays, got "
                        f"{type(grads).__name__}")
    if params.keys() != grads.keys():
        missing = sorted(set(params) - set(grads))
        extra = sorted(set(grads) - set(params))
        raise ValueError(f"{what}.update: params and grads have different keys "
                         f"(missing from grads: {missing}, not in params: {extra})")
    for key, param in params.items():
        grad = grads[key]
        if (type(param) is np.ndarray and type(grad) is np.ndarray and param.dtype.kind == "f"
                and grad.dtype.kind in "iuf" and grad.shape == param.shape
                and param.flags.writeable):
            continue  # the common case, checked first (the checks below say what is wrong)
        if _is_number(param):  # the book's optimizer_compare_naive.py: numbers, not arrays
            if not (_is_number(grad) or (isinstance(grad, np.ndarray) and grad.shape == ()
                                         and grad.dtype.kind in "iuf")):
                raise TypeError(f"{what}.update: params['{key}'] is a number, so grads['{key}'] "
                                f"must be one too, got {type(grad).__name__}")
            continue
        if not isinstance(param, np.ndarray):
            raise TypeError(f"{what}.update: params['{key}'] is a {type(param).__name__}, not a "
                            "NumPy array (parameters are updated in place) or a number")
        if param.dtype.kind != "f":
            raise TypeError(f"{what}.update: params['{key}'] has dtype {param.dtype}; "
                            "parameters must be float arrays")
        if not param.flags.writeable:
            raise ValueError(f"{what}.update: params['{key}'] is read-only")
        if not isinstance(grad, np.ndarray):
            raise TypeError(f"{what}.update: grads['{key}'] is a {type(grad).__name__}, not a "
                            "NumPy array")
        if grad.dtype.kind not in "iuf":
            raise TypeError(f"{what}.update: grads['{key}'] has dtype {grad.dtype}; "
                            "gradients must be real numbers")
        if grad.shape != param.shape:
            raise ValueError(f"{what}.update: grads['{key}'] has shape {grad.shape}, "
                             f"params['{key}'] has shape {param.shape}")


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, (bool, np.bool_))


def _scalar_dtype(value):
    """The dtype a number parameter is updated in: its own for NumPy floats, else float64."""
    return value.dtype if isinstance(value, np.floating) else np.float64


_UNIT = (0.0, 1.0, True)  # [0, 1]
_UNIT_OPEN = (0.0, 1.0, False)  # [0, 1)


class SGD(Optimizer):
    """Stochastic gradient descent: ``W -= lr * dW``."""

    hyperparameters = ("lr",)

    def __init__(self, lr=0.01):
        self.lr = lr
        self.check_hyperparameters()

    def update_one(self, key, param, grad):
        param -= self.lr * grad


class Momentum(Optimizer):
    """Momentum SGD: ``v = momentum * v - lr * dW``, ``W += v``."""

    hyperparameters = ("lr", "momentum")
    state_names = ("v",)

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = lr
        self.momentum = momentum
        self.v = None
        self.check_hyperparameters()

    def update_one(self, key, param, grad):
        self.v[key] = self.momentum * self.v[key] - self.lr * grad
        param += self.v[key]


class Nesterov(Optimizer):
    """Nesterov's accelerated gradient (http://arxiv.org/abs/1212.0901), as the book writes it."""

    hyperparameters = ("lr", "momentum")
    state_names = ("v",)

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = lr
        self.momentum = momentum
        self.v = None
        self.check_hyperparameters()

    def update_one(self, key, param, grad):
        param += self.momentum * self.momentum * self.v[key]
        param -= (1 + self.momentum) * self.lr * grad
        self.v[key] *= self.momentum
        self.v[key] -= self.lr * grad


class AdaGrad(Optimizer):
    """AdaGrad: ``h += dW * dW``, ``W -= lr * dW / (sqrt(h) + 1e-7)``."""

    hyperparameters = ("lr",)
    state_names = ("h",)

    def __init__(self, lr=0.01):
        self.lr = lr
        self.h = None
        self.check_hyperparameters()

    def update_one(self, key, param, grad):
        self.h[key] += grad * grad
        param -= self.lr * grad / (np.sqrt(self.h[key]) + 1e-7)


class RMSprop(Optimizer):
    """RMSprop: ``h = decay_rate * h + (1 - decay_rate) * dW * dW``, then AdaGrad's step."""

    hyperparameters = ("lr", "decay_rate")
    bounds: ClassVar = {"decay_rate": _UNIT}
    state_names = ("h",)

    def __init__(self, lr=0.01, decay_rate=0.99):
        self.lr = lr
        self.decay_rate = decay_rate
        self.h = None
        self.check_hyperparameters()

    def update_one(self, key, param, grad):
        self.h[key] *= self.decay_rate
        self.h[key] += (1 - self.decay_rate) * grad * grad
        param -= self.lr * grad / (np.sqrt(self.h[key]) + 1e-7)


class Adam(Optimizer):
    """Adam (http://arxiv.org/abs/1412.6980v8), with the book's bias-corrected step size.

    ``iter`` counts the updates; each update's step size is
    ``lr_t = lr * sqrt(1 - beta2**iter) / (1 - beta1**iter)`` (kept as
    ``self.lr_t``), then ``m += (1 - beta1) * (dW - m)``,
    ``v += (1 - beta2) * (dW**2 - v)``, ``W -= lr_t * m / (sqrt(v) + 1e-7)``.
    """

    hyperparameters = ("lr", "beta1", "beta2")
    bounds: ClassVar = {"beta1": _UNIT_OPEN, "beta2": _UNIT}  # beta1 = 1 would divide by zero
    state_names = ("m", "v")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.iter = 0
        self.m = None
        self.v = None
        self.lr_t = None
        self.check_hyperparameters()

    def begin_update(self):
        self.iter += 1
        self.lr_t = self.lr * np.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)

    def update_one(self, key, param, grad):
        self.m[key] += (1 - self.beta1) * (grad - self.m[key])
        self.v[key] += (1 - self.beta2) * (grad**2 - self.v[key])
        param -= self.lr_t * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)


# The names the book's Trainer accepts (its optimizer_class_dict), lower case.
OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}


def make_optimizer(name_or_optimizer="sgd", **optimizer_param) -> Optimizer:
    """An optimizer from a name (case-insensitive, as the book's Trainer), a class, or itself.

    ``make_optimizer('Adam', lr=0.01)`` is ``Adam(lr=0.01)``; an optimizer
    object is returned as it is (no parameters allowed then); a class is
    called with ``optimizer_param``.
    """
    spec = name_or_optimizer
    if isinstance(spec, str):
        cls = OPTIMIZERS.get(spec.lower())
        if cls is None:
            raise ValueError(f"unknown optimizer {spec!r}; choose one of "
                             f"{', '.join(OPTIMIZERS)}")
    elif isinstance(spec, type) and callable(getattr(spec, "update", None)):
        cls = spec
    elif callable(getattr(spec, "update", None)):
        if optimizer_param:
            raise ValueError(f"make_optimizer: got an optimizer object ({spec!r}) and "
                             f"parameters {sorted(optimizer_param)}; give one or the other")
        return spec
    else:
        raise TypeError(f"optimizer must be a name ({', '.join(OPTIMIZERS)}), an optimizer "
                        f"class or object, got {type(spec).__name__}")
    try:
        return cls(**optimizer_param)
    except TypeError as exc:
        if "argument" not in str(exc):
            raise
        raise TypeError(f"{cls.__name__}: {exc} (its parameters: "
                        f"{', '.join(getattr(cls, 'hyperparameters', ()))})") from None
