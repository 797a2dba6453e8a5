"""Dropout and BatchNormalization against the book's (transcribed in bench/book_ch6.py)."""

import numpy as np
import pytest
from book_common import book_ch6
from conftest import DTYPES, RTOL

from minidl.gradient import numerical_gradient
from minidl.layers import BatchNormalization, Dropout

SHAPES = [(7, 5), (1, 6), (4, 3, 2, 2)]


def close(a, b, dtype):
    np.testing.assert_allclose(a, b, rtol=RTOL[np.dtype(dtype)], atol=RTOL[np.dtype(dtype)])


# -- Dropout ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ratio", [0.0, 0.2, 0.5, 0.9])
def test_dropout_draws_the_books_masks(ratio, dtype, rng):
    x = rng.standard_normal((6, 9)).astype(dtype)
    dout = rng.standard_normal((6, 9)).astype(dtype)
    ours, book = Dropout(ratio), book_ch6.Dropout(ratio)
    for train_flg in (True, False, True):
        np.random.seed(11)
        y = ours.forward(x, train_flg)
        np.random.seed(11)
        y_book = book.forward(x, train_flg)
        assert y.dtype == dtype
        np.testing.assert_array_equal(y, y_book)
        np.testing.assert_array_equal(ours.mask, book.mask)
        np.testing.assert_array_equal(ours.backward(dout), book.backward(dout))


def test_dropout_uses_the_global_generator_as_the_book():
    np.random.seed(3)
    Dropout(0.5).forward(np.ones((4, 4)))
    after_ours = np.random.rand()
    np.random.seed(3)
    np.random.rand(4, 4)
    assert after_ours == np.random.rand()
    # test mode draws nothing
    np.random.seed(3)
    Dropout(0.5).forward(np.ones((4, 4)), train_flg=False)
    assert np.random.rand() == np.random.RandomState(3).rand()


def test_dropout_scales_in_test_mode(rng):
    x = rng.standard_normal((3, 4))
    np.testing.assert_array_equal(Dropout(0.25).forward(x, train_flg=False), x * 0.75)
    assert Dropout().dropout_ratio == 0.5


@pytest.mark.parametrize(("ratio", "error", "match"), [
    (1.0, ValueError, r"dropout_ratio must be in \[0, 1\), got 1.0"),
    (-0.1, ValueError, r"must be in \[0, 1\)"),
    (float("nan"), ValueError, r"must be in \[0, 1\), got nan"),
    ("0.5", TypeError, "dropout_ratio must be a number"),
    (None, TypeError, "dropout_ratio must be a number"),
])
def test_dropout_ratio_outside_0_1_is_refused(ratio, error, match):
    with pytest.raises(error, match=match):
        Dropout(ratio)
    layer = Dropout()
    layer.dropout_ratio = ratio  # set later: checked at forward
    with pytest.raises(error, match=match):
        layer.forward(np.ones((2, 2)))


def test_dropout_bad_backward():
    layer = Dropout()
    with pytest.raises(ValueError, match="before a training forward"):
        layer.backward(np.ones((2, 2)))
    layer.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"dout must have shape \(2, 3\), got \(3, 2\)"):
        layer.backward(np.ones((3, 2)))
    with pytest.raises(TypeError, match="Dropout.forward"):
        layer.forward(np.ones((2, 2), dtype=complex))


# -- BatchNormalization -------------------------------------------------------------------

def bn_pair(rng, width, dtype, **kwargs):
    gamma = (1 + 0.3 * rng.standard_normal(width)).astype(dtype)
    beta = (0.2 * rng.standard_normal(width)).astype(dtype)
    ours = BatchNormalization(gamma, beta, **kwargs)
    book = book_ch6.BatchNormalization(gamma.copy(), beta.copy(), **kwargs)
    return ours, book


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_batchnorm_is_the_books(shape, dtype, rng):
    width = int(np.prod(shape[1:]))
    ours, book = bn_pair(rng, width, dtype, momentum=0.8)
    for step in range(3):
        x = (2 + 3 * rng.standard_normal(shape)).astype(dtype)
        dout = rng.standard_normal(shape).astype(dtype)
        y, y_book = ours.forward(x), book.forward(x)
        assert y.shape == shape and y.dtype == dtype
        close(y, y_book, dtype)
        dx = ours.backward(dout)
        assert dx.shape == shape and dx.dtype == dtype
        close(dx, book.backward(dout), dtype)
        close(ours.dgamma, book.dgamma, dtype)
        close(ours.dbeta, book.dbeta, dtype)
        close(ours.running_mean, book.running_mean, dtype)
        close(ours.running_var, book.running_var, dtype)
        assert ours.batch_size == shape[0]
        close(ours.xc, book.xc, dtype)
        close(ours.std, book.std, dtype)
        # test mode: the running statistics
        x_test = rng.standard_normal(shape).astype(dtype)
        close(ours.forward(x_test, train_flg=False), book.forward(x_test, train_flg=False), dtype)
    assert ours.input_shape == shape


