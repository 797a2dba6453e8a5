"""MultiLayerNet and MultiLayerNetExtend against the book's (transcribed in bench/book_ch6.py).

minidl's compiled shortcuts stand in for the layer code on plain Affine/ReLU/Sigmoid
stacks. Whatever they do, these networks must give the book's answers: every test
here runs on MNIST-like sparse batches (what tempts the shortcuts) and on dense
ones, on both backends, and compares with the book's NumPy code.
"""

from pathlib import Path

import numpy as np
import pytest
from book_common import book_ch6

import minidl
import minidl.gradient
import minidl.optimizer
from minidl.networks import (
    MultiLayerNet,
    MultiLayerNetExtend,
    ThreeLayerNet,
    TwoLayerNet,
    load_network,
)

DATA = Path(__file__).parent / "data"
SIZES = (16, [12, 10, 8], 5)


def batch(rng, n=24, width=16, sparse=True, one_hot=False, classes=5):
    x = rng.random((n, width))
    if sparse:
        x[x < 0.8] = 0.0  # 80% zeros, like MNIST's pixels
    t = rng.integers(0, classes, n)
    return x, (np.eye(classes)[t] if one_hot else t)


def pair(cls, seed=0, **kwargs):
    np.random.seed(seed)
    ours = getattr(minidl.networks, cls)(*SIZES, **kwargs)
    np.random.seed(seed)
    book = getattr(book_ch6, cls)(SIZES[0], list(SIZES[1]), SIZES[2], **kwargs)
    return ours, book


def assert_grads(ours, book, rtol=1e-10, atol=1e-12):
    assert list(ours) == list(book)
    for key in book:
        np.testing.assert_allclose(ours[key], book[key], rtol=rtol, atol=atol, err_msg=key)


# -- MultiLayerNet as the book's --------------------------------------------------------

@pytest.mark.parametrize("init", ["relu", "he", "sigmoid", "xavier", "ReLU", 0.01, 1, None])
def test_multilayernet_initialises_as_the_books(init):
    kwargs = {} if init is None else {"weight_init_std": init}
    ours, book = pair("MultiLayerNet", **kwargs)
    assert list(ours.params) == list(book.params)
    for key in book.params:
        np.testing.assert_array_equal(ours.params[key], book.params[key])
    assert list(ours.layers) == list(book.layers) == [
        "Affine1", "Activation_function1", "Affine2", "Activation_function2", "Affine3",
        "Activation_function3", "Affine4"]
    assert ours.weight_init_std == (init if init is not None else "relu")
    assert (ours.input_size, ours.hidden_size_list, ours.output_size, ours.hidden_layer_num) \
        == (16, [12, 10, 8], 5, 3)


def test_multilayernet_default_is_he():
    np.random.seed(1)
    net = MultiLayerNet(400, [300], 10)
    assert abs(net.params["W1"].std() - np.sqrt(2 / 400)) < 0.002
    assert abs(net.params["W2"].std() - np.sqrt(2 / 300)) < 0.01


def test_two_and_three_layer_nets_keep_0_01_and_relu1():
    np.random.seed(2)
    two = TwoLayerNet(400, 300, 10)
    assert abs(two.params["W1"].std() - 0.01) < 0.0005
    assert list(two.layers) == ["Affine1", "Relu1", "Affine2"]
    three = ThreeLayerNet(400, 30, 20, 10)
    assert list(three.layers) == ["Affine1", "Relu1", "Affine2", "Relu2", "Affine3"]
    assert abs(three.params["W1"].std() - 0.01) < 0.002


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("wd", [0, 0.1])
def test_multilayernet_loss_gradient_accuracy_are_the_books(backend, wd, activation, sparse,
                                                            rng):
    ours, book = pair("MultiLayerNet", weight_decay_lambda=wd, activation=activation)
    for one_hot in (False, True):
        x, t = batch(rng, sparse=sparse, one_hot=one_hot)
        assert_grads(ours.gradient(x, t), book.gradient(x, t))
        np.testing.assert_allclose(ours.loss(x, t), book.loss(x, t), rtol=1e-12)
        assert ours.accuracy(x, t) == book.accuracy(x, t)
    ours.last_layer = ours.lastLayer  # the book's name, settable
    assert ours.last_layer is ours.lastLayer


