"""A network's compiled passes (minidl.engine.passes) against the book's layer code.

Same network, same batch: the gradients agree to rounding, and the layers are
left exactly as the layer-by-layer pass leaves them (so that the book's
``layer.backward`` calls and attribute reads still work). What the compiled pass
does not cover falls back to the layer code.
"""

import contextlib
import itertools

import numpy as np
import pytest

from minidl import _fused, _sparse
from minidl.backend import cython_ops
from minidl.backend.cython_ops import CythonOps
from minidl.engine import passes as passes_module
from minidl.engine.passes import passes_for
from minidl.layers import Relu
from minidl.networks import MultiLayerNet, ThreeLayerNet, TwoLayerNet


def sparse_batch(rng, n=30, k=64, density=0.2, dtype=np.float32):
    x = rng.random((n, k))
    x[rng.random((n, k)) >= density] = 0
    return x.astype(dtype), rng.integers(0, 6, n)


def pair(make):
    np.random.seed(3)
    a = make()
    np.random.seed(3)
    return a, make()


@contextlib.contextmanager
def without_passes(monkeypatch):
    """A context in which no compiled pass stands in for a network's code."""
    with monkeypatch.context() as m:
        m.setattr(CythonOps, "fused", lambda self, network: None)
        yield


DENSITIES = {"sparse": 0.2, "dense": 0.95}  # MNIST-like: zero-skipping; else BLAS


@pytest.fixture
def dense_calls(monkeypatch):
    """How many dense passes (``DenseStep``) the test's calls made."""
    made = []

    class Counted(passes_module.DenseStep):
        def __init__(self, *args):
            made.append(args)
            super().__init__(*args)

    monkeypatch.setattr(passes_module, "DenseStep", Counted)
    return made


def covered(net, x, t, call="gradient"):
    """Whether the compiled ``call`` pass takes the network and input."""
    passes = passes_for(net)
    return passes is not None and getattr(passes, call)(x, t) is not None


def layer_path(net, x, t, monkeypatch):
    with without_passes(monkeypatch):
        return net.gradient(x, t)


def assert_matches_layer_path(net, x, t, monkeypatch):
    """``net.gradient`` (compiled when covered) against the layer code, float64 tolerances."""
    got = net.gradient(x, t)
    ref = layer_path(net, x, t, monkeypatch)
    assert sorted(got) == sorted(ref)
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-11, atol=1e-13)


def tol(dtype):
    return {"rtol": 2e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-11,
                                                                       "atol": 1e-13}


