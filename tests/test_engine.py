"""The one shortcut rule: whatever minidl does to be fast, the book's answer.

Every test changes a network the way a student might (an inserted layer, an
overridden method, a reassigned array, a second thread, a non-finite weight) and
compares what minidl gives with the book's answer for that network: the same
calls on a copy of the network, on the pure-NumPy reference backend, where no
compiled pass exists.
"""

import copy
import threading
import types
from collections import OrderedDict

import numpy as np
import pytest

import minidl
from minidl import engine
from minidl.engine.passes import passes_for
from minidl.layers import Affine, Relu
from minidl.networks import MultiLayerNet, ThreeLayerNet, TwoLayerNet

K, H, C = 64, 24, 6  # wide enough for the zero-skipping kernels (>= 64 inputs, >= 16 outputs)


def sparse_data(rng, n=40, k=K, density=0.2, dtype=np.float32, classes=C):
    x = rng.random((n, k))
    x[rng.random((n, k)) >= density] = 0
    return x.astype(dtype), rng.integers(0, classes, n)


def on_reference(fn, net, *args, **kwargs):
    """``fn(copy of net, ...)`` on the NumPy reference backend: the book's answer.
    Returns (result, the copy)."""
    ref = copy.deepcopy(net)
    before = minidl.get_backend()
    minidl.set_backend("numpy")
    try:
        return fn(ref, *args, **kwargs), ref
    finally:
        minidl.set_backend(before)


def assert_same(got, ref, rtol=1e-10, atol=1e-12):
    if isinstance(ref, dict):
        assert sorted(got) == sorted(ref)
        for key in ref:
            np.testing.assert_allclose(got[key], ref[key], rtol=rtol, atol=atol, err_msg=key)
    else:
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol)


def gradient(net, x, t):
    return net.gradient(x, t)


def loss(net, x, t):
    return net.loss(x, t)


def accuracy(net, x, t):
    return net.accuracy(x, t)


def numerical(net, x, t):
    return net.numerical_gradient(x[:4], t[:4])


def trained(net, x, t, **kw):
    """A few steps of ``minidl.train`` (fast when it may be); returns the losses."""
    np.random.seed(5)
    history = minidl.train(net, x, t, x, t, lr=0.1, batch_size=10, iters=12, **kw)
    return np.array(history.train_loss + history.train_acc)


CALLS = [gradient, loss, accuracy, numerical]
# The book's loop subtracts two losses of about 2: its central differences carry
# about 1e-12 of rounding, which the exact kernel does not.
TOLERANCE = {numerical: {"rtol": 1e-7, "atol": 1e-10}}


def check_every_call(net, x, t):
    """Each call and a short training run give the book's answer for ``net``."""
    for call in CALLS:
        ref, _ = on_reference(call, net, x, t)
        assert_same(call(copy.deepcopy(net), x, t), ref, **TOLERANCE.get(call, {}))
    ref, ref_net = on_reference(trained, net, x, t, fast=False)
    fast_net = copy.deepcopy(net)
    assert_same(trained(fast_net, x, t), ref, rtol=1e-9, atol=1e-10)
    assert_same(fast_net.params, ref_net.params, rtol=1e-9, atol=1e-10)


def make_two(dtype=np.float64):
    np.random.seed(0)
    return TwoLayerNet(K, H, C, weight_init_std=0.3, dtype=dtype)


# -- the rule accepts the book's networks as built -----------------------------------

@pytest.mark.parametrize("make", [make_two,
                                  lambda: ThreeLayerNet(K, H, 17, C, weight_init_std=0.3),
                                  lambda: MultiLayerNet(K, [H, 17, 16], C),
                                  lambda: TwoLayerNet(K, H, C, activation="sigmoid")])
def test_the_books_networks_as_built_are_taken_and_give_the_books_answer(make, rng):
    net = make()
    x, t = sparse_data(rng)
    assert engine.why_not(net) is None
    check_every_call(net, x, t)


# -- a student's changes: the book's answer ------------------------------------------

class Halve:
    """A layer of the student's own (any object with forward and backward)."""

    def forward(self, x):
        return x * 0.5

    def backward(self, dout):
        return dout * 0.5


