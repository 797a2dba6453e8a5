"""SimpleConvNet and DeepConvNet against the book's (tests/book_conv.py), on both
backends; numerical gradients and gradient checks; parameter files."""

import pickle
import warnings

import book_conv as book
import numpy as np
import pytest

from minidl import _params_file
from minidl.gradient import gradient_check
from minidl.layers import Convolution, Dropout, Pooling
from minidl.networks import DeepConvNet, SimpleConvNet

SMALL = {"input_dim": (1, 10, 10),
         "conv_param": {"filter_num": 4, "filter_size": 3, "pad": 0, "stride": 1},
         "hidden_size": 8, "output_size": 10, "weight_init_std": 0.1}


def twins(cls, book_cls, seed=5, dtype=np.float64, **kwargs):
    np.random.seed(seed)
    ours = cls(dtype=dtype, **kwargs)
    np.random.seed(seed)
    theirs = book_cls(**kwargs)
    return ours, theirs


def batch(shape, n, rng, classes=10):
    return rng.random((n, *shape)), rng.integers(0, classes, size=n)


def test_simple_convnet_is_the_books(backend, rng):
    ours, theirs = twins(SimpleConvNet, book.SimpleConvNet, **SMALL)
    assert list(ours.layers) == list(theirs.layers) == [
        "Conv1", "Relu1", "Pool1", "Affine1", "Relu2", "Affine2"]
    for key in theirs.params:  # the book's draws in the book's order
        np.testing.assert_array_equal(ours.params[key], theirs.params[key])
    x, t = batch((1, 10, 10), 7, rng)
    np.testing.assert_allclose(ours.predict(x), theirs.predict(x), rtol=1e-12, atol=1e-15)
    assert ours.loss(x, t) == pytest.approx(theirs.loss(x, t), rel=1e-12)
    grads, book_grads = ours.gradient(x, t), theirs.gradient(x, t)
    assert list(grads) == list(book_grads)
    for key in book_grads:
        np.testing.assert_allclose(grads[key], book_grads[key], rtol=1e-10, atol=1e-15,
                                   err_msg=key)
    one_hot = np.eye(10)[t]
    assert ours.loss(x, one_hot) == pytest.approx(theirs.loss(x, one_hot), rel=1e-12)


def test_simple_convnet_defaults_are_the_books_mnist_network(rng):
    ours, theirs = twins(SimpleConvNet, book.SimpleConvNet)
    assert ours.params["W1"].shape == (30, 1, 5, 5) and ours.params["W2"].shape == (4320, 100)
    x, _ = batch((1, 28, 28), 3, rng)
    np.testing.assert_allclose(ours.predict(x), theirs.predict(x), rtol=1e-10, atol=1e-14)


def test_simple_convnet_in_float32(backend, rng):
    ours, theirs = twins(SimpleConvNet, book.SimpleConvNet, dtype=np.float32, **SMALL)
    assert all(p.dtype == np.float32 for p in ours.params.values())
    x, t = batch((1, 10, 10), 5, rng)
    x = x.astype(np.float32)
    grads = ours.gradient(x, t)
    assert all(g.dtype == np.float32 for g in grads.values())
    # the book computes in float64 from the same (rounded) weights
    theirs.params.update({k: v.astype(np.float64) for k, v in ours.params.items()})
    for name, key in (("Conv1", "W1"), ("Affine1", "W2"), ("Affine2", "W3")):
        theirs.layers[name].W = theirs.params[key]
        theirs.layers[name].b = theirs.params["b" + key[1]]
    book_grads = theirs.gradient(x.astype(np.float64), t)
    for key in book_grads:
        scale = np.abs(book_grads[key]).max()
        np.testing.assert_allclose(grads[key], book_grads[key], rtol=1e-4, atol=1e-5 * scale,
                                   err_msg=key)


def test_simple_convnet_trains_with_in_place_updates_as_the_books(backend, rng):
    ours, theirs = twins(SimpleConvNet, book.SimpleConvNet, **SMALL)
    x, t = batch((1, 10, 10), 20, rng)
    first = ours.loss(x, t)
    for _ in range(10):
        for net in (ours, theirs):
            grads = net.gradient(x, t)
            for key in net.params:
                net.params[key] -= 0.5 * grads[key]  # the layers share these arrays
    assert ours.loss(x, t) == pytest.approx(theirs.loss(x, t), rel=1e-9)
    assert ours.loss(x, t) < 0.99 * first
    assert ours.layers["Conv1"].W is ours.params["W1"]


