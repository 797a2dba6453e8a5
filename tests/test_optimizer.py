"""minidl.optimizer against the book's common/optimizer.py (transcribed in bench/book_ch6.py)."""

import copy

import numpy as np
import pytest
from book_common import book_ch6

from minidl import optimizer as opt
from minidl.optimizer import (
    OPTIMIZERS,
    SGD,
    AdaGrad,
    Adam,
    Momentum,
    Nesterov,
    Optimizer,
    RMSprop,
    make_optimizer,
)

# name -> (constructor arguments other than the defaults, the state dicts the book keeps)
CASES = {
    "SGD": ({"lr": 0.1}, ()),
    "Momentum": ({"lr": 0.05, "momentum": 0.8}, ("v",)),
    "Nesterov": ({"lr": 0.05, "momentum": 0.85}, ("v",)),
    "AdaGrad": ({"lr": 0.3}, ("h",)),
    "RMSprop": ({"lr": 0.02, "decay_rate": 0.9}, ("h",)),
    "Adam": ({"lr": 0.01, "beta1": 0.8, "beta2": 0.99}, ("m", "v")),
}


def make_params(rng, dtype):
    return {"W1": rng.standard_normal((7, 5)).astype(dtype), "b1": np.zeros(5, dtype),
            "W2": rng.standard_normal((5, 3)).astype(dtype), "b2": rng.standard_normal(3)
            .astype(dtype)}


def run_both(name, kwargs, dtype, rng, steps=6, grad_dtype=None):
    """(minidl's optimizer, its params, the book's optimizer, its params) after ``steps``."""
    params = make_params(rng, dtype)
    book_params = copy.deepcopy(params)
    ours = getattr(opt, name)(**kwargs)
    book = getattr(book_ch6, name)(**kwargs)
    originals = dict(params)
    for _ in range(steps):
        grads = {k: rng.standard_normal(v.shape).astype(grad_dtype or dtype)
                 for k, v in params.items()}
        ours.update(params, grads)
        book.update(book_params, {k: g.copy() for k, g in grads.items()})
        # in place: the very arrays the network's layers hold
        assert all(params[k] is originals[k] for k in params)
    return ours, params, book, book_params


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("defaults", [True, False])
def test_update_is_the_books_arithmetic(name, dtype, defaults, rng):
    kwargs = {} if defaults else CASES[name][0]
    ours, params, book, book_params = run_both(name, kwargs, dtype, rng)
    for key in params:
        assert params[key].dtype == dtype
        np.testing.assert_array_equal(params[key], book_params[key], err_msg=key)
    for state in CASES[name][1]:
        ours_state, book_state = getattr(ours, state), getattr(book, state)
        assert ours_state.keys() == book_state.keys()
        for key in ours_state:
            assert ours_state[key].dtype == book_state[key].dtype
            np.testing.assert_array_equal(ours_state[key], book_state[key])
    if name == "Adam":
        assert ours.iter == book.iter == 6


@pytest.mark.parametrize("name", list(CASES))
def test_float64_gradients_on_float32_params_promote_as_numpy_does(name, rng):
    _, params, _, book_params = run_both(name, CASES[name][0], np.float32, rng,
                                         steps=3, grad_dtype=np.float64)
    for key in params:
        assert params[key].dtype == np.float32
        np.testing.assert_array_equal(params[key], book_params[key])


def test_the_books_defaults_and_attribute_names():
    assert SGD().lr == 0.01
    m = Momentum()
    assert (m.lr, m.momentum, m.v) == (0.01, 0.9, None)
    n = Nesterov()
    assert (n.lr, n.momentum, n.v) == (0.01, 0.9, None)
    a = AdaGrad()
    assert (a.lr, a.h) == (0.01, None)
    r = RMSprop()
    assert (r.lr, r.decay_rate, r.h) == (0.01, 0.99, None)
    adam = Adam()
    assert (adam.lr, adam.beta1, adam.beta2, adam.iter, adam.m, adam.v) == (
        0.001, 0.9, 0.999, 0, None, None)


