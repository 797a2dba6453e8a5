"""The zero-skipping affine kernels (minidl/_sparse.h via minidl._sparse) against NumPy.

Each product is held to the reference within the rounding bound of a long sum:
|out - ref| <= 4 * K * eps * (|x| @ |W| + |b|), which for sums of same-signed
terms is the stated rtol (1e-6 float32, 1e-12 float64) scaled by K. Every
instruction set the build has is exercised: 'best' (AVX2+FMA here), 'baseline'
(16-byte vectors) and 'scalar' (plain C).
"""

import numpy as np
import pytest

import minidl
from minidl import _sparse
from minidl.backend import cython_ops, use_simd
from minidl.backend.numpy_ops import NumpyOps
from minidl.layers import Affine
from minidl.networks import MultiLayerNet, ThreeLayerNet, TwoLayerNet

LEVELS = ["best", "baseline", "scalar"]
# widths around every vector-count boundary (4/8 lanes, 12/13 vectors, chunks)
WIDTHS = [1, 3, 4, 5, 8, 10, 47, 50, 52, 53, 64, 100, 104, 105, 130]
DT_PAIRS = [(np.float32, np.float32), (np.float32, np.float64), (np.float64, np.float64)]


@pytest.fixture(params=LEVELS)
def simd(request):
    name = use_simd(request.param)
    yield name
    use_simd("best")


def sparse_x(rng, n, k, density, dtype):
    x = rng.random((n, k))
    x[rng.random((n, k)) >= density] = 0
    return x.astype(dtype)


def assert_sum_close(out, ref, absx, absw, absb=0.0):
    eps = np.finfo(out.dtype).eps
    k = absw.shape[0]
    bound = 4 * max(k, 1) * eps * (absx @ absw + absb) + np.finfo(out.dtype).tiny
    err = np.abs(out.astype(np.float64) - ref)
    assert np.all(err <= bound), f"max error {err.max():.3g}, bound {bound.min():.3g}"


@pytest.mark.parametrize("xdt,wdt", DT_PAIRS)
@pytest.mark.parametrize("h", WIDTHS)
@pytest.mark.parametrize("mode", ["scan", "rows", "lists", "rows+lists"])
def test_forward_matches_numpy(simd, xdt, wdt, h, mode, rng):
    m, k = 40, 37
    x = sparse_x(rng, m, k, 0.3, xdt)
    x[3] = 0  # an empty row
    x[5] = rng.random(k)  # a full one
    W = rng.standard_normal((k, h)).astype(wdt)
    b = rng.standard_normal(h).astype(wdt)
    rows = rng.integers(0, m, 25) if "rows" in mode else None
    lists = _sparse.nonzero_lists(x) if "lists" in mode else None
    n = m if rows is None else len(rows)
    out = np.full((n, h), np.nan, dtype=wdt)
    _sparse.sparse_affine_forward(x, rows, W, b, out, 1, lists)
    xs = x if rows is None else x[rows]
    ref = xs.astype(np.float64) @ W.astype(np.float64) + b
    assert out.dtype == wdt
    assert_sum_close(out, ref, np.abs(xs.astype(np.float64)), np.abs(W.astype(np.float64)),
                     np.abs(b))


@pytest.mark.parametrize("xdt,wdt", DT_PAIRS)
@pytest.mark.parametrize("h", WIDTHS)
@pytest.mark.parametrize("lr", [0.0, 0.1])
@pytest.mark.parametrize("mode", ["scan", "rows", "rows+lists"])
def test_weight_gradient_matches_numpy(simd, xdt, wdt, h, lr, mode, rng):
    m, k = 60, 29
    x = sparse_x(rng, m, k, 0.25, xdt)
    x[:, 4] = 0  # a column no row uses: its dW row is 0 (and W is left alone)
    dout_rows = rng.integers(0, m, 30) if "rows" in mode else None
    n = m if dout_rows is None else len(dout_rows)
    dout = rng.standard_normal((n, h)).astype(wdt)
    lists = _sparse.nonzero_lists(x) if "lists" in mode else None
    W = rng.standard_normal((k, h)).astype(wdt)
    dst = W.copy() if lr else np.full((k, h), np.nan, dtype=wdt)
    _sparse.sparse_affine_backward_weights(x, dout_rows, dout, dst, lr, 1, lists)
    xs = (x if dout_rows is None else x[dout_rows]).astype(np.float64)
    dW = xs.T @ dout.astype(np.float64)
    bound_x, bound_w = np.abs(xs.T), np.abs(dout.astype(np.float64))
    if lr:
        eps = np.finfo(wdt).eps
        expected = W - lr * dW
        err = np.abs(dst - expected)
        bound = 4 * n * eps * lr * (bound_x @ bound_w) + 2 * eps * np.abs(W) + 1e-30
        assert np.all(err <= bound)
        assert np.array_equal(dst[4], W[4])
    else:
        assert_sum_close(dst, dW, bound_x, bound_w)
        assert np.all(dst[4] == 0)


