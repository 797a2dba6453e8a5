"""The networks' conv - relu - pool block in one backward pass (minidl._block,
minidl._convblock): the same numbers as the three layers' backward passes, bit for
bit, and the three layers' own calls wherever the block cannot stand in for them."""

import book_conv as book
import numpy as np
import pytest
from conftest import DTYPES

import minidl
from minidl import _block, _conv
from minidl.layers import Pooling
from minidl.networks import DeepConvNet, SimpleConvNet

SMALL = {"input_dim": (2, 10, 12),
         "conv_param": {"filter_num": 4, "filter_size": 3, "pad": 1, "stride": 1},
         "hidden_size": 8, "output_size": 10, "weight_init_std": 0.3}

needs_kernels = pytest.mark.skipif(minidl.get_backend() != "cython",
                                   reason="the compiled backend is not selected")


def layer_by_layer(where, out, dout):
    """relu_backward(maxpool2x2_backward(dout, where), out), then product_from_images."""
    N, FN, H, W = out.shape
    dx = np.empty_like(out)
    _conv.maxpool2x2_backward(dout, where, dx)
    dx = np.where(out <= 0, 0, dx).astype(out.dtype)
    prod = np.empty((FN, N * H * W), dtype=out.dtype)
    db = np.empty(FN, dtype=out.dtype)
    _conv.product_from_images(np.ascontiguousarray(dx.reshape(N, FN, H * W)), prod, db)
    return prod, db


