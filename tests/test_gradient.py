"""minidl.gradient.numerical_gradient: the book's contract, and bad input."""

import numpy as np
import pytest

from minidl.gradient import numerical_gradient


def test_the_books_function_2_example(backend):
    # the book: numerical_gradient(function_2, np.array([3.0, 4.0])) -> [6, 8]
    def function_2(x):
        return np.sum(x ** 2)

    np.testing.assert_allclose(numerical_gradient(function_2, np.array([3.0, 4.0])), [6, 8], rtol=1e-8)
    np.testing.assert_allclose(numerical_gradient(function_2, np.array([0.0, 2.0])), [0, 4], atol=1e-8)


def test_perturbs_the_very_buffer_the_callable_reads(backend):
    W = np.array([[1.0, 2.0], [3.0, 4.0]])
    holder = {"W": W}
    # the book's idiom: the argument is ignored, the network reads its own array
    grad = numerical_gradient(lambda _: float(np.sum(holder["W"] ** 3)), W)
    np.testing.assert_allclose(grad, 3 * W ** 2, rtol=1e-7)
    np.testing.assert_array_equal(W, [[1, 2], [3, 4]])


def test_non_contiguous_view_updates_its_base(backend):
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    view = base[:, ::2]
    grad = numerical_gradient(lambda _: float(np.sum(base ** 2)), view)
    np.testing.assert_allclose(grad, 2 * view, rtol=1e-7, atol=1e-7)


def test_bad_input_is_refused(backend):
    with pytest.raises(TypeError, match="callable"):
        numerical_gradient(3.0, np.ones(2))
    with pytest.raises(TypeError, match="dtype"):
        numerical_gradient(np.sum, np.arange(3))
    with pytest.raises(TypeError, match="NumPy array"):
        numerical_gradient(np.sum, [1.0, 2.0])
    frozen = np.ones(3)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        numerical_gradient(np.sum, frozen)
