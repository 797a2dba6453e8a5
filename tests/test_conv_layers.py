"""Convolution and Pooling against the book's layers (tests/book_conv.py), on both
backends, and the convolution kernels against their NumPy reference."""

import book_conv as book
import numpy as np
import pytest
from conftest import DTYPES, RTOL, assert_sums_close

import minidl
from minidl import _conv
from minidl._conv_numpy import ConvNumpyOps, pool_arg_max
from minidl.gradient import numerical_gradient
from minidl.layers import Convolution, Pooling

# x shape, W shape, stride, pad: odd sizes, strides, pads, a batch of one, 1x1 filters
CONV_CASES = [
    ((2, 3, 7, 7), (4, 3, 3, 3), 1, 0),
    ((1, 1, 5, 6), (2, 1, 2, 3), 1, 1),
    ((3, 2, 9, 9), (3, 2, 3, 3), 2, 1),
    ((2, 4, 5, 5), (5, 4, 1, 1), 1, 0),
    ((1, 2, 8, 7), (3, 2, 4, 3), 2, 2),
    ((2, 1, 6, 6), (2, 1, 6, 6), 1, 0),   # one window per image
    ((2, 1, 2, 1), (2, 1, 1, 5), 1, 2),   # a filter wider than the image, over the padding
    ((1, 2, 3, 2), (2, 2, 3, 6), 2, 3),   # ... with stride 2: windows over the padding only
    ((4, 3, 11, 13), (6, 3, 3, 5), 3, 2),  # stride 3, odd and unequal sizes
]

# x shape, pool_h, pool_w, stride, pad
POOL_CASES = [
    ((2, 3, 6, 6), 2, 2, 2, 0),
    ((1, 2, 7, 7), 3, 3, 2, 0),    # overlapping windows
    ((2, 2, 5, 7), 3, 3, 1, 1),    # stride 1, pad 1 (windows over the zero padding)
    ((3, 1, 4, 7), 2, 3, 2, 0),
    ((1, 1, 3, 3), 3, 3, 1, 0),
]


def close(ours, theirs, dtype, scale=1.0):
    # products and sums computed in dtype (the book always computes in float64)
    rtol = RTOL[np.dtype(dtype)] * (10 if dtype == np.float32 else 1)
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * scale)


