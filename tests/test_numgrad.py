"""Numerical gradients: the network-level kernel against the book's loop, the generic
function, and the gradient check with its ReLU kink count.

The reference throughout is the book's own procedure: perturb one parameter entry in
place, call ``network.loss``, restore (``network.numerical_gradient(x, t, method='generic')``
runs it for every entry). The fast path must match it within 1e-8 on float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import real_data_dir

from minidl import _netgrad
from minidl.backend.numpy_ops import NumpyOps
from minidl.engine import netgrad
from minidl.engine.rule import examine, why_not


def kernel(net, x, t, track_kinks=False, shortcuts=netgrad.SHORTCUTS_ALL, n_threads=0):
    """The exact kernel's (grads, kinks) for ``net`` on (x, t)."""
    return netgrad.numerical_gradient(examine(net), x, t, track_kinks, shortcuts, n_threads)
from minidl.gradient import GradientCheckReport, gradient_check, numerical_gradient
from minidl.networks import MultiLayerNet, ThreeLayerNet, TwoLayerNet
from minidl.training import train

H = 1e-4
ATOL = 1e-8  # the bound against the book's loop, float64

NETS = {
    "two": lambda act, **kw: TwoLayerNet(10, 7, 4, activation=act, **kw),
    "three": lambda act, **kw: ThreeLayerNet(10, 7, 6, 4, activation=act, **kw),
    "multi0": lambda act, **kw: MultiLayerNet(10, [], 4, activation=act, **kw),
    "multi1": lambda act, **kw: MultiLayerNet(10, [7], 4, activation=act, **kw),
    "multi2": lambda act, **kw: MultiLayerNet(10, [7, 6], 4, activation=act, **kw),
    "multi3": lambda act, **kw: MultiLayerNet(10, [7, 6, 5], 4, activation=act, **kw),
}


def randomize(net, rng, scale=0.6):
    """Weights large enough that every layer matters and ReLUs sit on both sides of 0."""
    for p in net.params.values():
        p[...] = rng.normal(0.0, scale, p.shape)
    return net


def batch(rng, n, d, n_classes, sparse, one_hot):
    if sparse:  # mostly zeros, like MNIST pixels
        x = rng.random((n, d))
        x[x < 0.7] = 0.0
    else:
        x = rng.normal(0.0, 1.0, (n, d))
    t = rng.integers(0, n_classes, n)
    if one_hot:
        t = np.eye(n_classes)[t]
    return x, t


def assert_grads_close(fast, ref, atol=ATOL, params=None):
    assert list(fast) == list(ref)
    for key in ref:
        assert fast[key].shape == ref[key].shape, key
        if params is not None:
            assert fast[key].dtype == params[key].dtype, key
        np.testing.assert_allclose(fast[key], ref[key], rtol=0, atol=atol, err_msg=key)


def book_entries(net, x, t, key, indices, round_to=None, loss_net=None):
    """The book's central difference for chosen entries of params[key], one at a time.

    ``round_to=np.float32``: store p +- h as float32 arithmetic would (the float32
    network's perturbation) while ``loss_net``, a float64 copy, computes the loss.
    """
    loss_net = loss_net or net
    p = loss_net.params[key]
    out = []
    for idx in indices:
        tmp = p[idx]
        try:
            if round_to is None:
                p[idx] = tmp + H
                f1 = loss_net.loss(x, t)
                p[idx] = tmp - H
                f2 = loss_net.loss(x, t)
            else:
                p[idx] = float(round_to(tmp) + round_to(H))
                f1 = loss_net.loss(x, t)
                p[idx] = float(round_to(tmp) - round_to(H))
                f2 = loss_net.loss(x, t)
        finally:
            p[idx] = tmp
        out.append((f1 - f2) / (2 * H))
    return np.array(out)


# -- the fast path equals the book's loop ----------------------------------------------------

