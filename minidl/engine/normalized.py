"""Networks with batch normalisation on NumPy's BLAS: the layers' passes, fused.

A ``MultiLayerNetExtend`` with ``use_batchnorm`` (and without Dropout) is
Affine, BatchNorm, activation, ..., Affine, SoftmaxWithLoss. ``NormStep`` runs
that stack's forward (training or test mode) and backward passes with no
Python layer between the kernels: ``np.matmul`` for each Affine product (the
book's ``np.dot``; the first one skips the zeros of a mostly-zero batch, as the
Affine layer's own forward does, when the caller says it may), the bias added in
place, minidl's BatchNorm kernels
(``minidl._norm``, the ones the layers call), the activation and softmax with
cross-entropy as the layers compute them. What the layers would keep (their
inputs and outputs, BatchNorm's ``xc``, ``xn``, ``std``, the gradients) is
written into fresh arrays that are handed to the layers afterwards; everything
else lives in buffers kept for the batch size.

Nothing of the network changes until a pass has finished: ``commit_forward``
then moves each BatchNorm layer's running mean and variance with the layer's
own arithmetic (``momentum * running + (1 - momentum) * batch``) and leaves in
every layer what the layer-by-layer pass leaves, so ``layer.backward`` and the
book's attribute reads work as before.
"""

from __future__ import annotations

import numpy as np

from .. import _core, _norm, _sparse
from ..backend import blas_threads
from ..backend.cython_ops import _nonzero_lists_kept
from ..layers import _check_momentum
from .dense import _NONE, _RELU, _SIGMOID, DenseStep

__all__ = ["NormForward", "NormStep", "commit_forward", "norms_ready", "running_statistics"]


def norms_ready(stack, train: bool) -> bool:
    """Whether the BatchNorm layers' settings are ones the kernels take as the layers
    would: momentum a number in [0, 1] and, for test mode, running statistics of
    the stack's dtype and width (missing ones are made as the layer makes them).
    Anything else (a bad momentum, a running mean of another dtype or shape) runs
    the layers, which give NumPy's promotion or the layer's error."""
    for layer, width in zip(stack.norms, stack.sizes[1:-1]):
        try:
            _check_momentum(layer.momentum)
        except (TypeError, ValueError):
            return False
        for running in (layer.running_mean, layer.running_var):
            if running is None:
                continue
            if (not isinstance(running, np.ndarray) or running.dtype.kind != "f"
                    or running.shape != (width,)):
                return False
            if not train and (running.dtype != stack.dtype or not running.flags.c_contiguous):
                return False
    return True


class NormForward:
    """What one forward pass computed for the layers: each hidden layer's input
    (``inputs[0]`` is the batch) and activation output, and in training mode each
    BatchNorm's batch mean, variance, ``std``, ``xc`` and ``xn``."""

    __slots__ = ("activations", "inputs", "lists", "scores", "stats", "train")

    def __init__(self, train):
        self.train = train
        self.inputs, self.activations, self.stats = [], [], []
        self.scores = None
        self.lists = None  # the batch's nonzero lists, when the first product skipped zeros