def conv_pair(x_shape, w_shape, stride, pad, dtype, rng):
    W = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    x = rng.standard_normal(x_shape).astype(dtype)
    return x, W, b, Convolution(W, b, stride, pad), book.Convolution(W, b, stride, pad)


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_convolution_is_the_books(backend, case, dtype, rng):
    x, W, _, ours, theirs = conv_pair(*case, dtype, rng)
    out = ours.forward(x)
    expected = theirs.forward(x)
    assert out.shape == expected.shape and out.dtype == dtype
    scale = np.abs(expected).max()
    close(out, expected, dtype, scale)

    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = ours.backward(dout)
    dx_book = theirs.backward(dout.copy())
    assert dx.shape == x.shape and dx.dtype == dtype
    assert ours.dW.shape == W.shape and ours.dW.dtype == dtype and ours.db.dtype == dtype
    close(dx, dx_book, dtype, np.abs(dx_book).max())
    close(ours.dW, theirs.dW, dtype, np.abs(theirs.dW).max())
    close(ours.db, theirs.db, dtype, np.abs(theirs.db).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_convolution_takes_non_contiguous_inputs_and_dout(backend, dtype, rng):
    x_full = rng.standard_normal((3, 6, 9, 8)).astype(dtype)
    x = x_full[::2, 1::2, :, ::-1]  # (2, 3, 9, 8), strided and reversed
    W = rng.standard_normal((2, 4, 3, 3, 3)).astype(dtype)[:, 1]  # a non-contiguous W
    b = rng.standard_normal(4).astype(dtype)[::2]
    ours, theirs = Convolution(W, b, 1, 1), book.Convolution(W, b, 1, 1)
    out = ours.forward(x)
    assert out.dtype == dtype
    close(out, theirs.forward(x), dtype, 10)
    dout = rng.standard_normal((2, 9, 8, 2)).astype(dtype).transpose(0, 3, 1, 2)  # NHWC memory
    dx = ours.backward(dout)
    assert dx.dtype == dtype
    close(dx, theirs.backward(dout), dtype, 10)
    close(ours.dW, theirs.dW, dtype, 10)
    close(ours.db, theirs.db, dtype, 10)
    # a batch of one taken from the middle of a batch, and a Fortran-ordered one
    for x1 in (x_full[1:2, :3], np.asfortranarray(x_full[:1, 3:])):
        close(ours.forward(x1), theirs.forward(x1), dtype, 10)


def test_convolution_follows_numpy_promotion(backend, rng):
    W = rng.standard_normal((2, 1, 3, 3))
    b = np.zeros(2)
    pixels = rng.integers(0, 256, size=(2, 1, 5, 5)).astype(np.uint8)
    out = Convolution(W, b).forward(pixels)
    assert out.dtype == np.float64  # uint8 images with float64 weights: float64
    close(out, book.Convolution(W, b).forward(pixels), np.float64, 1e3)
    out32 = Convolution(W, b).forward(pixels.astype(np.float32))
    assert out32.dtype == np.float64  # float32 images with float64 weights compute in float64
    W32, b32 = W.astype(np.float32), b.astype(np.float32)
    assert Convolution(W32, b32).forward(pixels.astype(np.float32)).dtype == np.float32


def test_convolution_keeps_references_to_its_parameters(backend, rng):
    W, b = rng.standard_normal((2, 1, 3, 3)), np.zeros(2)
    layer = Convolution(W, b)
    x = rng.standard_normal((1, 1, 4, 4))
    before = layer.forward(x)
    W -= 0.5  # in place, as network.params[key] -= lr * grad[key] does
    b += 1.0
    after = layer.forward(x)
    close(after, book.Convolution(W, b).forward(x), np.float64, 10)
    assert not np.allclose(before, after)
    assert layer.W is W and layer.b is b
    layer.W = np.zeros_like(W)  # the book's load_params assigns new arrays
    np.testing.assert_allclose(layer.forward(x), np.ones((1, 2, 2, 2)))


def test_convolution_backward_without_dx(backend, rng):
    x, _, _, ours, theirs = conv_pair((2, 2, 5, 5), (3, 2, 3, 3), 1, 1, np.float64, rng)
    dout = rng.standard_normal(ours.forward(x).shape)
    theirs.forward(x)
    theirs.backward(dout)
    assert ours.backward(dout, need_dx=False) is None
    close(ours.dW, theirs.dW, np.float64, 10)


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pooling_is_the_books(backend, case, dtype, rng):
    x_shape, ph, pw, stride, pad = case
    x = rng.standard_normal(x_shape).astype(dtype)
    x[0, 0, :2, :2] = 0.0  # a tie: both take the first maximum
    ours, theirs = Pooling(ph, pw, stride, pad), book.Pooling(ph, pw, stride, pad)
    out = ours.forward(x)
    if pad == 0:  # the book's Pooling computes its output size without the padding
        np.testing.assert_array_equal(out, theirs.forward(x))
        np.testing.assert_array_equal(ours.arg_max, theirs.arg_max)
    assert out.dtype == dtype
    # the book's formula, through the book's im2col (which does pad)
    col = book.im2col(x, ph, pw, stride, pad).reshape(-1, ph * pw)
    N, C = x_shape[:2]
    expected = col.max(axis=1).reshape(N, out.shape[2], out.shape[3], C).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(ours.arg_max, np.argmax(col, axis=1))

    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = ours.backward(dout)
    assert dx.shape == x.shape and dx.dtype == dtype
    theirs.arg_max, theirs.x = ours.arg_max, x  # the book's backward from the same maxima
    expected = theirs.backward(dout)
    if dtype == np.float64:  # each pixel's sum in the book's order: the book's bits
        np.testing.assert_array_equal(dx, expected)
    assert_sums_close(dx, expected, theirs.backward(np.abs(dout)), dtype)


def test_pooling_passes_nan_like_numpy(backend):
    x = np.array([[[[1.0, np.nan], [3.0, np.nan]]]])
    layer = Pooling(2, 2)
    assert np.isnan(layer.forward(x)).all()
    np.testing.assert_array_equal(layer.arg_max, [1])  # the first NaN, as np.argmax
    np.testing.assert_array_equal(layer.backward(np.ones((1, 1, 1, 1))),
                                  [[[[0.0, 1.0], [0.0, 0.0]]]])
    # the general windows (3x3, stride 1, padded) too, against the book's formula
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 1, 2] = x[0, 0, 3, 0] = np.nan
    layer = Pooling(3, 3, 1, 1)
    out = layer.forward(x)
    col = book.im2col(x, 3, 3, 1, 1)
    np.testing.assert_array_equal(out.reshape(-1), np.max(col, axis=1))
    np.testing.assert_array_equal(layer.arg_max, np.argmax(col, axis=1))


