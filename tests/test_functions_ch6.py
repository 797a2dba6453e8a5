"""The book's chapter 4 functions minidl gained: squared error, softmax_loss, numerical_gradient_2d."""

import numpy as np
import pytest
from book_common import book_ch6, book_numpy
from conftest import DTYPES

from minidl.functions import mean_squared_error, softmax_loss, sum_squared_error
from minidl.gradient import _numerical_gradient_1d, numerical_gradient_2d


def test_squared_error_is_the_books(rng):
    # the book's chapter 4 example: 0.0975 and 0.5975
    t = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    y = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
    assert sum_squared_error(y, t) == pytest.approx(0.0975, abs=1e-15)
    y2 = np.array([0.1, 0.05, 0.1, 0.0, 0.05, 0.1, 0.0, 0.6, 0.0, 0.0])
    assert mean_squared_error(y2, t) == pytest.approx(0.5975, abs=1e-15)
    Y, T = rng.random((4, 3)), rng.random((4, 3))
    assert sum_squared_error(Y, T) == book_ch6.sum_squared_error(Y, T)
    assert mean_squared_error is sum_squared_error


@pytest.mark.parametrize("one_hot", [False, True])
def test_softmax_loss_is_the_books(one_hot, rng):
    X = rng.standard_normal((5, 4))
    t = rng.integers(0, 4, 5)
    if one_hot:
        t = np.eye(4)[t]
    expected = book_numpy.cross_entropy_error(book_numpy.softmax(X), t)
    assert softmax_loss(X, t) == pytest.approx(expected, rel=1e-14)


def function_2(x):  # ch04/gradient_2d.py's
    if x.ndim == 1:
        return np.sum(x**2)
    else:
        return np.sum(x**2, axis=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2,), (5, 2), (3, 4)])
def test_numerical_gradient_2d_is_the_books(shape, dtype, rng):
    X = rng.standard_normal(shape).astype(dtype)
    X_book = X.copy()
    calls, book_calls = [], []

    def f(x):
        calls.append(x.shape)
        return function_2(x) + np.sum(np.sin(x))

    def f_book(x):
        book_calls.append(x.shape)
        return function_2(x) + np.sum(np.sin(x))

    grad = numerical_gradient_2d(f, X)
    expected = book_ch6.numerical_gradient_2d(f_book, X_book)
    assert grad.dtype == dtype and grad.shape == shape
    np.testing.assert_array_equal(grad, expected)
    assert calls == book_calls  # f sees what the book's f sees: each row, 1-D
    np.testing.assert_array_equal(X, X_book)  # restored


def test_the_books_gradient_2d_example():
    # ch04: the gradient of x0**2 + x1**2 at (3, 4), (0, 2), (3, 0)
    np.testing.assert_allclose(numerical_gradient_2d(function_2, np.array([3.0, 4.0])),
                               [6.0, 8.0], rtol=1e-8)
    X = np.array([[0.0, 2.0], [3.0, 0.0]])
    np.testing.assert_allclose(numerical_gradient_2d(function_2, X), [[0, 4], [6, 0]],
                               atol=1e-8)


def test_numerical_gradient_1d_restores_on_error_and_checks_input():
    x = np.array([1.0, 2.0, 3.0])

    def boom(v):
        if v[1] != 2.0:
            raise RuntimeError("boom")
        return 0.0

    with pytest.raises(RuntimeError):
        _numerical_gradient_1d(boom, x)
    np.testing.assert_array_equal(x, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="must be 1-D"):
        _numerical_gradient_1d(np.sum, np.ones((2, 2)))
    with pytest.raises(ValueError, match="1-D or 2-D"):
        numerical_gradient_2d(np.sum, np.ones((2, 2, 2)))
    with pytest.raises(TypeError, match="f must be callable"):
        numerical_gradient_2d(3, np.ones(2))
    with pytest.raises(TypeError, match="unsupported dtype int64"):
        numerical_gradient_2d(np.sum, np.ones(2, dtype=np.int64))
    ro = np.ones(2)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        numerical_gradient_2d(np.sum, ro)