class NormStep:
    """Buffers and passes for batches of up to ``n`` rows of a stack with batch
    normalisation (``stack.norms``)."""

    def __init__(self, stack, n: int):
        self.stack = stack
        self.n = n
        dt = stack.dtype
        self.kind = _SIGMOID if stack.sigmoid else _RELU
        widths = stack.sizes[1:]
        self.x = np.empty((n, stack.sizes[0]), dtype=dt)  # a batch converted to dt
        self.z = [np.empty((n, m), dtype=dt) for m in widths]  # each Affine's output
        self.normalized = [np.empty((n, m), dtype=dt) for m in widths[:-1]]  # BatchNorm's
        self.delta = [np.empty((n, m), dtype=dt) for m in widths]  # backward's
        self.row_loss = np.empty(n, dtype=dt)
        self.scratch = [(np.empty(m, dtype=dt), np.empty(m, dtype=dt)) for m in widths[:-1]]
        self._lists = {}  # the buffers of a batch's nonzero lists, kept from batch to batch

    batch_from = DenseStep.batch_from  # (the same buffer, self.x, and the same rule)

    # -- the passes ----------------------------------------------------------------
    def forward(self, x, train: bool, skip_zeros: bool = False) -> NormForward:
        """The forward pass of ``x`` (m, width) in the stack's dtype; in training mode
        with the batch's statistics, else with the running ones (which must be
        there: see ``running_statistics``).

        ``skip_zeros``: the first product skips x's zeros (``minidl._sparse``, as
        the Affine layer's own forward does for mostly-zero input); then x may
        also be float32 for a float64 stack, and the first weights must be finite
        (a skipped 0 * inf would be NaN in NumPy): the caller checks. That product
        runs on one thread (see ``count_correct_on``), BLAS's on what the caller set."""
        s = self.stack
        m = len(x)
        f = NormForward(train)
        h = x
        for i, (W, b, layer) in enumerate(zip(s.W, s.b, s.norms)):
            f.inputs.append(h)
            z = self.z[i][:m]
            if i == 0 and skip_zeros:
                # a training batch's lists are kept for backward; an evaluation's rows
                # are scanned a block at a time
                f.lists = _nonzero_lists_kept(x, self._lists) if train else None
                _sparse.sparse_affine_forward(x, None, W, b, z, 1, f.lists)
            else:
                np.matmul(h, W, out=z)
                _core.bias_activate(z, b, _NONE)
            normalized = self.normalized[i][:m]
            width = z.shape[1]
            if train:
                mu, var, std = (np.empty(width, dtype=z.dtype) for _ in range(3))
                xc, xn = np.empty_like(z), np.empty_like(z)
                _norm.forward_train(z, layer.gamma, layer.beta, mu, var, std, xc, xn, normalized)
                f.stats.append((mu, var, std, xc, xn))
            else:
                _norm.forward_test(z, layer.gamma, layer.beta, layer.running_mean,
                                   layer.running_var, self.scratch[i][0], normalized)
            h = np.empty_like(z)
            if self.kind == _RELU:
                _core.relu_forward(normalized.reshape(-1), h.reshape(-1))
            else:
                _core.sigmoid_forward(normalized.reshape(-1), h.reshape(-1))
            f.activations.append(h)
        f.inputs.append(h)
        scores = self.z[-1][:m]
        np.matmul(h, s.W[-1], out=scores)
        _core.bias_activate(scores, s.b[-1], _NONE)
        f.scores = scores
        return f

    def loss(self, f: NormForward, labels):
        """(the mean cross-entropy of ``f``'s scores, the softmax output), as
        ``SoftmaxWithLoss`` computes them."""
        m = len(labels)
        y, row_loss = np.empty_like(f.scores), self.row_loss[:m]
        _core.softmax_cross_entropy_forward(f.scores, labels, y, row_loss)
        return row_loss.sum() / m, y

    def backward(self, f: NormForward, y, labels):
        """The gradients of a training forward ``f`` and its softmax output ``y``:
        (dW, db, dgamma, dbeta) lists, in fresh arrays."""
        s = self.stack
        m = len(labels)
        n = len(s.W)
        gW, gb = [None] * n, [None] * n
        dgamma, dbeta = [None] * (n - 1), [None] * (n - 1)
        d = self.delta[-1][:m]
        _core.softmax_cross_entropy_backward(y, labels, 1.0, d)
        for i in range(n - 1, -1, -1):
            W = s.W[i]
            gW[i] = np.empty(W.shape, dtype=W.dtype)
            gb[i] = np.empty(W.shape[1], dtype=W.dtype)
            if i == 0 and f.lists is not None and _core.finite_norm(d.reshape(-1)):
                # the zeros of x skipped: exact while d is finite (0 * inf is NaN)
                _sparse.sparse_affine_backward_weights(f.inputs[0], None, d, gW[0], 0.0, 1,
                                                       f.lists)
            else:
                np.matmul(self._rows(f.inputs[i]).T, d, out=gW[i])
            _core.column_sums(d, gb[i])  # np.sum(d, axis=0), bit for bit
            if not i:
                break  # nobody reads the batch's own gradient
            below = self.delta[i - 1][:m]
            np.matmul(d, W.T, out=below)
            _core.activation_backward(below, f.activations[i - 1], self.kind)
            _, _, std, xc, xn = f.stats[i - 1]
            width = below.shape[1]
            dgamma[i - 1] = np.empty(width, dtype=W.dtype)
            dbeta[i - 1] = np.empty(width, dtype=W.dtype)
            dx = self.z[i - 1][:m]  # the Affine output's buffer, no longer needed
            dvar, dmu = self.scratch[i - 1]
            _norm.backward(below, s.norms[i - 1].gamma, xc, xn, std, dgamma[i - 1],
                           dbeta[i - 1], dvar, dmu, dx)
            d = dx
        return gW, gb, dgamma, dbeta

    def _rows(self, x):
        """x as the products read it (a float32 batch of a float64 stack, kept as
        given when the first product skipped zeros, converted here)."""
        return x if x.dtype == self.stack.dtype else self.batch_from(x)

    def count_correct(self, x, labels, skip_zeros: bool = False) -> int:
        """How many rows of ``x`` (N, width: float32 or the stack's dtype) the network
        classifies (in test mode) as ``labels`` says, a chunk at a time."""
        correct = 0
        for start in range(0, len(x), self.n):
            rows = x[start:start + self.n]
            rows = rows if skip_zeros else self.batch_from(rows)
            scores = self.forward(rows, False, skip_zeros).scores
            correct += _core.count_correct_scores(scores, labels[start:start + len(rows)])
        return correct

    # -- the same on a chosen number of BLAS threads --------------------------------
    def gradient_on(self, threads: int, x, labels, skip_zeros: bool = False):
        """(forward, loss, softmax output, gradients) of ``x`` in training mode, the
        products on ``threads`` BLAS threads."""
        with blas_threads.local(threads):
            f = self.forward(x if skip_zeros else self.batch_from(x), True, skip_zeros)
            loss, y = self.loss(f, labels)
            return f, loss, y, self.backward(f, y, labels)

    def loss_on(self, threads: int, x, labels, train: bool, skip_zeros: bool = False):
        with blas_threads.local(threads):
            f = self.forward(x if skip_zeros else self.batch_from(x), train, skip_zeros)
            loss, y = self.loss(f, labels)
            return f, loss, y

    def count_correct_on(self, threads: int, x, labels, skip_zeros: bool = False) -> int:
        """``count_correct`` with the products on ``threads`` BLAS threads, the
        zero-skipping first product on one (as in ``gradient_on``).

        Two teams of threads in one pass fight over a small machine's cores: after
        its work each team spins for a while (OpenBLAS's threads, the kernels'
        OpenMP team), holding up the other. A 1000-row evaluation (ch06's
        batch_norm_test) took 9.7 ms with both on two threads, 4.4 ms with the
        products alone on two, 4.5 ms with the first product alone on two, 6.0 ms
        with both on one (2 cores, medians)."""
        with blas_threads.local(threads):
            return self.count_correct(x, labels, skip_zeros)