# The products read W's rows (forward) or dout's (weight gradient) a chunk of columns
# at a time, as wide as fits the level-1 cache when the rows read fit it at four
# vectors or more: with 32-byte vectors, 100 rows split a row of 130 float64 columns
# (33 vectors) into 4 chunks of 8 or 9 vectors, 300 rows take the widest chunks;
# with 16-byte vectors 300 rows split it and 100 do not.
@pytest.mark.parametrize("xdt,wdt", DT_PAIRS)
@pytest.mark.parametrize("h", [5, 47, 100, 105, 130])
@pytest.mark.parametrize("reach", [100, 300])
def test_products_in_cache_sized_column_chunks_match_numpy(simd, xdt, wdt, h, reach, rng):
    x = sparse_x(rng, 64, reach, 0.5, xdt)
    x[:, -1] = 1.0  # every row reads W's last row: the rows read span all of W
    W = rng.standard_normal((reach, h)).astype(wdt)
    b = rng.standard_normal(h).astype(wdt)
    out = np.full((64, h), np.nan, dtype=wdt)
    _sparse.sparse_affine_forward(x, None, W, b, out, 1, _sparse.nonzero_lists(x))
    x64 = x.astype(np.float64)
    assert_sum_close(out, x64 @ W.astype(np.float64) + b, np.abs(x64),
                     np.abs(W.astype(np.float64)), np.abs(b))

    xt = sparse_x(rng, reach, 37, 0.5, xdt)  # reach rows of dout read for each dW row
    xt[-1] = 1.0
    dout = rng.standard_normal((reach, h)).astype(wdt)
    dW = np.full((37, h), np.nan, dtype=wdt)
    _sparse.sparse_affine_backward_weights(xt, None, dout, dW, 0.0, 1, _sparse.nonzero_lists(xt))
    xt64 = xt.astype(np.float64)
    assert_sum_close(dW, xt64.T @ dout.astype(np.float64), np.abs(xt64.T),
                     np.abs(dout.astype(np.float64)))


@pytest.mark.parametrize("lr", [0.0, 0.1])
@pytest.mark.parametrize("mode", ["scan", "lists", "rows", "rows+lists"])
def test_weight_gradient_over_several_row_chunks(lr, mode, rng):
    # 600 rows: the kernel sums chunks of 256 rows, each from its own rows of the lists
    x = sparse_x(rng, 700, 40, 0.3, np.float32)
    rows = rng.integers(0, 700, 600) if "rows" in mode else None
    xs = (x if rows is None else x[rows]).astype(np.float64)
    if rows is None:
        x = x[:600]
        xs = xs[:600]
    dout = rng.standard_normal((600, 33))
    W = rng.standard_normal((40, 33))
    dst = W.copy() if lr else np.full((40, 33), np.nan)
    lists = _sparse.nonzero_lists(x) if "lists" in mode else None
    _sparse.sparse_affine_backward_weights(x, rows, dout, dst, lr, 1, lists)
    dW = xs.T @ dout
    if lr:
        bound = 4 * 600 * np.finfo(float).eps * lr * (np.abs(xs.T) @ np.abs(dout))
        assert np.all(np.abs(dst - (W - lr * dW)) <= bound + 4 * np.finfo(float).eps * np.abs(W))
    else:
        assert_sum_close(dst, dW, np.abs(xs.T), np.abs(dout))


@pytest.mark.parametrize("n", [200, 300, 334])
def test_an_affine_layer_on_a_batch_of_more_than_256_rows_has_numpys_gradient(n, rng):
    # the layer keeps a batch's nonzero lists for its backward (up to 2**18 entries:
    # 334 rows of 784); its weight gradient then sums the lists in chunks of 256 rows
    x = sparse_x(rng, n, 784, 0.2, np.float64)
    W = rng.standard_normal((784, 100)) * 0.01
    layer = Affine(W, np.zeros(100))
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape)
    layer.backward(dout)
    assert_sum_close(layer.dW, x.T @ dout, np.abs(x.T), np.abs(dout))