NETS = {
    "two": lambda dt: TwoLayerNet(64, 20, 6, dtype=dt, weight_init_std=0.3),
    "sigmoid": lambda dt: TwoLayerNet(64, 20, 6, activation="sigmoid", dtype=dt),
    "three": lambda dt: ThreeLayerNet(64, 30, 20, 6, dtype=dt, weight_init_std=0.3),
    "multi": lambda dt: MultiLayerNet(64, [17, 9, 7], 6, weight_init_std="he", dtype=dt),
}


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("labels", ["indices", "one-hot"])
@pytest.mark.parametrize("kind", sorted(DENSITIES))
def test_compiled_gradient_leaves_the_layers_as_the_book_code(name, dtype, labels, kind, rng,
                                                              monkeypatch, dense_calls):
    x, t = sparse_batch(rng, density=DENSITIES[kind])
    if labels == "one-hot":
        t = np.eye(6, dtype=dtype)[t]
    a, b = pair(lambda: NETS[name](dtype))
    assert covered(b, x, t)
    assert len(dense_calls) == (kind == "dense")
    ref = layer_path(a, x, t, monkeypatch)
    got = b.gradient(x, t)
    assert sorted(got) == sorted(ref)
    for key in ref:
        assert got[key].dtype == ref[key].dtype == dtype
        np.testing.assert_allclose(got[key], ref[key], **tol(dtype), err_msg=key)
    for (name_a, la), (name_b, lb) in zip(a.layers.items(), b.layers.items()):
        assert name_a == name_b
        for attr in ("x", "out", "dW", "db"):
            if hasattr(la, attr) and getattr(la, attr) is not None:
                va, vb = getattr(la, attr), getattr(lb, attr)
                assert va.shape == vb.shape and va.dtype == vb.dtype, (name_a, attr)
                np.testing.assert_allclose(vb, va, **tol(dtype), err_msg=f"{name_a}.{attr}")
        if hasattr(la, "original_x_shape"):
            assert la.original_x_shape == lb.original_x_shape
    la, lb = a.lastLayer, b.lastLayer
    assert lb.loss == pytest.approx(la.loss, rel=1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(lb.y, la.y, **tol(dtype))
    assert np.array_equal(lb.t, la.t) and np.array_equal(lb.labels, la.labels)
    assert lb.one_hot == la.one_hot
    # the book's manual backward pass runs from the state the compiled pass left
    dout = lb.backward(1)
    for layer in reversed(list(b.layers.values())):
        dout = layer.backward(dout)
    assert dout.shape == x.shape
    for i in range(1, b.n_affine + 1):
        np.testing.assert_allclose(b.layers[f"Affine{i}"].dW, ref[f"W{i}"], **tol(dtype))


def test_tensor_batches_and_growing_batch_sizes(rng, monkeypatch):
    a, b = pair(lambda: TwoLayerNet(64, 20, 6))
    for n in (10, 150, 7):  # the compiled buffers grow, then serve a smaller batch
        x, t = sparse_batch(rng, n=n)
        x4 = x.reshape(n, 1, 8, 8)
        ref = layer_path(a, x4, t, monkeypatch)
        got = b.gradient(x4, t)
        for key in ref:
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-11, atol=1e-13)
        assert b.layers["Affine1"].original_x_shape == (n, 1, 8, 8)


def test_new_parameter_arrays_are_picked_up(rng, monkeypatch):
    a, b = pair(lambda: TwoLayerNet(64, 20, 6))
    x, t = sparse_batch(rng)
    b.gradient(x, t)
    for net in (a, b):  # swap in new arrays, as a student loading weights might
        net.layers["Affine1"].W = net.params["W1"] = net.params["W1"] * 2
    ref = layer_path(a, x, t, monkeypatch)
    got = b.gradient(x, t)
    np.testing.assert_allclose(got["W1"], ref["W1"], rtol=1e-11, atol=1e-13)


def test_what_it_does_not_cover_runs_the_layer_code(rng):
    x, t = sparse_batch(rng)
    net = TwoLayerNet(64, 20, 6)
    assert covered(net, x, t)
    assert not covered(net, x, np.full((30, 6), 1 / 6))  # soft labels
    assert covered(net, np.ones((30, 64), np.float32), t)  # dense: on BLAS
    assert not covered(TwoLayerNet(64, 20, 6, dtype=np.float32), x.astype(np.float64), t)

    class MyRelu(Relu):
        pass

    custom = TwoLayerNet(64, 20, 6)
    custom.layers["Relu1"] = MyRelu()
    assert not covered(custom, x, t)
    grads = custom.gradient(x, t)  # and the layer code gives the gradient
    assert grads["W1"].shape == (64, 20)