def test_accuracy_counts_every_row(backend, rng):
    ours, theirs = twins(SimpleConvNet, book.SimpleConvNet, **SMALL)
    x, t = batch((1, 10, 10), 30, rng)
    assert ours.accuracy(x, t, batch_size=10) == theirs.accuracy(x, t, batch_size=10)
    assert ours.accuracy(x, np.eye(10)[t], batch_size=10) == theirs.accuracy(x, t, batch_size=10)
    # 30 rows in batches of 7: the book evaluates 28 of them and divides by 30
    predicted = np.argmax(ours.predict(x), axis=1)
    assert ours.accuracy(x, t, batch_size=7) == pytest.approx(np.mean(predicted == t))


def test_numerical_gradient_is_the_books_loop_and_agrees_with_backprop(backend, rng):
    # the book's ch07/gradient_check.py network, smaller
    ours, theirs = twins(SimpleConvNet, book.SimpleConvNet, **SMALL)
    x, t = batch((1, 10, 10), 2, rng)
    numerical = ours.numerical_gradient(x, t)
    assert set(numerical) == set(ours.params)
    book_numerical = theirs.numerical_gradient(x, t)
    backprop = ours.gradient(x, t)
    for key in ours.params:
        np.testing.assert_allclose(numerical[key], book_numerical[key], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(numerical[key], backprop[key], rtol=1e-3, atol=1e-6,
                                   err_msg=key)
    with pytest.raises(ValueError, match="only the book's loop"):
        ours.numerical_gradient(x, t, method="fast")
    with pytest.raises(ValueError, match="method must be one of"):
        ours.numerical_gradient(x, t, method="quick")


def test_gradient_check_runs_the_generic_loop_on_convnets(rng):
    np.random.seed(1)
    net = SimpleConvNet(**SMALL)
    x, t = batch((1, 10, 10), 1, rng)
    report = gradient_check(net, x, t)
    assert report.numerical_method == "generic"
    assert [row.key for row in report.rows] == list(net.params)
    assert report.ok, str(report)


def test_sizes_that_cannot_work_fail_at_construction():
    with pytest.raises(ValueError, match="even size, got 25"):
        SimpleConvNet(conv_param={"filter_num": 2, "filter_size": 4, "pad": 0, "stride": 1})
    with pytest.raises(ValueError, match="larger than the padded input"):
        SimpleConvNet(input_dim=(1, 3, 3))
    with pytest.raises(ValueError, match="conv_param must give integers"):
        SimpleConvNet(conv_param={"filter_num": 2, "filter_size": 3})
    with pytest.raises(ValueError, match="conv6 .* even size, got 9"):
        DeepConvNet(input_dim=(3, 32, 32))  # the book's Pool3 would drop a row and a column
    with pytest.raises(TypeError, match="float32 or float64"):
        SimpleConvNet(dtype=np.int32)


def test_simple_convnet_on_non_square_colour_images(backend, rng):
    net = SimpleConvNet(input_dim=(3, 12, 8),
                        conv_param={"filter_num": 2, "filter_size": 3, "pad": 1, "stride": 1})
    assert net.params["W2"].shape[0] == 2 * 6 * 4
    x, _ = batch((3, 12, 8), 2, rng)
    assert net.predict(x).shape == (2, 10)


# -- DeepConvNet ------------------------------------------------------------------------------

def test_deep_convnet_is_the_books(backend, rng):
    ours, theirs = twins(DeepConvNet, book.DeepConvNet)
    assert [type(layer).__name__ for layer in ours.layers] == [
        type(layer).__name__ for layer in theirs.layers]
    for key in theirs.params:
        np.testing.assert_array_equal(ours.params[key], theirs.params[key])
    x, t = batch((1, 28, 28), 3, rng)
    np.testing.assert_allclose(ours.predict(x), theirs.predict(x), rtol=1e-10, atol=1e-14)
    np.random.seed(9)  # the same dropout masks (the global generator, as the book draws them)
    loss, grads = ours.loss(x, t), ours.gradient(x, t)
    np.random.seed(9)
    book_loss, book_grads = theirs.loss(x, t), theirs.gradient(x, t)
    assert loss == pytest.approx(book_loss, rel=1e-10)
    for key in book_grads:
        np.testing.assert_allclose(grads[key], book_grads[key], rtol=1e-8,
                                   atol=1e-12 * np.abs(book_grads[key]).max(), err_msg=key)
    assert ours.accuracy(x, t, batch_size=3) == theirs.accuracy(x, t, batch_size=3)
    assert isinstance(ours.layers[17], Dropout) and isinstance(ours.layers[14], Pooling)
    assert isinstance(ours.layers[12], Convolution) and ours.layers[12].W is ours.params["W6"]


# -- parameter files --------------------------------------------------------------------------

def test_save_params_writes_npz_under_the_given_name_and_says_so_once(tmp_path, monkeypatch, rng):
    monkeypatch.setattr(_params_file, "_told_npz", False)
    net = SimpleConvNet(**SMALL)
    path = tmp_path / "params.pkl"
    with pytest.warns(UserWarning, match=r"\.npz archive \(no pickle\)"):
        net.save_params(str(path))
    assert path.read_bytes()[:4] == b"PK\x03\x04"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second save says nothing
        net.save_params(path)
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == sorted(net.params)

    other = SimpleConvNet(**SMALL)
    other.load_params(path)
    x, _ = batch((1, 10, 10), 2, rng)
    np.testing.assert_array_equal(other.predict(x), net.predict(x))
    assert other.layers["Affine2"].W is other.params["W3"]


def test_load_params_reads_the_books_pickles(tmp_path, backend, rng):
    theirs = book.SimpleConvNet(**SMALL)
    for protocol in (2, 4):
        path = tmp_path / f"book{protocol}.pkl"
        with open(path, "wb") as f:  # what the book's save_params writes
            pickle.dump(dict(theirs.params), f, protocol=protocol)
        ours = SimpleConvNet(**SMALL)
        ours.load_params(path)
        x, _ = batch((1, 10, 10), 2, rng)
        np.testing.assert_allclose(ours.predict(x), theirs.predict(x), rtol=1e-12)
        assert ours.layers["Conv1"].W is ours.params["W1"]


def test_load_params_refuses_a_pickle_that_would_run_code(tmp_path):
    marker = tmp_path / "ran"

    class Attack:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "params.pkl"
    path.write_bytes(pickle.dumps({"W1": Attack()}))
    with pytest.raises(ValueError, match=r"refused, unsafe pickle: refused to load '\w+\.system'"):
        SimpleConvNet(**SMALL).load_params(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps({"W1": np.array([object()], dtype=object)}))
    with pytest.raises(ValueError, match="object arrays are not allowed"):
        SimpleConvNet(**SMALL).load_params(path)


def test_load_params_refuses_what_does_not_fit(tmp_path):
    net = SimpleConvNet(**SMALL)
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps({"W1": np.zeros((2, 2))}))
    with pytest.raises(ValueError, match=r"W1 has shape \(2, 2\)"):
        net.load_params(path)
    path.write_bytes(pickle.dumps({"W9": np.zeros(2)}))
    with pytest.raises(ValueError, match="W9 does not belong"):
        net.load_params(path)
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="expected a dict of NumPy arrays"):
        net.load_params(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="neither a minidl .npz nor a pickled"):
        net.load_params(path)
    with pytest.raises(FileNotFoundError):
        net.load_params(tmp_path / "missing.pkl")