@pytest.mark.parametrize("name", ["Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"])
def test_state_is_created_lazily_as_zeros_like_the_params(name, rng):
    o = getattr(opt, name)()
    params = make_params(rng, np.float32)
    for state in CASES[name][1]:
        assert getattr(o, state) is None
    o.update(params, {k: np.zeros_like(v) for k, v in params.items()})
    for state in CASES[name][1]:
        d = getattr(o, state)
        assert list(d) == list(params)
        for key in params:
            assert d[key].shape == params[key].shape and d[key].dtype == np.float32
            assert d[key] is not params[key]
            np.testing.assert_array_equal(d[key], 0)


def test_adam_step_size_is_bias_corrected_per_update(rng):
    a = Adam(lr=0.1, beta1=0.5, beta2=0.75)
    params = make_params(rng, np.float64)
    for i in (1, 2, 3):
        a.update(params, {k: np.ones_like(v) for k, v in params.items()})
        assert a.iter == i
        assert a.lr_t == 0.1 * np.sqrt(1.0 - 0.75**i) / (1.0 - 0.5**i)


def test_params_order_is_the_dicts(rng):
    # a parameter shared under two names is updated twice, in params' order, as the book's loop
    W = rng.standard_normal((3, 3))
    params, book_params = {"a": W, "b": W}, {"a": W.copy()}
    book_params["b"] = book_params["a"]
    grads = {"a": rng.standard_normal((3, 3)), "b": rng.standard_normal((3, 3))}
    Adam().update(params, grads)
    book_ch6.Adam().update(book_params, grads)
    np.testing.assert_array_equal(W, book_params["a"])


def test_trains_a_network_like_the_books_optimizer(rng):
    from minidl.networks import TwoLayerNet

    x = rng.random((20, 12))
    t = rng.integers(0, 4, 20)
    net = TwoLayerNet(12, 6, 4, weight_init_std=0.5)
    book_params = copy.deepcopy(net.params)
    ours, book = Adam(lr=0.05), book_ch6.Adam(lr=0.05)
    for _ in range(5):
        grads = net.gradient(x, t)
        ours.update(net.params, grads)
        book.update(book_params, grads)
    for key in net.params:
        np.testing.assert_array_equal(net.params[key], book_params[key])
        # the layers compute with the updated arrays
    assert net.layers["Affine1"].W is net.params["W1"]


# -- the name table and the factory -----------------------------------------------

def test_the_name_table_is_the_books_trainers():
    assert OPTIMIZERS == {"sgd": SGD, "momentum": Momentum, "nesterov": Nesterov,
                          "adagrad": AdaGrad, "rmsprop": RMSprop, "adam": Adam}


@pytest.mark.parametrize("name", ["SGD", "sgd", "Momentum", "NESTEROV", "AdaGrad", "rmsprop",
                                  "Adam"])
def test_make_optimizer_by_name_is_case_insensitive(name):
    o = make_optimizer(name, lr=0.5)
    assert type(o) is OPTIMIZERS[name.lower()] and o.lr == 0.5


def test_make_optimizer_takes_an_object_or_a_class():
    o = Momentum(lr=0.2)
    assert make_optimizer(o) is o
    m = make_optimizer(Adam, lr=0.3, beta1=0.5)
    assert type(m) is Adam and (m.lr, m.beta1) == (0.3, 0.5)
    assert type(make_optimizer()) is SGD


def test_make_optimizer_errors():
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'.*sgd, momentum, nesterov, "
                                         "adagrad, rmsprop, adam"):
        make_optimizer("adamw")
    with pytest.raises(TypeError, match="optimizer must be a name"):
        make_optimizer(3)
    with pytest.raises(ValueError, match="one or the other"):
        make_optimizer(SGD(), lr=0.1)
    with pytest.raises(TypeError, match="momentum.*its parameters: lr"):
        make_optimizer("sgd", momentum=0.9)