def test_bad_labels_get_the_layers_errors(rng):
    x, t = sparse_batch(rng)
    net = TwoLayerNet(64, 20, 6)
    with pytest.raises(ValueError, match="out of range"):
        net.gradient(x, t + 6)
    with pytest.raises(ValueError, match="shape"):
        net.gradient(x, t[:5])
    with pytest.raises(TypeError, match="integer"):
        net.gradient(x, t.astype(np.float64))


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", sorted(DENSITIES))
def test_compiled_loss_equals_the_layers_and_leaves_their_state(name, dtype, kind, rng,
                                                                monkeypatch):
    x, t = sparse_batch(rng, density=DENSITIES[kind])
    a, b = pair(lambda: NETS[name](dtype))
    assert covered(b, x, t, "loss")
    with without_passes(monkeypatch):
        ref = a.loss(x, t)
    got = b.loss(x, t)
    assert type(got) is type(ref)
    assert got == pytest.approx(ref, rel=1e-6 if dtype == np.float32 else 1e-12)
    for (name_a, la), lb in zip(a.layers.items(), b.layers.values()):
        for attr in ("x", "out"):
            if getattr(la, attr, None) is not None:
                np.testing.assert_allclose(getattr(lb, attr), getattr(la, attr), **tol(dtype),
                                           err_msg=f"{name_a}.{attr}")
    np.testing.assert_allclose(b.lastLayer.y, a.lastLayer.y, **tol(dtype))
    # then the book's backward pass from that state gives the gradient
    dout = b.lastLayer.backward(1)
    for layer in reversed(list(b.layers.values())):
        dout = layer.backward(dout)
    grads = a.gradient(x, t)
    np.testing.assert_allclose(b.layers["Affine1"].dW, grads["W1"], **tol(dtype))


def layer_accuracy(net, x, t, monkeypatch):
    with without_passes(monkeypatch):
        return net.accuracy(x, t)


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 99, 100, 250, 2100])  # chunks, a partial last one
@pytest.mark.parametrize("kind", sorted(DENSITIES))
def test_compiled_accuracy_equals_the_layer_code(name, dtype, n, kind, rng, monkeypatch,
                                                 dense_calls):
    x, t = sparse_batch(rng, n=n, density=DENSITIES[kind])
    net = NETS[name](dtype)
    for W in (v for k, v in net.params.items() if k.startswith("W")):
        W *= 20  # confident, varied predictions
    acc = passes_for(net).accuracy(x, t)
    assert acc is not None
    assert len(dense_calls) == (kind == "dense")
    assert acc == layer_accuracy(net, x, t, monkeypatch)
    onehot = np.eye(6)[t]
    assert net.accuracy(x, onehot) == layer_accuracy(net, x, onehot, monkeypatch) == acc


def test_compiled_accuracy_takes_argmax_first_maximum_and_nan(rng, monkeypatch):
    x, _ = sparse_batch(rng, n=40)
    net = TwoLayerNet(64, 20, 6)
    net.params["W2"][...] = 0  # every score ties: argmax is class 0
    t = np.arange(40) % 6
    assert net.accuracy(x, t) == layer_accuracy(net, x, t, monkeypatch) == np.mean(t == 0)
    net.params["b2"][3] = np.nan  # a NaN score: np.argmax picks it
    assert net.accuracy(x, t) == layer_accuracy(net, x, t, monkeypatch) == np.mean(t == 3)
    net.params["b2"][:] = [0, 5, 5, 0, 1, 1]  # the first of two equal maxima
    assert net.accuracy(x, t) == layer_accuracy(net, x, t, monkeypatch) == np.mean(t == 1)


def test_count_correct_refuses_bad_arguments(rng):
    x, t = sparse_batch(rng, n=20, k=12)
    W = [rng.standard_normal((12, 6)), rng.standard_normal((6, 5))]
    b = [np.zeros(6), np.zeros(5)]
    step = _fused.SGDStep(W, b, x[:0], None, False, 8)
    labels = t.astype(np.int64)
    lists = _sparse.nonzero_lists(x)
    assert step.count_correct(x, labels, lists) == step.count_correct(x, labels)
    with pytest.raises(ValueError, match="x must be"):
        step.count_correct(x.astype(np.float64), labels)
    with pytest.raises(ValueError, match="labels"):
        step.count_correct(x, labels[:5])
    for bad in (_sparse.nonzero_lists(x[:10]), (lists[0], lists[1], lists[2] + 1),
                (lists[0][:-1], lists[1][:-1], lists[2])):
        with pytest.raises(ValueError, match="lists must be"):
            step.count_correct(x, labels, bad)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_count_correct_in_chunks_on_threads_equals_numpy(threads, dtype, rng):
    # 128-row chunks shared out between threads: a partial last chunk, fewer chunks
    # than threads, and exactly one chunk
    x, _ = sparse_batch(rng, n=700, k=40)
    W = [rng.standard_normal((40, 9)).astype(dtype), rng.standard_normal((9, 5)).astype(dtype)]
    b = [np.full(9, -0.2, dtype), rng.standard_normal(5).astype(dtype)]
    step = _fused.SGDStep(W, b, x[:0], None, False, 8, threads)
    scores = np.maximum(x.astype(dtype) @ W[0] + b[0], 0) @ W[1] + b[1]
    labels = scores.argmax(axis=1).astype(np.int64)
    labels[::3] = (labels[::3] + 1) % 5  # a third of the rows wrong
    lists = _sparse.nonzero_lists(x)
    for n in (700, 640, 128, 100, 1):
        want = int(np.count_nonzero(scores[:n].argmax(axis=1) == labels[:n]))
        assert step.count_correct(x[:n], labels[:n]) == want
        assert step.count_correct(x[:n], labels[:n], (lists[0][:lists[2][n]], lists[1][
            :lists[2][n]], lists[2][:n + 1])) == want


