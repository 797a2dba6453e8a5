"""The book's layers: semantics user code relies on, on both backends, and bad input."""

import numpy as np
import pytest
from conftest import DTYPES

from minidl.layers import AddLayer, Affine, MulLayer, Relu, Sigmoid, SoftmaxWithLoss


def test_buy_apple_orange_graph():
    # the book's chapter 5 example: 2 apples at 100, 3 oranges at 150, tax 1.1
    mul_apple, mul_orange, add, mul_tax = MulLayer(), MulLayer(), AddLayer(), MulLayer()
    price = mul_tax.forward(add.forward(mul_apple.forward(100, 2), mul_orange.forward(150, 3)), 1.1)
    assert price == pytest.approx(715.0)
    dall, dtax = mul_tax.backward(1)
    dapple_price, dorange_price = add.backward(dall)
    dorange, dorange_num = mul_orange.backward(dorange_price)
    dapple, dapple_num = mul_apple.backward(dapple_price)
    assert (dapple, dapple_num, dorange, dorange_num) == pytest.approx((2.2, 110, 3.3, 165))
    assert dtax == pytest.approx(650)


def test_affine_keeps_references_to_its_parameters(backend, rng):
    W, b = rng.standard_normal((4, 3)), np.zeros(3)
    layer = Affine(W, b)
    x = rng.standard_normal((2, 4))
    before = layer.forward(x)
    W -= 0.5  # in place, as network.params[key] -= lr * grad[key] does
    b += 1.0
    after = layer.forward(x)
    np.testing.assert_allclose(after, x @ W + b, rtol=1e-12)
    assert not np.allclose(before, after)
    assert layer.W is W and layer.b is b


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_on_4d_input_returns_dx_in_that_shape(backend, dtype, rng):
    x = rng.standard_normal((5, 2, 3, 4)).astype(dtype)
    W = rng.standard_normal((24, 7)).astype(dtype)
    b = rng.standard_normal(7).astype(dtype)
    layer = Affine(W, b)
    out = layer.forward(x)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, x.reshape(5, 24) @ W + b, rtol=tol, atol=tol)
    dout = rng.standard_normal((5, 7)).astype(dtype)
    dx = layer.backward(dout)
    assert dx.shape == x.shape and dx.dtype == dtype
    np.testing.assert_allclose(dx, (dout @ W.T).reshape(x.shape), rtol=tol, atol=tol)
    np.testing.assert_allclose(layer.dW, x.reshape(5, 24).T @ dout, rtol=tol, atol=tol)
    np.testing.assert_allclose(layer.db, dout.sum(axis=0), rtol=tol, atol=tol)
    assert layer.backward(dout, need_dx=False) is None


def test_mixed_dtypes_follow_numpy_promotion(backend, rng):
    x = rng.random((3, 4)).astype(np.float32)
    W, b = rng.standard_normal((4, 2)), np.zeros(2)
    out = Affine(W, b).forward(x)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, np.dot(x, W) + b, rtol=1e-12)
    # uint8 images with float64 weights compute in float64, as NumPy would
    pixels = (255 * x).astype(np.uint8)
    np.testing.assert_allclose(Affine(W, b).forward(pixels), np.dot(pixels, W) + b, rtol=1e-12)


def test_relu_gradient_is_zero_at_the_kink_and_dout_is_left_alone(backend):
    relu = Relu()
    x = np.array([[-1.0, 0.0, 2.0]])
    np.testing.assert_array_equal(relu.forward(x), [[0, 0, 2]])
    np.testing.assert_array_equal(relu.mask, [[True, True, False]])
    dout = np.ones((1, 3))
    np.testing.assert_array_equal(relu.backward(dout), [[0, 0, 1]])
    np.testing.assert_array_equal(dout, 1)  # the book overwrote dout; we do not