# -- bad input ------------------------------------------------------------------------

@pytest.mark.parametrize(("cls", "kwargs", "error", "match"), [
    (SGD, {"lr": -0.1}, ValueError, r"SGD: lr must be in \[0.0, inf\), got -0.1"),
    (SGD, {"lr": float("nan")}, ValueError, "lr must be a finite number, got nan"),
    (SGD, {"lr": float("inf")}, ValueError, "lr must be a finite number"),
    (SGD, {"lr": "0.1"}, TypeError, "lr must be a number, got '0.1'"),
    (SGD, {"lr": None}, TypeError, "lr must be a number"),
    (SGD, {"lr": True}, TypeError, "lr must be a number"),
    (Momentum, {"momentum": -0.9}, ValueError, "Momentum: momentum must be in"),
    (Nesterov, {"momentum": float("nan")}, ValueError, "Nesterov: momentum must be a finite"),
    (AdaGrad, {"lr": -1}, ValueError, "AdaGrad: lr"),
    (RMSprop, {"decay_rate": 1.5}, ValueError, r"decay_rate must be in \[0.0, 1.0\]"),
    (Adam, {"beta1": 1.0}, ValueError, r"beta1 must be in \[0.0, 1.0\), got 1.0"),
    (Adam, {"beta2": -0.1}, ValueError, "beta2 must be in"),
    (Adam, {"lr": float("-inf")}, ValueError, "Adam: lr must be a finite number"),
])
def test_bad_hyperparameters_are_refused(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**kwargs)


def test_hyperparameters_changed_later_are_checked_at_update(rng):
    o = SGD()
    o.lr = float("nan")
    params = make_params(rng, np.float64)
    with pytest.raises(ValueError, match="SGD: lr must be a finite number"):
        o.update(params, {k: np.zeros_like(v) for k, v in params.items()})
    o.lr = np.float32(0.5)  # NumPy numbers are numbers
    o.update(params, {k: np.zeros_like(v) for k, v in params.items()})


@pytest.mark.parametrize("name", list(CASES))
def test_bad_params_and_grads_name_the_problem(name, rng):
    o = getattr(opt, name)()
    params = make_params(rng, np.float64)
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    cls = type(o).__name__

    with pytest.raises(ValueError, match=rf"{cls}.update: params and grads have different keys "
                                         r"\(missing from grads: \['b2'\], not in params: \[\]\)"):
        o.update(params, {k: v for k, v in grads.items() if k != "b2"})
    with pytest.raises(ValueError, match=r"not in params: \['W3'\]"):
        o.update(params, {**grads, "W3": np.zeros(2)})
    with pytest.raises(ValueError, match=r"grads\['W2'\] has shape \(3, 5\), params\['W2'\] "
                                         r"has shape \(5, 3\)"):
        o.update(params, {**grads, "W2": np.zeros((3, 5))})
    with pytest.raises(TypeError, match=r"params\['W1'\] is a list, not a NumPy array"):
        o.update({**params, "W1": params["W1"].tolist()}, grads)
    with pytest.raises(TypeError, match=r"params\['b1'\] has dtype int64"):
        o.update({**params, "b1": np.zeros(5, dtype=np.int64)}, grads)
    with pytest.raises(TypeError, match=r"grads\['b1'\] is a NoneType"):
        o.update(params, {**grads, "b1": None})
    with pytest.raises(TypeError, match=r"grads\['b1'\] has dtype complex128"):
        o.update(params, {**grads, "b1": np.zeros(5, complex)})
    readonly = params["b2"].copy()
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\['b2'\] is read-only"):
        o.update({**params, "b2": readonly}, grads)
    with pytest.raises(TypeError, match="params must be a dict of arrays, got list"):
        o.update(list(params.values()), grads)
    with pytest.raises(TypeError, match="grads must be a dict of arrays, got tuple"):
        o.update(params, tuple(grads.values()))
    # nothing above touched the parameters or started the state
    for state in CASES[name][1]:
        assert getattr(o, state) is None