def _stack_reference(x, W, b, labels, sigmoid):
    """The book's layer arithmetic in NumPy: loss, dW and db of a stack of affine layers."""
    act = (lambda z: 1 / (1 + np.exp(-z))) if sigmoid else (lambda z: np.maximum(z, 0))
    hs = [x.astype(W[0].dtype)]
    for i, (w, v) in enumerate(zip(W, b)):
        z = hs[-1] @ w + v
        hs.append(act(z) if i < len(W) - 1 else z)
    z = hs[-1] - hs[-1].max(axis=1, keepdims=True)
    y = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n = len(x)
    loss = -np.sum(np.log(y[np.arange(n), labels] + 1e-7)) / n
    d = y.copy()
    d[np.arange(n), labels] -= 1
    d /= n
    gW, gb = [None] * len(W), [None] * len(W)
    for i in range(len(W) - 1, -1, -1):
        gW[i], gb[i] = hs[i].T @ d, d.sum(axis=0)
        if i:
            d = d @ W[i].T
            d = d * (hs[i] * (1 - hs[i])) if sigmoid else d * (hs[i] > 0)
    return loss, gW, gb


@pytest.mark.parametrize("sigmoid", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_step_on_one_two_and_three_threads_gives_the_same_numbers(sigmoid, dtype, rng):
    # a deep stack (hidden layers' products shared out between the threads, row
    # pieces forward and for dx, W's rows for dW) on batches big enough to share:
    # the same bits on any thread count, and the book's numbers
    x, labels = sparse_batch(rng, n=130, k=50, density=0.3)
    # the middle products (130 x 60 x 45 and 130 x 45 x 60 multiply-adds) are past
    # _fused's HIDDEN_SPLIT_MIN (250,000) and shared out between the threads; the
    # output layer's (60 -> 6), and the middle ones on 70 rows, run on one thread
    sizes = [50, 60, 45, 60, 6]
    W0 = [rng.standard_normal(shape).astype(dtype) * 0.4 for shape in itertools.pairwise(sizes)]
    b0 = [rng.standard_normal(c).astype(dtype) * 0.1 for c in sizes[1:]]
    labels = labels.astype(np.int64)
    want = _stack_reference(x, W0, b0, labels, sigmoid)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    results = []
    for threads in (1, 2, 3):
        W, b = [w.copy() for w in W0], [v.copy() for v in b0]
        step = _fused.SGDStep(W, b, x[:0], None, sigmoid, 130, threads)
        step.threads = threads
        assert step.threads == threads
        gW = [np.empty_like(w) for w in W]
        gb = [np.empty_like(v) for v in b]
        loss = step.gradient(x, labels, gW, gb)
        forward = [a[:130].copy() for a in step.activations]
        loss_only = step.gradient(x[:70], labels[:70])
        Ws, bs = [w.copy() for w in W0], [v.copy() for v in b0]
        sgd = _fused.SGDStep(Ws, bs, x, None, sigmoid, 130, threads)
        sgd.threads = threads
        after = sgd.step(np.arange(130, dtype=np.int64)[::-1].copy(), labels[::-1].copy(), 0.1)
        results.append((loss, gW, gb, forward, loss_only, after, Ws, bs))
        assert loss == pytest.approx(want[0], rel=tol)
        for got, ref in zip(gW + gb, want[1] + want[2]):
            np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    for got in results[1:]:
        for a, ref in zip(got, results[0]):
            if isinstance(a, list):
                for u, v in zip(a, ref):
                    np.testing.assert_array_equal(u, v)
            else:
                assert a == ref


def test_networks_still_copy_and_pickle_after_a_compiled_pass(rng):
    import copy
    import pickle

    x, t = sparse_batch(rng)
    net = TwoLayerNet(64, 20, 6)
    grads = net.gradient(x, t)
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert passes_for(clone) is not passes_for(net)
        again = clone.gradient(x, t)  # its own arrays, its own compiled pass
        np.testing.assert_array_equal(again["W1"], grads["W1"])
        clone.params["W1"] += 1
        assert not np.array_equal(clone.gradient(x, t)["W1"], grads["W1"])
        assert np.array_equal(net.gradient(x, t)["W1"], grads["W1"])


def test_a_rebuilt_stack_gets_a_new_compiled_pass(rng, monkeypatch):
    from minidl.layers import Affine

    x, t = sparse_batch(rng)
    net = TwoLayerNet(64, 20, 6)
    net.gradient(x, t)
    # a student adds a layer in place: same first arrays, one more Affine
    W3, b3 = 0.1 * rng.standard_normal((6, 6)), np.zeros(6)
    net.layers["Relu2"] = Relu()
    net.layers["Affine3"] = Affine(W3, b3)
    net.params.update(W3=W3, b3=b3)
    assert passes_for(net) is None  # sizes say two layers: its gradient has two
    assert_matches_layer_path(net, x, t, monkeypatch)
    # a real three-layer network with the same first arrays gets a pass of its own
    deeper = ThreeLayerNet(64, 20, 6, 6)
    for key in ("W1", "b1", "W2", "b2"):
        deeper.params[key] = net.params[key]
        deeper.layers[f"Affine{key[1]}"].__dict__[key[0]] = net.params[key]
    deeper.gradient(x, t)
    assert len(passes_for(deeper)._step.param_arrays) == 6
    assert_matches_layer_path(deeper, x, t, monkeypatch)


def test_parameters_reshaped_in_place_get_a_new_compiled_pass(rng, monkeypatch):
    x, t = sparse_batch(rng)
    net = ThreeLayerNet(64, 20, 20, 6)
    net.gradient(x, t)
    assert passes_for(net)._step.sizes == (64, 20, 20, 6)  # what its buffers were made for
    W1 = net.params["W1"]
    W1.shape = (32, 40)  # in place: same object, other shape
    assert passes_for(net) is None  # shapes no longer chain
    W1.shape = (64, 20)
    assert_matches_layer_path(net, x, t, monkeypatch)


def test_the_kept_stack_follows_what_students_change(rng, monkeypatch):
    from minidl.layers import Affine, Sigmoid, SoftmaxWithLoss

    x, t = sparse_batch(rng)
    net = TwoLayerNet(64, 20, 6, weight_init_std=0.3)

    def check():
        assert_matches_layer_path(net, x, t, monkeypatch)

    check()
    first = passes_for(net)
    check()
    assert passes_for(net) is first  # nothing changed: kept
    # a new W array in the layer and in params
    net.layers["Affine1"].W = net.params["W1"] = 0.3 * rng.standard_normal((64, 20))
    check()
    assert passes_for(net) is not first
    # a new W array in the layer only (the book keeps layers and params apart)
    net.layers["Affine1"].W = 0.3 * rng.standard_normal((64, 20))
    assert passes_for(net) is None
    check()
    net.layers["Affine1"].W = net.params["W1"]
    # a new layer object in the dict, of another kind
    net.layers["Relu1"] = Sigmoid()
    check()
    assert passes_for(net).stack.sigmoid
    # a new last layer, then one that is not minidl's
    net.lastLayer = SoftmaxWithLoss()
    check()
    assert passes_for(net).stack.last is net.lastLayer

    class MySoftmax(SoftmaxWithLoss):
        pass

    net.lastLayer = MySoftmax()
    assert passes_for(net) is None
    net.lastLayer = SoftmaxWithLoss()
    # a bias changed to float32 in place of the float64 one: not one dtype
    net.layers["Affine2"].b = net.params["b2"] = net.layers["Affine2"].b.astype(np.float32)
    assert not covered(net, x, t)
    check()
    net.params["b2"] = net.params["b2"].astype(np.float64)
    net.layers["Affine2"] = Affine(net.params["W2"], net.params["b2"])
    check()


def test_threads_do_not_change_the_compiled_gradient(rng, monkeypatch):
    from minidl import backend

    x, t = sparse_batch(rng, n=100)  # enough rows for the products to be shared out
    results = []
    for threads in (1, 2, 3):
        monkeypatch.setattr(backend, "STEP_THREADS", threads)
        np.random.seed(4)
        net = ThreeLayerNet(64, 30, 20, 6, weight_init_std=0.3)
        grads = net.gradient(x, t)
        results.append((grads, net.loss(x, t), net.accuracy(x, t)))
    for grads, loss, acc in results[1:]:
        assert loss == results[0][1] and acc == results[0][2]
        for key in grads:
            assert np.array_equal(grads[key], results[0][0][key]), key


def test_weight_decay_and_strided_inputs_are_covered_and_give_the_books_answer(rng,
                                                                               monkeypatch):
    x, t = sparse_batch(rng)
    net = MultiLayerNet(64, [20], 6, weight_decay_lambda=0.1, weight_init_std=0.3)
    for batch in (x, np.asfortranarray(x), x.astype(np.float64)[:, ::-1][:, ::-1]):
        assert covered(net, batch, t)
        assert_matches_layer_path(net, batch, t, monkeypatch)
        with without_passes(monkeypatch):
            ref = net.loss(batch, t)
        assert net.loss(batch, t) == pytest.approx(ref, rel=1e-12)


def test_float64_one_hot_rows_on_a_float32_network_give_the_books_float64_gradient(rng):
    x, t = sparse_batch(rng)
    net = TwoLayerNet(64, 20, 6, dtype=np.float32)
    onehot = np.eye(6)[t]  # float64, as the book's load_mnist(one_hot_label=True) gives
    assert not covered(net, x, onehot)
    assert covered(net, x, onehot.astype(np.float32))
    grads = net.gradient(x, onehot)  # (y - t) / N is float64, and so is all below it
    assert {g.dtype for g in grads.values()} == {np.dtype(np.float64)}
    ref = net.gradient(x, onehot.astype(np.float32))
    for key in ref:
        assert ref[key].dtype == np.float32
        np.testing.assert_allclose(grads[key], ref[key], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_batches_carry_non_finite_weights_as_numpy_does(dtype, rng, monkeypatch,
                                                              dense_calls):
    x, t = sparse_batch(rng, n=40, density=0.95)
    x[:, 5] = 0  # a zero column: zero-skipping would hide W1's row 5
    for bad in (np.nan, np.inf):
        a, b = pair(lambda: TwoLayerNet(64, 20, 6, dtype=dtype, weight_init_std=0.3))
        for net in (a, b):
            net.params["W1"][5, 0] = bad
        with without_passes(monkeypatch):
            ref_loss, ref_acc = a.loss(x, t), a.accuracy(x, t)
            ref = a.gradient(x, t)
        got_loss, got_acc = b.loss(x, t), b.accuracy(x, t)
        got = b.gradient(x, t)
        assert dense_calls  # the dense pass ran, and gave NumPy's NaNs
        np.testing.assert_equal(np.isnan(got_loss), np.isnan(ref_loss))
        assert got_acc == ref_acc
        for key in ref:
            np.testing.assert_array_equal(np.isfinite(got[key]), np.isfinite(ref[key]), key)


@pytest.mark.parametrize("x_dtype", [np.uint8, np.float16, np.float32, np.float64])
def test_dense_inputs_of_every_dtype_numpy_promotes_to_the_weights(x_dtype, rng, monkeypatch,
                                                                   dense_calls):
    x = rng.integers(1, 200, (50, 64)).astype(x_dtype)
    t = rng.integers(0, 6, 50)
    a, b = pair(lambda: TwoLayerNet(64, 20, 6, weight_init_std=0.01))
    ref = layer_path(a, x, t, monkeypatch)
    got = b.gradient(x, t)
    assert dense_calls
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-10, atol=1e-12)
    assert b.layers["Affine1"].x.dtype == a.layers["Affine1"].x.dtype


def test_a_batch_too_large_for_the_sparse_buffers_goes_dense(rng, monkeypatch, dense_calls):
    x, t = sparse_batch(rng, n=17000, density=0.2)  # > MAX_ENTRIES entries
    assert x.size > passes_module.MAX_ENTRIES
    a, b = pair(lambda: TwoLayerNet(64, 20, 6))
    ref = layer_path(a, x, t, monkeypatch)
    got = b.gradient(x, t)
    assert len(dense_calls) == 1
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-10, atol=1e-13)