def test_sigmoid_layer(backend):
    layer = Sigmoid()
    y = layer.forward(np.array([0.0, 2.0]))
    np.testing.assert_allclose(y, [0.5, 1 / (1 + np.exp(-2))], rtol=1e-12)
    np.testing.assert_allclose(layer.backward(np.ones(2)), y * (1 - y), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_with_loss_one_hot_and_integer_labels_agree(backend, dtype, rng):
    x = rng.standard_normal((6, 5)).astype(dtype)
    labels = rng.integers(0, 5, 6)
    one_hot = np.eye(5, dtype=dtype)[labels]
    a, b = SoftmaxWithLoss(), SoftmaxWithLoss()
    la, lb = a.forward(x, labels), b.forward(x, one_hot)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    assert la == pytest.approx(lb, rel=tol)
    y = np.exp(x - x.max(1, keepdims=True))
    y /= y.sum(1, keepdims=True)
    assert la == pytest.approx(-np.mean(np.log(y[np.arange(6), labels] + 1e-7)), rel=tol)
    # backward divides by the batch size
    np.testing.assert_allclose(a.backward(), (y - np.eye(5)[labels]) / 6, rtol=tol, atol=tol)
    np.testing.assert_allclose(b.backward(), (y - np.eye(5)[labels]) / 6, rtol=tol, atol=tol)
    np.testing.assert_allclose(a.backward(2.0), 2 * a.backward(), rtol=tol)


def test_softmax_with_loss_accepts_a_single_sample(backend):
    layer = SoftmaxWithLoss()
    loss = layer.forward(np.array([1.0, 2.0, 3.0]), np.array([2]))
    assert loss == pytest.approx(-np.log(np.exp(3) / np.exp([1, 2, 3]).sum() + 1e-7))


# -- bad input ------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.ones((3, 4), complex), np.ones((3, 4), object),
                                 np.array([["a"] * 4] * 3)])
def test_unsupported_dtypes_are_refused(backend, bad):
    with pytest.raises(TypeError, match="dtype"):
        Relu().forward(bad)
    with pytest.raises(TypeError, match="dtype"):
        Sigmoid().forward(bad)
    with pytest.raises(TypeError, match="dtype"):
        SoftmaxWithLoss().forward(bad, np.zeros(3, int))