@pytest.mark.parametrize("name", ["Momentum", "AdaGrad", "Adam"])
def test_state_of_another_network_is_refused(name, rng):
    o = getattr(opt, name)()
    params = make_params(rng, np.float64)
    o.update(params, {k: np.zeros_like(v) for k, v in params.items()})
    other = {"W1": np.zeros((7, 5)), "gamma1": np.ones(5)}
    with pytest.raises(ValueError, match=r"params\['gamma1'\] has no entry in the optimizer's "
                                         "state"):
        o.update(other, {k: np.zeros_like(v) for k, v in other.items()})
    reshaped = {"W1": np.zeros((5, 7))}
    with pytest.raises(ValueError, match=r"params\['W1'\] has shape \(5, 7\) but"):
        o.update(reshaped, {"W1": np.zeros((5, 7))})
    # a subset of the network's parameters is fine, as in the book
    sub = {"W1": params["W1"]}
    o.update(sub, {"W1": np.ones((7, 5))})


def test_a_new_rule_is_one_small_class(rng):
    class SignSGD(Optimizer):
        hyperparameters = ("lr",)

        def __init__(self, lr=0.01):
            self.lr = lr
            self.check_hyperparameters()

        def update_one(self, key, param, grad):
            param -= self.lr * np.sign(grad)

    params = make_params(rng, np.float64)
    before = copy.deepcopy(params)
    grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    SignSGD(0.5).update(params, grads)
    for key in params:
        np.testing.assert_array_equal(params[key], before[key] - 0.5 * np.sign(grads[key]))
    with pytest.raises(ValueError, match="SignSGD: lr"):
        SignSGD(-1)
    assert repr(SignSGD(0.5)) == "SignSGD(lr=0.5)"


def test_star_import_gives_the_books_names():
    scope = {}
    exec("from minidl.optimizer import *", scope)  # noqa: S102
    for name in ("SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "np"):
        assert name in scope


def df(x, y):  # ch06/optimizer_compare_naive.py's gradient of x**2 / 20 + y**2
    return x / 10.0, 2.0 * y


@pytest.mark.parametrize(("name", "kwargs"), [
    ("SGD", {"lr": 0.95}), ("Momentum", {"lr": 0.1}), ("AdaGrad", {"lr": 1.5}),
    ("Adam", {"lr": 0.3}), ("Nesterov", {"lr": 0.1}), ("RMSprop", {"lr": 0.3})])
def test_number_parameters_as_in_optimizer_compare_naive(name, kwargs):
    # the book's script: params and grads are plain numbers, replaced in the dict by each update
    histories = []
    for module in (opt, book_ch6):
        optimizer = getattr(module, name)(**kwargs)
        params, grads = {"x": -7.0, "y": 2.0}, {"x": 0, "y": 0}
        history = []
        for _ in range(30):
            history.append((params["x"], params["y"]))
            grads["x"], grads["y"] = df(params["x"], params["y"])
            optimizer.update(params, grads)
        histories.append(history)
    assert histories[0] == histories[1]  # the same numbers, bit for bit
    assert histories[0][-1] != (-7.0, 2.0)


def test_number_parameters_need_number_gradients():
    with pytest.raises(TypeError, match=r"params\['x'\] is a number, so grads\['x'\] must be"):
        SGD().update({"x": 1.0}, {"x": np.ones(3)})
    with pytest.raises(TypeError, match=r"params\['x'\] is a str"):
        SGD().update({"x": "1.0"}, {"x": 1.0})
    params = {"x": np.float32(1.0)}
    SGD(lr=0.5).update(params, {"x": 1.0})
    assert params["x"] == 0.5 and params["x"].dtype == np.float32