@pytest.mark.parametrize("n", [1, 6])
@pytest.mark.parametrize("one_hot", [False, True], ids=["int", "onehot"])
@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
@pytest.mark.parametrize("act", ["relu", "sigmoid"])
@pytest.mark.parametrize("shape", list(NETS))
def test_fast_equals_book_loop(shape, act, sparse, one_hot, n):
    rng = np.random.default_rng([n, sparse, one_hot, len(shape)])
    net = randomize(NETS[shape](act), rng)
    x, t = batch(rng, n, 10, 4, sparse, one_hot)
    assert why_not(net) is None
    ref = net.numerical_gradient(x, t, method="generic")
    fast = net.numerical_gradient(x, t)
    assert_grads_close(fast, ref, params=net.params)
    assert max(np.abs(g).max() for g in ref.values()) > 1e-3  # a check with teeth


@pytest.mark.parametrize("shape", ["two", "multi3"])
def test_default_initialisation(shape):
    rng = np.random.default_rng(5)
    np.random.seed(5)
    net = NETS[shape]("relu")  # weight_init_std=0.01: tiny gradients, dead zones near 0
    x, t = batch(rng, 8, 10, 4, True, False)
    assert_grads_close(net.numerical_gradient(x, t),
                       net.numerical_gradient(x, t, method="generic"))


@pytest.mark.parametrize("shortcuts", range(8))
@pytest.mark.parametrize("x_scale", [1.0, 300.0])
@pytest.mark.parametrize("act", ["relu", "sigmoid"])
def test_every_kernel_path(shortcuts, x_scale, act):
    """Each shortcut of the kernel (bits of ``shortcuts``) against the general path.

    With inputs scaled by 300 (unnormalised pixels), perturbations leave the ranges
    where the single-exp formula and the polynomial tables apply, so the fallbacks run.
    """
    rng = np.random.default_rng(int(x_scale) + shortcuts)
    net = randomize(MultiLayerNet(10, [7, 6, 5], 4, activation=act), rng)
    x, t = batch(rng, 6, 10, 4, True, False)
    x *= x_scale
    ref = net.numerical_gradient(x, t, method="generic")
    fast, _ = kernel(net, x, t, False, shortcuts)
    atol = ATOL * max(1.0, x_scale / 10)  # the book's own rounding grows with the loss
    assert_grads_close(fast, ref, atol=atol)


def test_threads_do_not_change_the_result():
    rng = np.random.default_rng(3)
    net = randomize(ThreeLayerNet(30, 12, 9, 5), rng)
    x, t = batch(rng, 20, 30, 5, True, False)
    one, _ = kernel(net, x, t, True, n_threads=1)
    two, _ = kernel(net, x, t, True, n_threads=2)
    for key in one:
        assert np.array_equal(one[key], two[key]), key


@pytest.mark.parametrize("lam", [0.1, 2.0])
def test_weight_decay(lam):
    rng = np.random.default_rng(11)
    net = randomize(MultiLayerNet(10, [7, 6], 4, weight_decay_lambda=lam), rng)
    x, t = batch(rng, 5, 10, 4, True, False)
    ref = net.numerical_gradient(x, t, method="generic")
    assert_grads_close(net.numerical_gradient(x, t), ref)
    # the decay term is really in there: without it W1 would be off by lam * W1
    no_decay = randomize(MultiLayerNet(10, [7, 6], 4), np.random.default_rng(11))
    assert np.abs(no_decay.numerical_gradient(x, t)["W1"] - ref["W1"]).max() > 0.01


def test_soft_one_hot_labels_use_argmax():
    rng = np.random.default_rng(2)
    net = randomize(TwoLayerNet(10, 7, 4), rng)
    x, _ = batch(rng, 6, 10, 4, True, False)
    soft = rng.dirichlet(np.ones(4), 6)  # the book's loss takes argmax of one-hot rows
    fast = net.numerical_gradient(x, soft)
    assert_grads_close(fast, net.numerical_gradient(x, soft, method="generic"))
    assert_grads_close(fast, net.numerical_gradient(x, soft.argmax(axis=1)), atol=0)