def test_affine_refuses_complex_weights_and_wrong_widths(backend, rng):
    with pytest.raises(TypeError, match="dtype"):
        Affine(np.ones((4, 2), complex), np.zeros(2)).forward(np.ones((1, 4)))
    layer = Affine(rng.standard_normal((4, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="5 features per sample, but W has 4 rows"):
        layer.forward(np.ones((3, 5)))
    with pytest.raises(ValueError, match="empty batch"):
        layer.forward(np.ones((0, 4)))
    with pytest.raises(ValueError, match="b of shape"):
        Affine(np.ones((4, 2)), np.zeros(3)).forward(np.ones((1, 4)))
    layer.forward(np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"dout must have shape \(3, 2\)"):
        layer.backward(np.ones((3, 3)))
    with pytest.raises(ValueError, match="before forward"):
        Affine(np.ones((4, 2)), np.zeros(2)).backward(np.ones((3, 2)))


def test_softmax_with_loss_refuses_bad_labels(backend):
    x = np.zeros((3, 4))
    layer = SoftmaxWithLoss()
    with pytest.raises(ValueError, match="out of range"):
        layer.forward(x, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match="out of range"):
        layer.forward(x, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match="index 9223372036854775813 out of range"):
        layer.forward(x, np.array([0, 2**63 + 5, 1], dtype=np.uint64))  # < 0 as int64
    for kind in (np.uint8, np.int32, np.int64):  # every integer dtype, any strides
        layer.forward(x, np.array([3, 0, 1, 1, 2, 0], dtype=kind)[::2])
        assert layer.labels.dtype == np.int64 and list(layer.labels) == [3, 1, 2]
    with pytest.raises(ValueError, match=r"expected shape \(3,\)"):
        layer.forward(x, np.array([0, 1]))
    with pytest.raises(TypeError, match="integer class indices"):
        layer.forward(x, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="empty batch"):
        layer.forward(np.zeros((0, 4)), np.array([], int))
    with pytest.raises(ValueError, match="before forward"):
        SoftmaxWithLoss().backward()


def test_activation_backward_checks_its_input(backend):
    relu = Relu()
    with pytest.raises(ValueError, match="before forward"):
        relu.backward(np.ones(3))
    relu.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"dout must have shape \(2, 3\)"):
        relu.backward(np.ones((3, 2)))
    with pytest.raises(TypeError, match="dtype"):
        relu.backward(np.ones((2, 3), complex))


# -- dtypes the kernels do not take: NumPy's promotion, as the book's code ----------

def book_relu(x):
    out = x.copy()
    out[x <= 0] = 0
    return out


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.uint8, np.float16, bool, ">f8", ">f4"])
def test_activations_of_other_dtypes_compute_what_numpy_computes(backend, dtype, rng):
    x = (rng.standard_normal((3, 5)) * 4).astype(dtype)
    relu = Relu()
    out = relu.forward(x)
    assert out.dtype == np.result_type(x) and np.array_equal(out, book_relu(x))
    dx = relu.backward(np.ones((3, 5), dtype=np.float32))
    assert np.array_equal(dx, np.where(out > 0, 1, 0))
    if np.dtype(dtype).kind == "f":
        sig = Sigmoid().forward(x)
        with np.errstate(over="ignore"):
            ref = 1 / (1 + np.exp(-x))
        assert sig.dtype == ref.dtype
        np.testing.assert_allclose(sig, ref, rtol=2e-3 if x.dtype == np.float16 else 1e-6)


@pytest.mark.parametrize(("x_dtype", "w_dtype"), [(np.uint8, np.float64), (np.uint8, np.float32),
                                                  (np.float16, np.float32), (np.int64, np.float32),
                                                  (bool, np.float64), (">f8", np.float64),
                                                  (">f4", np.float32)])
def test_affine_promotes_other_dtypes_as_numpy(backend, x_dtype, w_dtype, rng):
    x = rng.integers(0, 3, (20, 70)).astype(x_dtype)  # wide and sparse: the kernels' case
    W = rng.standard_normal((70, 16)).astype(w_dtype)
    b = rng.standard_normal(16).astype(w_dtype)
    layer = Affine(W, b)
    out = layer.forward(x)
    ref = np.dot(x, W) + b  # the book's forward
    assert out.dtype == ref.dtype
    np.testing.assert_allclose(out, ref, rtol=1e-5 if ref.dtype == np.float32 else 1e-12)
    dout = rng.standard_normal(out.shape).astype(out.dtype)
    dx = layer.backward(dout)
    for got, want in ((dx, np.dot(dout, W.T)), (layer.dW, np.dot(x.T, dout)),
                      (layer.db, np.sum(dout, axis=0))):
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-4 if want.dtype == np.float32 else 1e-12,
                                   atol=1e-5)


def test_softmax_with_loss_on_float16_and_integer_scores(backend):
    from minidl.functions import cross_entropy_error, softmax

    scores = np.array([[1, 2, 3], [0, 0, 5]])
    for x in (scores, scores.astype(np.float16)):
        layer = SoftmaxWithLoss()
        loss = layer.forward(x, np.array([2, 0]))
        ref = cross_entropy_error(softmax(x), np.array([2, 0]))
        assert loss == pytest.approx(float(ref), rel=2e-3)


def test_one_hot_labels_of_another_shape_are_refused(backend):
    onehot = np.eye(5)[np.arange(10) % 5]  # (10, 5): one-hot rows for 10 samples of 5 classes
    with pytest.raises(ValueError, match="shape"):
        SoftmaxWithLoss().forward(np.zeros((5, 10)), onehot)