def block_inputs(shape, dtype, rng):
    """A ReLU output with whole windows of zeros, its 2 x 2 pooling and a gradient."""
    x = rng.standard_normal(shape).astype(dtype)
    x[x < 0.3] = 0  # many zero maxima: the ReLU's mask matters
    out = np.empty((*shape[:2], shape[2] // 2, shape[3] // 2), dtype=dtype)
    where = np.empty(out.shape, dtype=np.uint8)
    _conv.maxpool2x2_forward(x, out, where)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dout.flat[::7] = -0.0
    return x, where, dout


@needs_kernels
@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("shape", [(3, 4, 6, 8), (1, 1, 2, 2), (2, 3, 4, 140)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_unpool_relu_product_is_the_three_kernels_bit_for_bit(shape, dtype, n_threads, rng):
    from minidl import _convblock

    x, where, dout = block_inputs(shape, dtype, rng)
    N, FN, H, W = shape
    prod = np.full((FN, N * H * W), np.nan, dtype=dtype)  # every cell must be written
    db = np.full(FN, np.nan, dtype=dtype)
    _convblock.unpool_relu_product(dout, where, x, prod, db, n_threads)
    expected_prod, expected_db = layer_by_layer(where, x, dout)
    np.testing.assert_array_equal(prod, expected_prod)
    np.testing.assert_array_equal(db, expected_db)
    assert np.all(np.signbit(prod) == np.signbit(expected_prod))  # -0.0 where it was


@needs_kernels
def test_unpool_relu_product_passes_nan_and_refuses_what_does_not_fit(rng):
    from minidl import _convblock

    x, where, dout = block_inputs((2, 2, 4, 4), np.float64, rng)
    x[0, 1, 0, 0] = x[0, 1, 0, 1] = x[0, 1, 1, 0] = x[0, 1, 1, 1] = 5.0
    where[0, 1, 0, 0] = 1
    dout[0, 1, 0, 0] = np.nan
    prod, db = np.empty((2, 32)), np.empty(2)
    _convblock.unpool_relu_product(dout, where, x, prod, db)
    expected_prod, expected_db = layer_by_layer(where, x, dout)
    np.testing.assert_array_equal(prod, expected_prod)  # NaN where NumPy has it
    np.testing.assert_array_equal(db, expected_db)
    bad = where.copy()
    bad[1, 0, 1, 1] = 4
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        _convblock.unpool_relu_product(dout, bad, x, prod, db)
    with pytest.raises(ValueError, match="do not match"):
        _convblock.unpool_relu_product(dout, where, x[:, :, :2].copy(), prod, db)
    with pytest.raises(ValueError, match="do not match"):
        _convblock.unpool_relu_product(dout, where, x, prod[:, :30].copy(), db)
    with pytest.raises(ValueError, match="do not match"):
        _convblock.unpool_relu_product(dout, where[:1], x, prod, db)


def counted(monkeypatch, name):
    """A list that gets a 1 at each call of the backend's ``name`` (which still runs)."""
    runs = []
    cls = type(minidl.backend.ops())
    real = getattr(cls, name)
    monkeypatch.setattr(cls, name, lambda self, *a: runs.append(1) or real(self, *a))
    return runs


def unfused(monkeypatch):
    monkeypatch.setattr(_block, "_fused_backward", lambda *args: None)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_networks_gradients_are_the_layer_by_layer_ones(monkeypatch, backend, dtype, rng):
    from minidl.engine.threads import ThreadChoice

    monkeypatch.setattr(ThreadChoice, "pick", lambda self: 1)  # see the forward's test
    calls = []
    kernel = _block._fused_backward
    monkeypatch.setattr(_block, "_fused_backward", lambda *a: calls.append(1) or kernel(*a))
    for cls, kwargs, shape in ((SimpleConvNet, SMALL, (2, 10, 12)),
                               (DeepConvNet, {}, (1, 28, 28))):
        np.random.seed(4)
        net = cls(dtype=dtype, **kwargs)
        x = rng.random((3, *shape)).astype(dtype)
        x[x < 0.5] = 0
        t = rng.integers(0, 10, 3)
        np.random.seed(9)  # DeepConvNet's dropout masks
        grads = net.gradient(x, t)
        with monkeypatch.context() as m:
            unfused(m)
            np.random.seed(9)
            expected = net.gradient(x, t)
        for key in expected:
            np.testing.assert_array_equal(grads[key], expected[key], err_msg=f"{cls} {key}")
    assert len(calls) == 1 + 3  # a block in SimpleConvNet, three in DeepConvNet


@needs_kernels
def test_the_block_runs_as_one_pass_in_the_networks(monkeypatch, rng):
    runs = counted(monkeypatch, "conv_relu_pool_backward")
    np.random.seed(3)
    net = SimpleConvNet(**SMALL)
    x, t = rng.random((4, 2, 10, 12)), rng.integers(0, 10, 4)
    net.gradient(x, t)
    assert runs == [1]
    np.random.seed(1)
    DeepConvNet().gradient(rng.random((2, 1, 28, 28)), np.array([1, 2]))
    assert runs == [1] * 4


SQUARE = {**SMALL, "input_dim": (2, 10, 10)}  # the book's SimpleConvNet takes square images


@pytest.mark.parametrize("change", ["read arg_max", "set arg_max", "own Relu backward",
                                    "Pooling subclass", "relu out replaced"])
def test_what_the_block_cannot_stand_in_for_runs_the_three_layers(monkeypatch, backend, change,
                                                                  rng):
    np.random.seed(3)
    ours = SimpleConvNet(**SQUARE)
    np.random.seed(3)
    theirs = book.SimpleConvNet(**SQUARE)
    x, t = rng.random((4, 2, 10, 10)), rng.integers(0, 10, 4)
    seen = []
    if change == "own Relu backward":
        relu = ours.layers["Relu1"]
        relu.backward = lambda dout, f=relu.backward: seen.append("own") or f(dout)
    elif change == "Pooling subclass":
        class MyPooling(Pooling):
            def backward(self, dout):
                seen.append("own")
                return super().backward(dout)
        ours.layers["Pool1"] = MyPooling(2, 2, stride=2)
    fused = _block._fused_backward
    monkeypatch.setattr(_block, "_fused_backward",
                        lambda *a: seen.append("block") or fused(*a))
    for net in (ours, theirs):
        net.loss(x, t)
        pool, relu = net.layers["Pool1"], net.layers["Relu1"]
        if change == "read arg_max" and net is ours:
            arg_max = pool.arg_max
        elif change == "set arg_max":
            pool.arg_max = np.zeros(4 * 4 * 5 * 5, dtype=np.int64)  # every max: cell 0
        elif change == "relu out replaced":
            if net is ours:
                relu.out = relu.out.copy()
                relu.out[:, :, ::2] = 0
            else:
                relu.mask[:, :, ::2] = True
        dout = net.last_layer.backward(1)
        for name in ("Affine2", "Relu2", "Affine1"):
            dout = net.layers[name].backward(dout)
        conv = net.layers["Conv1"]
        if net is ours:
            before = list(seen)
            assert _block.backward(conv, relu, pool, dout, need_dx=False) is None
            assert seen != before  # the block was asked ...
        else:
            conv.backward(relu.backward(pool.backward(dout)))
    for name in ("dW", "db"):  # ... and the three layers ran, with the book's numbers
        np.testing.assert_allclose(getattr(ours.layers["Conv1"], name),
                                   getattr(theirs.layers["Conv1"], name), rtol=1e-10,
                                   atol=1e-14)
    if change in ("own Relu backward", "Pooling subclass"):
        assert "own" in seen
    if change == "read arg_max":
        np.testing.assert_array_equal(arg_max, theirs.layers["Pool1"].arg_max)


# -- forward ---------------------------------------------------------------------------

def layer_by_layer_forward(prod, b, shape):
    """maxpool2x2_forward(relu_forward(images_from_product(prod, b)))."""
    N, FN, H, W = shape
    images = np.empty((N, FN, H * W), dtype=prod.dtype)
    _conv.images_from_product(prod, b, images)
    out = np.where(images <= 0, 0, images).astype(prod.dtype).reshape(shape)
    pooled = np.empty((N, FN, H // 2, W // 2), dtype=prod.dtype)
    where = np.empty(pooled.shape, dtype=np.uint8)
    _conv.maxpool2x2_forward(out, pooled, where)
    return out, pooled, where


@needs_kernels
@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("shape", [(3, 4, 6, 8), (1, 1, 2, 2), (2, 3, 4, 140)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_product_relu_pool_is_the_three_kernels_bit_for_bit(shape, dtype, n_threads, rng):
    from minidl import _convblock

    N, FN, H, W = shape
    prod = rng.standard_normal((FN, N * H * W)).astype(dtype)
    prod[:, ::5] = -0.0
    prod[:, 1::9] = np.nan  # NaN passes the ReLU and is the window's maximum, as in NumPy
    b = rng.standard_normal(FN).astype(dtype)
    out = np.full(shape, 7, dtype=dtype)
    pooled = np.full((N, FN, H // 2, W // 2), 7, dtype=dtype)
    where = np.full(pooled.shape, 9, dtype=np.uint8)
    _convblock.product_relu_pool(prod, b, out, pooled, where, n_threads)
    for ours, theirs in zip((out, pooled, where), layer_by_layer_forward(prod, b, shape)):
        np.testing.assert_array_equal(ours, theirs)
        assert np.all(np.signbit(ours) == np.signbit(theirs))
    assert np.isnan(pooled).any()


@needs_kernels
def test_product_relu_pool_refuses_what_does_not_fit(rng):
    from minidl import _convblock

    prod, b = rng.standard_normal((2, 3 * 16)), np.zeros(2)
    out, pooled, where = (np.empty((3, 2, 4, 4)), np.empty((3, 2, 2, 2)),
                          np.empty((3, 2, 2, 2), dtype=np.uint8))
    _convblock.product_relu_pool(prod, b, out, pooled, where)
    for args in ((prod, b, np.empty((3, 2, 4, 4)), np.empty((3, 2, 2, 3)), where),
                 (prod, b[:1], out, pooled, where),
                 (prod[:, :40].copy(), b, out, pooled, where),
                 (rng.standard_normal((2, 3 * 15)), b, np.empty((3, 2, 3, 5)),
                  np.empty((3, 2, 1, 2)), np.empty((3, 2, 1, 2), dtype=np.uint8))):
        with pytest.raises(ValueError, match="do not match"):
            _convblock.product_relu_pool(*args)


def layer_states(net):
    """What the book's layers hold after a forward pass, for the block's three."""
    layers = net.layers if isinstance(net.layers, list) else list(net.layers.values())
    states = []
    for layer in layers:
        if isinstance(layer, Pooling):
            states += [layer.x, layer.arg_max]
        elif isinstance(layer, minidl.layers.Relu):
            states += [layer.out, layer.mask]
    return states


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", [SimpleConvNet, DeepConvNet])
def test_the_block_forward_leaves_the_layers_as_the_three_calls(monkeypatch, backend, cls,
                                                               dtype, rng):
    from minidl.engine.threads import ThreadChoice

    # one BLAS thread throughout: DeepConvNet's products on two threads differ from one
    # thread's in the last bits, fused or not, and the layers choose by measuring
    monkeypatch.setattr(ThreadChoice, "pick", lambda self: 1)
    kwargs, shape = (SMALL, (2, 10, 12)) if cls is SimpleConvNet else ({}, (1, 28, 28))
    np.random.seed(4)
    net = cls(dtype=dtype, **kwargs)
    x = rng.random((3, *shape)).astype(dtype)
    x[x < 0.5] = 0
    t = rng.integers(0, 10, 3)
    results = []
    for fused in (True, False):
        with monkeypatch.context() as m:
            if not fused:
                m.setattr(_block, "_own", lambda *a: False)
            np.random.seed(9)
            y = net.predict(x).copy()
            conv_x = net.layers["Conv1"].x if cls is SimpleConvNet else net.layers[0].x
            states = [s.copy() for s in layer_states(net)]
            np.random.seed(9)
            grads = net.gradient(x, t)
            results.append((y, states, grads))
        assert conv_x is x
    (y, states, grads), (y0, states0, grads0) = results
    np.testing.assert_array_equal(y, y0)
    assert len(states) == len(states0) == (6 if cls is SimpleConvNet else 20)
    for a, b in zip(states, states0):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    for key in grads0:
        np.testing.assert_array_equal(grads[key], grads0[key], err_msg=key)
    if cls is SimpleConvNet:
        relu, pool = net.layers["Relu1"], net.layers["Pool1"]
        assert pool.x is relu.out  # as in the book: the pooling keeps the ReLU's output


@needs_kernels
def test_the_block_forward_runs_as_one_pass_unless_a_method_is_replaced(monkeypatch, rng):
    runs = counted(monkeypatch, "conv_relu_pool_forward")
    np.random.seed(3)
    net = SimpleConvNet(**SQUARE)
    x = rng.random((4, 2, 10, 10))
    np.random.seed(3)
    theirs = book.SimpleConvNet(**SQUARE)
    y = net.predict(x)
    assert runs == [1]
    np.testing.assert_allclose(y, theirs.predict(x), rtol=1e-10, atol=1e-14)
    seen = []
    forward = Pooling.forward
    monkeypatch.setattr(Pooling, "forward", lambda self, x: seen.append(1) or forward(self, x))
    np.testing.assert_allclose(net.predict(x), theirs.predict(x), rtol=1e-10, atol=1e-14)
    assert runs == [1] and seen == [1]  # the class's own method ran, not the block
    monkeypatch.setattr(Pooling, "forward", forward)
    net.layers["Pool1"].stride = 1  # a student's change: the three layers, as the book
    np.random.seed(3)
    theirs = book.SimpleConvNet(**SQUARE)
    theirs.layers["Pool1"].stride = 1
    with pytest.raises(ValueError):
        theirs.predict(x)  # the book's code fails where the sizes no longer fit ...
    with pytest.raises(ValueError):
        net.predict(x)  # ... and so does minidl's, with its own message
    assert runs == [1]