def test_batchnorm_defaults_and_given_running_statistics(rng):
    gamma, beta = np.ones(3), np.zeros(3)
    layer = BatchNormalization(gamma, beta)
    assert (layer.momentum, layer.running_mean, layer.running_var) == (0.9, None, None)
    assert layer.gamma is gamma and layer.beta is beta  # by reference, like Affine's W and b
    mean, var = np.array([1.0, 2.0, 3.0]), np.array([4.0, 1.0, 0.25])
    layer = BatchNormalization(gamma, beta, running_mean=mean, running_var=var)
    x = rng.standard_normal((5, 3))
    np.testing.assert_allclose(layer.forward(x, train_flg=False),
                               (x - mean) / np.sqrt(var + 10e-7), rtol=1e-12)
    # a training step moves them as the book does
    layer.forward(x)
    np.testing.assert_allclose(layer.running_mean, 0.9 * mean + 0.1 * x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, 0.9 * var + 0.1 * x.var(axis=0), rtol=1e-12)


def test_batchnorm_batch_of_one_gives_beta_and_no_input_gradient(rng):
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    layer = BatchNormalization(gamma, beta)
    x = rng.standard_normal((1, 4))
    np.testing.assert_array_equal(layer.forward(x), beta[None, :])
    dout = rng.standard_normal((1, 4))
    np.testing.assert_array_equal(layer.backward(dout), np.zeros((1, 4)))
    np.testing.assert_array_equal(layer.dbeta, dout[0])
    np.testing.assert_array_equal(layer.dgamma, np.zeros(4))


@pytest.mark.parametrize("shape", [(6, 4), (5, 2, 2, 2)])
def test_batchnorm_backward_matches_numerical_gradients(shape, rng):
    width = int(np.prod(shape[1:]))
    gamma = 1 + 0.3 * rng.standard_normal(width)
    beta = 0.2 * rng.standard_normal(width)
    x = rng.standard_normal(shape)
    w = rng.standard_normal(shape)  # the loss sum(w * out)
    layer = BatchNormalization(gamma, beta)
    loss = lambda _: float(np.sum(w * layer.forward(x)))
    layer.forward(x)
    dx = layer.backward(w)
    dgamma, dbeta = layer.dgamma, layer.dbeta
    np.testing.assert_allclose(dx, numerical_gradient(loss, x), atol=1e-6)
    np.testing.assert_allclose(dgamma, numerical_gradient(loss, gamma), atol=1e-7)
    np.testing.assert_allclose(dbeta, numerical_gradient(loss, beta), atol=1e-7)


def test_batchnorm_bad_input(rng):
    layer = BatchNormalization(np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="backward called before a training forward"):
        layer.backward(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"gamma has shape \(3,\); the input has 4 features"):
        layer.forward(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"expected \(N, D\) or \(N, C, H, W\)"):
        layer.forward(np.ones(3))
    with pytest.raises(ValueError, match="empty batch"):
        layer.forward(np.ones((0, 3)))
    with pytest.raises(TypeError, match="BatchNormalization.forward"):
        layer.forward(np.ones((2, 3), dtype=np.int64))
    layer.forward(rng.standard_normal((2, 3)))
    with pytest.raises(ValueError, match="dout must have 2 rows of 3 values"):
        layer.backward(np.ones((3, 3)))
    with pytest.raises(TypeError, match="gamma must be a float array, got list"):
        BatchNormalization([1.0, 1.0], np.zeros(2)).forward(np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"running_mean has shape \(5,\)"):
        BatchNormalization(np.ones(3), np.zeros(3), running_mean=np.zeros(5),
                           running_var=np.ones(5)).forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got 1.5"):
        BatchNormalization(np.ones(3), np.zeros(3), momentum=1.5)
    with pytest.raises(ValueError, match="momentum must be in"):
        BatchNormalization(np.ones(3), np.zeros(3), momentum=float("nan"))
