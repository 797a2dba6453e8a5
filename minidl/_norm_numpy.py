"""The reference for batch normalisation: the book's BatchNormalization arithmetic, in NumPy.

``NormNumpyOps`` holds the backend operations of ``minidl.layers.BatchNormalization``,
computed line for line as the book's ``common/layers.py`` computes them;
``NumpyOps`` inherits them, and ``minidl._norm_cython.NormCythonOps`` overrides
them with the kernels of ``minidl._norm``. Nothing compiled is imported here.

The layer validates first: x is (N, D) with N >= 1, gamma, beta and the running
statistics are float arrays of shape (D,). Dtypes follow NumPy's promotion, as
in the book.
"""

from __future__ import annotations

import numpy as np

BN_EPS = 10e-7  # the book's epsilon inside the square root


class NormNumpyOps:
    def batchnorm_forward_train(self, x, gamma, beta):
        """(out, mu, var, xc, xn, std) of the book's training forward pass."""
        mu = x.mean(axis=0)
        xc = x - mu
        var = np.mean(xc**2, axis=0)
        std = np.sqrt(var + BN_EPS)
        xn = xc / std
        out = gamma * xn + beta
        return out, mu, var, xc, xn, std

    def batchnorm_forward_test(self, x, gamma, beta, running_mean, running_var):
        """The book's test-mode forward pass, on the running statistics."""
        xc = x - running_mean
        xn = xc / (np.sqrt(running_var + BN_EPS))
        return gamma * xn + beta

    def batchnorm_backward(self, dout, gamma, xc, xn, std):
        """(dx, dgamma, dbeta) of the book's backward pass (N = the batch's rows)."""
        batch_size = dout.shape[0]
        dbeta = dout.sum(axis=0)
        dgamma = np.sum(xn * dout, axis=0)
        dxn = gamma * dout
        dxc = dxn / std
        dstd = -np.sum((dxn * xc) / (std * std), axis=0)
        dvar = 0.5 * dstd / std
        dxc += (2.0 / batch_size) * xc * dvar
        dmu = np.sum(dxc, axis=0)
        dx = dxc - dmu / batch_size
        return dx, dgamma, dbeta
