"""``MultiLayerNetExtend.numerical_gradient`` without rerunning the whole network per entry.

The book's loop perturbs one parameter entry at a time to ``p + h`` and ``p - h``
(h = 1e-4) and reruns ``loss(x, t, train_flg=True)`` for each: two full forward
passes per entry, 180,000 of them for ch06/batch_norm_gradient_check.py's
784-100-100-10 network. Here the same central differences
``(L(p + h) - L(p - h)) / 2h`` come from one cached forward pass: an entry of
layer k's ``W``, ``b``, ``gamma`` or ``beta`` in column j changes that layer's
column j only (batch normalisation works column by column), so the column is
recomputed for all of its entries' perturbations at once, and the layers above
run on those variants together (a rank-one change of the next pre-activation,
then ordinary batched passes). The perturbed value is the one the book's loop
stores (``p + h`` rounded to the parameter's dtype), the arithmetic is the
book's layer by layer, and the losses differ from the loop's by rounding only,
so the gradient agrees with the loop's to about 1e-10 (absolute, with losses of
order 1).

Served: float64 networks without Dropout (the book's loop draws a new dropout
mask for every evaluation; those networks run the loop) whose layers are the
ones the network built (minidl's Affine, BatchNormalization, Relu/Sigmoid,
SoftmaxWithLoss, unchanged, holding the very arrays in ``params``), finite
parameters. What the book's loop leaves behind is left too: each BatchNorm
layer's running mean and variance moved by as many training passes as the loop
makes (the unperturbed passes at its end decide them, to rounding: see
``_settle_running_statistics``), and the layers' cached arrays from its last
evaluation.
"""

from __future__ import annotations

import numpy as np

from . import backend as _backend
from .backend.checks import batch_size_of, labels_as_indices
from .functions import sigmoid
from .layers import Affine, BatchNormalization, Relu, Sigmoid, SoftmaxWithLoss

H = 1e-4
BN_EPS = 10e-7
CHUNK = 1 << 21  # variant entries (variants x rows x width) per batched pass
# the BatchNorm layers' running statistics are settled by the loop's trailing unperturbed
# passes only when there are at least this many (0.9 ** 400 < 1e-18)
MIN_SETTLING_PASSES = 400


def problem(net) -> str | None:
    """Why the cached pass cannot serve ``net``, or None."""
    if net.use_dropout:
        return "Dropout draws a new mask for every evaluation"
    if net.dtype != np.float64:
        return "a float32 network"
    L = net.hidden_layer_num
    expected = []
    for k in range(1, L + 1):
        expected.append((f"Affine{k}", Affine))
        if net.use_batchnorm:
            expected.append((f"BatchNorm{k}", BatchNormalization))
        expected.append((f"Activation_function{k}", type(net.layers.get(f"Activation_function{k}"))))
    expected.append((f"Affine{L + 1}", Affine))
    if [(name, type(layer)) for name, layer in net.layers.items()] != expected:
        return "its layers are not the ones it built"
    act = {type(net.layers[f"Activation_function{k}"]) for k in range(1, L + 1)}
    if not act <= {Relu, Sigmoid} or len(act) > 1:
        return "its activations are not minidl's Relu or Sigmoid"
    if type(net.lastLayer) is not SoftmaxWithLoss:
        return "its last layer is not SoftmaxWithLoss"
    for k in range(1, L + 2):
        a = net.layers[f"Affine{k}"]
        if a.W is not net.params[f"W{k}"] or a.b is not net.params[f"b{k}"]:
            return f"Affine{k} does not compute with params['W{k}'] and params['b{k}']"
        if net.use_batchnorm and k <= L:
            bn = net.layers[f"BatchNorm{k}"]
            if bn.gamma is not net.params[f"gamma{k}"] or bn.beta is not net.params[f"beta{k}"]:
                return f"BatchNorm{k} does not compute with gamma{k} and beta{k}"
            if not 0 <= bn.momentum <= 1:
                return f"BatchNorm{k}'s momentum {bn.momentum!r}"
    for key, value in net.params.items():
        if (not isinstance(value, np.ndarray) or value.dtype != np.float64
                or not np.isfinite(value).all()):
            return f"params['{key}'] is not a finite float64 array"
        if key.startswith("W") and not np.isfinite(np.sum(value ** 2)):
            return f"params['{key}'] overflows the weight decay (the book's loss is NaN)"
    if net.use_batchnorm and _tail_passes(net)[0] < MIN_SETTLING_PASSES:
        return "too few unperturbed passes end the book's loop to settle BatchNorm's statistics"
    return None