def test_weight_gradient_over_several_row_chunks_and_threads(rng):
    # more than 256 rows: the kernel sums chunk by chunk; two threads split K
    x = sparse_x(rng, 700, 300, 0.2, np.float32)
    dout = rng.standard_normal((700, 64))
    dW = np.empty((300, 64))
    _sparse.sparse_affine_backward_weights(x, None, dout, dW, 0.0, 2)
    ref = x.T.astype(np.float64) @ dout
    assert_sum_close(dW, ref, np.abs(x.T.astype(np.float64)), np.abs(dout))


def test_forward_with_two_threads_on_a_large_input(rng):
    x = sparse_x(rng, 3000, 784, 0.2, np.float32)
    W = rng.standard_normal((784, 50))
    out = np.empty((3000, 50))
    for lists in (None, _sparse.nonzero_lists(x)):
        _sparse.sparse_affine_forward(x, None, W, None, out, 2, lists)
        ref = x.astype(np.float64) @ W
        assert_sum_close(out, ref, np.abs(x.astype(np.float64)), np.abs(W))


def assert_csr_of(x, lists):
    idx, val, ptr = lists
    assert idx.dtype == np.int32 and val.dtype == x.dtype and ptr.dtype == np.int64
    nonzero = x != 0  # NaN != 0 is True
    _rows, cols = np.nonzero(nonzero)  # row by row, columns increasing
    assert np.array_equal(ptr, np.concatenate([[0], np.cumsum(nonzero.sum(axis=1))]))
    assert np.array_equal(idx, cols)
    np.testing.assert_array_equal(val, x[nonzero])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 45, 50, 784])
