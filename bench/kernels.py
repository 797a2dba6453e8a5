"""Kernel benchmarks: each compiled kernel against its NumPy reference.

Shapes are the networks' (a batch of 100 MNIST images, 784-50-10 and
784-100-50-10 layers, an evaluation chunk of 8192 images). Each figure is the
median of several timed repeats, in microseconds, measured in this run.
"""

from __future__ import annotations

import timeit

import numpy as np

from minidl import _core, _sparse
from minidl.backend.numpy_ops import NumpyOps


def median_us(fn, number: int, repeat: int = 7) -> float:
    return float(np.median(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6)


def _number(fn, budget=0.02):
    """Calls per repeat so that one repeat takes about ``budget`` seconds."""
    t = timeit.timeit(fn, number=3) / 3
    return max(1, int(budget / max(t, 1e-7)))


def rows(x_train, t_train, rng):
    idx = rng.choice(len(x_train), 100)
    return x_train[idx], t_train[idx].astype(np.int64), idx


def kernel_cases(x_train, t_train):
    """(name, minidl callable, reference callable) for each kernel."""
    rng = np.random.default_rng(0)
    ref = NumpyOps()
    xb, tb, _idx = rows(x_train, t_train, rng)
    cases = []
    for dt in (np.float64, np.float32):
        tag = "f64" if dt == np.float64 else "f32"
        h = rng.standard_normal((100, 50)).astype(dt)
        hout = np.empty_like(h)
        cases.append((f"relu_forward 100x50 {tag}",
                      lambda h=h, o=hout: _core.relu_forward(h.reshape(-1), o.reshape(-1)),
                      lambda h=h: ref.relu_forward(h)))
        cases.append((f"relu_backward 100x50 {tag}",
                      lambda h=h, o=hout: _core.relu_backward(h.reshape(-1), h.reshape(-1),
                                                              o.reshape(-1)),
                      lambda h=h: ref.relu_backward(h, h)))
        cases.append((f"sigmoid_forward 100x50 {tag}",
                      lambda h=h, o=hout: _core.sigmoid_forward(h.reshape(-1), o.reshape(-1)),
                      lambda h=h: ref.sigmoid_forward(h)))
        s = rng.standard_normal((100, 10)).astype(dt)
        y, rl, dx = np.empty_like(s), np.empty(100, dt), np.empty_like(s)
        cases.append((f"softmax_ce_forward 100x10 {tag}",
                      lambda s=s, y=y, rl=rl: _core.softmax_cross_entropy_forward(s, tb, y, rl),
                      lambda s=s: ref.softmax_cross_entropy_forward(s, tb)))
        cases.append((f"softmax_ce_backward 100x10 {tag}",
                      lambda y=y, dx=dx: _core.softmax_cross_entropy_backward(y, tb, 1.0, dx),
                      lambda y=y: ref.softmax_cross_entropy_backward(y, tb)))
        for H in (50, 100):
            W = (0.01 * rng.standard_normal((784, H))).astype(dt)
            b = np.zeros(H, dt)
            out = np.empty((100, H), dt)
            d = rng.standard_normal((100, H)).astype(dt)
            dW = np.empty_like(W)
            cases.append((f"sparse affine fwd 100x784@784x{H} {tag}",
                          lambda W=W, b=b, o=out: _sparse.sparse_affine_forward(xb, None, W, b, o),
                          lambda W=W, b=b: ref.affine_forward(xb, W, b)))
            cases.append((f"sparse affine dW 784x100@100x{H} {tag}",
                          lambda d=d, dW=dW: _sparse.sparse_affine_backward_weights(xb, None, d, dW),
                          lambda W=W, d=d: ref.affine_backward(xb, W, d, need_dx=False)))
    return cases


def gemm_cases():
    """The tiled Cython GEMM fallback against BLAS (np.dot) on the networks' shapes."""
    rng = np.random.default_rng(1)
    cases = []
    for dt in (np.float64, np.float32):
        tag = "f64" if dt == np.float64 else "f32"
        for m, k, n in ((100, 784, 50), (784, 100, 50), (100, 50, 10), (100, 784, 100),
                        (8192, 784, 50)):
            a = rng.standard_normal((m, k)).astype(dt)
            b = rng.standard_normal((k, n)).astype(dt)
            c = np.empty((m, n), dt)
            cases.append((f"tiled gemm {m}x{k}@{k}x{n} {tag}",
                          lambda a=a, b=b, c=c: _core.gemm(a, b, c),
                          lambda a=a, b=b: np.dot(a, b)))
    return cases


def run(x_train, t_train, out=print):
    out(f"\nKernels ({_sparse.SIMD_ISA} build), median of 7 repeats, microseconds per call")
    out(f"{'kernel':44s} {'minidl':>10s} {'NumPy':>10s} {'ratio':>7s}")
    for name, fast, slow in kernel_cases(x_train, t_train) + gemm_cases():
        tf = median_us(fast, _number(fast))
        ts = median_us(slow, _number(slow))
        out(f"{name:44s} {tf:10.1f} {ts:10.1f} {tf / ts:7.2f}")