@pytest.mark.parametrize("how", ["new dict", "in place"])
def test_an_inserted_layer_is_never_ignored(how, rng):
    net = make_two()
    items = list(net.layers.items())
    items.insert(2, ("Halve", Halve()))
    if how == "new dict":
        net.layers = OrderedDict(items)
    else:
        net.layers.clear()
        net.layers.update(items)
    x, t = sparse_data(rng)
    assert "Halve" in engine.why_not(net)
    check_every_call(net, x, t)


class Tempered(TwoLayerNet):
    def predict(self, x):
        return super().predict(x) * 2.0


class Shifted(TwoLayerNet):
    def loss(self, x, t):
        return super().loss(x, t) + 1.0


class Counted(TwoLayerNet):
    def accuracy(self, x, t):
        return super().accuracy(x, t) / 2


@pytest.mark.parametrize("cls", [Tempered, Shifted, Counted])
def test_an_overridden_network_method_is_never_ignored(cls, rng):
    np.random.seed(0)
    net = cls(K, H, C, weight_init_std=0.3)
    x, t = sparse_data(rng)
    assert cls.__name__ in engine.why_not(net)
    check_every_call(net, x, t)


def test_a_method_replaced_on_the_instance_is_never_ignored(rng):
    net = make_two()
    net.predict = lambda x: TwoLayerNet.predict(net, x) - 1.0
    x, t = sparse_data(rng)
    assert "predict" in engine.why_not(net)
    for call in (loss, accuracy):
        ref, _ = on_reference(call, net, x, t)
        assert_same(call(net, x, t), ref)


class LeakyRelu(Relu):
    def forward(self, x):
        self.x = x
        return np.where(x > 0, x, 0.1 * x)

    def backward(self, dout):
        return np.where(self.x > 0, dout, 0.1 * dout)


def test_a_layer_subclass_or_patched_layer_method_is_never_ignored(rng):
    x, t = sparse_data(rng)
    net = make_two()
    net.layers["Relu1"] = LeakyRelu()
    assert "LeakyRelu" in engine.why_not(net)
    check_every_call(net, x, t)

    net = make_two()
    relu = net.layers["Relu1"]
    relu.forward = types.MethodType(lambda self, z: Relu.forward(self, z) * 3.0, relu)
    assert "forward" in engine.why_not(net)
    for call in (gradient, loss, accuracy):
        ref, _ = on_reference(call, net, x, t)
        assert_same(call(net, x, t), ref)


@pytest.mark.parametrize("change", ["params rebound", "layer W rebound", "layer b rebound",
                                    "float32 W1", "last layer"])
def test_reassigned_arrays_give_the_books_answer(change, rng):
    net = make_two()
    if change == "params rebound":  # the layer keeps computing with the old array
        net.params["W1"] = net.params["W1"].copy()
    elif change == "layer W rebound":  # the layer computes with an array params lacks
        net.layers["Affine1"].W = net.params["W1"] * 0.5
    elif change == "layer b rebound":
        net.layers["Affine2"].b = net.params["b2"] + 1.0
    elif change == "float32 W1":  # the book's NumPy promotion decides the dtype
        net.params["W1"] = net.params["W1"].astype(np.float32)
        net.layers["Affine1"].W = net.params["W1"]
    else:
        from minidl.layers import SoftmaxWithLoss

        class Sharper(SoftmaxWithLoss):
            def forward(self, x, t):
                return super().forward(3 * x, t)

        net.lastLayer = Sharper()
    x, t = sparse_data(rng)
    if change != "float32 W1":  # (taken by the exact numerical gradient, which mixes dtypes)
        assert engine.why_not(net) is not None
    check_every_call(net, x, t)


def test_params_replaced_by_arrays_of_other_shapes_are_not_used_by_the_layers(rng):
    net = make_two()
    x, t = sparse_data(rng)
    net.params["W1"] = np.zeros((K, H + 5))  # the layers still hold the old W1
    ref, _ = on_reference(gradient, net, x, t)
    assert_same(net.gradient(x, t), ref)
    ref, _ = on_reference(loss, net, x, t)
    assert_same(net.loss(x, t), ref)


# -- non-finite numbers: IEEE semantics, as NumPy's ---------------------------------

@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_non_finite_weight_behind_a_zero_input_is_not_skipped(value, rng):
    x, t = sparse_data(rng)
    x[:, 5] = 0  # pixel 5 is zero in the whole batch
    net = make_two()
    net.params["W1"][5, 0] = value
    for call in (gradient, loss, accuracy):
        ref, _ = on_reference(call, net, x, t)
        assert_same(call(net, x, t), ref)
    assert not np.isfinite(net.loss(x, t))


