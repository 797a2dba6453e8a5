"""Every compiled kernel held against the NumPy reference (``minidl.backend.numpy_ops``).

Tolerances: rtol 1e-6 for float32 and 1e-12 for float64 on elementwise kernels;
products and sums are held to a bound scaled by the magnitudes summed
(``|A| @ |B|``), since their rounding depends on the order of summation.
"""

import numpy as np
import pytest
from conftest import DTYPES, RTOL

from minidl import _core
from minidl.backend import use_simd
from minidl.backend.cython_ops import CythonOps
from minidl.backend.numpy_ops import NumpyOps

REF = NumpyOps()
OPS = [CythonOps("blas"), CythonOps("cython")]
LAYOUTS = ["C", "F", "strided"]
EPS = {np.dtype(np.float32): np.finfo(np.float32).eps, np.dtype(np.float64): np.finfo(np.float64).eps}


def arrange(a: np.ndarray, layout: str) -> np.ndarray:
    """The same values as ``a`` in another memory layout."""
    if layout == "C":
        return np.ascontiguousarray(a)
    if layout == "F":
        return np.asfortranarray(a)
    big = np.zeros(tuple(2 * s for s in a.shape), dtype=a.dtype)
    view = big[tuple(slice(None, None, 2) for _ in a.shape)]
    view[...] = a
    return view


def assert_product_close(got, a, b, dtype):
    """|got - a@b| <= K * eps * (|a| @ |b|): the standard bound for a dot product."""
    ref = np.dot(a.astype(np.float64), b.astype(np.float64))
    bound = a.shape[1] * EPS[np.dtype(dtype)] * np.dot(np.abs(a), np.abs(b)) + 1e-300
    assert got.dtype == dtype
    assert np.all(np.abs(got - ref) <= bound), np.max(np.abs(got - ref) / bound)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 784, 50), (7, 3, 5), (100, 784, 50), (100, 50, 10),
                                   (33, 300, 270), (50, 100, 784), (2, 0, 3)])
def test_tiled_gemm_matches_numpy(dtype, layout, shape, rng):
    m, k, n = shape
    a = rng.standard_normal((m, k)).astype(dtype)
    a[a < 0.3] = 0  # sparse, like ReLU activations: exercises the zero skip
    b = rng.standard_normal((k, n)).astype(dtype)
    got = CythonOps("cython").gemm(arrange(a, layout), arrange(b, layout))
    assert_product_close(got, a, b, dtype)
    if k == 0:
        assert np.all(got == 0)


@pytest.mark.parametrize("ops", OPS, ids=lambda o: o.gemm_impl)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n", [1, 5, 100])
def test_affine_forward_backward(ops, dtype, layout, n, rng):
    x = rng.random((n, 30)).astype(dtype)
    W = (0.1 * rng.standard_normal((30, 12))).astype(dtype)
    b = rng.standard_normal(12).astype(dtype)
    dout = rng.standard_normal((n, 12)).astype(dtype)
    x_, W_, dout_ = arrange(x, layout), arrange(W, layout), arrange(dout, layout)

    out = ops.affine_forward(x_, W_, b)
    ref = REF.affine_forward(x, W, b)
    np.testing.assert_allclose(out, ref, rtol=30 * RTOL[np.dtype(dtype)], atol=1e-6 if dtype == np.float32 else 1e-13)

    dx, dW, db = ops.affine_backward(x_, W_, dout_)
    _, _, rdb = REF.affine_backward(x, W, dout)
    assert_product_close(dx, dout, W.T, dtype)
    assert_product_close(dW, x.T, dout, dtype)
    np.testing.assert_allclose(db, rdb, rtol=RTOL[np.dtype(dtype)] * n, atol=1e-6 if dtype == np.float32 else 1e-13)

    none, dW2, _ = ops.affine_backward(x_, W_, dout_, need_dx=False)
    assert none is None
    np.testing.assert_array_equal(dW2, dW)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 10), (100, 50), (3, 4, 5, 6)])