def test_labels_shaped_as_the_books_gradient_check_are_accepted(backend, rng):
    # ch07/gradient_check.py: T = np.array([1]).reshape((1, 1)) for a batch of one
    ours, theirs = twins(SimpleConvNet, book.SimpleConvNet, **SMALL)
    x = rng.random((1, 1, 10, 10))
    T = np.array([1]).reshape((1, 1))
    assert ours.loss(x, T) == pytest.approx(theirs.loss(x, T), rel=1e-12)
    grads, book_grads = ours.gradient(x, T), theirs.gradient(x, T)
    for key in book_grads:
        np.testing.assert_allclose(grads[key], book_grads[key], rtol=1e-10, atol=1e-15)
    x2, t2 = batch((1, 10, 10), 3, rng)
    assert ours.loss(x2, t2.reshape(1, 3)) == pytest.approx(theirs.loss(x2, t2), rel=1e-12)
    # (N, 1) for N > 1: the book pairs every row with every label
    with pytest.raises(ValueError, match="pair every row with every label"):
        ours.loss(x2, t2.reshape(3, 1))


def test_minidl_model_files_of_convnets_load_back(tmp_path, rng):
    from minidl.networks import load_network

    for net in (SimpleConvNet(dtype=np.float32, **SMALL), DeepConvNet()):
        path = tmp_path / f"{type(net).__name__}.npz"
        net.save(path)
        state = np.random.get_state()
        loaded = load_network(path)
        assert np.random.get_state()[1].tolist() == state[1].tolist()  # the seed not moved
        assert type(loaded) is type(net) and loaded.dtype == net.dtype
        for key, value in net.params.items():
            np.testing.assert_array_equal(loaded.params[key], value)
        x = rng.random((2, *loaded.architecture()["sizes"][:3])).astype(net.dtype)
        np.testing.assert_array_equal(loaded.predict(x), net.predict(x))


