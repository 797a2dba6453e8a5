"""minidl._norm (batch normalisation kernels) against the NumPy reference (the book's lines)."""

import numpy as np
import pytest
from book_common import book_ch6
from conftest import DTYPES, RTOL

from minidl import _norm
from minidl._norm_numpy import NormNumpyOps
from minidl.backend.cython_ops import CythonOps
from minidl.layers import BatchNormalization

SHAPES = [(1, 1), (1, 7), (2, 3), (5, 1), (100, 100), (37, 13), (128, 300)]
REF, OPS = NormNumpyOps(), CythonOps()


def close(a, b, dtype):
    rtol = RTOL[np.dtype(dtype)]
    # atol: values that are sums of terms cancelling to ~0 (dx sums to 0 over the batch,
    # biases' effects vanish), relative to the terms' size
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * 10)


def inputs(rng, shape, dtype, layout):
    N, D = shape
    x = (3 + 2 * rng.standard_normal((N, D))).astype(dtype)
    if layout == "F":
        x = np.asfortranarray(x)
    elif layout == "strided":
        x = np.repeat(x, 2, axis=1)[:, ::2]
    gamma = (1 + 0.5 * rng.standard_normal(D)).astype(dtype)
    beta = rng.standard_normal(D).astype(dtype)
    return x, gamma, beta


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_train_matches_the_reference(shape, dtype, layout, rng):
    x, gamma, beta = inputs(rng, shape, dtype, layout)
    got, want = OPS.batchnorm_forward_train(x, gamma, beta), REF.batchnorm_forward_train(
        x, gamma, beta)
    for a, b in zip(got, want):
        assert a.dtype == dtype and a.shape == b.shape
        close(a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_test_matches_the_reference(shape, dtype, rng):
    x, gamma, beta = inputs(rng, shape, dtype, "C")
    mean = rng.standard_normal(shape[1]).astype(dtype)
    var = rng.random(shape[1]).astype(dtype)
    var[0] = 0  # a feature that never varied: 10e-7 keeps it finite
    got = OPS.batchnorm_forward_test(x, gamma, beta, mean, var)
    assert got.dtype == dtype
    close(got, REF.batchnorm_forward_test(x, gamma, beta, mean, var), dtype)


@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_the_reference(shape, dtype, layout, rng):
    x, gamma, beta = inputs(rng, shape, dtype, "C")
    _, _, _, xc, xn, std = REF.batchnorm_forward_train(x, gamma, beta)
    dout = rng.standard_normal(shape).astype(dtype)
    if layout == "F":
        dout = np.asfortranarray(dout)
    got, want = OPS.batchnorm_backward(dout, gamma, xc, xn, std), REF.batchnorm_backward(
        dout, gamma, xc, xn, std)
    for a, b in zip(got, want):
        assert a.dtype == dtype
        close(a, b, dtype)


def test_the_reference_is_the_books_layer(rng):
    x, gamma, beta = inputs(rng, (9, 4), np.float64, "C")
    book = book_ch6.BatchNormalization(gamma, beta)
    out, mu, var, xc, xn, std = REF.batchnorm_forward_train(x, gamma, beta)
    np.testing.assert_array_equal(out, book.forward(x))
    np.testing.assert_array_equal(xc, book.xc)
    np.testing.assert_array_equal(std, book.std)
    np.testing.assert_array_equal((1 - 0.9) * mu, book.running_mean)
    np.testing.assert_array_equal((1 - 0.9) * var, book.running_var)
    dout = rng.standard_normal((9, 4))
    dx, dgamma, dbeta = REF.batchnorm_backward(dout, gamma, xc, xn, std)
    np.testing.assert_array_equal(dx, book.backward(dout))
    np.testing.assert_array_equal(dgamma, book.dgamma)
    np.testing.assert_array_equal(dbeta, book.dbeta)


def test_mixed_dtypes_promote_as_numpy_does(rng):
    x, gamma, beta = inputs(rng, (6, 5), np.float32, "C")
    gamma64 = gamma.astype(np.float64)
    got = OPS.batchnorm_forward_train(x, gamma64, beta)
    want = REF.batchnorm_forward_train(x, gamma64, beta)
    assert got[0].dtype == want[0].dtype == np.float64
    np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_layer_on_both_backends(backend, dtype, rng):
    x = rng.standard_normal((20, 3, 2, 2)).astype(dtype)
    gamma = np.ones(12, dtype)
    beta = np.zeros(12, dtype)
    ours = BatchNormalization(gamma, beta)
    book = book_ch6.BatchNormalization(gamma.copy(), beta.copy())
    for _ in range(2):
        close(ours.forward(x), book.forward(x), dtype)
        dout = rng.standard_normal(x.shape).astype(dtype)
        close(ours.backward(dout), book.backward(dout), dtype)
        close(ours.dgamma, book.dgamma, dtype)
        close(ours.forward(x, train_flg=False), book.forward(x, train_flg=False), dtype)


def test_kernels_check_their_buffers():
    x = np.ones((3, 4))
    d4, d3 = np.empty(4), np.empty(3)
    n4 = np.empty((3, 4))
    with pytest.raises(ValueError, match="gamma has 3 values, expected 4"):
        _norm.forward_train(x, d3, d4, d4, d4, d4, n4, n4, n4)
    with pytest.raises(ValueError, match=r"out must be \(3, 4\)"):
        _norm.forward_train(x, d4, d4, d4, d4, d4, n4, n4, np.empty((2, 4)))
    with pytest.raises(ValueError, match="empty batch"):
        _norm.forward_train(np.ones((0, 4)), d4, d4, d4, d4, d4, np.empty((0, 4)),
                            np.empty((0, 4)), np.empty((0, 4)))
    with pytest.raises(ValueError, match="running_var has 3 values"):
        _norm.forward_test(x, d4, d4, d4, d3, d4, n4)
    with pytest.raises(ValueError, match=r"dx must be \(3, 4\)"):
        _norm.backward(x, d4, n4, n4, d4, d4, d4, d4, d4, np.empty((3, 3)))
    with pytest.raises(ValueError):  # one dtype per call
        _norm.forward_train(x.astype(np.float32), d4, d4, d4, d4, d4, n4, n4, n4)


def test_kernels_refuse_outputs_that_overlap_other_buffers():
    # the C loops take restrict pointers: an output sharing memory with another
    # buffer is refused, not computed into garbage
    x = np.ones((3, 4))
    d4 = [np.empty(4) for _ in range(5)]
    n4 = [np.empty((3, 4)) for _ in range(3)]
    with pytest.raises(ValueError, match="forward_train: xc overlaps"):
        _norm.forward_train(x, d4[0], d4[1], d4[2], d4[3], d4[4], x, n4[1], n4[2])
    with pytest.raises(ValueError, match="forward_train: mu overlaps"):
        _norm.forward_train(x, d4[0], d4[1], d4[2], d4[2], d4[4], n4[0], n4[1], n4[2])
    big = np.empty(8)
    with pytest.raises(ValueError, match="forward_train: mu overlaps"):  # in part
        _norm.forward_train(x, d4[0], d4[1], big[:4], big[2:6], d4[4], n4[0], n4[1], n4[2])
    with pytest.raises(ValueError, match="forward_test: out overlaps"):
        _norm.forward_test(x, d4[0], d4[1], d4[2], d4[3], d4[4], x)
    with pytest.raises(ValueError, match="backward: dx overlaps"):
        _norm.backward(x, d4[0], n4[0], n4[1], d4[1], d4[2], d4[3], d4[4], np.empty(4), x)
    with pytest.raises(ValueError, match="backward: dgamma overlaps"):
        _norm.backward(x, d4[0], n4[0], n4[1], d4[1], d4[0], d4[3], d4[4], np.empty(4),
                       n4[2])
    # distinct halves of one buffer do not overlap: computed as with separate arrays
    both = np.empty(8)
    mu, var = both[:4], both[4:]
    _norm.forward_train(x, np.ones(4), np.zeros(4), mu, var, d4[2], n4[0], n4[1], n4[2])
    np.testing.assert_array_equal(mu, np.ones(4))
    np.testing.assert_array_equal(var, np.zeros(4))


def _book_order_backward(dout, gamma, xc, xn, std):
    """The kernel's loops element by element, in Python floats of the dtype (the
    order of every operation the C code does), for a bit-for-bit comparison."""
    t = dout.dtype.type
    N, D = dout.shape
    dgamma, dbeta, dvar, dmu = (np.zeros(D, dout.dtype) for _ in range(4))
    dx = np.empty_like(dout)
    for i in range(N):
        for j in range(D):
            g = dout[i, j]
            dbeta[j] += g
            dgamma[j] += xn[i, j] * g
            dvar[j] += (gamma[j] * g) * xc[i, j] / (std[j] * std[j])
    dvar = t(0.5) * (-dvar) / std
    two_over_n = t(2.0 / N)
    for i in range(N):
        for j in range(D):
            g = (gamma[j] * dout[i, j]) / std[j] + two_over_n * xc[i, j] * dvar[j]
            dx[i, j] = g
            dmu[j] += g
    dmu = dmu / t(N)
    return dx - dmu, dgamma, dbeta


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 3), (5, 1), (9, 13), (16, 40)])
def test_both_instruction_sets_give_the_same_bits(shape, dtype, rng):
    # the vectorised loops round every operation as the element-by-element order does
    x, gamma, beta = inputs(rng, shape, dtype, "C")
    dout = rng.standard_normal(shape).astype(dtype)
    results = []
    try:
        for avx2 in (False, True):
            _norm.use_simd(avx2)
            fwd = OPS.batchnorm_forward_train(x, gamma, beta)
            bwd = OPS.batchnorm_backward(dout, gamma, fwd[3], fwd[4], fwd[5])
            results.append((*fwd, *bwd))
    finally:
        _norm.use_simd(True)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    _, _, _, xc, xn, std = results[0][:6]
    for got, want in zip(results[0][6:], _book_order_backward(dout, gamma, xc, xn, std)):
        np.testing.assert_array_equal(got, want)