def test_batches_near_the_crossover_keep_the_last_batchs_pass(rng, monkeypatch):
    """A batch changes pass (zero-skipping or BLAS) only when its fraction of nonzeros
    is SWITCH_MARGIN past the crossover, and gets the book's gradient either way."""
    went = []
    dense, sparse = passes_module.DenseStep.gradient_on, passes_module.NetworkPasses._sparse_gradient

    def on_dense(self, *args):
        went.append("dense")
        return dense(self, *args)

    def on_sparse(self, *args):
        went.append("sparse")
        return sparse(self, *args)

    monkeypatch.setattr(passes_module.DenseStep, "gradient_on", on_dense)
    monkeypatch.setattr(passes_module.NetworkPasses, "_sparse_gradient", on_sparse)
    limit = cython_ops.SPARSE_MAX_DENSITY[np.dtype(np.float64)]
    margin = passes_module.SWITCH_MARGIN
    assert 0 < margin < limit < 1 - 2 * margin

    def batch(density):  # exactly this fraction of nonzeros (the whole batch is counted)
        x = rng.random((100, 64)) + 0.1
        x.reshape(-1)[rng.permutation(x.size) >= round(density * x.size)] = 0
        return x, rng.integers(0, 6, 100)

    near_below, near_above = limit - margin / 2, limit + margin / 2
    plan = ([near_below, near_above] * 3 + [limit + 2 * margin, near_below, near_above]
            + [limit - 2 * margin, near_above])
    a, b = pair(lambda: TwoLayerNet(64, 20, 6, weight_init_std=0.3))
    for density in plan:
        x, t = batch(density)
        ref = layer_path(a, x, t, monkeypatch)
        got = b.gradient(x, t)
        for key in ref:
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-11, atol=1e-13)
    assert went == ["sparse"] * 6 + ["dense"] * 3 + ["sparse"] * 2