def test_image_shaped_input_and_float32_x():
    rng = np.random.default_rng(4)
    net = randomize(TwoLayerNet(12, 7, 4), rng)
    x, t = batch(rng, 5, 12, 4, True, False)
    ref = net.numerical_gradient(x, t, method="generic")
    assert_grads_close(net.numerical_gradient(x.reshape(5, 1, 3, 4), t), ref)
    x32 = x.astype(np.float32)  # float64 weights: the book promotes to float64
    assert_grads_close(net.numerical_gradient(x32, t),
                       net.numerical_gradient(x32, t, method="generic"))


def test_float32_network():
    """float32 params: float32 perturbation, losses in float64 (see the docstring)."""
    rng = np.random.default_rng(8)
    net = randomize(ThreeLayerNet(10, 7, 6, 4, dtype="float32"), rng)
    x, t = batch(rng, 6, 10, 4, True, False)
    x = x.astype(np.float32)
    fast = net.numerical_gradient(x, t)
    twin = ThreeLayerNet(10, 7, 6, 4)  # float64 copy that evaluates the losses
    for key in net.params:
        twin.params[key][...] = net.params[key]
    for key, p in net.params.items():
        idx = list(np.ndindex(p.shape))
        ref = book_entries(net, x, t, key, idx, round_to=np.float32, loss_net=twin)
        assert fast[key].dtype == np.float32
        np.testing.assert_allclose(fast[key].ravel(), ref, rtol=1e-6, atol=ATOL, err_msg=key)
    # the book's float32 loop is float32 noise around the same numbers
    loop = net.numerical_gradient(x, t, method="generic")
    for key in fast:
        np.testing.assert_allclose(fast[key], loop[key], rtol=0, atol=2e-2, err_msg=key)


def test_params_untouched_and_plain_arrays_returned():
    rng = np.random.default_rng(6)
    net = randomize(ThreeLayerNet(10, 7, 6, 4), rng)
    x, t = batch(rng, 4, 10, 4, True, False)
    before = {k: v.copy() for k, v in net.params.items()}
    grads = net.numerical_gradient(x, t, method="fast")
    for key, value in net.params.items():
        assert np.array_equal(value, before[key])
        assert grads[key] is not value and grads[key].flags.c_contiguous


def test_numerical_training_matches_backprop_training():
    """The assignment's Q3 loop (grad='numerical') now runs on the fast path."""
    rng = np.random.default_rng(9)
    x = rng.random((60, 10))
    t = rng.integers(0, 4, 60)
    nets = []
    for grad in ("numerical", "backprop"):
        np.random.seed(1)
        net = TwoLayerNet(10, 7, 4, weight_init_std=0.5)
        train(net, x, t, lr=0.1, batch_size=10, iters=5, grad=grad)
        nets.append(net)
    for key in nets[0].params:  # they differ by the book's 1e-7 in the log, and O(h^2)
        np.testing.assert_allclose(nets[0].params[key], nets[1].params[key], atol=1e-6)


# -- dispatch and validation -----------------------------------------------------------------

def test_method_dispatch():
    rng = np.random.default_rng(1)
    net = randomize(TwoLayerNet(10, 7, 4), rng)
    x, t = batch(rng, 3, 10, 4, True, False)
    with pytest.raises(ValueError, match="method"):
        net.numerical_gradient(x, t, method="exact")
    assert why_not(net) is None

    class Scaled(TwoLayerNet):  # a student's own loss: only the book's loop knows it
        def loss(self, x, t):
            return 2 * super().loss(x, t)

    np.random.seed(0)
    custom = Scaled(10, 7, 4)
    assert "overrides loss" in why_not(custom)
    with pytest.raises(ValueError, match="overrides loss"):
        custom.numerical_gradient(x, t, method="fast")
    auto = custom.numerical_gradient(x, t)  # falls back to the loop
    assert_grads_close(auto, custom.numerical_gradient(x, t, method="generic"), atol=0)