@pytest.mark.parametrize("wd", [0, 0.3])
def test_multilayernet_numerical_gradient_is_the_books(backend, wd, rng):
    np.random.seed(4)
    ours = MultiLayerNet(6, [4, 3], 3, weight_decay_lambda=wd)
    np.random.seed(4)
    book = book_ch6.MultiLayerNet(6, [4, 3], 3, weight_decay_lambda=wd)
    x, t = batch(rng, n=5, width=6, classes=3)
    assert_grads(ours.numerical_gradient(x, t), book.numerical_gradient(x, t), rtol=1e-6,
                 atol=1e-9)


def test_weight_decay_is_checked():
    with pytest.raises(ValueError, match="weight_decay_lambda must be a finite number >= 0"):
        MultiLayerNet(4, [3], 2, weight_decay_lambda=-0.1)
    with pytest.raises(ValueError, match="weight_decay_lambda must be a finite number"):
        MultiLayerNetExtend(4, [3], 2, weight_decay_lambda=float("nan"))
    with pytest.raises(TypeError, match="weight_decay_lambda must be a number"):
        MultiLayerNet(4, [3], 2, weight_decay_lambda="0.1")
    with pytest.raises(ValueError, match="unknown initialisation 'glorot'"):
        MultiLayerNet(4, [3], 2, weight_init_std="glorot")


# -- files written by the code before chapter 6 still load --------------------------------

@pytest.mark.parametrize(("name", "kind", "activation", "dtype", "wd"), [
    ("multilayernet_v1.npz", MultiLayerNet, "sigmoid", np.float64, 0.01),
    ("twolayernet_v1_float32.npz", TwoLayerNet, "relu", np.float32, 0.0),
])
def test_models_saved_before_chapter_6_still_load(name, kind, activation, dtype, wd, rng):
    path = DATA / name
    state = np.random.get_state()
    net = load_network(path)
    assert np.random.get_state()[1].tolist() == state[1].tolist()
    assert type(net) is kind and net.activation == activation and net.dtype == dtype
    assert net.weight_decay_lambda == wd
    with np.load(path) as data:
        saved = {k: data[k] for k in data.files if k != "__architecture__"}
    assert sorted(saved) == sorted(net.params)
    for key, value in saved.items():
        np.testing.assert_array_equal(net.params[key], value)
    # it computes with them (the book's forward pass on the saved arrays)
    book = book_ch6.MultiLayerNet(net.sizes[0], net.sizes[1:-1], net.sizes[-1],
                                  activation=activation)
    for key in book.params:
        book.params[key][...] = saved[key]
    x = rng.random((3, net.sizes[0])).astype(dtype)
    np.testing.assert_allclose(net.predict(x), book.predict(x), rtol=RTOL32 if dtype ==
                               np.float32 else 1e-12)


RTOL32 = 1e-5


# -- MultiLayerNetExtend ----------------------------------------------------------------

EXTEND_CASES = {
    "plain": {},
    "batchnorm": {"use_batchnorm": True},
    "dropout": {"use_dropout": True, "dropout_ration": 0.3},
    "both+decay": {"use_batchnorm": True, "use_dropout": True, "weight_decay_lambda": 0.05,
                   "activation": "sigmoid", "weight_init_std": "xavier"},
}


@pytest.mark.parametrize("case", list(EXTEND_CASES))
def test_extend_builds_the_books_network(case):
    ours, book = pair("MultiLayerNetExtend", **EXTEND_CASES[case])
    assert list(ours.params) == list(book.params)
    for key in book.params:
        np.testing.assert_array_equal(ours.params[key], book.params[key])
    assert list(ours.layers) == list(book.layers)
    for name, layer in ours.layers.items():
        assert type(layer).__name__ == type(book.layers[name]).__name__
        if name.startswith("BatchNorm"):
            i = name[len("BatchNorm"):]
            assert layer.gamma is ours.params[f"gamma{i}"] and layer.beta is ours.params[f"beta{i}"]
    kw = EXTEND_CASES[case]
    assert ours.use_dropout == kw.get("use_dropout", False)
    assert ours.use_batchnorm == kw.get("use_batchnorm", False)