@pytest.mark.parametrize("where", ["W2", "b1", "x"])
def test_non_finite_numbers_elsewhere_give_numpys_results(where, rng):
    x, t = sparse_data(rng)
    net = make_two()
    if where == "W2":
        net.params["W2"][0, 0] = np.inf
    elif where == "b1":
        net.params["b1"][3] = np.nan
    else:
        x[2, 7] = np.inf
        x[4, 8] = np.nan
    for call in (gradient, loss, accuracy):
        ref, _ = on_reference(call, net, x, t)
        assert_same(call(net, x, t), ref)


def test_a_backward_pass_that_overflows_behind_a_finite_loss_gives_numpys_gradient(rng):
    # finite weights (their squares summing to a finite number: the zero-skipping pass
    # takes them) and a finite loss, but the backward pass overflows through three
    # layers of 1e152: the first hidden gradient is inf, and the book's x.T @ dz puts
    # 0 * inf = NaN where an input is zero. The zero-skipping product would leave 0
    # there; the inf in db1 sends the batch to the book's code.
    x, t = sparse_data(rng, n=4)
    x[:, 5] = 0
    np.random.seed(0)
    net = MultiLayerNet(K, [H, H, H], C)
    p = net.params
    p["W1"][...] = 1e-300 * np.abs(p["W1"])  # h1 ~ 1e-300, h2 ~ 1e-147, h3 ~ 1e7
    for key in ("b1", "b2", "b3"):
        p[key][...] = 1e-300
    p["W2"][...] = p["W3"][...] = 1e152
    p["W4"][...] = 1e152
    p["W4"][:, t[0]] = -1e152  # the label scores lowest: y_t ~ 0
    t[:] = t[0]
    with np.errstate(over="ignore", invalid="ignore"):
        ref, _ = on_reference(gradient, net, x, t)
        assert passes_for(net)._kernels_take()  # the zero-skipping pass would take it
        got = gradient(net, x, t)
        assert np.isfinite(net.loss(x, t))
    assert np.isnan(ref["W1"][5]).all() and np.isinf(ref["b1"]).any()
    assert_same(got, ref)  # (NaN where NaN, inf where inf)


def test_training_that_meets_a_non_finite_weight_follows_the_book(rng):
    x, t = sparse_data(rng, n=60)
    x[:, 5] = 0
    net = make_two()
    net.params["W1"][5, 0] = np.nan
    ref, ref_net = on_reference(trained, net, x, t, fast=False)
    got = trained(net, x, t)
    assert_same(got, ref)
    assert_same(net.params, ref_net.params)


# -- threads: one network from several threads, every call as a serial one ------------

@pytest.mark.parametrize("n_threads", [2, 4])
@pytest.mark.parametrize("make", [make_two, lambda: MultiLayerNet(K, [H], C, weight_init_std=0.3)])
def test_one_network_from_several_threads_gives_the_serial_answers(n_threads, make, rng):
    net = make()
    batches = [sparse_data(rng, n=30 + 7 * i) for i in range(n_threads)]
    soft = np.full((30, C), 1.0 / C)  # soft labels: the layer-by-layer path
    serial = [(net.gradient(x, t), net.loss(x, t), net.accuracy(x, t), net.gradient(x[:30], soft))
              for x, t in batches]
    failures = []

    def work(i):
        x, t = batches[i]
        try:
            for _ in range(25):
                g, lo, acc, gs = (net.gradient(x, t), net.loss(x, t), net.accuracy(x, t),
                                  net.gradient(x[:30], soft))
                for key in g:
                    if not (np.array_equal(g[key], serial[i][0][key])
                            and np.array_equal(gs[key], serial[i][3][key])):
                        failures.append((i, key))
                if lo != serial[i][1] or acc != serial[i][2]:
                    failures.append((i, lo, acc))
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append((i, repr(exc)))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert failures == []


def test_numerical_gradient_from_two_threads(rng):
    net = make_two()
    x, t = sparse_data(rng, n=5)
    serial = net.numerical_gradient(x, t)
    out = [None, None]

    def work(i):
        out[i] = net.numerical_gradient(x, t)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for got in out:
        for key in serial:
            assert np.array_equal(got[key], serial[key])


# -- kernel entries check what they will write ---------------------------------------