def test_a_convnet_model_file_that_lies_is_refused_before_building(tmp_path):
    import json as json_module

    from minidl.networks import load_network

    net = SimpleConvNet(**SMALL)
    meta = {"format": 1, **net.architecture()}
    meta["conv_params"] = [{**meta["conv_params"][0], "filter_num": 10**7}]  # huge, not in file
    path = tmp_path / "lie.npz"
    np.savez(path, __architecture__=np.array(json_module.dumps(meta)), **net.params)
    with pytest.raises(ValueError, match=r"parameter W1 has shape \(4, 1, 3, 3\), expected "
                                         r"\(10000000, 1, 3, 3\)"):
        load_network(path)
    meta["conv_params"] = [{"filter_num": 4}]
    np.savez(path, __architecture__=np.array(json_module.dumps(meta)), **net.params)
    with pytest.raises(ValueError, match="damaged architecture record"):
        load_network(path)


def _npz_with_header(path, name, shape, dtype="<f8", data=b""):
    """An .npz whose member ``name`` declares ``shape`` but holds ``data``."""
    import io
    import zipfile

    from numpy.lib import format as npy_format

    member = io.BytesIO()
    npy_format.write_array_header_1_0(
        member, {"descr": dtype, "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}.npy", member.getvalue() + data)


def test_load_params_checks_npz_headers_before_reading_any_data(tmp_path, monkeypatch):
    net = SimpleConvNet(**SMALL)
    monkeypatch.setattr(np, "load", None)  # minidl's reader, never np.load's allocations
    path = tmp_path / "params.pkl"
    # a 200-byte file declaring a terabyte
    _npz_with_header(path, "W1", (1 << 20, 1 << 20))
    with pytest.raises(ValueError, match=r"W1 declares \(1048576, 1048576\) float64 "
                                         r"\(8796093022208 bytes\) but its member holds 0"):
        net.load_params(path)
    _npz_with_header(path, "W1", (2, 2), data=bytes(32))  # well formed, another shape
    with pytest.raises(ValueError, match=r"W1 has shape \(2, 2\), this network's has"):
        net.load_params(path)
    _npz_with_header(path, "W1", net.params["W1"].shape, "|O")
    with pytest.raises(ValueError, match="Python objects"):
        net.load_params(path)
    _npz_with_header(path, "W1", net.params["W1"].shape, "<c16", bytes(16 * 36))
    with pytest.raises(ValueError, match="complex128 values, not real numbers"):
        net.load_params(path)
    _npz_with_header(path, "W7", (2,), data=bytes(16))
    with pytest.raises(ValueError, match="W7 does not belong"):
        net.load_params(path)
    # the right shape, but less data than it declares
    _npz_with_header(path, "b1", net.params["b1"].shape, data=bytes(8))
    with pytest.raises(ValueError, match="not a readable parameter file"):
        net.load_params(path)
    # a good file still loads (and np.load is not needed for it)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the once-only .npz message
        net.save_params(path)
    again = SimpleConvNet(**SMALL)
    again.load_params(path)
    for key in net.params:
        np.testing.assert_array_equal(again.params[key], net.params[key])


def test_load_params_refuses_complex_arrays_in_a_pickle(tmp_path):
    net = SimpleConvNet(**SMALL)
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps({"b1": np.zeros(net.params["b1"].shape, complex)}))
    with pytest.raises(ValueError, match="not real numbers"):
        net.load_params(path)


def test_the_books_chapter_modules_are_minidls_under_minidl_book(tmp_path):
    # ch07/simple_convnet.py and ch08/deep_convnet.py, which scripts import from their own
    # folder, resolve to minidl's networks under minidl.book: their load_params reads the
    # book's pickles through the restricted unpickler (the book's calls pickle.load)
    import os
    import subprocess
    import sys

    for name in ("simple_convnet", "deep_convnet"):
        (tmp_path / f"{name}.py").write_text("raise RuntimeError('the folder copy ran')\n")
    marker = tmp_path / "ran"

    class Attack:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"W1": Attack()}))
    np.random.seed(0)
    with open(tmp_path / "params.pkl", "wb") as f:
        pickle.dump(dict(book.SimpleConvNet(**SMALL).params), f)
    (tmp_path / "script.py").write_text(
        "import numpy as np\n"
        "from simple_convnet import SimpleConvNet\n"
        "from deep_convnet import DeepConvNet\n"
        "import minidl.networks\n"
        "assert SimpleConvNet is minidl.networks.SimpleConvNet\n"
        "assert DeepConvNet is minidl.networks.DeepConvNet\n"
        f"net = SimpleConvNet(**{SMALL!r})\n"
        "net.load_params('params.pkl')\n"
        "print(float(net.params['W1'].sum()))\n"
        "try:\n"
        "    net.load_params('evil.pkl')\n"
        "except ValueError as exc:\n"
        "    print('refused', 'unsafe pickle' in str(exc))\n")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "minidl.book", "script.py"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    np.random.seed(0)
    expected = float(book.SimpleConvNet(**SMALL).params["W1"].sum())
    total, refused = proc.stdout.split("\n")[:2]
    assert float(total) == expected
    assert refused == "refused True"
    assert not marker.exists()