def test_a_loss_after_gradients_runs_on_the_gradients_thread_choice(rng, monkeypatch):
    # switching the kernels' thread team between a gradient and the loss right after
    # it costs more than a count of the loss's own saves: once the gradient's choice
    # has measured both counts, the loss runs on the count it picks, untimed
    from minidl import backend

    monkeypatch.setattr(backend, "STEP_THREADS", 2)
    monkeypatch.setattr(backend, "THREADS_FIXED", False)
    x, t = sparse_batch(rng, n=100)
    net = MultiLayerNet(64, [30, 20], 6, weight_init_std=0.3)
    passes = passes_for(net)
    ran = []
    real = passes._sparse_loss

    def spy(threads, step, b):
        ran.append(threads)
        return real(threads, step, b)

    monkeypatch.setattr(passes, "_sparse_loss", spy)
    ref = net.loss(x, t)  # no gradient yet: the loss's own choice, timed
    assert len(passes._choice("loss", False).times[2]) == 1
    for _ in range(5):
        net.gradient(x, t)
    gradient_choice = passes._choice("gradient", False)
    assert gradient_choice.calls > 4
    for favoured in (1, 2):  # whichever count the gradient's times favour
        gradient_choice.times[favoured].extend([1e-9] * 12)
        gradient_choice.times[3 - favoured].extend([1.0] * 12)
        ran.clear()
        assert net.loss(x, t) == ref  # the same numbers on any count
        assert ran == [favoured]
    assert len(passes._choice("loss", False).times[2]) == 1  # not timed since