def test_rebound_params_fall_back_to_the_books_semantics():
    """params['W1'] = new array (not in place): the layer keeps the old one, as in the book."""
    rng = np.random.default_rng(1)
    net = randomize(TwoLayerNet(10, 7, 4), rng)
    x, t = batch(rng, 3, 10, 4, True, False)
    net.params["W1"] = net.params["W1"] * 1.0
    assert "Affine1" in why_not(net)
    grads = net.numerical_gradient(x, t)
    assert not grads["W1"].any()  # the loss never sees the rebound array


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda x, t: (x[:, :9], t), ValueError, "features"),
        (lambda x, t: (x[:0], t[:0]), ValueError, "empty"),
        (lambda x, t: (np.where(x > 0.9, np.nan, x), t), ValueError, "NaN"),
        (lambda x, t: (np.where(x > 0.9, np.inf, x), t), ValueError, "infinity"),
        (lambda x, t: (x.astype(str), t), TypeError, "dtype"),
        (lambda x, t: (x, t + 4), ValueError, "out of range"),
        (lambda x, t: (x, t[:-1]), ValueError, "shape"),
        (lambda x, t: (x, t.astype(float)), TypeError, "labels"),
        (lambda x, t: (x, np.eye(4)[t].astype(str)), TypeError, "one-hot"),
    ],
)
def test_bad_input_is_refused(make, error, match):
    rng = np.random.default_rng(1)
    net = randomize(TwoLayerNet(10, 7, 4), rng)
    x, t = batch(rng, 5, 10, 4, True, False)
    x[0, 0] = 0.95  # so that the NaN/inf cases have something to replace
    bad_x, bad_t = make(x, t)
    with pytest.raises(error, match=match):
        net.numerical_gradient(bad_x, bad_t, method="fast")


def test_integer_images_are_promoted_as_the_book_promotes_them():
    rng = np.random.default_rng(1)
    net = randomize(TwoLayerNet(10, 7, 4), rng)
    x, t = batch(rng, 5, 10, 4, True, False)
    pixels = np.round(x * 3).astype(np.uint8)
    assert_grads_close(net.numerical_gradient(pixels, t),
                       net.numerical_gradient(pixels.astype(np.float64), t, method="generic"))


