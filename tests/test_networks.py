"""TwoLayerNet, ThreeLayerNet and MultiLayerNet: structure, gradients, backends, files."""

import numpy as np
import pytest

import minidl
from minidl.networks import MultiLayerNet, ThreeLayerNet, TwoLayerNet, load_network

NETS = {
    "two": lambda **kw: TwoLayerNet(12, 7, 4, **kw),
    "three": lambda **kw: ThreeLayerNet(12, 7, 5, 4, **kw),
    "multi0": lambda **kw: MultiLayerNet(12, [], 4, **kw),
    "multi3": lambda **kw: MultiLayerNet(12, [7, 6, 5], 4, **kw),
}


TEACHER = np.random.default_rng(7).standard_normal((12, 4))


def data(rng, n=9, one_hot=False):
    x = rng.random((n, 12))
    x[x < 0.4] = 0
    t = np.argmax(x @ TEACHER, axis=1)  # learnable labels
    return x, (np.eye(4)[t] if one_hot else t)


def test_structure_follows_the_book():
    net = TwoLayerNet(784, 50, 10)
    assert list(net.params) == ["W1", "b1", "W2", "b2"]
    assert net.params["W1"].shape == (784, 50) and net.params["b2"].shape == (10,)
    assert list(net.layers) == ["Affine1", "Relu1", "Affine2"]
    assert net.layers["Affine1"].W is net.params["W1"]
    assert net.lastLayer is net.last_layer
    assert np.all(net.params["b1"] == 0) and 0.005 < net.params["W1"].std() < 0.015

    three = ThreeLayerNet(784, 100, 50, 10, activation="sigmoid")
    assert list(three.layers) == ["Affine1", "Sigmoid1", "Affine2", "Sigmoid2", "Affine3"]
    multi = MultiLayerNet(784, [100, 50], 10)
    assert list(multi.layers) == ["Affine1", "Activation_function1", "Affine2",
                                  "Activation_function2", "Affine3"]
    assert multi.hidden_layer_num == 2


def test_weight_init_options():
    np.random.seed(0)
    he = MultiLayerNet(400, [300], 10, weight_init_std="relu")
    assert he.params["W1"].std() == pytest.approx(np.sqrt(2 / 400), rel=0.05)
    xavier = MultiLayerNet(400, [300], 10, weight_init_std="sigmoid")
    assert xavier.params["W1"].std() == pytest.approx(np.sqrt(1 / 400), rel=0.05)
    with pytest.raises(ValueError, match="unknown initialisation"):
        MultiLayerNet(4, [3], 2, weight_init_std="magic")


@pytest.mark.parametrize("kind", NETS)
@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("one_hot", [False, True])
def test_backprop_matches_numerical_gradient(backend, kind, activation, one_hot, rng):
    np.random.seed(1)
    net = NETS[kind](activation=activation, weight_init_std=0.5)
    x, t = data(rng, one_hot=one_hot)
    numerical = net.numerical_gradient(x, t)
    backprop = net.gradient(x, t)
    assert set(backprop) == set(net.params)
    for key in net.params:
        assert backprop[key].shape == net.params[key].shape
        np.testing.assert_allclose(backprop[key], numerical[key], atol=1e-6, rtol=1e-5)


def test_weight_decay_is_in_loss_and_gradient(rng):
    np.random.seed(2)
    net = MultiLayerNet(12, [7], 4, weight_decay_lambda=0.1, weight_init_std=0.5)
    x, t = data(rng)
    plain = net.lastLayer.forward(net.predict(x), t)
    decay = 0.5 * 0.1 * sum(np.sum(net.params[k] ** 2) for k in ("W1", "W2"))
    assert net.loss(x, t) == pytest.approx(plain + decay, rel=1e-12)
    numerical, backprop = net.numerical_gradient(x, t), net.gradient(x, t)
    for key in net.params:
        np.testing.assert_allclose(backprop[key], numerical[key], atol=1e-6, rtol=1e-5)


