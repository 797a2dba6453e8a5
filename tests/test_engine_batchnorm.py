"""A MultiLayerNetExtend with batch normalisation on the compiled passes
(minidl.engine.normalized) against the book's code (bench/book_ch6.py) and
against minidl's own layer-by-layer code.

The passes must give the book's gradients, losses, accuracies and running
statistics, leave every layer as the layer code leaves it (so that the book's
manual ``layer.backward`` calls work), and step aside, to the layer code and its
errors, for whatever they do not cover.
"""

import contextlib

import numpy as np
import pytest
from book_common import book_ch6

import minidl.gradcheck
import minidl.networks
from minidl.backend.cython_ops import CythonOps
from minidl.engine import normalized, why_not
from minidl.engine.passes import _plans
from minidl.layers import BatchNormalization, Relu
from minidl.networks import MultiLayerNetExtend

SIZES = (16, [12, 10, 8], 5)


def batch(rng, n=24, width=16, density=0.2, classes=5, one_hot=False):
    x = rng.random((n, width))
    x[rng.random((n, width)) >= density] = 0.0  # density 0.2: MNIST-like, zeros skipped
    t = rng.integers(0, classes, n)
    return x, (np.eye(classes)[t] if one_hot else t)


def pair(seed=0, **kwargs):
    kwargs.setdefault("use_batchnorm", True)
    np.random.seed(seed)
    ours = MultiLayerNetExtend(*SIZES, **kwargs)
    np.random.seed(seed)
    book_kwargs = {k: v for k, v in kwargs.items() if k != "dtype"}
    book = book_ch6.MultiLayerNetExtend(SIZES[0], list(SIZES[1]), SIZES[2], **book_kwargs)
    return ours, book


def assert_grads(ours, book, rtol=1e-10, atol=1e-12):
    assert list(ours) == list(book)
    for key in book:
        np.testing.assert_allclose(ours[key], book[key], rtol=rtol, atol=atol, err_msg=key)


@pytest.fixture
def norm_passes(monkeypatch):
    """The training forward passes the NormStep ran (train flags), and whether
    each skipped the first product's zeros."""
    ran = []
    forward = normalized.NormStep.forward

    def counted(self, x, train, skip_zeros=False):
        ran.append((train, skip_zeros))
        return forward(self, x, train, skip_zeros)

    monkeypatch.setattr(normalized.NormStep, "forward", counted)
    return ran


@contextlib.contextmanager
def layer_code(monkeypatch):
    """No compiled pass stands in for a network's code: minidl's layers run."""
    with monkeypatch.context() as m:
        m.setattr(CythonOps, "fused", lambda self, network: None)
        yield


# -- the book's numbers --------------------------------------------------------------

@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("density", [0.2, 0.95])
@pytest.mark.parametrize("labels", ["indices", "one-hot"])
@pytest.mark.parametrize("wd", [0, 0.1])
def test_gradient_is_the_books_and_runs_on_the_passes(activation, density, labels, wd, rng,
                                                      norm_passes):
    ours, book = pair(activation=activation, weight_decay_lambda=wd)
    assert why_not(ours) is None
    for _ in range(3):  # the running statistics move at each step
        x, t = batch(rng, density=density, one_hot=labels == "one-hot")
        g, g_book = ours.gradient(x, t), book.gradient(x, t)
        assert_grads(g, g_book)
        for key in g:
            ours.params[key] -= 0.1 * g[key]
            book.params[key] -= 0.1 * g_book[key]
    assert ours in _plans
    assert norm_passes == [(True, density < 0.5)] * 3  # the first product skipped zeros
    for name, layer in book.layers.items():
        if name.startswith("BatchNorm"):
            for stat in ("running_mean", "running_var"):
                np.testing.assert_allclose(getattr(ours.layers[name], stat),
                                           getattr(layer, stat), rtol=1e-12, err_msg=name)


def test_a_network_deeper_than_the_zero_skipping_kernels_take_runs_on_the_passes(
        rng, norm_passes):
    from minidl import _fused

    hidden = [6] * (_fused.MAX_LAYERS + 1)  # more affine layers than SGDStep's plans hold
    np.random.seed(3)
    ours = MultiLayerNetExtend(16, hidden, 5, use_batchnorm=True)
    np.random.seed(3)
    book = book_ch6.MultiLayerNetExtend(16, hidden, 5, use_batchnorm=True)
    x, t = batch(rng)
    assert_grads(ours.gradient(x, t), book.gradient(x, t), rtol=1e-9)
    assert norm_passes == [(True, True)]
    assert ours.accuracy(x, t) == book.accuracy(x, t)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_dtype", [np.uint8, np.float16, np.float32, np.float64])