@pytest.mark.parametrize("kind", ["relu", "sigmoid"])
def test_activations_match_reference(kind, dtype, layout, shape, rng):
    x = (5 * rng.standard_normal(shape)).astype(dtype)
    x.flat[0] = 0.0  # the kink: ReLU's gradient there is 0
    dout = rng.standard_normal(shape).astype(dtype)
    ops = CythonOps()
    fwd, bwd = getattr(ops, f"{kind}_forward"), getattr(ops, f"{kind}_backward")
    rfwd, rbwd = getattr(REF, f"{kind}_forward"), getattr(REF, f"{kind}_backward")

    out = fwd(arrange(x, layout))
    ref = rfwd(x)
    assert out.dtype == dtype and out.shape == shape
    np.testing.assert_allclose(out, ref, rtol=RTOL[np.dtype(dtype)], atol=0)

    # backward is a function of (dout, out): feed both the same forward output
    dx = bwd(arrange(dout, layout), arrange(ref, layout))
    np.testing.assert_allclose(dx, rbwd(dout, ref), rtol=4 * RTOL[np.dtype(dtype)], atol=0)
    if kind == "relu":
        assert dx.flat[0] == 0


def test_sigmoid_extremes_do_not_overflow():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    with np.errstate(all="raise"):
        out = CythonOps().sigmoid_forward(x)
    np.testing.assert_allclose(out, [0.0, 1.9287498479639178e-22, 0.5, 1.0, 1.0], rtol=1e-12)


def test_relu_passes_nan_through_like_the_book():
    x = np.array([np.nan, -1.0, 2.0])
    out = CythonOps().relu_forward(x)
    assert np.isnan(out[0]) and out[1] == 0 and out[2] == 2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(1, 10), (7, 3), (100, 10), (5, 1)])
@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_softmax_cross_entropy_matches_reference(dtype, layout, shape, scale, rng):
    n, c = shape
    x = (scale * rng.standard_normal(shape)).astype(dtype)
    labels = rng.integers(0, c, n).astype(np.int64)
    ops = CythonOps()
    loss, y = ops.softmax_cross_entropy_forward(arrange(x, layout), labels)
    rloss, ry = REF.softmax_cross_entropy_forward(x, labels)
    rtol = RTOL[np.dtype(dtype)]
    np.testing.assert_allclose(y, ry, rtol=10 * rtol, atol=10 * EPS[np.dtype(dtype)])
    np.testing.assert_allclose(loss, rloss, rtol=10 * rtol)
    assert np.isfinite(loss)

    for dout in (1.0, 0.5):
        dx = ops.softmax_cross_entropy_backward(arrange(y, layout), labels, dout)
        np.testing.assert_allclose(dx, REF.softmax_cross_entropy_backward(y, labels, dout),
                                   rtol=rtol, atol=EPS[np.dtype(dtype)])


def test_softmax_cross_entropy_uses_the_books_epsilon():
    # a probability of (almost) 0 for the true class: the loss is -log(1e-7), not inf
    x = np.array([[0.0, 1000.0]])
    loss, _ = CythonOps().softmax_cross_entropy_forward(x, np.array([0]))
    np.testing.assert_allclose(loss, -np.log(1e-7), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["C", "F", "strided", "transposed", "0-d", "empty"])
def test_numerical_gradient_kernel_matches_reference(dtype, layout, rng):
    if layout == "0-d":
        x = np.array(0.7, dtype=dtype)
    elif layout == "empty":
        x = np.zeros((0, 3), dtype=dtype)
    elif layout == "transposed":
        x = rng.standard_normal((3, 4)).astype(dtype).T
    else:
        x = arrange(rng.standard_normal((2, 3, 4)).astype(dtype), layout)
    coeffs = np.arange(1, x.size + 1, dtype=np.float64).reshape(x.shape)

    def f(a):
        return float(np.sum(coeffs * a.astype(np.float64) ** 2))

    before = x.copy()
    got = CythonOps().numerical_gradient(f, x)
    x_ref = x.copy()
    want = REF.numerical_gradient(f, x_ref)
    np.testing.assert_array_equal(x, before)  # restored
    assert got.shape == x.shape and got.dtype == x.dtype
    np.testing.assert_allclose(got, want, rtol=1e-3 if dtype == np.float32 else 1e-9, atol=1e-2 if dtype == np.float32 else 1e-9)
    np.testing.assert_allclose(got, 2 * coeffs * x, rtol=1e-2 if dtype == np.float32 else 1e-6, atol=1e-2 if dtype == np.float32 else 1e-6)


