"""Batch normalisation on minidl's kernels (``minidl._norm``).

``NormCythonOps`` overrides ``NormNumpyOps`` (the book's NumPy lines) for
``CythonOps`` when every array of a call has one dtype (float32 or float64) and
at least one feature; anything else (mixed dtypes, which NumPy promotes) goes
to the reference. Each method allocates the outputs and makes its inputs
C-contiguous right before the call; the kernels check the shapes again.
"""

from __future__ import annotations

import numpy as np

from . import _norm
from ._norm_numpy import NormNumpyOps
from .backend.checks import FLOAT_DTYPES


def _one_dtype(*arrays):
    dtype = arrays[0].dtype
    if dtype not in FLOAT_DTYPES or any(a.dtype != dtype for a in arrays[1:]):
        return None
    return dtype


def _c(a):
    return np.ascontiguousarray(a)


class NormCythonOps(NormNumpyOps):
    def batchnorm_forward_train(self, x, gamma, beta):
        dtype = _one_dtype(x, gamma, beta)
        if dtype is None or x.shape[1] == 0:
            return super().batchnorm_forward_train(x, gamma, beta)
        N, D = x.shape
        mu, var, std = (np.empty(D, dtype) for _ in range(3))
        xc, xn, out = (np.empty((N, D), dtype) for _ in range(3))
        _norm.forward_train(_c(x), _c(gamma), _c(beta), mu, var, std, xc, xn, out)
        return out, mu, var, xc, xn, std

    def batchnorm_forward_test(self, x, gamma, beta, running_mean, running_var):
        dtype = _one_dtype(x, gamma, beta, running_mean, running_var)
        if dtype is None or x.shape[1] == 0:
            return super().batchnorm_forward_test(x, gamma, beta, running_mean, running_var)
        N, D = x.shape
        out = np.empty((N, D), dtype)
        _norm.forward_test(_c(x), _c(gamma), _c(beta), _c(running_mean), _c(running_var),
                           np.empty(D, dtype), out)
        return out

    def batchnorm_backward(self, dout, gamma, xc, xn, std):
        dtype = _one_dtype(dout, gamma, xc, xn, std)
        if dtype is None or dout.shape[1] == 0:
            return super().batchnorm_backward(dout, gamma, xc, xn, std)
        N, D = dout.shape
        dgamma, dbeta = np.empty(D, dtype), np.empty(D, dtype)
        dx = np.empty((N, D), dtype)
        _norm.backward(_c(dout), _c(gamma), _c(xc), _c(xn), _c(std), dgamma, dbeta,
                       np.empty(D, dtype), np.empty(D, dtype), dx)
        return dx, dgamma, dbeta