def test_extend_layer_names():
    net = MultiLayerNetExtend(4, [3, 3], 2, use_batchnorm=True, use_dropout=True)
    assert list(net.layers) == [
        "Affine1", "BatchNorm1", "Activation_function1", "Dropout1",
        "Affine2", "BatchNorm2", "Activation_function2", "Dropout2", "Affine3"]
    assert list(net.params) == ["W1", "b1", "W2", "b2", "W3", "b3", "gamma1", "beta1",
                                "gamma2", "beta2"]


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("case", list(EXTEND_CASES))
def test_extend_gradient_loss_accuracy_are_the_books(backend, case, sparse, rng):
    ours, book = pair("MultiLayerNetExtend", **EXTEND_CASES[case])
    for one_hot in (False, True):
        x, t = batch(rng, sparse=sparse, one_hot=one_hot)
        np.random.seed(9)
        g = ours.gradient(x, t)
        np.random.seed(9)
        g_book = book.gradient(x, t)
        assert_grads(g, g_book)
        for train_flg in (False, True):
            np.random.seed(10)
            loss = ours.loss(x, t, train_flg=train_flg)
            np.random.seed(10)
            np.testing.assert_allclose(loss, book.loss(x, t, train_flg=train_flg), rtol=1e-12)
        np.testing.assert_allclose(ours.predict(x), book.predict(x), rtol=1e-10, atol=1e-12)
        assert ours.accuracy(x, t) == book.accuracy(x, t)
    for name, layer in ours.layers.items():
        if name.startswith("BatchNorm"):
            np.testing.assert_allclose(layer.running_mean, book.layers[name].running_mean,
                                       rtol=1e-12)
            np.testing.assert_allclose(layer.running_var, book.layers[name].running_var,
                                       rtol=1e-12)


@pytest.mark.parametrize("n", [256, 300])
def test_batchnorm_gradient_on_a_batch_of_more_than_256_rows_is_the_books(n, rng):
    # the first product skips the batch's zeros; its weight gradient sums the kept
    # lists in chunks of 256 rows (a 300-row batch once summed the first chunk twice)
    ours, book = pair("MultiLayerNetExtend", use_batchnorm=True)
    x, t = batch(rng, n=n)
    assert_grads(ours.gradient(x, t), book.gradient(x, t))


