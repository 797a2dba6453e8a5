"""minidl.util against the book's common/util.py (tests/book_conv.py), on both backends."""

import book_conv as book
import numpy as np
import pytest
from conftest import DTYPES, assert_sums_close

from minidl import util

# (N, C, H, W), filter_h, filter_w, stride, pad: odd sizes, strides, pads, a batch of one
GEOMETRIES = [
    ((2, 3, 7, 7), 3, 3, 1, 0),
    ((1, 1, 5, 5), 5, 5, 1, 0),   # one window: the filter covers the input
    ((3, 2, 9, 7), 3, 1, 2, 0),   # rectangular filter, stride 2
    ((2, 3, 5, 6), 3, 2, 1, 1),   # pad 1
    ((1, 2, 4, 4), 2, 2, 2, 0),   # pooling's geometry
    ((2, 1, 6, 5), 4, 3, 3, 2),   # stride 3, pad 2: windows over the padding only
    ((1, 1, 1, 1), 1, 1, 1, 0),
    ((1, 2, 3, 3), 5, 5, 1, 1),   # the filter is larger than the input, not the padded one
]


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_is_the_books(backend, geometry, dtype, rng):
    shape, fh, fw, stride, pad = geometry
    x = rng.standard_normal(shape).astype(dtype)
    col = util.im2col(x, fh, fw, stride, pad)
    expected = book.im2col(x, fh, fw, stride, pad)
    assert col.shape == expected.shape
    # a copy of the inputs' values: exactly equal, in the input's precision
    assert col.dtype == dtype
    np.testing.assert_array_equal(col, expected.astype(dtype))


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_col2im_is_the_books(backend, geometry, dtype, rng):
    shape, fh, fw, stride, pad = geometry
    rows = book.im2col(np.zeros(shape), fh, fw, stride, pad).shape
    col = rng.standard_normal(rows).astype(dtype)
    img = util.col2im(col, shape, fh, fw, stride, pad)
    assert img.shape == shape and img.flags.c_contiguous
    if dtype == np.float64:  # each pixel's sum in the book's order: the book's bits
        np.testing.assert_array_equal(img, book.col2im(col, shape, fh, fw, stride, pad))
    assert_sums_close(img, book.col2im(col, shape, fh, fw, stride, pad),
                      book.col2im(np.abs(col), shape, fh, fw, stride, pad), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_and_col2im_are_adjoint(backend, dtype, rng):
    # <im2col(x), c> == <x, col2im(c)>: col2im is im2col's backward pass
    shape, fh, fw, stride, pad = (2, 3, 7, 6), 3, 2, 1, 1
    x = rng.standard_normal(shape)
    col = util.im2col(x, fh, fw, stride, pad)
    c = rng.standard_normal(col.shape)
    lhs = np.sum(col * c)
    rhs = np.sum(x * util.col2im(c, shape, fh, fw, stride, pad))
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_im2col_takes_non_contiguous_and_integer_inputs(backend, rng):
    x = rng.standard_normal((2, 6, 8, 9))[:, ::2, 1:, ::-1]  # strided, offset, reversed
    assert not x.flags.c_contiguous
    np.testing.assert_array_equal(util.im2col(x, 3, 3, 1, 1), book.im2col(x, 3, 3, 1, 1))
    pixels = rng.integers(0, 256, size=(2, 1, 5, 5)).astype(np.uint8)
    col = util.im2col(pixels, 2, 2, 1, 0)
    assert col.dtype == np.float64  # as the book's np.zeros gives
    np.testing.assert_array_equal(col, book.im2col(pixels, 2, 2, 1, 0))


def test_col2im_takes_non_contiguous_col_of_any_shape_with_its_size(backend, rng):
    shape = (2, 2, 5, 5)
    rows, cols = book.im2col(np.zeros(shape), 3, 3, 1, 0).shape
    col = rng.standard_normal((cols, rows)).T  # transposed: Fortran order
    expected = book.col2im(col, shape, 3, 3, 1, 0)
    np.testing.assert_allclose(util.col2im(col, shape, 3, 3), expected, rtol=1e-12)
    flat = np.ascontiguousarray(col).reshape(-1)  # the book reshapes whatever it gets
    np.testing.assert_allclose(util.col2im(flat, shape, 3, 3), expected, rtol=1e-12)


def test_conv_output_size_is_the_books_value_as_an_int():
    for args in [(28, 5, 1, 0), (28, 3, 1, 1), (7, 3, 2, 0), (24, 2, 2, 0), (5, 5, 1, 0)]:
        size = util.conv_output_size(*args)
        assert isinstance(size, int) and size == book.conv_output_size(*args)


@pytest.mark.parametrize("call", [
    lambda: util.conv_output_size(28, 2, 3),          # 26 / 3
    lambda: util.im2col(np.zeros((1, 1, 7, 7)), 2, 2, 2),
    lambda: util.im2col(np.zeros((1, 1, 6, 7)), 2, 2, 2),  # the width only
    lambda: util.col2im(np.zeros((9, 4)), (1, 1, 7, 7), 2, 2, 2),
])
def test_a_stride_that_does_not_divide_is_a_value_error_naming_the_sizes(call):
    with pytest.raises(ValueError, match=r"stride \d+ does not divide .* silently drop"):
        call()


@pytest.mark.parametrize("call", [
    lambda: util.conv_output_size(3, 5),
    lambda: util.im2col(np.zeros((1, 1, 3, 3)), 5, 5),
    lambda: util.im2col(np.zeros((1, 1, 3, 8)), 5, 5, 1, 0),
    lambda: util.col2im(np.zeros((1, 25)), (1, 1, 3, 3), 5, 5),
])
def test_a_filter_larger_than_the_padded_input_is_a_value_error(call):
    with pytest.raises(ValueError, match=r"filter .* is larger than the padded input"):
        call()


def test_bad_shapes_and_parameters_are_clear_errors():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        util.im2col(np.zeros((4, 4)), 2, 2)
    with pytest.raises(TypeError, match="filter_h must be an integer"):
        util.im2col(x, 2.0, 2)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        util.im2col(x, 2, 2, stride=0)
    with pytest.raises(ValueError, match="pad must be >= 0"):
        util.im2col(x, 2, 2, pad=-1)
    with pytest.raises(ValueError, match="no pixels"):
        util.im2col(np.zeros((1, 0, 4, 4)), 2, 2)
    with pytest.raises(ValueError, match="9 x 4 = 36 elements"):
        util.col2im(np.zeros((9, 5)), (1, 1, 4, 4), 2, 2)
    with pytest.raises(TypeError, match="unsupported dtype"):
        util.im2col(x.astype(complex), 2, 2)


def test_smooth_curve_is_the_books(rng):
    x = rng.standard_normal(50).cumsum()
    np.testing.assert_allclose(util.smooth_curve(x), book.smooth_curve(x), rtol=1e-12)
    np.testing.assert_allclose(util.smooth_curve(list(x[:11])), book.smooth_curve(x[:11]),
                               rtol=1e-12)
    assert len(util.smooth_curve(x)) == len(x)
    with pytest.raises(ValueError, match="at least 11 points"):
        util.smooth_curve(x[:10])


@pytest.mark.parametrize("shape", [(10, 4), (10, 1, 2, 3)])
def test_shuffle_dataset_draws_the_books_permutation(shape, rng):
    x = rng.standard_normal(shape)
    t = np.arange(10)
    np.random.seed(3)
    ours = util.shuffle_dataset(x, t)
    np.random.seed(3)
    theirs = book.shuffle_dataset(x, t)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(ours[1], t)
    with pytest.raises(ValueError, match="same number of rows"):
        util.shuffle_dataset(x, t[:5])