def test_pooling_takes_non_contiguous_and_integer_inputs(backend, rng):
    x = rng.standard_normal((2, 4, 8, 6))[:, ::2, ::-1, :]
    ours, theirs = Pooling(2, 2), book.Pooling(2, 2)
    np.testing.assert_array_equal(ours.forward(x), theirs.forward(x))
    dout = rng.standard_normal((2, 2, 3, 4)).transpose(0, 1, 3, 2)  # (2, 2, 4, 3)
    np.testing.assert_array_equal(ours.backward(dout), theirs.backward(dout))
    pixels = rng.integers(0, 256, size=(1, 1, 4, 4)).astype(np.uint8)
    out = Pooling(2, 2).forward(pixels)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, book.Pooling(2, 2).forward(pixels))


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_gradients_match_numerical_ones(backend, dtype, rng):
    # loss = sum(pool(conv(x)) * r): backprop against the book's central differences
    x = rng.standard_normal((2, 2, 6, 6))
    W, b = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    conv, pool = Convolution(W, b, 1, 1), Pooling(2, 2, 2)
    r = rng.standard_normal((2, 3, 3, 3))

    def loss(_):
        return float(np.sum(pool.forward(conv.forward(x)) * r))

    loss(None)
    dx = conv.backward(pool.backward(r))
    for name, analytic, param in (("W", conv.dW, W), ("b", conv.db, b), ("x", dx, x)):
        numeric = numerical_gradient(loss, param)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("call, message", [
    (lambda: Convolution(np.zeros((2, 1, 5, 5)), np.zeros(2)).forward(np.zeros((1, 1, 3, 3))),
     "filter height 5 is larger than the padded input"),
    (lambda: Convolution(np.zeros((2, 1, 2, 2)), np.zeros(2), 2).forward(np.zeros((1, 1, 5, 5))),
     "stride 2 does not divide"),
    (lambda: Convolution(np.zeros((2, 3, 2, 2)), np.zeros(2)).forward(np.zeros((1, 1, 5, 5))),
     r"expected input of shape \(N, 3, H, W\)"),
    (lambda: Convolution(np.zeros((2, 1, 2, 2)), np.zeros(3)).forward(np.zeros((1, 1, 5, 5))),
     "b of shape"),
    (lambda: Convolution(np.zeros((2, 1, 2, 2)), np.zeros(2)).forward(np.zeros((1, 25))),
     r"\(N, 1, H, W\)"),
    (lambda: Pooling(2, 2).forward(np.zeros((1, 1, 5, 5))), "stride 2 does not divide"),
    (lambda: Pooling(3, 3).forward(np.zeros((1, 1, 2, 2))), "larger than the padded input"),
    (lambda: Pooling(2, 2).forward(np.zeros((4, 4))), r"\(N, C, H, W\)"),
    (lambda: Pooling(2, 2).backward(np.zeros((1, 1, 2, 2))), "before forward"),
    (lambda: Convolution(np.zeros((2, 1, 2, 2)), np.zeros(2)).backward(np.zeros(1)),
     "before forward"),
])
def test_shapes_that_cannot_work_are_clear_errors(backend, call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_backward_checks_dout_and_arg_max(backend, rng):
    conv = Convolution(rng.standard_normal((2, 1, 3, 3)), np.zeros(2))
    conv.forward(rng.standard_normal((1, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"dout must have shape \(1, 2, 2, 2\)"):
        conv.backward(np.zeros((1, 2, 3, 3)))
    pool = Pooling(2, 2)
    pool.forward(rng.standard_normal((1, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"dout must have shape \(1, 1, 2, 2\)"):
        pool.backward(np.zeros((1, 1, 4, 4)))
    pool.arg_max = np.zeros(3, dtype=np.int64)
    with pytest.raises(ValueError, match="arg_max must hold 4 window indices"):
        pool.backward(np.zeros((1, 1, 2, 2)))


def test_the_kernels_refuse_buffers_that_do_not_fit(rng):
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="expected"):
        _conv.unfold(x, 3, 3, 1, 0, np.zeros((9, 3)), 2, 2)
    with pytest.raises(ValueError, match="do not give"):
        _conv.im2col(x, 3, 3, 1, 0, np.zeros((9, 9)), 3, 3)
    with pytest.raises(ValueError, match="outside"):
        _conv.maxpool_backward(np.zeros((1, 1, 2, 2)), np.array([0, 1, 4, 0]), 2, 2, 2, 0,
                               np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError):  # dtypes must agree
        _conv.unfold(x, 3, 3, 1, 0, np.zeros((9, 4), dtype=np.float32), 2, 2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_unfold_and_fold_are_the_books_im2col_transposed(case, dtype, rng):
    x_shape, (_, C, FH, FW), stride, pad = case
    x = rng.standard_normal(x_shape).astype(dtype)
    N, _, H, W = x_shape
    oh, ow = (H + 2 * pad - FH) // stride + 1, (W + 2 * pad - FW) // stride + 1
    col = np.full((C * FH * FW, N * oh * ow), np.nan, dtype=dtype)
    _conv.unfold(x, FH, FW, stride, pad, col, oh, ow)
    book_col = ConvNumpyOps().im2col(x, FH, FW, stride, pad, oh, ow)
    np.testing.assert_array_equal(col, book_col.T)
    c = rng.standard_normal(col.shape).astype(dtype)
    img = np.full(x_shape, np.nan, dtype=dtype)
    _conv.fold(c, FH, FW, stride, pad, img, oh, ow)
    expected = ConvNumpyOps().col2im(np.ascontiguousarray(c.T), x_shape, FH, FW, stride, pad,
                                     oh, ow)
    np.testing.assert_array_equal(img, expected)  # the same sums in the same order


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_product_layout_and_the_images_layout(dtype, rng):
    N, FN, P = 3, 4, 5
    prod = rng.standard_normal((FN, N * P)).astype(dtype)
    b = rng.standard_normal(FN).astype(dtype)
    out = np.empty((N, FN, P), dtype=dtype)
    _conv.images_from_product(prod, b, out)
    expected = prod.reshape(FN, N, P).transpose(1, 0, 2) + b.reshape(FN, 1)
    np.testing.assert_array_equal(out, expected)
    back = np.empty_like(prod)
    db = np.empty(FN, dtype=dtype)
    _conv.product_from_images(out, back, db)
    np.testing.assert_array_equal(back, prod + np.repeat(b, N * P).reshape(FN, N * P))
    np.testing.assert_allclose(db, out.sum(axis=(0, 2)), rtol=RTOL[np.dtype(dtype)])
    with pytest.raises(ValueError, match="do not match"):
        _conv.images_from_product(prod, b[:2], out)
    with pytest.raises(ValueError, match="do not match"):
        _conv.product_from_images(out, np.empty((FN, 3), dtype=dtype), db)


def test_layers_run_on_the_numpy_backend_without_kernels(monkeypatch, rng):
    # the reference path must not reach minidl._conv
    before = minidl.get_backend()
    minidl.set_backend("numpy")
    try:
        for name in ("unfold", "fold", "im2col", "col2im", "maxpool_forward",
                     "maxpool_backward", "images_from_product", "product_from_images"):
            monkeypatch.setattr(_conv, name, None)
        x = rng.standard_normal((1, 1, 6, 6))
        conv = Convolution(rng.standard_normal((2, 1, 3, 3)), np.zeros(2))
        pool = Pooling(2, 2)
        out = pool.forward(conv.forward(x))
        conv.backward(pool.backward(np.ones_like(out)))
    finally:
        minidl.set_backend(before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk_bytes", [1, 3000])
def test_convolution_in_groups_of_images_is_the_same(monkeypatch, chunk_bytes, dtype, rng):
    # the compiled layer works on groups of images (CHUNK_BYTES): groups of one, of a few
    import minidl._conv_cython as conv_cython

    if minidl.get_backend() != "cython":
        pytest.skip("the compiled backend is not selected")
    monkeypatch.setattr(conv_cython, "CHUNK_BYTES", chunk_bytes)
    x, _, _, ours, theirs = conv_pair((5, 2, 7, 7), (3, 2, 3, 3), 1, 1, dtype, rng)
    for _ in range(2):  # the second pass reuses the scratch buffers of the first
        out = ours.forward(x)
        close(out, theirs.forward(x), dtype, np.abs(out).max())
        dout = rng.standard_normal(out.shape).astype(dtype)
        dx = ours.backward(dout)
        close(dx, theirs.backward(dout), dtype, np.abs(dx).max())
        close(ours.dW, theirs.dW, dtype, np.abs(theirs.dW).max())
        close(ours.db, theirs.db, dtype, np.abs(theirs.db).max())
    # a smaller batch after a larger one: the buffers are not of the last call's size
    x_small = x[:2]
    close(ours.forward(x_small), theirs.forward(x_small), dtype, np.abs(out).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_convolution_on_one_or_two_blas_threads_is_the_same(monkeypatch, dtype, rng):
    # each layer chooses its products' BLAS threads by measuring (one choice for
    # forward, one for backward, kept with the layer): the numbers must not depend on it
    from minidl.engine.threads import ThreadChoice

    if minidl.get_backend() != "cython":
        pytest.skip("the compiled backend is not selected")
    x, _, _, ours, theirs = conv_pair((6, 3, 9, 9), (4, 3, 3, 3), 1, 1, dtype, rng)
    dout = rng.standard_normal((6, 4, 9, 9)).astype(dtype)
    results = []
    for n in (1, 2):
        monkeypatch.setattr(ThreadChoice, "pick", lambda self, n=n: n)
        results.append((ours.forward(x).copy(), ours.backward(dout).copy(), ours.dW.copy()))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    close(results[0][0], theirs.forward(x), dtype, np.abs(results[0][0]).max())
    choices = [v for v in ours._state.values() if isinstance(v, ThreadChoice)]
    assert len(choices) == 2 and all(sum(map(len, c.times.values())) for c in choices)


def _geometry(x_shape, fh, fw, stride, pad):
    _, _, H, W = x_shape
    return (H + 2 * pad - fh) // stride + 1, (W + 2 * pad - fw) // stride + 1


@pytest.mark.parametrize("n_threads", [2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_kernels_on_several_threads_are_the_same(n_threads, dtype, rng):
    # the kernels share the images out between OpenMP threads (prange): each image's
    # results must not depend on how many threads there are
    x_shape, fh, fw, stride, pad = (5, 2, 7, 6), 3, 2, 1, 1
    x = rng.standard_normal(x_shape).astype(dtype)
    oh, ow = _geometry(x_shape, fh, fw, stride, pad)
    ref = ConvNumpyOps()
    rows = 2 * fh * fw
    col1, coln = (np.empty((rows, 5 * oh * ow), dtype=dtype) for _ in range(2))
    _conv.unfold(x, fh, fw, stride, pad, col1, oh, ow, 1)
    _conv.unfold(x, fh, fw, stride, pad, coln, oh, ow, n_threads)
    np.testing.assert_array_equal(coln, col1)
    np.testing.assert_array_equal(coln, ref.im2col(x, fh, fw, stride, pad, oh, ow).T)
    c = rng.standard_normal(col1.shape).astype(dtype)
    img1, imgn = (np.empty(x_shape, dtype=dtype) for _ in range(2))
    _conv.fold(c, fh, fw, stride, pad, img1, oh, ow, 1)
    _conv.fold(c, fh, fw, stride, pad, imgn, oh, ow, n_threads)
    np.testing.assert_array_equal(imgn, img1)
    book_col = np.empty((5 * oh * ow, rows), dtype=dtype)
    _conv.im2col(x, fh, fw, stride, pad, book_col, oh, ow, n_threads)
    np.testing.assert_array_equal(book_col, ref.im2col(x, fh, fw, stride, pad, oh, ow))
    back = np.empty(x_shape, dtype=dtype)
    _conv.col2im(np.ascontiguousarray(c.T), fh, fw, stride, pad, back, oh, ow, n_threads)
    np.testing.assert_array_equal(back, ref.col2im(np.ascontiguousarray(c.T), x_shape, fh, fw,
                                                   stride, pad, oh, ow))
    prod = rng.standard_normal((4, 5 * oh * ow)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    out1, outn = (np.empty((5, 4, oh * ow), dtype=dtype) for _ in range(2))
    _conv.images_from_product(prod, b, out1, 1)
    _conv.images_from_product(prod, b, outn, n_threads)
    np.testing.assert_array_equal(outn, out1)
    for ph, pw, ps, pp in ((2, 2, 2, 0), (3, 3, 1, 1)):
        poh, pow_ = _geometry(x_shape, ph, pw, ps, pp)
        expected, expected_arg = ref.pool_forward(x, ph, pw, ps, pp, poh, pow_)
        out = np.empty((5, 2, poh, pow_), dtype=dtype)
        arg = np.empty(5 * 2 * poh * pow_, dtype=np.int64)
        _conv.maxpool_forward(x, ph, pw, ps, pp, out, arg, n_threads)
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(arg, expected_arg)
        dout = rng.standard_normal(out.shape).astype(dtype)
        dx = np.empty(x_shape, dtype=dtype)
        _conv.maxpool_backward(dout, arg, ph, pw, ps, pp, dx, n_threads)
        np.testing.assert_array_equal(
            dx, ref.pool_backward(dout, arg, x_shape, ph, pw, ps, pp, poh, pow_))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape", [(2, 3, 5, 5), (1, 2, 7, 4), (3, 1, 2, 3)])
def test_the_2x2_pooling_kernels_on_sizes_they_do_not_tile(x_shape, dtype, rng):
    # the unrolled 2x2 / stride-2 kernels, where the last row or column is left out
    # (the layers refuse such sizes; the kernels must still be the book's formula)
    x = rng.standard_normal(x_shape).astype(dtype)
    x[..., 0, 1] = x[..., 0, 0]  # ties: the first maximum
    oh, ow = x_shape[2] // 2, x_shape[3] // 2
    N, C = x_shape[:2]
    out = np.empty((N, C, oh, ow), dtype=dtype)
    arg = np.empty(N * C * oh * ow, dtype=np.int64)
    _conv.maxpool_forward(x, 2, 2, 2, 0, out, arg)
    col = book.im2col(x[:, :, :2 * oh, :2 * ow], 2, 2, 2, 0).reshape(-1, 4)
    np.testing.assert_array_equal(
        out, col.max(axis=1).reshape(N, oh, ow, C).transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(arg, np.argmax(col, axis=1))
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = np.full(x_shape, np.nan, dtype=dtype)
    _conv.maxpool_backward(dout, arg, 2, 2, 2, 0, dx)
    np.testing.assert_array_equal(
        dx, ConvNumpyOps().pool_backward(dout, arg, x_shape, 2, 2, 2, 0, oh, ow))


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape", [(2, 3, 6, 8), (1, 1, 2, 2), (3, 2, 5, 7), (1, 4, 24, 24),
                                     (2, 1, 3, 2)])
def test_the_2x2_kernels_with_one_byte_per_window(x_shape, dtype, n_threads, rng):
    # maxpool2x2_forward/backward (the networks' pooling): the book's maxima and
    # backward, the argmax one byte per window in the images' order, odd sizes (a
    # last row or column in no window) and a batch of one included
    x = rng.standard_normal(x_shape).astype(dtype)
    x[..., 0, 1] = x[..., 0, 0]  # ties: the first maximum
    x[..., -2:, -2:] = np.maximum(x[..., -2:, -2:], 0) * 0  # four zeros (0 and -0)
    N, C, H, W = x_shape
    oh, ow = H // 2, W // 2
    out = np.empty((N, C, oh, ow), dtype=dtype)
    where = np.full((N, C, oh, ow), 255, dtype=np.uint8)
    _conv.maxpool2x2_forward(x, out, where, n_threads)
    col = book.im2col(x[:, :, :2 * oh, :2 * ow], 2, 2, 2, 0).reshape(-1, 4)
    np.testing.assert_array_equal(
        out, col.max(axis=1).reshape(N, oh, ow, C).transpose(0, 3, 1, 2))
    arg_max = np.argmax(col, axis=1)
    np.testing.assert_array_equal(where.transpose(0, 2, 3, 1).reshape(-1), arg_max)
    np.testing.assert_array_equal(pool_arg_max(where), arg_max)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = np.full(x_shape, np.nan, dtype=dtype)  # every pixel must be written
    _conv.maxpool2x2_backward(dout, where, dx, n_threads)
    np.testing.assert_array_equal(
        dx, ConvNumpyOps().pool_backward(dout, arg_max, x_shape, 2, 2, 2, 0, oh, ow))


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_2x2_kernel_passes_nan_like_numpy(dtype):
    x = np.array([[[[1.0, 5.0, np.nan, 2.0, 0.0, 7.0],
                    [3.0, np.nan, 4.0, np.nan, np.nan, 1.0]]]], dtype=dtype)
    out = np.empty((1, 1, 1, 3), dtype=dtype)
    where = np.empty((1, 1, 1, 3), dtype=np.uint8)
    _conv.maxpool2x2_forward(x, out, where)
    col = book.im2col(x, 2, 2, 2, 0)
    np.testing.assert_array_equal(out.reshape(-1), np.max(col, axis=1))
    np.testing.assert_array_equal(where.reshape(-1), np.argmax(col, axis=1))  # first NaN


def test_the_2x2_kernels_refuse_what_does_not_fit():
    x, out, where = np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2), np.uint8)
    with pytest.raises(ValueError, match="must be"):
        _conv.maxpool2x2_forward(x, np.zeros((1, 1, 2, 3)), where)
    with pytest.raises(ValueError, match="must be"):
        _conv.maxpool2x2_forward(x, out, np.zeros((1, 2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="must be"):
        _conv.maxpool2x2_backward(out, where, np.zeros((1, 1, 6, 4)))
    with pytest.raises(ValueError, match="outside"):
        _conv.maxpool2x2_backward(out, np.array([[[[0, 1], [4, 0]]]], np.uint8), np.zeros_like(x))
    with pytest.raises(ValueError):  # dtypes must agree
        _conv.maxpool2x2_forward(x, out.astype(np.float32), where)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pooling_arg_max_is_the_books_whenever_it_is_read(backend, dtype, rng):
    # the compiled 2x2 pooling keeps its own record of the maxima; arg_max, read at
    # any time after forward, is the book's, and backward is the book's whether or not
    # anyone read it, and follows what a student writes into it (as the book's does)
    x = rng.standard_normal((3, 4, 6, 8)).astype(dtype)
    dout = rng.standard_normal((3, 4, 3, 4)).astype(dtype)
    ours, theirs = Pooling(2, 2), book.Pooling(2, 2)
    np.testing.assert_array_equal(ours.forward(x), theirs.forward(x))
    np.testing.assert_array_equal(ours.backward(dout), theirs.backward(dout))  # unread
    assert ours.arg_max.dtype == np.int64 and ours.arg_max.shape == theirs.arg_max.shape
    np.testing.assert_array_equal(ours.arg_max, theirs.arg_max)
    np.testing.assert_array_equal(ours.backward(dout), theirs.backward(dout))  # read
    ours.arg_max[:5] = theirs.arg_max[:5] = (theirs.arg_max[:5] + 1) % 4  # in place
    np.testing.assert_array_equal(ours.backward(dout), theirs.backward(dout))
    ours.arg_max = theirs.arg_max = np.zeros_like(theirs.arg_max)  # assigned
    np.testing.assert_array_equal(ours.backward(dout), theirs.backward(dout))
    # a new forward makes a new record: the assignment is forgotten, as in the book
    x2 = rng.standard_normal(x.shape).astype(dtype)
    ours.forward(x2), theirs.forward(x2)
    np.testing.assert_array_equal(ours.backward(dout), theirs.backward(dout))
    np.testing.assert_array_equal(ours.arg_max, theirs.arg_max)
    # copies (and pickles) carry the record
    import copy
    import pickle
    ours.forward(x)
    for other in (copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))):
        np.testing.assert_array_equal(other.arg_max, ours.arg_max)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pooling_on_one_or_two_threads_is_the_same(monkeypatch, dtype, rng):
    # the 2x2 pooling chooses its kernels' threads by measuring (one choice for
    # forward, one for backward, kept with the layer): the numbers must not depend on it
    from minidl.engine.threads import ThreadChoice

    if minidl.get_backend() != "cython":
        pytest.skip("the compiled backend is not selected")
    x = rng.standard_normal((5, 3, 8, 6)).astype(dtype)
    dout = rng.standard_normal((5, 3, 4, 3)).astype(dtype)
    ours, theirs = Pooling(2, 2), book.Pooling(2, 2)
    expected = theirs.forward(x), theirs.backward(dout)
    for n in (1, 2):
        monkeypatch.setattr(ThreadChoice, "pick", lambda self, n=n: n)
        np.testing.assert_array_equal(ours.forward(x), expected[0])
        np.testing.assert_array_equal(ours.backward(dout), expected[1])
    choices = [v for v in ours._state.values() if isinstance(v, ThreadChoice)]
    assert len(choices) == 2 and all(sum(map(len, c.times.values())) == 2 for c in choices)