def test_numerical_gradient_kernel_restores_x_when_f_raises():
    x = np.arange(6, dtype=np.float64).reshape(2, 3)
    calls = []

    def f(a):
        calls.append(a.copy())
        if len(calls) == 4:
            raise RuntimeError("boom")
        return 0.0

    with pytest.raises(RuntimeError, match="boom"):
        CythonOps().numerical_gradient(f, x)
    np.testing.assert_array_equal(x, np.arange(6, dtype=np.float64).reshape(2, 3))
    # the calls saw x[0,0] + h, x[0,0] - h, x[0,1] + h, ... in C order
    assert calls[2][0, 1] == 1 + 1e-4 and calls[2][0, 0] == 0


def test_gemm_kernel_raw_wrapper_accepts_only_matching_dtypes():
    a = np.ones((2, 2), np.float32)
    b = np.ones((2, 2), np.float64)
    with pytest.raises((TypeError, ValueError)):
        _core.gemm(a, b, np.empty((2, 2), np.float32))


@pytest.mark.parametrize("level", ["best", "baseline", "scalar"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_on_vectors_is_within_a_few_ulp_everywhere(level, dtype, rng):
    from minidl import _core

    v = np.concatenate([np.linspace(-800, 800, 4001), 40 * rng.standard_normal(4000),
                        [-708.5, -708.0, -707.9, 708.0, 708.5, -0.0, 0.0, 1e-300, -1e-300,
                         np.inf, -np.inf, np.nan, 745.2, -745.2, 37.0, -37.0]])
    x = v.astype(dtype)
    ref = np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x.astype(np.float64)))),
                   np.exp(-np.abs(x.astype(np.float64)))
                   / (1 + np.exp(-np.abs(x.astype(np.float64)))))
    out = np.empty_like(x)
    use_simd(level)
    try:
        with np.errstate(all="ignore"):
            _core.sigmoid_forward(x, out)
    finally:
        use_simd("best")
    assert np.array_equal(np.isnan(out), np.isnan(x))
    ok = ~np.isnan(x)
    ulp = np.spacing(ref[ok].astype(dtype)).astype(np.float64)
    err = np.abs(out[ok].astype(np.float64) - ref[ok]) / np.maximum(ulp, np.finfo(dtype).tiny)
    assert err.max() <= 4, f"{err.max():.1f} ulp at {x[ok][err.argmax()]}"


@pytest.mark.parametrize("level", ["best", "baseline", "scalar"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [1, 3, 4, 5, 8, 10, 13])
def test_softmax_exp_on_vectors_is_within_a_few_ulp(level, dtype, width, rng):
    from minidl import _core

    x = (30 * rng.standard_normal((200, width))).astype(dtype)
    x[:20] *= 40  # shifted arguments far below -708: exp underflows to 0
    x[20, 0] = -np.inf
    x[21, -1] = np.inf
    x[22, width // 2] = np.nan
    labels = rng.integers(0, width, 200).astype(np.int64)
    y, row_loss = np.empty_like(x), np.empty(200, dtype)
    use_simd(level)
    try:
        with np.errstate(all="ignore"):
            _core.softmax_cross_entropy_forward(x, labels, y, row_loss)
    finally:
        use_simd("best")
    with np.errstate(all="ignore"):  # the book's formula, in float64
        e = np.exp((x - x.max(axis=1, keepdims=True)).astype(np.float64))
        ref = e / e.sum(axis=1, keepdims=True)
    assert np.array_equal(np.isnan(y), np.isnan(ref)), "NaN where the formula gives NaN"
    ok = ~np.isnan(ref)
    ulp = np.spacing(ref[ok].astype(dtype)).astype(np.float64)
    err = np.abs(y[ok].astype(np.float64) - ref[ok]) / np.maximum(ulp, np.finfo(dtype).tiny)
    assert err.max() <= 6, f"{err.max():.1f} ulp"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 17, 200])  # around the 4 x 16-byte blocks