def test_non_finite_params_give_the_books_nans():
    rng = np.random.default_rng(1)
    net = randomize(TwoLayerNet(10, 7, 4), rng)
    x, t = batch(rng, 5, 10, 4, True, False)
    net.params["b2"][1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        net.numerical_gradient(x, t, method="fast")
    got, ref = net.numerical_gradient(x, t), net.numerical_gradient(x, t, method="generic")
    for key in ref:  # the book's loop: every loss is NaN
        assert np.array_equal(np.isnan(got[key]), np.isnan(ref[key])) and np.isnan(got[key]).all()


# -- kinks and the gradient check ------------------------------------------------------------

def brute_force_kinks(net, x):
    """For every entry: does p + h or p - h flip any ReLU mask in the full forward pass?"""
    L = len(net.sizes) - 1

    def masks():
        a, out = x.reshape(len(x), -1), []
        for k in range(1, L):
            z = a @ net.params[f"W{k}"] + net.params[f"b{k}"]
            out.append(z > 0)
            a = np.where(z > 0, z, 0.0)
        return out

    base = masks()
    kinks = {}
    for key, p in net.params.items():
        flags = np.zeros(p.shape, dtype=bool)
        for idx in np.ndindex(p.shape):
            tmp = p[idx]
            for step in (H, -H):
                p[idx] = tmp + step
                flags[idx] |= any((m != b).any() for m, b in zip(masks(), base))
            p[idx] = tmp
        kinks[key] = flags
    return kinks


def net_on_kinks(rng, sizes):
    """A ReLU network with some pre-activations within reach of h of zero."""
    net = randomize(MultiLayerNet(sizes[0], sizes[1:-1], sizes[-1]), rng)
    x, t = batch(rng, 6, sizes[0], sizes[-1], True, False)
    a = x
    for k in range(1, len(sizes) - 1):
        z = a @ net.params[f"W{k}"] + net.params[f"b{k}"]
        net.params[f"b{k}"][0] -= z[0, 0] - 2e-5  # just above the kink in row 0
        net.params[f"b{k}"][1] -= z[1, 1] + 3e-6  # just below it in row 1
        z = a @ net.params[f"W{k}"] + net.params[f"b{k}"]
        a = np.where(z > 0, z, 0.0)
    return net, x, t


@pytest.mark.parametrize("shortcuts", [_netgrad.SHORTCUTS_ALL, 0])
@pytest.mark.parametrize("sizes", [(8, 6, 3), (8, 6, 5, 3), (8, 6, 5, 4, 3)])
def test_kink_flags_match_brute_force(sizes, shortcuts):
    net, x, t = net_on_kinks(np.random.default_rng(len(sizes)), sizes)
    _, kinks = kernel(net, x, t, True, shortcuts)
    expected = brute_force_kinks(net, x)
    assert sum(int(k.sum()) for k in expected.values()) > 0  # the construction worked
    for key in expected:
        assert np.array_equal(kinks[key], expected[key]), key


def test_gradient_check_report():
    net, x, t = net_on_kinks(np.random.default_rng(7), (8, 6, 5, 3))
    report = gradient_check(net, x, t)
    assert isinstance(report, GradientCheckReport)
    assert [row.key for row in report.rows] == list(net.params)
    expected = brute_force_kinks(net, x)
    backprop, numerical = net.gradient(x, t), net.numerical_gradient(x, t)
    for row in report.rows:
        diff = np.abs(backprop[row.key] - numerical[row.key])
        assert row.shape == net.params[row.key].shape
        assert row.n_kink == int(expected[row.key].sum())
        assert row.max_abs_diff == pytest.approx(diff.max(), abs=1e-15)
        assert row.mean_abs_diff == pytest.approx(diff.mean(), abs=1e-15)
        assert row.max_abs_diff_smooth <= row.max_abs_diff
    assert report.n_kink > 0
    kinked = [row for row in report.rows if row.n_kink]
    assert max(row.max_abs_diff for row in kinked) > 1e-6  # what the kinks do to FD
    assert report.ok  # ... and the check does not blame backprop for them
    assert report.numerical_method == "fast" and report.backprop_seconds > 0
    text = str(report)
    for word in ("W1", "b3", "kinks", "backprop", "ok"):
        assert word in text


def test_gradient_check_catches_a_wrong_backprop():
    rng = np.random.default_rng(3)
    net = randomize(TwoLayerNet(10, 7, 4), rng)
    x, t = batch(rng, 6, 10, 4, True, False)
    assert gradient_check(net, x, t).ok
    right = net.gradient

    def wrong(x, t):  # a classic slip: forgetting the 1/N of SoftmaxWithLoss in b1
        grads = right(x, t)
        grads["b1"] = grads["b1"] * len(x)
        return grads

    net.gradient = wrong
    report = gradient_check(net, x, t)
    assert not report.ok
    bad = {row.key: row.n_bad for row in report.rows}
    assert bad["b1"] > 0 and bad["W1"] == bad["W2"] == bad["b2"] == 0
    assert "NOT ok" in str(report)


def test_gradient_check_sigmoid_has_no_kinks_and_generic_has_no_count():
    rng = np.random.default_rng(4)
    net = randomize(ThreeLayerNet(10, 7, 6, 4, activation="sigmoid"), rng)
    x, t = batch(rng, 6, 10, 4, False, True)
    report = gradient_check(net, x, t)
    assert report.ok and report.n_kink == 0
    assert all(row.n_kink == 0 for row in report.rows)
    generic = gradient_check(net, x, t, method="generic")
    assert generic.numerical_method == "generic" and generic.n_kink is None
    assert "-" in str(generic)
    with pytest.raises(ValueError, match="atol"):
        gradient_check(net, x, t, atol=-1)


# -- real MNIST ------------------------------------------------------------------------------

def _mnist_dir():
    root = real_data_dir()  # through MINIDL_DATA_DIR only
    if root is not None and (root / "mnist" / "train-images-idx3-ubyte").is_file():
        return root / "mnist"
    return None


@pytest.fixture(scope="module")
def mnist_batch():
    folder = _mnist_dir()
    if folder is None:
        pytest.skip("MNIST not found (set MINIDL_DATA_DIR)")
    # raw IDX: 16-byte header for images, 8 for labels
    images = np.fromfile(folder / "train-images-idx3-ubyte", dtype=np.uint8, offset=16)
    labels = np.fromfile(folder / "train-labels-idx1-ubyte", dtype=np.uint8, offset=8)
    images = images.reshape(-1, 784)[:3000]
    labels = labels[:3000].astype(np.int64)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(images), 100, replace=False)
    return images, labels, idx