def test_inputs_numpy_promotes_to_the_weights(dtype, x_dtype, rng, norm_passes):
    ours, book = pair(dtype=dtype)
    x, t = batch(rng)
    x = (x * 255).astype(x_dtype) if x_dtype == np.uint8 else x.astype(x_dtype)
    g = ours.gradient(x, t)
    if x_dtype == np.float64 and dtype == np.float32:
        assert norm_passes == []  # the book computes this one in float64: the layer code
    else:
        assert len(norm_passes) == 1
    assert all(v.dtype == np.result_type(dtype, x_dtype) for v in g.values())
    # (a float32 network's weights are the book's rounded to float32)
    rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (2e-3, 2e-5)
    assert_grads(g, book.gradient(x.astype(np.float64), t), rtol=rtol, atol=atol)


def test_tensor_inputs_strided_inputs_and_growing_batches(rng, norm_passes):
    ours, book = pair()
    for n in (5, 40, 7):
        x, t = batch(rng, n=n)
        x4 = x.reshape(n, 1, 4, 4)
        assert_grads(ours.gradient(x4, t), book.gradient(x4, t))
        assert ours.layers["Affine1"].original_x_shape == (n, 1, 4, 4)
        wide = np.repeat(x, 2, axis=1)[:, ::2]  # a strided view
        assert_grads(ours.gradient(wide, t), book.gradient(wide, t))
    assert len(norm_passes) == 6


@pytest.mark.parametrize("train_flg", [False, True])
def test_loss_in_both_modes_is_the_books(train_flg, rng, norm_passes):
    ours, book = pair(weight_decay_lambda=0.05)
    for _ in range(2):
        x, t = batch(rng)
        np.testing.assert_allclose(ours.loss(x, t, train_flg=train_flg),
                                   book.loss(x, t, train_flg=train_flg), rtol=1e-12)
        ours.gradient(x, t)
        book.gradient(x, t)
    assert [train for train, _ in norm_passes] == [train_flg, True] * 2
    for name, layer in book.layers.items():
        if name.startswith("BatchNorm"):
            np.testing.assert_allclose(ours.layers[name].running_var, layer.running_var,
                                       rtol=1e-12)


@pytest.mark.parametrize("n", [1, 3, 1500])  # one row, a few, chunks of EVAL_CHUNK
@pytest.mark.parametrize("density", [0.2, 0.95])
def test_accuracy_is_the_books_in_test_mode(n, density, rng, norm_passes):
    ours, book = pair()
    x, t = batch(rng, density=density)
    ours.gradient(x, t)
    book.gradient(x, t)
    x, t = batch(rng, n=n, density=density)
    assert ours.accuracy(x, t) == book.accuracy(x, t)
    assert ours.accuracy(x, np.eye(5)[t]) == book.accuracy(x, np.eye(5)[t])
    assert norm_passes[1:] and not any(train for train, _ in norm_passes[1:])
    # test mode computes as the book does: the scores equal predict's
    np.testing.assert_allclose(ours.predict(x), book.predict(x), rtol=1e-10, atol=1e-12)


def test_a_network_never_trained_has_zero_running_statistics_as_the_books(rng, norm_passes):
    ours, book = pair()
    x, t = batch(rng)
    assert ours.accuracy(x, t) == book.accuracy(x, t)
    np.testing.assert_allclose(ours.loss(x, t), book.loss(x, t), rtol=1e-12)
    for layer in ours.layers.values():
        if isinstance(layer, BatchNormalization):
            np.testing.assert_array_equal(layer.running_mean, 0)
            assert layer.running_mean.dtype == layer.gamma.dtype
    assert norm_passes


def test_a_batch_of_one_trains_beta_only_as_the_books(rng, norm_passes):
    ours, book = pair()
    x, t = batch(rng, n=1, density=0.5)
    g, g_book = ours.gradient(x, t), book.gradient(x, t)
    assert_grads(g, g_book)
    for key in g:
        if key.startswith(("W", "gamma")) and key != "W4":
            np.testing.assert_array_equal(g[key], 0)
    assert norm_passes


# -- the layers left as the layer code leaves them ----------------------------------