def test_nonzero_lists_are_the_csr_of_x(dtype, width, simd, rng):
    x = sparse_x(rng, 50, width, 0.3, dtype)
    x[0, 0] = -0.0  # a zero: skipped
    x[2, width // 2] = np.nan  # not zeros: kept
    x[3, width - 1] = -np.inf
    x[4, 0] = np.finfo(dtype).tiny / 2  # subnormal: not a zero
    x[9] = 0
    x[10] = rng.random(width) + 0.5  # every entry
    assert_csr_of(x, _sparse.nonzero_lists(x))
    # inputs past 2**18 entries are listed in two passes (count, then fill)
    big = np.tile(x, (1 + 2**18 // x.size, 1))
    assert_csr_of(big, _sparse.nonzero_lists(big))


def test_nan_in_the_input_propagates(simd):
    x = np.zeros((2, 20), np.float32)
    x[0, 3] = np.nan
    x[1, 5] = 1.0
    W = np.ones((20, 9))
    out = np.empty((2, 9))
    _sparse.sparse_affine_forward(x, None, W, None, out)
    assert np.all(np.isnan(out[0])) and np.all(out[1] == 1)


def test_empty_inputs():
    x = np.zeros((0, 10), np.float32)
    idx, _val, ptr = _sparse.nonzero_lists(x)
    assert len(idx) == 0 and list(ptr) == [0]
    dW = np.full((10, 4), np.nan)
    _sparse.sparse_affine_backward_weights(x, None, np.zeros((0, 4)), dW)
    assert np.all(dW == 0)
    out = np.empty((0, 4))
    _sparse.sparse_affine_forward(x, None, np.ones((10, 4)), None, out)


def test_float64_inputs_with_float32_weights_are_refused():
    with pytest.raises(TypeError, match="promote"):
        _sparse.sparse_affine_forward(np.ones((2, 3)), None, np.ones((3, 4), np.float32), None,
                                    np.empty((2, 4), np.float32))
    with pytest.raises(TypeError, match="promote"):
        _sparse.sparse_affine_backward_weights(np.ones((2, 3)), None, np.ones((2, 4), np.float32),
                                             np.empty((3, 4), np.float32))


def test_use_simd_names_levels():
    assert use_simd("scalar") == "scalar"
    assert use_simd("baseline") in ("sse2", "vector", "scalar")
    assert use_simd("best") == _sparse.SIMD_ISA
    with pytest.raises(ValueError, match="level"):
        use_simd("avx512")


def test_nonzero_fraction(rng):
    x = np.zeros((100, 10), np.float32)
    x[:, :3] = 1
    assert _sparse.nonzero_fraction(x) == pytest.approx(0.3)
    assert _sparse.nonzero_fraction(np.zeros((0, 3))) == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, max_rows", [((100, 1024), 128), ((100, 784), 8), ((7, 33), 3),
                                             ((1, 1), 8), ((300, 5), 64)])
def test_nonzero_fraction_counts_the_rows_it_samples_as_numpy_does(simd, dtype, shape,
                                                                   max_rows, rng):
    x = rng.random(shape).astype(dtype)
    x[rng.random(shape) < 0.4] = 0
    x[rng.random(shape) < 0.05] = -0.0  # a zero
    x[rng.random(shape) < 0.02] = np.nan  # not a zero
    x[rng.random(shape) < 0.02] = -np.inf
    n = shape[0]
    m = min(n, max_rows)
    sampled = x[[r * n // m for r in range(m)]]
    assert _sparse.nonzero_fraction(x, max_rows) == np.count_nonzero(sampled) / sampled.size


# -- the layers and networks on these kernels ---------------------------------------------
@pytest.mark.parametrize("xdt,wdt", DT_PAIRS + [(np.float64, np.float32)])
def test_affine_keeps_float32_inputs_and_promotes_like_numpy(xdt, wdt, rng):
    x = sparse_x(rng, 8, 2 * 3 * 5, 0.2, xdt).reshape(8, 2, 3, 5)  # the tensor case
    W = rng.standard_normal((30, 20)).astype(wdt)
    b = rng.standard_normal(20).astype(wdt)
    dtype = np.result_type(xdt, wdt)
    layer = Affine(W, b)
    out = layer.forward(x)
    assert out.dtype == dtype
    assert layer.x.dtype == xdt  # the input as given (no float64 copy of float32 images)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = layer.backward(dout)
    assert dx.shape == x.shape
    ref = NumpyOps()
    x2 = x.reshape(8, 30)
    np.testing.assert_allclose(out, ref.affine_forward(x2, W.astype(dtype), b.astype(dtype)),
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    _, dW, _db = ref.affine_backward(x2, W.astype(dtype), dout)
    np.testing.assert_allclose(layer.dW, dW, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-5 if dtype == np.float32 else 1e-12)
    assert layer.dW.dtype == dtype


def test_small_layers_go_to_blas(rng):
    ops = cython_ops.CythonOps()
    h = sparse_x(rng, 100, 50, 0.3, np.float64)  # a 50 -> 10 layer: BLAS, zeros or not
    assert not ops._sparse_inputs(h, np.ones((50, 10)))
    assert ops._sparse_inputs(sparse_x(rng, 100, 784, 0.2, np.float32), np.ones((784, 50)))


@pytest.mark.parametrize("threshold", [-1.0, 2.0])  # BLAS for everything / kernels for all
def test_ops_choice_between_kernels_and_blas_gives_the_same_products(threshold, rng,
                                                                     monkeypatch):
    """Either route computes the same products (to rounding)."""
    x = sparse_x(rng, 30, 80, 0.3, np.float32)
    W, b = rng.standard_normal((80, 20)), rng.standard_normal(20)
    ops = cython_ops.CythonOps()
    expected = x.astype(np.float64) @ W + b
    monkeypatch.setattr(cython_ops, "zero_skipping_pays", lambda density, dtype: threshold > 1)
    assert ops._sparse_inputs(x, W) == (threshold > 1)
    np.testing.assert_allclose(ops.affine_forward(x, W, b), expected, rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal((30, 20))
    _, dW, _ = ops.affine_backward(x, W, dout)
    np.testing.assert_allclose(dW, x.T.astype(np.float64) @ dout, rtol=1e-12, atol=1e-12)


def mnist_like(rng, n=64, k=196, density=0.2):
    """Sparse non-negative 'images' with clustered ink, and labels."""
    x = sparse_x(rng, n, k, density, np.float32)
    return x, rng.integers(0, 10, n)


NETS = [
    lambda dt: TwoLayerNet(196, 50, 10, dtype=dt),
    lambda dt: TwoLayerNet(196, 30, 10, activation="sigmoid", dtype=dt),
    lambda dt: ThreeLayerNet(196, 100, 50, 10, dtype=dt),
    lambda dt: MultiLayerNet(196, [53, 21, 13], 10, weight_init_std="he", dtype=dt),
]


@pytest.mark.parametrize("make", NETS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("one_hot", [False, True])
def test_network_gradient_equals_the_reference_path(make, dtype, one_hot, rng):
    x, t = mnist_like(rng)
    if one_hot:
        t = np.eye(10, dtype=dtype)[t]  # (float64 rows make the book's float32 backward float64)
    np.random.seed(3)
    net = make(dtype)
    grads = {}
    before = minidl.get_backend()
    for name in ("numpy", "cython"):
        minidl.set_backend(name)
        try:
            grads[name] = net.gradient(x, t)
            grads[name + "_loss"] = net.loss(x, t)
        finally:
            minidl.set_backend(before)
    tol = {"rtol": 1e-4, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-13}
    for key in net.params:
        assert grads["cython"][key].dtype == dtype
        np.testing.assert_allclose(grads["cython"][key], grads["numpy"][key], **tol,
                                   err_msg=key)
    np.testing.assert_allclose(grads["cython_loss"], grads["numpy_loss"], **tol)


def test_gradient_does_not_add_a_zero_weight_decay_term(rng):
    x, t = mnist_like(rng)
    net = TwoLayerNet(196, 20, 10)
    grads = net.gradient(x, t)
    assert grads["W1"] is net.layers["Affine1"].dW  # no dW + 0 * W temporary


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_accuracy_in_chunks_equals_one_pass(chunk, rng, monkeypatch):
    from minidl import networks

    x, t = mnist_like(rng, n=150)
    net = TwoLayerNet(196, 30, 10, weight_init_std=0.5)
    expected = np.mean(np.argmax(net.predict(x), axis=1) == t)
    monkeypatch.setattr(networks, "EVAL_CHUNK", chunk)
    assert net.accuracy(x, t) == pytest.approx(expected, abs=0)
    assert net.accuracy(x, np.eye(10)[t]) == pytest.approx(expected, abs=0)


@pytest.mark.parametrize("n", [100, 400])  # a batch keeps its lists; 400 x 784 is rescanned
def test_affine_backward_reuses_the_forward_lists_only_for_the_same_input(n, rng):
    x = sparse_x(rng, n, 784, 0.2, np.float32)
    W, b = rng.standard_normal((784, 50)), rng.standard_normal(50)
    ops, state = cython_ops.CythonOps(), {}
    ops.affine_forward(x, W, b, state)
    assert ("lists" in state) == (x.size <= cython_ops.KEEP_LISTS_MAX)
    dout = rng.standard_normal((n, 50))
    ref = x.T.astype(np.float64) @ dout
    _, dW, _ = ops.affine_backward(x, W, dout, False, state)
    assert_sum_close(dW, ref, np.abs(x.T.astype(np.float64)), np.abs(dout))
    # another array (even with the same shape) never takes the kept lists
    x2 = sparse_x(rng, n, 784, 0.2, np.float32)
    _, dW2, _ = ops.affine_backward(x2, W, dout, False, state)
    assert_sum_close(dW2, x2.T.astype(np.float64) @ dout, np.abs(x2.T.astype(np.float64)),
                     np.abs(dout))
    # a later forward on a large input drops them
    ops.affine_forward(sparse_x(rng, 400, 784, 0.2, np.float32), W, b, state)
    assert "lists" not in state


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonzero_lists_into_reused_buffers(dtype, rng):
    idx, val = np.empty(0, np.int32), np.empty(0, dtype)
    for n, k in ((5, 9), (3, 9), (0, 9), (4, 0)):
        x = sparse_x(rng, n, k, 0.4, dtype)
        if k:  # one entry short
            with pytest.raises(ValueError, match="buffers"):
                _sparse.nonzero_lists_into(x, np.empty(n * k + k - 1, np.int32), val,
                                         np.empty(n + 1, np.int64))
        idx, val = np.full(n * k + k, -1, np.int32), np.full(n * k + k, np.nan, dtype)
        ptr = np.full(n + 1, -1, np.int64)
        total = _sparse.nonzero_lists_into(x, idx, val, ptr)
        ref = _sparse.nonzero_lists(x)
        assert total == len(ref[0])
        assert np.array_equal(idx[:total], ref[0]) and np.array_equal(val[:total], ref[1])
        assert np.array_equal(ptr, ref[2])