def numerical_gradient(net, x, t) -> dict[str, np.ndarray]:
    """The book's ``net.numerical_gradient(x, t)`` for a network ``problem`` accepts."""
    x = np.asarray(x)
    n = batch_size_of("numerical_gradient", x)
    x2 = x.reshape(n, -1).astype(np.float64)
    if x2.shape[1] != net.sizes[0]:
        raise ValueError(f"numerical_gradient: x has {x2.shape[1]} features per row, the "
                         f"network takes {net.sizes[0]}")
    labels = _labels(t, n, net.sizes[-1])
    pass_ = _Pass(net, x2, labels)
    grads = {}
    L = net.hidden_layer_num
    for k in range(1, L + 2):
        grads[f"W{k}"], grads[f"b{k}"] = pass_.affine_gradients(k)
        if net.use_batchnorm and k <= L:
            grads[f"gamma{k}"], grads[f"beta{k}"] = pass_.batchnorm_gradients(k)
    _leave_layers_as_the_loop(net, x, t)
    return grads


def _labels(t, n, classes):
    t = np.asarray(t)
    if t.size == n * classes and classes > 1:  # one-hot rows (the book takes their argmax)
        return t.reshape(n, classes).argmax(axis=1)
    return labels_as_indices(t, n, classes)


def _perturbed(p):
    """(p + h, p - h) as the book's loop stores them in a float64 array."""
    return p + H, p - H