def _check_subset(net, x, t, rng, n_w=60):
    fast = net.numerical_gradient(x, t)
    active = np.flatnonzero((x != 0).any(axis=0))
    worst = 0.0
    for key, p in net.params.items():
        if p.ndim == 2:
            rows = rng.choice(active, n_w) if key == "W1" else rng.integers(0, p.shape[0], n_w)
            idx = list(zip(rows, rng.integers(0, p.shape[1], n_w)))
        else:
            idx = [(j,) for j in range(p.shape[0])]
        ref = book_entries(net, x, t, key, idx)
        got = np.array([fast[key][i] for i in idx])
        np.testing.assert_allclose(got, ref, rtol=0, atol=ATOL, err_msg=key)
        worst = max(worst, np.abs(ref).max())
    assert worst > 1e-4


@pytest.mark.parametrize("trained", [False, True], ids=["init", "trained"])
@pytest.mark.parametrize("make", [lambda: TwoLayerNet(784, 50, 10),
                                  lambda: ThreeLayerNet(784, 100, 50, 10),
                                  lambda: TwoLayerNet(784, 50, 10, activation="sigmoid")],
                         ids=["two", "three", "two-sigmoid"])
def test_real_mnist_batch(mnist_batch, make, trained):
    images, labels, idx = mnist_batch
    x_all = images / 255.0
    np.random.seed(0)
    net = make()
    if trained:  # larger weights, as in the middle of the assignment's training
        for _ in range(200):
            m = np.random.choice(len(x_all), 100)
            grads = net.gradient(x_all[m], labels[m])
            for key in net.params:
                net.params[key] -= 0.1 * grads[key]
    _check_subset(net, x_all[idx], labels[idx], np.random.default_rng(1))


def test_real_mnist_unnormalised(mnist_batch):
    """normalize=False pixels (0..255): the kernel's fallbacks on real data."""
    images, labels, idx = mnist_batch
    np.random.seed(1)
    net = TwoLayerNet(784, 50, 10, weight_init_std=0.001)
    x = images[idx].astype(np.float64)
    fast = net.numerical_gradient(x, labels[idx])
    rng = np.random.default_rng(2)
    active = np.flatnonzero((x != 0).any(axis=0))
    idx_w = list(zip(rng.choice(active, 40), rng.integers(0, 50, 40)))
    ref = book_entries(net, x, labels[idx], "W1", idx_w)
    got = np.array([fast["W1"][i] for i in idx_w])
    np.testing.assert_allclose(got, ref, rtol=0, atol=ATOL * 10)


# -- the generic numerical_gradient(f, x) ----------------------------------------------------

def _cube_sum(c):
    def f(a):
        return float(np.sum(c * a.astype(np.float64) ** 3))
    return f