@pytest.mark.parametrize("rows", [100, 1000, 10])
def test_affine_backward_after_w_is_replaced_by_another_shape(rows, rng):
    x, _ = sparse_data(rng, n=20, k=784)
    layer = Affine(0.1 * rng.standard_normal((784, 50)), np.zeros(50))
    layer.forward(x)
    layer.W = rng.standard_normal((rows, 50))
    with pytest.raises(ValueError, match="W"):
        layer.backward(np.ones((20, 50)))


def test_affine_backward_after_w_is_replaced_by_another_width(rng):
    x, _ = sparse_data(rng, n=20, k=784)
    layer = Affine(0.1 * rng.standard_normal((784, 50)), np.zeros(50))
    layer.forward(x)
    layer.W = rng.standard_normal((784, 30))
    with pytest.raises(ValueError):
        layer.backward(np.ones((20, 50)))


def test_affine_backward_after_w_is_replaced_by_the_same_shape_uses_the_new_w(rng):
    x, _ = sparse_data(rng, n=20, k=784)
    layer = Affine(0.1 * rng.standard_normal((784, 50)), np.zeros(50))
    layer.forward(x)
    layer.W = rng.standard_normal((784, 50))
    dout = rng.standard_normal((20, 50))
    dx = layer.backward(dout)
    np.testing.assert_allclose(dx, dout @ layer.W.T, rtol=1e-12)
    np.testing.assert_allclose(layer.dW, x.astype(np.float64).T @ dout, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sizes", [[K, 20, C], [K] + [16] * 30 + [C]])  # up to the engine's depth
def test_compiled_trainer_refuses_rows_out_of_range(sizes, rng):
    x, t = sparse_data(rng)
    net = MultiLayerNet(sizes[0], sizes[1:-1], sizes[-1])
    runner = engine.StepRunner(net, x, t)
    for rows in ([-1, 2], [0, len(x)], [len(x) + 1000], [-(2 ** 40)]):
        before = {k: v.copy() for k, v in net.params.items()}
        with pytest.raises(ValueError, match="rows"):
            runner.step(np.array(rows))
        for key, value in before.items():  # nothing was changed by the refused step
            assert np.array_equal(value, net.params[key])
    with pytest.raises(TypeError, match="rows"):
        runner.step(np.array([0.5, 1.0]))


def test_networks_deeper_than_the_compiled_step_train_on_the_plain_loop(rng):
    x, t = sparse_data(rng)
    net = MultiLayerNet(K, [16] * 34, C)
    with pytest.raises(ValueError, match="affine layers"):
        engine.StepRunner(net, x, t)
    ref, ref_net = on_reference(trained, net, x, t, fast=False)
    assert_same(trained(net, x, t), ref)
    assert_same(net.params, ref_net.params)


def test_training_that_diverges_follows_the_book_into_nan(rng):
    x, t = sparse_data(rng, n=60)
    x *= 1e100  # the scores overflow within a few steps
    np.random.seed(0)
    net = TwoLayerNet(K, H, C, weight_init_std=1.0)

    def run(network, fast):
        np.random.seed(5)
        with np.errstate(all="ignore"):
            history = minidl.train(network, x, t, lr=1e100, batch_size=10, iters=30, fast=fast)
        return np.array(history.train_loss)

    ref, ref_net = on_reference(run, net, False)
    got = run(net, True)
    assert not np.isfinite(ref).all()  # the run really diverged
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    finite = np.isfinite(ref)
    np.testing.assert_allclose(got[finite], ref[finite], rtol=1e-7)
    for key in ref_net.params:
        np.testing.assert_array_equal(np.isnan(net.params[key]), np.isnan(ref_net.params[key]))


@pytest.mark.parametrize("cls", ["multi", "two"])
def test_weights_whose_squares_overflow_give_the_books_loss(cls, rng):
    """The book's MultiLayerNet adds 0 * sum(W ** 2) to its loss even without weight
    decay (NaN once the squares overflow); its TwoLayerNet has no such term."""
    x, t = sparse_data(rng)
    np.random.seed(0)
    net = MultiLayerNet(K, [H], C) if cls == "multi" else TwoLayerNet(K, H, C)
    net.params["W2"][0, :] = 1e160  # finite, but its square is not
    with np.errstate(all="ignore"):
        got = net.loss(x, t)
        ref, _ = on_reference(loss, net, x, t)
    assert np.isnan(got) == np.isnan(ref)
    assert np.isnan(got) == (cls == "multi")
    if cls == "two":
        assert got == pytest.approx(ref)