class _Pass:
    """The cached forward pass and the batched passes of the perturbed variants."""

    def __init__(self, net, x, labels):
        self.net, self.labels, self.n = net, labels, len(x)
        self.L, self.bn = net.hidden_layer_num, net.use_batchnorm
        self.relu = type(net.layers["Activation_function1"]) is Relu if self.L else True
        p = net.params
        self.W = [None] + [p[f"W{k}"] for k in range(1, self.L + 2)]
        self.b = [None] + [p[f"b{k}"] for k in range(1, self.L + 2)]
        self.gamma = [None] + [p.get(f"gamma{k}") for k in range(1, self.L + 1)]
        self.beta = [None] + [p.get(f"beta{k}") for k in range(1, self.L + 1)]
        self.lam = net.weight_decay_lambda
        # the weights' squared norms, for the weight decay of a perturbed entry
        self.sq = [None] + [float(np.sum(W ** 2)) for W in self.W[1:]]
        # the cached pass: H[0] = x, A[k] pre-activation, XN[k]/STD[k] BatchNorm's, H[k]
        self.H, self.A, self.XN, self.STD = [x], [None], [None], [None]
        h = x
        for k in range(1, self.L + 1):
            a = h @ self.W[k] + self.b[k]
            self.A.append(a)
            if self.bn:
                z, xn, std = self._batchnorm(a, k)
                self.XN.append(xn)
                self.STD.append(std)
            else:
                z = a
            h = self._act(z)
            self.H.append(h)
        self.logits = h @ self.W[self.L + 1] + self.b[self.L + 1]

    # -- the layers, batched over variants (leading axes), rows on axis -2 -----------------
    def _act(self, z):
        return np.maximum(z, 0) if self.relu else sigmoid(z)

    def _batchnorm(self, a, k, gamma=None, beta=None):
        """The book's training forward over the rows (axis -2); (out, xn, std)."""
        mu = a.mean(axis=-2, keepdims=True)
        xc = a - mu
        var = np.mean(xc ** 2, axis=-2, keepdims=True)
        std = np.sqrt(var + BN_EPS)
        xn = xc / std
        g = self.gamma[k] if gamma is None else gamma
        b = self.beta[k] if beta is None else beta
        return g * xn + b, xn, std

    def _loss_from(self, k, a):
        """Losses (V,) of variants whose layer-k pre-activation is ``a`` (V, N, D_k);
        k = L + 1 means ``a`` are the logits."""
        for m in range(k, self.L + 1):
            z = self._batchnorm(a, m)[0] if self.bn else a
            h = self._act(z)
            # one matrix product for all variants' rows
            a = (h.reshape(-1, h.shape[-1]) @ self.W[m + 1]).reshape(
                *h.shape[:-1], -1) + self.b[m + 1]
        return self._cross_entropy(a)

    def _cross_entropy(self, logits):
        """The book's softmax and cross_entropy_error per variant (rows on axis -2)."""
        shifted = logits - logits.max(axis=-1, keepdims=True)
        e = np.exp(shifted)
        y = e / e.sum(axis=-1, keepdims=True)
        picked = y[..., np.arange(self.n), self.labels]
        return -np.sum(np.log(picked + 1e-7), axis=-1) / self.n

    def _decay(self, k=None, old=None, new=None):
        """The book's weight decay, with entries ``old`` of W_k replaced by ``new``."""
        total = 0.0
        for m in range(1, self.L + 2):
            s = self.sq[m]
            if m == k:
                s = s - old ** 2 + new ** 2
            total = total + 0.5 * self.lam * s
        return total

    def _column_losses(self, k, j, a_col=None, z_col=None):
        """Losses of variants of layer k's column j: new pre-activations ``a_col`` (V, N)
        (through BatchNorm), or new BatchNorm outputs ``z_col`` (V, N)."""
        if k == self.L + 1:  # the logits' column j
            logits = np.repeat(self.logits[None], len(a_col), axis=0)
            logits[:, :, j] = a_col
            return self._cross_entropy(logits)
        if z_col is None:
            if self.bn:
                z_col = self._batchnorm(a_col[..., None], k, self.gamma[k][j],
                                        self.beta[k][j])[0][..., 0]
            else:
                z_col = a_col
        change = self._act(z_col) - self.H[k][:, j]  # (V, N)
        a_next = self.A[k + 1] if k < self.L else self.logits
        a_next = a_next + change[..., None] * self.W[k + 1][j]  # rank one: (V, N, D_k+1)
        return self._loss_from(k + 1, a_next)

    def _chunks(self, count, width):
        step = max(1, CHUNK // max(1, self.n * width))
        for start in range(0, count, step):
            yield start, min(count, start + step)

    def affine_gradients(self, k):
        W, b, h_in = self.W[k], self.b[k], self.H[k - 1]
        a = self.A[k] if k <= self.L else self.logits
        gW, gb = np.zeros_like(W), np.zeros_like(b)
        D_in, D_out = W.shape
        width = self.W[k + 1].shape[1] if k <= self.L else D_out
        for j in range(D_out):
            for s, e in self._chunks(D_in, width):
                w = W[s:e, j]
                wp, wm = _perturbed(w)
                # a[:, j] with W[i, j] -> w': a + (w' - w) * h_in[:, i], for each i
                cols = [a[:, j] + (w2 - w)[:, None] * h_in[:, s:e].T for w2 in (wp, wm)]
                losses = [self._column_losses(k, j, a_col=c) for c in cols]
                if self.lam:
                    sq = [self._decay(k, w, w2) for w2 in (wp, wm)]
                else:
                    sq = [0.0, 0.0]
                gW[s:e, j] = ((losses[0] + sq[0]) - (losses[1] + sq[1])) / (2 * H)
            bp, bm = _perturbed(b[j])
            cols = np.stack([a[:, j] + (bp - b[j]), a[:, j] + (bm - b[j])])
            losses = self._column_losses(k, j, a_col=cols)
            decay = self._decay() if self.lam else 0.0
            gb[j] = ((losses[0] + decay) - (losses[1] + decay)) / (2 * H)
        return gW, gb

    def batchnorm_gradients(self, k):
        gamma, beta, xn = self.gamma[k], self.beta[k], self.XN[k]
        gg, gbeta = np.zeros_like(gamma), np.zeros_like(beta)
        decay = self._decay() if self.lam else 0.0
        for j in range(len(gamma)):
            gp, gm = _perturbed(gamma[j])
            z = np.stack([gp * xn[:, j] + beta[j], gm * xn[:, j] + beta[j]])
            losses = self._column_losses(k, j, z_col=z)
            gg[j] = ((losses[0] + decay) - (losses[1] + decay)) / (2 * H)
            bp, bm = _perturbed(beta[j])
            z = np.stack([gamma[j] * xn[:, j] + bp, gamma[j] * xn[:, j] + bm])
            losses = self._column_losses(k, j, z_col=z)
            gbeta[j] = ((losses[0] + decay) - (losses[1] + decay)) / (2 * H)
        return gg, gbeta


def _loop_order(net):
    """The parameters in the order the book's loop visits them (W1, b1, gamma1, beta1, W2...)."""
    keys = []
    for idx in range(1, net.hidden_layer_num + 2):
        keys += list(net._param_keys(idx))
    return keys


def _tail_passes(net):
    """(fewest, {k: count}): for each BatchNorm layer k, how many passes end the book's
    loop with that layer's input exactly the unperturbed network's: the passes of gamma_k,
    beta_k and every later parameter (earlier ones change what reaches the layer)."""
    order = _loop_order(net)
    counts = {}
    for k in range(1, net.hidden_layer_num + 1):
        later = order[order.index(f"gamma{k}"):]
        counts[k] = 2 * sum(net.params[key].size for key in later)
    return min(counts.values()), counts


def _leave_layers_as_the_loop(net, x, t):
    """The running statistics and the layers' caches as the book's loop leaves them."""
    if net.use_batchnorm:
        _settle_running_statistics(net, x)
    # the loop's last evaluation: the last entry of the last parameter at p - h
    last = net.params[_loop_order(net)[-1]].reshape(-1)
    saved = last[-1]
    last[-1] = saved - H
    try:
        net.loss(x, t, train_flg=True)
    finally:
        last[-1] = saved


def _settle_running_statistics(net, x):
    """Each BatchNorm layer's running mean and variance after all of the loop's passes
    but its last. Its trailing unperturbed passes (at least MIN_SETTLING_PASSES) leave
    ``momentum ** count`` of what came before them, below rounding, so they are replayed
    from the statistics the layer had, with the unperturbed batch's mean and variance."""
    _, counts = _tail_passes(net)
    ops = _backend.ops()
    h = x.reshape(len(x), -1)
    for k in range(1, net.hidden_layer_num + 1):
        a = h @ net.params[f"W{k}"] + net.params[f"b{k}"]
        layer = net.layers[f"BatchNorm{k}"]
        out, mu, var = ops.batchnorm_forward_train(a, layer.gamma, layer.beta)[:3]
        rm, rv = layer.running_mean, layer.running_var
        if rm is None:
            rm = np.zeros(a.shape[1], dtype=layer.gamma.dtype)
        if rv is None:
            rv = np.zeros(a.shape[1], dtype=layer.gamma.dtype)
        m = layer.momentum
        for _ in range(counts[k] - 1):  # (the last pass is net.loss's, after this)
            rm = m * rm + (1 - m) * mu
            rv = m * rv + (1 - m) * var
        layer.running_mean, layer.running_var = rm, rv
        h = net.layers[f"Activation_function{k}"].forward(out)