def sgd(net, x, t, steps, lr=0.5, batch_size=10):
    losses = []
    for _ in range(steps):
        mask = np.random.choice(len(x), batch_size)
        grads = net.gradient(x[mask], t[mask])
        for key in net.params:
            net.params[key] -= lr * grads[key]
        losses.append(net.loss(x[mask], t[mask]))
    return np.array(losses)


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backends_train_the_same_on_the_same_seed(activation, dtype, rng):
    x, t = data(rng, n=200)
    x = x.astype(dtype)
    runs = {}
    for name, gemm in (("numpy", None), ("cython", "blas"), ("cython", "cython")):
        minidl.set_backend(name, gemm=gemm)
        try:
            np.random.seed(1211)
            net = ThreeLayerNet(12, 16, 8, 4, activation=activation, weight_init_std=0.3, dtype=dtype)
            losses = sgd(net, x, t, 300)
            runs[name, gemm] = losses, net.params, net.accuracy(x, t)
        finally:
            minidl.set_backend("cython")
    ref_losses, ref_params, ref_acc = runs["numpy", None]
    assert ref_losses[-20:].mean() < ref_losses[:20].mean()  # it learned
    tol = 1e-3 if dtype == np.float32 else 1e-8
    for key, (losses, params, acc) in runs.items():
        np.testing.assert_allclose(losses, ref_losses, rtol=tol, err_msg=str(key))
        for p in params:
            assert params[p].dtype == dtype
            np.testing.assert_allclose(params[p], ref_params[p], rtol=tol, atol=tol)
        assert abs(acc - ref_acc) <= 0.01


def test_accuracy_with_integer_and_one_hot_labels(rng):
    net = TwoLayerNet(12, 7, 4)
    x, t = data(rng, n=50)
    predicted = np.argmax(net.predict(x), axis=1)
    expected = np.mean(predicted == t)
    assert net.accuracy(x, t) == pytest.approx(expected)
    assert net.accuracy(x, np.eye(4)[t]) == pytest.approx(expected)


def test_float32_network_keeps_float32(rng):
    net = TwoLayerNet(12, 7, 4, dtype="float32")
    x, t = data(rng)
    grads = net.gradient(x.astype(np.float32), t)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert all(p.dtype == np.float32 for p in net.params.values())


def test_bad_construction_is_refused():
    with pytest.raises(ValueError, match="activation"):
        TwoLayerNet(4, 3, 2, activation="tanh")
    with pytest.raises(ValueError, match="positive"):
        MultiLayerNet(4, [0], 2)
    with pytest.raises(TypeError, match="float32 or float64"):
        TwoLayerNet(4, 3, 2, dtype=np.int32)


def test_wrong_input_width_and_labels_are_refused(rng):
    net = TwoLayerNet(12, 7, 4)
    with pytest.raises(ValueError, match="13 features per sample"):
        net.loss(np.ones((3, 13)), np.zeros(3, int))
    with pytest.raises(ValueError, match="out of range"):
        net.gradient(np.ones((3, 12)), np.array([0, 1, 4]))
    with pytest.raises(ValueError, match="expected shape"):
        net.gradient(np.ones((3, 12)), np.array([0, 1]))


# -- saving and loading ---------------------------------------------------------

@pytest.mark.parametrize("kind", NETS)
def test_save_and_load_round_trip(kind, tmp_path, rng):
    net = NETS[kind](activation="sigmoid")
    for p in net.params.values():
        p += rng.standard_normal(p.shape)
    path = tmp_path / "model.npz"
    net.save(path)
    state = np.random.get_state()
    loaded = MultiLayerNet.load(path)
    assert np.random.get_state()[1].tolist() == state[1].tolist()  # loading leaves the seed alone
    assert type(loaded) is type(net) and loaded.activation == "sigmoid"
    for key in net.params:
        np.testing.assert_array_equal(loaded.params[key], net.params[key])
    x, _ = data(rng)
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))
    assert loaded.layers["Affine1"].W is loaded.params["W1"]
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary left behind


def test_a_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    TwoLayerNet(4, 3, 2).save(path)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        TwoLayerNet(4, 3, 2).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_damaged_model_files_are_refused(tmp_path):
    good = tmp_path / "good.npz"
    TwoLayerNet(4, 3, 2).save(good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.npz"):
        load_network(truncated)
    not_a_model = tmp_path / "plain.npz"
    np.savez(not_a_model, W1=np.ones(3))
    with pytest.raises(ValueError, match="no architecture record"):
        load_network(not_a_model)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, __architecture__=np.array([{"class": "TwoLayerNet"}], dtype=object))
    with pytest.raises(ValueError):
        load_network(pickled)
    wrong_shape = tmp_path / "wrong.npz"
    arch = '{"format": 1, "class": "TwoLayerNet", "sizes": [4, 3, 2]}'
    np.savez(wrong_shape, __architecture__=np.array(arch), W1=np.ones((3, 3)), b1=np.zeros(3),
             W2=np.ones((3, 2)), b2=np.zeros(2))
    with pytest.raises(ValueError, match=r"W1 has shape \(3, 3\), expected \(4, 3\)"):
        load_network(wrong_shape)
    with pytest.raises(FileNotFoundError):
        load_network(tmp_path / "missing.npz")