def test_finite_norm_finds_every_nan_infinity_and_overflow(dtype, n, rng):
    a = rng.standard_normal(n).astype(dtype)
    if n:
        a[-1] = -np.finfo(dtype).tiny / 2  # subnormal: finite
    assert _core.finite_norm(a) is True
    big = np.sqrt(np.finfo(dtype).max)  # its square is about the largest finite number
    for pos in range(n):
        for bad in (np.nan, np.inf, -np.inf, 1.5 * big):
            b = a.copy()
            b[pos] = bad
            with np.errstate(over="ignore", invalid="ignore"):
                assert not np.isfinite(np.sum(b ** 2))  # what the book's 0 * sum(W ** 2) sees
            assert not _core.finite_norm(b), (pos, bad)
        b = a.copy()
        b[pos] = 0.5 * big  # large but its square is finite
        assert _core.finite_norm(b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_hot_indices_equals_numpy(dtype, rng):
    t = np.eye(7, dtype=dtype)[rng.integers(0, 7, 50)]
    out = np.empty(50, np.int64)
    assert _core.one_hot_indices(t, out) and np.array_equal(out, t.argmax(axis=1))
    for change in ((3, 2, 0.5), (4, 0, np.nan), (5, None, 0.0), (6, None, 1.0)):
        bad = t.copy()
        row, col, value = change
        if col is None:  # no 1, or two of them
            bad[row] = 0
            if value:
                bad[row, :2] = 1
        else:
            bad[row, col] = value
        assert not _core.one_hot_indices(bad, out)
        assert REF.one_hot_indices(bad) is None
    assert np.array_equal(REF.one_hot_indices(t), t.argmax(axis=1))


# -- the dense passes' bias gradient (minidl.engine.dense) ---------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(100, 50), (100, 10), (1, 1), (7, 3), (1, 20), (257, 33),
                                   (4, 0)])
def test_column_sums_are_numpys_bit_for_bit(dtype, shape, rng):
    buf = (rng.standard_normal((shape[0] + 5, shape[1])) * 1e3).astype(dtype)
    buf[rng.random(buf.shape) < 0.3] = 0  # ReLU's zeros
    d = buf[:shape[0]]  # the leading rows of a batch buffer, as the passes hand it over
    out = np.full(shape[1], np.nan, dtype=dtype)
    _core.column_sums(d, out)
    assert np.array_equal(out, np.sum(d, axis=0))


def test_column_sums_carry_nan_and_signed_zeros_as_numpy_does():
    d = np.array([[-0.0, 1.0, np.inf], [-0.0, np.nan, -np.inf], [-0.0, 2.0, 1.0]])
    out = np.empty(3)
    _core.column_sums(d, out)
    np.testing.assert_array_equal(out, np.sum(d, axis=0))
    assert np.signbit(out[0]) == np.signbit(np.sum(d, axis=0)[0])


@pytest.mark.parametrize("case", ["short out", "long out", "no rows", "dtypes", "strided"])
def test_column_sums_refuse_what_they_would_misread(case):
    d, out = np.ones((5, 4)), np.empty(4)
    if case == "short out":
        out = np.empty(3)
    elif case == "long out":
        out = np.empty(5)
    elif case == "no rows":
        d = np.ones((0, 4))
    elif case == "dtypes":
        out = np.empty(4, np.float32)
    elif case == "strided":
        d = np.ones((5, 8))[:, ::2]
    with pytest.raises((ValueError, TypeError)):
        _core.column_sums(d, out)