def test_the_zero_skipping_loss_does_not_scan_the_weights_twice(rng, monkeypatch):
    # MultiLayerNet's loss adds 0 * sum(W ** 2) at lambda 0: 0 while the squares sum to
    # a finite number, which the zero-skipping pass has just checked (params_finite);
    # the dense pass checks it here, and a weight that overflows gives the book's NaN
    x, t = sparse_batch(rng, n=40)
    net = MultiLayerNet(64, [30, 20], 6, weight_init_std=0.3)
    with without_passes(monkeypatch):
        ref = net.loss(x, t)
    scans = []
    real = passes_module._core.finite_norm

    def counting(a):
        scans.append(a.size)
        return real(a)

    monkeypatch.setattr(passes_module._core, "finite_norm", counting)
    assert net.loss(x, t) == pytest.approx(ref, rel=1e-12)
    assert scans == []
    dense = rng.random((40, 64)).astype(np.float32) + 0.5  # no zeros: the BLAS pass
    with without_passes(monkeypatch):
        ref_dense = net.loss(dense, t)
    assert net.loss(dense, t) == pytest.approx(ref_dense, rel=1e-12)
    assert len(scans) == 3  # one per weight
    net.params["W2"][0, 0] = 1e200  # finite, but its square overflows: 0 * inf
    scans.clear()
    with np.errstate(over="ignore", invalid="ignore"):
        assert np.isnan(net.loss(x, t))


