"""Batches of every dtype, layout and shape, NaN and infinity, labels of every form, given to a
network's loss, gradient and accuracy: the book's answer (its NumPy code, on the same weights)
or a clear error naming the problem (issue 16, items 4 and 8). minidl.train on integer images
trains as on the same images in float64, as the book's loop does."""

from __future__ import annotations

import numpy as np
import pytest
from book_common import book_numpy
from hypothesis import given
from hypothesis import strategies as st

import minidl
from minidl.convnets import SimpleConvNet
from minidl.networks import MultiLayerNet, MultiLayerNetExtend, TwoLayerNet

from .oracle import clear_error, clear_error_or_answer

N, D, H, C = 7, 12, 6, 3
REAL = ["uint8", "int8", "int64", "bool", "float16", "float32", "float64", ">f8", ">f4"]
REFUSED = ["complex128", "object"]  # NumPy computes with them, minidl names the dtype


def book_and_minidl(seed):
    """The book's two-layer net and minidl's with the same weights (float64)."""
    np.random.seed(seed)
    book = book_numpy.LayerNet([D, H, C], weight_init_std=0.5)
    net = TwoLayerNet(D, H, C)
    for key, value in book.params.items():
        net.params[key][...] = value
    return book, net


@st.composite
def batches(draw):
    dtype = draw(st.sampled_from(REAL + REFUSED))
    values = draw(st.sampled_from(["small integers", "normal"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.integers(0, 4, (N, D)) if values == "small integers" else rng.standard_normal((N, D))
    special = draw(st.sampled_from([None, np.nan, np.inf, -np.inf]))
    if special is not None and np.dtype(dtype).kind in "fc":
        x = x.astype(np.float64)
        x[draw(st.integers(0, N - 1)), draw(st.integers(0, D - 1))] = special
    x = x.astype(dtype)
    layout = draw(st.sampled_from(["C", "F", "strided"]))
    if layout == "F":
        x = np.asfortranarray(x)
    elif layout == "strided":
        x = np.repeat(x, 2, axis=1)[:, ::2]
    t = rng.integers(0, C, N)
    labels = draw(st.sampled_from(["uint8", "int32", "int64", "one-hot", "one-hot (C, N)",
                                   "one label too few", "a single label", "out of range"]))
    if labels in ("uint8", "int32", "int64"):
        t = t.astype(labels)
    elif labels == "one-hot":
        t = np.eye(C)[t]
    elif labels == "one-hot (C, N)":
        t = np.eye(N)[t[:C]]  # (C, N): rows for C samples of N classes
    elif labels == "one label too few":
        t = t[:-1]
    elif labels == "a single label":
        t = t[:1]
    else:
        t[0] = C
    valid = dtype in REAL and labels in ("uint8", "int32", "int64", "one-hot")
    return x, t, valid, special is not None


def close(tol):
    def compare(got, expected):
        if isinstance(expected, dict):
            assert got.keys() == expected.keys()
            for key in expected:
                compare(got[key], expected[key])
            return
        got, expected = np.asarray(got), np.asarray(expected)
        assert got.shape == expected.shape and got.dtype == expected.dtype
        np.testing.assert_allclose(got, expected, **tol)
    return compare


TOL = {"rtol": 1e-9, "atol": 1e-12}


@given(batch=batches(), seed=st.integers(0, 1000))
def test_loss_gradient_and_accuracy_of_any_batch(batch, seed):
    x, t, valid, special = batch
    book, net = book_and_minidl(seed)
    answered = [
        clear_error_or_answer(lambda: np.float64(net.loss(x, t)),
                              lambda: np.float64(book.loss(x, t)), compare=close(TOL)),
        clear_error_or_answer(lambda: np.float64(net.accuracy(x, t)),
                              lambda: np.float64(book.accuracy(x, t)), compare=close(TOL)),
    ]
    if not special:  # the book's gradient through NaN rows: NaN everywhere alike, not checked
        answered.append(clear_error_or_answer(lambda: dict(net.gradient(x, t)),
                                              lambda: dict(book.gradient(x, t)),
                                              compare=close(TOL)))
    if valid:  # the book computes with these: minidl must answer, not refuse
        assert all(a is not None for a in answered)


@pytest.mark.parametrize("make", [
    lambda: TwoLayerNet(4, 5, 3),
    lambda: MultiLayerNet(4, [5], 3),
    lambda: MultiLayerNetExtend(4, [5], 3, use_batchnorm=True, use_dropout=True),
    lambda: SimpleConvNet(input_dim=(1, 4, 4), hidden_size=5, output_size=3,
                          conv_param={"filter_num": 2, "filter_size": 3, "pad": 0, "stride": 1}),
], ids=["two-layer", "multi", "extend", "convnet"])
def test_accuracy_of_no_rows_lists_and_labels_of_another_shape(make):
    net = make()
    shape = (1, 4, 4) if isinstance(net, SimpleConvNet) else (4,)
    x = np.random.default_rng(0).standard_normal((5, *shape))
    t = np.array([0, 1, 2, 1, 0])
    want = net.accuracy(x, t)
    assert 0 <= want <= 1
    assert net.accuracy(x.tolist(), t.tolist()) == want  # a list, as the book's NumPy takes it
    assert net.accuracy(x, np.eye(3)[t]) == want
    with clear_error("empty batch"):
        net.accuracy(x[:0], t[:0])
    with clear_error("1 labels for the 5 rows"):
        net.accuracy(x, t[:1])  # the book compares every row with it
    for bad in (np.eye(5)[t[:3]], np.eye(3)[t][:, :, None]):  # (3, 5) one-hot; (5, 3, 1)
        with clear_error("labels must be", str(bad.shape)):
            net.accuracy(x, bad)


@pytest.mark.parametrize("dtype", ["uint8", "bool", "float16", ">f8"])
def test_train_on_other_dtypes_is_training_on_them_in_float64(dtype):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2 if dtype == "bool" else 4, (60, D)).astype(dtype)
    t = rng.integers(0, C, 60)
    runs = []
    for images in (x, x.astype(np.float64)):
        np.random.seed(5)
        net = TwoLayerNet(D, H, C, weight_init_std=0.3)
        history = minidl.train(net, images, t, images[:20], t[:20], lr=0.1, batch_size=10,
                               iters=30)
        runs.append((net.params, history.train_loss))
    (params, losses), (want_params, want_losses) = runs
    np.testing.assert_allclose(losses, want_losses, rtol=1e-9)
    for key in want_params:
        np.testing.assert_allclose(params[key], want_params[key], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("tolerances", [{"atol": np.nan, "rtol": np.nan}, {"atol": np.nan},
                                        {"rtol": np.inf}, {"atol": -1e-6}, {"atol": "1e-6"},
                                        {"rtol": None}, {"atol": True}])
def test_gradient_check_refuses_tolerances_that_mean_nothing(tolerances):
    from minidl.gradient import gradient_check

    _, net = book_and_minidl(0)
    x, t = np.random.default_rng(1).standard_normal((3, D)), np.array([0, 1, 2])
    with clear_error("atol and rtol must be finite numbers >= 0"):
        gradient_check(net, x, t, **tolerances)  # NaN and infinity passed every entry
    assert gradient_check(net, x, t, atol=0.0, rtol=np.float32(1e-3)).ok