def test_extend_without_dropout_and_batchnorm_runs_on_the_compiled_passes(rng):
    # MultiLayerNet's stack: the one rule takes it, and its numbers stay the book's
    from minidl.engine import why_not
    from minidl.engine.passes import _plans

    ours, book = pair("MultiLayerNetExtend", weight_decay_lambda=0.01)
    assert why_not(ours) is None
    x, t = batch(rng, n=32)
    assert_grads(ours.gradient(x, t), book.gradient(x, t))
    assert ours in _plans  # the compiled gradient ran (its passes are kept for the network)
    # the layers hold what the book's layer-by-layer pass leaves
    for name, layer in book.layers.items():
        if name.startswith("Affine"):
            np.testing.assert_allclose(ours.layers[name].dW, layer.dW, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(ours.layers[name].x, layer.x, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.lastLayer.y, book.last_layer.y, rtol=1e-10, atol=1e-14)
    for train_flg in (False, True):
        np.testing.assert_allclose(ours.loss(x, t, train_flg=train_flg),
                                   book.loss(x, t, train_flg=train_flg), rtol=1e-12)
    assert ours.accuracy(x, t) == book.accuracy(x, t)


@pytest.mark.parametrize("case", ["dropout", "both+decay"])
def test_extend_with_dropout_is_refused_by_the_rule(case):
    from minidl.engine import why_not

    net = MultiLayerNetExtend(*SIZES, **EXTEND_CASES[case])
    assert "Dropout" in why_not(net)


def test_extend_with_batchnorm_is_taken_by_the_network_passes_only():
    # (tests/test_engine_batchnorm.py holds its passes to the book's)
    from minidl.engine import examine, why_not

    net = MultiLayerNetExtend(*SIZES, **EXTEND_CASES["batchnorm"])
    assert why_not(net) is None
    assert len(examine(net, norms=True).norms) == len(SIZES[1])
    # minidl.train's steps and the exact numerical gradient take plain stacks only
    assert "batch normalisation" in examine(net)


def test_extend_flags_and_subclasses_step_the_compiled_passes_aside(rng):
    from minidl.engine import why_not

    x, t = batch(rng)
    # a flag set by hand: the book's gradient then looks for BatchNorm layers (KeyError)
    ours, book = pair("MultiLayerNetExtend")
    ours.use_batchnorm = book.use_batchnorm = True
    assert why_not(ours) is not None
    with pytest.raises(KeyError):
        book.gradient(x, t)
    with pytest.raises(KeyError):
        ours.gradient(x, t)
    # a subclass with its own gradient runs it; one that overrides nothing is taken

    class Halved(MultiLayerNetExtend):
        def gradient(self, x, t):
            return {k: v / 2 for k, v in super().gradient(x, t).items()}

    class Same(MultiLayerNetExtend):
        pass

    np.random.seed(0)
    halved = Halved(*SIZES)
    assert "overrides gradient" in why_not(halved)
    np.random.seed(0)
    same = Same(*SIZES)
    assert why_not(same) is None
    ours, book = pair("MultiLayerNetExtend")
    want = book.gradient(x, t)
    assert_grads(same.gradient(x, t), want)
    got = halved.gradient(x, t)
    for key in want:
        np.testing.assert_allclose(got[key], want[key] / 2, rtol=1e-10, atol=1e-12)
    # Dropout layers inserted by hand into a plain network: the layer path, the book's masks
    ours, book = pair("MultiLayerNetExtend")
    for net, cls in ((ours, minidl.layers.Dropout), (book, book_ch6.Dropout)):
        layers = list(net.layers.items())
        layers.insert(2, ("Dropout1", cls(0.5)))
        net.layers.clear()
        net.layers.update(layers)
    assert why_not(ours) is not None
    np.random.seed(5)
    g = ours.gradient(x, t)
    np.random.seed(5)
    assert_grads(g, book.gradient(x, t))


@pytest.mark.parametrize("case", list(EXTEND_CASES))
def test_extend_numerical_gradient_is_the_books(backend, case, rng):
    kwargs = EXTEND_CASES[case]
    np.random.seed(5)
    ours = MultiLayerNetExtend(6, [4, 3], 3, **kwargs)
    np.random.seed(5)
    book = book_ch6.MultiLayerNetExtend(6, [4, 3], 3, **kwargs)
    x, t = batch(rng, n=5, width=6, classes=3)
    np.random.seed(6)  # the same masks, drawn at each evaluation as the book does
    grads = ours.numerical_gradient(x, t)
    np.random.seed(6)
    assert_grads(grads, book.numerical_gradient(x, t), rtol=1e-6, atol=1e-9)


def _fix_dropout_masks(net, x):
    """Draw each Dropout layer's mask once and keep it (numerical vs backprop on one function)."""
    net.predict(x, train_flg=True)
    for layer in net.layers.values():
        if type(layer).__name__ == "Dropout":
            mask = layer.mask
            layer.forward = lambda x, train_flg=True, layer=layer, mask=mask: (
                setattr(layer, "mask", mask) or x * mask)


@pytest.mark.parametrize("case", list(EXTEND_CASES))
def test_extend_backprop_agrees_with_numerical_gradient(case, rng):
    np.random.seed(12)
    net = MultiLayerNetExtend(6, [5, 4], 3, **EXTEND_CASES[case])
    x, t = batch(rng, n=8, width=6, sparse=False, classes=3)
    _fix_dropout_masks(net, x)
    numerical = net.numerical_gradient(x, t)
    backprop = net.gradient(x, t)
    assert list(numerical) == list(backprop)
    for key in numerical:
        np.testing.assert_allclose(backprop[key], numerical[key], atol=1e-6, err_msg=key)
    report = minidl.gradient.gradient_check(net, x, t)
    # without Dropout and BatchNorm it is MultiLayerNet's stack: the exact kernel serves it
    assert report.numerical_method == ("fast" if case == "plain" else "generic")
    assert report.ok


@pytest.mark.parametrize("case", list(EXTEND_CASES))
def test_extend_float32(case, rng):
    net = MultiLayerNetExtend(*SIZES, dtype=np.float32, **EXTEND_CASES[case])
    assert all(p.dtype == np.float32 for p in net.params.values())
    x, t = batch(rng)
    x = x.astype(np.float32)
    grads = net.gradient(x, t)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert net.predict(x).dtype == np.float32


# -- training: minidl.train and the optimizers, against the book's loop ------------------------

def book_loop(net, x, t, iters, lr, batch_size, optimizer=None):
    """The book's training loop (SGD, or an optimizer), the loss after each step."""
    losses = []
    for _ in range(iters):
        mask = np.random.choice(len(x), batch_size)
        grads = net.gradient(x[mask], t[mask])
        if optimizer is None:
            for key in net.params:
                net.params[key] -= lr * grads[key]
        else:
            optimizer.update(net.params, grads)
        losses.append(net.loss(x[mask], t[mask]))
    return losses


TRAIN_CASES = [("MultiLayerNet", {}), ("MultiLayerNet", {"weight_decay_lambda": 0.1}),
               *(("MultiLayerNetExtend", kw) for kw in EXTEND_CASES.values())]


@pytest.mark.parametrize(("cls", "kwargs"), TRAIN_CASES)
def test_minidl_train_fast_gives_the_books_steps(cls, kwargs, rng):
    ours, book = pair(cls, **kwargs)
    x, t = batch(rng, n=60)
    np.random.seed(21)
    history = minidl.train(ours, x, t, x, t, lr=0.1, batch_size=10, iters=8, fast=True)
    np.random.seed(21)
    losses = book_loop(book, x, t, iters=8, lr=0.1, batch_size=10)
    np.testing.assert_allclose(history.train_loss, losses, rtol=1e-9)
    for key in book.params:
        np.testing.assert_allclose(ours.params[key], book.params[key], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("opt_name", ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"])
@pytest.mark.parametrize(("cls", "kwargs"), [TRAIN_CASES[0], TRAIN_CASES[3]])
def test_optimizers_train_the_networks_as_the_books(cls, kwargs, opt_name, rng):
    ours, book = pair(cls, **kwargs)
    x, t = batch(rng, n=60)
    np.random.seed(22)
    ours_losses = book_loop(ours, x, t, 6, None, 10, getattr(minidl.optimizer, opt_name)())
    np.random.seed(22)
    book_losses = book_loop(book, x, t, 6, None, 10, getattr(book_ch6, opt_name)())
    np.testing.assert_allclose(ours_losses, book_losses, rtol=1e-9)


# -- saving and loading ---------------------------------------------------------------

@pytest.mark.parametrize("case", list(EXTEND_CASES))
def test_extend_saves_and_loads(case, tmp_path, rng):
    np.random.seed(3)
    net = MultiLayerNetExtend(*SIZES, dtype=np.float32, **EXTEND_CASES[case])
    x, t = batch(rng)
    x = x.astype(np.float32)
    # before any training forward, BatchNorm has no running statistics yet: saved without
    net.save(tmp_path / "fresh.npz")
    fresh = load_network(tmp_path / "fresh.npz")
    for name, layer in fresh.layers.items():
        if name.startswith("BatchNorm"):
            assert layer.running_mean is None
    for _ in range(3):
        grads = net.gradient(x, t)
        for key in net.params:
            net.params[key] -= 0.1 * grads[key]
    net.save(tmp_path / "net.npz")
    loaded = MultiLayerNetExtend.load(tmp_path / "net.npz")
    assert type(loaded) is MultiLayerNetExtend and loaded.dtype == np.float32
    assert loaded.architecture() == net.architecture()
    assert list(loaded.params) == list(net.params) and list(loaded.layers) == list(net.layers)
    for key in net.params:
        np.testing.assert_array_equal(loaded.params[key], net.params[key])
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))


def test_extend_damaged_running_statistics_are_refused(tmp_path, rng):
    net = MultiLayerNetExtend(4, [3], 2, use_batchnorm=True)
    net.gradient(rng.random((5, 4)), rng.integers(0, 2, 5))
    net.layers["BatchNorm1"].running_var = np.ones(7)
    net.save(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match=r"BatchNorm1.running_var has shape \(7,\)"):
        load_network(tmp_path / "bad.npz")


# -- the cached-pass numerical gradient of MultiLayerNetExtend ------------------------------

@pytest.mark.parametrize(("kwargs", "n"), [
    ({"use_batchnorm": True}, 1),  # batch_norm_gradient_check.py's batch of one
    ({"use_batchnorm": True, "activation": "sigmoid", "weight_decay_lambda": 0.1}, 6),
    ({"weight_decay_lambda": 0.3}, 5),
])
def test_extend_cached_numerical_gradient_is_the_books_loop(kwargs, n, rng):
    from minidl import _extend_numgrad

    x, t = batch(rng, n=n, width=12, classes=10, one_hot=True)
    np.random.seed(8)
    ours = MultiLayerNetExtend(12, [20, 30], 10, **kwargs)
    np.random.seed(8)
    book = book_ch6.MultiLayerNetExtend(12, [20, 30], 10, **kwargs)
    assert _extend_numgrad.problem(ours) is None  # the cached pass serves it
    ours.gradient(x, t)
    book.gradient(x, t)
    grads, expected = ours.numerical_gradient(x, t), book.numerical_gradient(x, t)
    assert_grads(grads, expected, rtol=1e-7, atol=1e-9)
    # what the book's loop leaves: running statistics moved by its passes, the last caches
    for name, layer in ours.layers.items():
        if name.startswith("BatchNorm"):
            np.testing.assert_allclose(layer.running_mean, book.layers[name].running_mean,
                                       rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(layer.running_var, book.layers[name].running_var,
                                       rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours.last_layer.y, book.last_layer.y, rtol=1e-12, atol=1e-15)
    generic = ours.numerical_gradient(x, t, method="generic")
    assert_grads(grads, generic, rtol=1e-7, atol=1e-9)


def test_extend_numerical_gradient_methods(rng):
    x, t = batch(rng, n=4, width=12, classes=10)
    with pytest.raises(ValueError, match="method='fast'.*Dropout draws a new mask"):
        MultiLayerNetExtend(12, [20], 10, use_dropout=True).numerical_gradient(
            x, t, method="fast")
    with pytest.raises(ValueError, match="method='fast'.*too few unperturbed passes"):
        MultiLayerNetExtend(12, [3], 2, use_batchnorm=True).numerical_gradient(
            x, t % 2, method="fast")
    with pytest.raises(ValueError, match="method='fast'.*float32"):
        MultiLayerNetExtend(12, [20], 10, dtype=np.float32).numerical_gradient(
            x, t, method="fast")
    with pytest.raises(ValueError, match="method must be"):
        MultiLayerNetExtend(12, [20], 10).numerical_gradient(x, t, method="quick")
    net = MultiLayerNetExtend(12, [20], 10)
    net.layers["Extra"] = minidl.layers.Relu()  # a layer added by hand: the loop serves it
    with pytest.raises(ValueError, match="not the ones it built"):
        net.numerical_gradient(x, t, method="fast")
    # an activation swapped by hand is computed as it is
    np.random.seed(3)
    net = MultiLayerNetExtend(12, [20], 10)
    net.layers["Activation_function1"] = minidl.layers.Sigmoid()
    assert_grads(net.numerical_gradient(x, t), net.numerical_gradient(x, t, method="generic"),
                 rtol=1e-7, atol=1e-9)
