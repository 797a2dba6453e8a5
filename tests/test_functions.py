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


def test_sigmoid_does_not_overflow():
    with np.errstate(over="raise", invalid="raise"):
        np.testing.assert_allclose(sigmoid(np.array([-1000.0, 1000.0])), [0, 1])


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