def running_statistics(stack) -> None:
    """Give each BatchNorm layer its running mean and variance if it has none yet, as
    the layer's first forward does (zeros of gamma's dtype)."""
    for layer, width in zip(stack.norms, stack.sizes[1:-1]):
        if layer.running_mean is None:
            layer.running_mean = np.zeros(width, dtype=layer.gamma.dtype)
        if layer.running_var is None:
            layer.running_var = np.zeros(width, dtype=layer.gamma.dtype)


def commit_forward(stack, f: NormForward, batch, t, loss, y) -> None:
    """Leave in the layers what the layer-by-layer forward pass of ``batch`` (a
    ``rule.Batch``) and the loss after it leave, and move the running statistics
    after a training pass."""
    running_statistics(stack)
    for i, layer in enumerate(stack.affines):
        # (the first Affine keeps the rows as given: float32 images are not converted)
        layer.x = batch.x if i == 0 else f.inputs[i]
        layer.original_x_shape = batch.shape if i == 0 else f.inputs[i].shape
        layer._state.pop("lists", None)
    for layer, out in zip(stack.activations, f.activations):
        layer.out = out
    for i, layer in enumerate(stack.norms):
        layer.input_shape = f.activations[i].shape
        if f.train:
            mu, var, std, xc, xn = f.stats[i]
            layer.batch_size = len(xc)
            layer.xc, layer.xn, layer.std = xc, xn, std
            momentum = layer.momentum
            layer.running_mean = momentum * layer.running_mean + (1 - momentum) * mu
            layer.running_var = momentum * layer.running_var + (1 - momentum) * var
    last = stack.last
    last.loss = stack.dtype.type(loss)
    last.y = y
    last.t = np.asarray(t).reshape(len(y), -1) if batch.one_hot else t
    last.labels = batch.labels
    last.one_hot = batch.one_hot
