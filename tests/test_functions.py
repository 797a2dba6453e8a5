"""The book's functions module."""

import numpy as np
import pytest

from minidl.functions import (
    cross_entropy_error,
    identity_function,
    relu,
    relu_grad,
    sigmoid,
    sigmoid_grad,
    softmax,
    step_function,
)


def test_simple_functions():
    x = np.array([-2.0, 0.0, 3.0])
    np.testing.assert_array_equal(identity_function(x), x)
    np.testing.assert_array_equal(step_function(x), [0, 0, 1])
    np.testing.assert_array_equal(relu(x), [0, 0, 3])
    np.testing.assert_allclose(sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-15)
    s = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(sigmoid_grad(x), (1 - s) * s, rtol=1e-15)


def test_relu_grad_agrees_with_the_layer_at_zero():
    np.testing.assert_array_equal(relu_grad(np.array([-1.0, 0.0, 1.0])), [0, 0, 1])


def test_sigmoid_far_from_zero_is_the_books_limit_with_numpys_warning():
    x = np.array([-1000.0, 1000.0])
    with pytest.warns(RuntimeWarning, match="overflow"):  # as the book's code warns
        np.testing.assert_array_equal(sigmoid(x), [0, 1])
    with np.errstate(over="raise", invalid="raise"):
        np.testing.assert_array_equal(sigmoid(np.array([-700.0, 700.0])), books_sigmoid(
            np.array([-700.0, 700.0])))


def test_softmax_is_stable_and_sums_to_one():
    y = softmax(np.array([[1000.0, 1001.0, 1002.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(y.sum(axis=1), 1.0)
    np.testing.assert_allclose(y[1], 1 / 3)
    np.testing.assert_allclose(softmax(np.array([0.3, 2.9, 4.0])), [0.01821127, 0.24519181, 0.73659691],
                               rtol=1e-6)  # the book's worked example


def test_cross_entropy_error_book_values():
    t = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    y = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
    assert cross_entropy_error(y, t) == pytest.approx(0.510825457099338)  # the book's example
    y2 = np.array([0.1, 0.05, 0.1, 0.0, 0.05, 0.1, 0.0, 0.6, 0.0, 0.0])
    assert cross_entropy_error(y2, t) == pytest.approx(2.302584092994546)
    batch = np.stack([y, y2])
    assert cross_entropy_error(batch, np.array([2, 2])) == pytest.approx((0.510825457099338 + 2.302584092994546) / 2)


# The book's formulas (common/functions.py): the functions must give these very bits, in the
# same dtype and type (lists, which the book's sigmoid cannot negate, as arrays).
def books_sigmoid(x):
    x = np.asarray(x)
    return 1 / (1 + np.exp(-x))


def books_softmax(x):
    x = x - np.max(x, axis=-1, keepdims=True)
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-300, -1e-300, 1e-45, -1e-45, 88.7, -88.7,
           710.0, -710.0, 36.8, -36.8]


def same_bits(ours, ref):
    assert type(ours) is type(ref)
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    assert np.array_equal(ours, ref, equal_nan=True)
    finite = np.isfinite(ref)
    assert ours[finite].tobytes() == ref[finite].tobytes()


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int64, np.uint8])
@pytest.mark.parametrize("shape", [(), (1,), (50,), (3, 10), (2, 3, 4), (0,), (4, 0)])
def test_sigmoid_and_softmax_give_the_formulas_bits(dtype, shape):
    rng = np.random.default_rng(sum(shape) + np.dtype(dtype).itemsize)
    x = (rng.standard_normal(shape) * 20).astype(dtype) if dtype != np.uint8 else \
        rng.integers(0, 255, shape).astype(dtype)
    with np.errstate(all="ignore"):
        same_bits(sigmoid(x), books_sigmoid(x))
        same_bits(sigmoid_grad(x), (1.0 - books_sigmoid(x)) * books_sigmoid(x))
        if x.ndim and x.shape[-1]:
            same_bits(softmax(x), books_softmax(x))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_and_softmax_bits_at_special_values(dtype):
    x = np.array(SPECIAL, dtype=dtype)
    with np.errstate(all="ignore"):
        for v in (x, x[::2], x.reshape(3, 5), x.reshape(5, 3).T, x[::-1].copy()):
            same_bits(sigmoid(v), books_sigmoid(v))
            same_bits(softmax(v), books_softmax(v))
        for v in (x[3:], x.reshape(3, 5)[:, 3:]):  # rows without inf: finite scores
            same_bits(softmax(v), books_softmax(v))


def test_sigmoid_and_softmax_of_lists_and_scalars():
    for v in ([1.0, -2.0, 3.0], [[1, 2], [-3, 4]], 0.5, -3, np.float32(-2.5)):
        same_bits(sigmoid(v), books_sigmoid(v))
    for v in ([1.0, -2.0, 3.0], [[1, 2], [-3, 4]]):
        same_bits(softmax(v), books_softmax(v))
    with pytest.raises(ValueError, match="zero-size array"):
        softmax(np.zeros((2, 0)))