@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("density", [0.2, 0.95])
def test_the_layers_hold_what_the_layer_code_leaves(activation, density, rng, monkeypatch,
                                                    norm_passes):
    ours, theirs = pair(activation=activation)[0], pair(activation=activation)[0]
    x, t = batch(rng, density=density)
    g = ours.gradient(x, t)
    with layer_code(monkeypatch):
        g_layers = theirs.gradient(x, t)
    assert len(norm_passes) == 1
    assert_grads(g, g_layers)
    attributes = {
        "Affine": ("x", "original_x_shape", "dW", "db"),
        "BatchNorm": ("input_shape", "batch_size", "xc", "xn", "std", "running_mean",
                      "running_var", "dgamma", "dbeta"),
        "Activation": ("out",),
    }
    for name, layer in theirs.layers.items():
        for attr in next(v for k, v in attributes.items() if name.startswith(k)):
            want, got = getattr(layer, attr), getattr(ours.layers[name], attr)
            if isinstance(want, tuple) or np.isscalar(want):
                assert got == want, (name, attr)
            else:
                assert got.dtype == want.dtype and got.shape == want.shape, (name, attr)
                np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12,
                                           err_msg=f"{name}.{attr}")
    for attr in ("loss", "y", "t", "labels"):
        np.testing.assert_allclose(getattr(ours.lastLayer, attr),
                                   getattr(theirs.lastLayer, attr), rtol=1e-10, atol=1e-14)
    if activation == "relu":
        np.testing.assert_array_equal(ours.layers["Activation_function1"].mask,
                                      theirs.layers["Activation_function1"].mask)
    # the book's manual backward through the layers, after the compiled pass
    dout = ours.lastLayer.backward(1)
    for layer in reversed(list(ours.layers.values())):
        dout = layer.backward(dout)
    for name, layer in ours.layers.items():
        if name.startswith("Affine"):
            np.testing.assert_allclose(layer.dW, theirs.layers[name].dW, rtol=1e-10, atol=1e-12)


def test_the_passes_buffers_are_not_what_the_layers_keep(rng):
    ours, _ = pair()
    x, t = batch(rng)
    g1 = ours.gradient(x, t)
    kept = {name: (getattr(layer, "xn", None), getattr(layer, "out", None), layer.__dict__.get("x"))
            for name, layer in ours.layers.items()}
    copies = {k: tuple(None if a is None else a.copy() for a in v) for k, v in kept.items()}
    g1_copy = {k: v.copy() for k, v in g1.items()}
    x2, t2 = batch(rng)
    ours.gradient(x2, t2)
    for name, arrays in kept.items():
        for a, b in zip(arrays, copies[name]):
            if a is not None:
                np.testing.assert_array_equal(a, b, err_msg=name)
    for key in g1:
        np.testing.assert_array_equal(g1[key], g1_copy[key])


# -- what the passes do not cover: the layer code, its numbers and its errors -------

def test_dropout_with_batchnorm_runs_the_layers_and_the_books_masks(rng, norm_passes):
    ours, book = pair(use_dropout=True, dropout_ration=0.3)
    assert "Dropout" in why_not(ours)
    x, t = batch(rng)
    np.random.seed(7)
    g = ours.gradient(x, t)
    np.random.seed(7)
    assert_grads(g, book.gradient(x, t))
    assert norm_passes == []


class Halving(BatchNormalization):
    def forward(self, x, train_flg=True):
        return super().forward(x, train_flg) / 2

    def backward(self, dout):
        return super().backward(dout / 2)


def test_a_replaced_gamma_or_batchnorm_layer_steps_the_passes_aside(rng, monkeypatch,
                                                                    norm_passes):
    ours, book = pair()
    x, t = batch(rng)
    for net in (ours, book):
        net.layers["BatchNorm2"].gamma = net.params["gamma2"] * 2  # no longer params['gamma2']
    assert "gamma" in why_not(ours)
    assert_grads(ours.gradient(x, t), book.gradient(x, t))

    ours, theirs = pair()[0], pair()[0]
    for net in (ours, theirs):
        old = net.layers["BatchNorm1"]
        net.layers["BatchNorm1"] = Halving(old.gamma, old.beta)
    assert "Halving" in why_not(ours)
    g = ours.gradient(x, t)
    with layer_code(monkeypatch):
        assert_grads(g, theirs.gradient(x, t))
    assert norm_passes == []