def _views(dtype):
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, (6, 8)).astype(dtype)
    return {
        "0d": np.array(0.7, dtype=dtype),
        "1d": base[0].copy(),
        "3d": rng.normal(0, 1, (2, 3, 4)).astype(dtype),
        "F": np.asfortranarray(base),
        "strided": base[::2, 1::3],
        "reversed": base[::-1, ::-2],
        "transposed": base.T,
        "empty": np.zeros((0, 3), dtype=dtype),
    }


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", list(_views(np.float64)))
def test_generic_function_any_layout(layout, dtype):
    x = _views(dtype)[layout]
    c = np.random.default_rng(1).normal(0, 1, x.shape)
    before = x.copy()
    grad = numerical_gradient(_cube_sum(c), x)
    assert grad.shape == x.shape and grad.dtype == x.dtype
    assert np.array_equal(x, before)  # restored exactly
    if x.size:  # (the book's nditer refuses zero-size arrays; minidl returns an empty grad)
        # the same loop as the book's (NumPy 2 semantics): identical numbers
        assert np.array_equal(grad, NumpyOps().numerical_gradient(_cube_sum(c), x.copy()))
    tol = 1e-6 if dtype == np.float64 else 5e-2
    np.testing.assert_allclose(grad, 3 * c * x.astype(np.float64) ** 2, rtol=tol, atol=tol)


def test_generic_function_the_books_idiom():
    """f ignores its argument: the very buffer the network computes with is perturbed."""
    rng = np.random.default_rng(2)
    net = randomize(TwoLayerNet(10, 7, 4), rng)
    x, t = batch(rng, 4, 10, 4, True, False)
    g = numerical_gradient(lambda W: net.loss(x, t), net.params["W2"])
    np.testing.assert_allclose(g, net.numerical_gradient(x, t)["W2"], rtol=0, atol=ATOL)


def test_generic_function_restores_on_exception():
    x = np.arange(12.0).reshape(3, 4)[:, ::2]
    before = x.copy()
    calls = []

    def f(a):
        calls.append(a.copy())
        if len(calls) == 6:
            raise RuntimeError("boom")
        return 0.0

    with pytest.raises(RuntimeError, match="boom"):
        numerical_gradient(f, x)
    assert np.array_equal(x, before)
    assert calls[2][0, 1] == 2.0 + H  # it did perturb (element (0, 1) of the view) in place


@pytest.mark.parametrize("dtype", [">f8", ">f4"])
def test_generic_function_non_native_byte_order(dtype):
    """Big-endian arrays: right answers (they were once read as the wrong type)."""
    x = np.array([[1.0, -2.0], [0.5, 3.0]], dtype=dtype)
    c = np.array([[1.0, 2.0], [3.0, 4.0]])
    grad = numerical_gradient(_cube_sum(c), x)
    expected = numerical_gradient(_cube_sum(c), x.astype(x.dtype.newbyteorder("=")))
    np.testing.assert_allclose(grad, expected, rtol=1e-6)
    np.testing.assert_allclose(grad, 3 * c * x.astype(np.float64) ** 2, rtol=1e-2)


def test_core_loop_refuses_what_it_cannot_read():
    from minidl import _core

    for bad in (np.zeros(3, dtype=">f8"), np.zeros(3, dtype=np.float16)):
        with pytest.raises(TypeError, match="native"):
            _core.numerical_gradient(lambda a: 0.0, bad, H, np.empty(3))


@pytest.mark.parametrize(
    ("f", "x", "error", "match"),
    [
        (lambda a: 0.0, np.arange(4.0).view(), None, "read-only"),
        ("not callable", np.zeros(3), TypeError, "callable"),
        (lambda a: 0.0, np.zeros(3, dtype=np.int64), TypeError, "dtype"),
        (lambda a: 0.0, [1.0, 2.0], TypeError, "NumPy array"),
    ],
)
def test_generic_function_bad_input(f, x, error, match):
    if error is None:  # read-only
        x.flags.writeable = False
        error = ValueError
    with pytest.raises(error, match=match):
        numerical_gradient(f, x)