@pytest.mark.parametrize("density", [0.2, 0.9])  # the zero-skipping pass, the dense one
@pytest.mark.parametrize("n", [100, 37])  # a batch that fills the passes' buffers, one that does not
def test_what_the_layers_keep_is_not_overwritten_by_the_next_call(density, n, rng):
    x = rng.random((2, n, 64)).astype(np.float32)
    x[rng.random(x.shape) >= density] = 0
    t = rng.integers(0, 5, (2, n))
    net = MultiLayerNet(64, [16, 12], 5)
    assert passes_for(net) is not None
    net.gradient(x[0], t[0])
    kept = {name: (layer.x if hasattr(layer, "x") else layer.out)
            for name, layer in net.layers.items()}
    kept["y"] = net.lastLayer.y
    copies = {name: a.copy() for name, a in kept.items()}
    net.gradient(x[1], t[1])  # another batch, whose arrays the layers now hold
    net.accuracy(x[1], t[1])  # (an evaluation runs on buffers of its own)
    net.loss(x[0] * 2, t[0])
    for name, a in kept.items():
        np.testing.assert_array_equal(a, copies[name], err_msg=name)
    # and the layers hold the last call's forward pass
    P = net.params
    h1 = np.maximum(0, (x[0] * 2).astype(np.float64) @ P["W1"] + P["b1"])
    first = list(net.layers)[1]  # (Activation_function1, as the book names it)
    np.testing.assert_allclose(net.layers[first].out, h1, rtol=1e-12, atol=1e-12)
    assert not np.shares_memory(net.layers[first].out, kept[first])
    net.accuracy(x[1], t[1])
    np.testing.assert_allclose(net.layers[first].out, h1, rtol=1e-12, atol=1e-12)