def test_a_layer_reordered_by_hand_steps_the_passes_aside(rng, norm_passes):
    ours, book = pair()
    for net in (ours, book):
        layers = list(net.layers.items())
        layers[1], layers[2] = layers[2], layers[1]  # ReLU before BatchNorm
        net.layers.clear()
        net.layers.update(layers)
    assert why_not(ours) is not None
    x, t = batch(rng)
    assert_grads(ours.gradient(x, t), book.gradient(x, t))
    assert norm_passes == []


def test_bad_batchnorm_settings_get_the_layers_errors(rng, norm_passes):
    x, t = batch(rng)
    ours, _ = pair()
    ours.layers["BatchNorm1"].momentum = 1.5
    with pytest.raises(ValueError, match="momentum"):
        ours.gradient(x, t)
    ours, _ = pair()
    ours.layers["BatchNorm2"].momentum = "0.9"
    with pytest.raises(TypeError, match="momentum"):
        ours.loss(x, t)
    ours, _ = pair()
    ours.gradient(x, t)
    ours.layers["BatchNorm3"].running_var = np.zeros(3)
    with pytest.raises(ValueError, match="running_var"):
        ours.accuracy(x, t)
    with pytest.raises(ValueError, match="running_var"):
        ours.gradient(x, t)
    assert len(norm_passes) == 1  # only the first, good, gradient


def test_running_statistics_of_another_dtype_compute_as_numpy_promotes(rng, monkeypatch,
                                                                      norm_passes):
    # a float32 network whose running mean is float64 (np.float64 momentum promotes it):
    # test mode computes in float64 in the layer code; the passes leave it to them
    ours, theirs = pair(dtype=np.float32)[0], pair(dtype=np.float32)[0]
    x, t = batch(rng)
    for net in (ours, theirs):
        for layer in net.layers.values():
            if isinstance(layer, BatchNormalization):
                layer.momentum = np.float64(0.9)
    ours.gradient(x, t)
    with layer_code(monkeypatch):
        theirs.gradient(x, t)
    assert ours.layers["BatchNorm1"].running_mean.dtype == np.float64
    ran = len(norm_passes)
    with layer_code(monkeypatch):
        want = theirs.loss(x, t)
    assert ours.loss(x, t) == want
    assert len(norm_passes) == ran  # test mode: the layer code ran
    assert ours.accuracy(x, t) == theirs.accuracy(x, t)


def test_non_finite_weights_give_numpys_nan_not_skipped_zeros(rng, norm_passes):
    ours, book = pair()
    for net in (ours, book):
        net.params["W1"][3, 2] = np.inf  # x's zeros times inf: NaN in NumPy
    x, t = batch(rng)
    x[:, 3] = 0
    with np.errstate(invalid="ignore"):
        g, g_book = ours.gradient(x, t), book.gradient(x, t)
    assert norm_passes == [(True, False)]  # the first product did not skip zeros
    for key in g_book:
        np.testing.assert_array_equal(np.isnan(g[key]), np.isnan(g_book[key]), err_msg=key)


def test_minidl_train_and_the_exact_numerical_gradient_refuse_it_with_the_reason(rng):
    ours, book = pair()
    x, t = batch(rng)
    with pytest.raises(ValueError, match="batch normalisation"):
        minidl.gradcheck.fast_numerical_gradient(ours, x[:3], t[:3], method="fast")
    grads = ours.numerical_gradient(x[:3], t[:3])  # its own cached pass, the book's numbers
    want = book.numerical_gradient(x[:3], t[:3])
    assert_grads(grads, want, rtol=1e-6, atol=1e-8)
    from minidl.engine import examine

    assert "batch normalisation" in examine(ours)  # what minidl.train's steps ask


def test_one_network_from_several_threads_gives_serial_calls_numbers(rng):
    import threading

    ours, _ = pair()
    serial, _ = pair()
    batches = [batch(rng) for _ in range(8)]
    want = [serial.gradient(x, t) for x, t in batches]
    # the network's lock orders the calls; each gets the gradient of its own batch at
    # the running statistics its turn finds: the same as serial calls in that order
    order, got = [], {}
    lock = threading.Lock()

    def work(i):
        x, t = batches[i]
        g = ours.gradient(x, t)
        with lock:
            order.append(i)
            got[i] = g

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for i in range(8):  # the weights do not change, so each batch's gradient is its own
        assert_grads(got[i], want[i], rtol=1e-9, atol=1e-11)
    assert isinstance(ours.layers["Activation_function1"], Relu)
