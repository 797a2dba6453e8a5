"""A network's gradient, loss and accuracy in one compiled call each.

``passes_for(network)`` (what ``CythonOps.fused`` returns) is the network's
``NetworkPasses`` when the one rule (``minidl.engine.rule``) takes the network,
else None. Each pass returns None for an input it does not take, and the
network then runs the book's code.

Each batch goes where it is fastest, by its own fraction of nonzeros
(``zero_skipping_pays``; near the crossover, where the last batch went):
sparse batches (MNIST's) to ``_fused.SGDStep.gradient``,
which lists the batch's nonzeros once and reuses them in both passes, dense ones
(Fashion-MNIST's, CIFAR-10's) to ``DenseStep`` on NumPy's BLAS. Either way no
Python layer runs between the products. A network with batch normalisation
(``stack.norms``) goes to ``NormStep`` (``minidl.engine.normalized``), on NumPy's
BLAS whatever its input, the first product aside (it skips a mostly-zero batch's
zeros, as the Affine layer does). Afterwards the layers hold what the layer-by-layer pass would have left
(inputs, outputs, ``dW``/``db``, the loss and softmax output), so
``layer.backward`` and the book's attribute reads work as before. Weight decay
is added as the book's ``loss`` and ``gradient`` add it.

The passes of a network are kept (the plan cache, keyed weakly by network) and
re-checked by identity at each call. The network's lock (taken by its methods)
keeps two threads off the same buffers.
"""

from __future__ import annotations

import weakref

import numpy as np

from .. import _core, _fused, _sparse, backend
from ..backend.cython_ops import zero_skipping_pays
from ..functions import weight_decay_loss
from . import normalized, rule
from .dense import EVAL_CHUNK, DenseStep
from .threads import BLAS, OPENMP, TRIES, ThreadChoice

# Largest batch (entries of x) the compiled gradient and loss take: their
# buffers hold a nonzero list as long as the whole batch (12 bytes an entry).
MAX_ENTRIES = 1 << 20
# Rows of a batch whose nonzeros are counted to choose its pass (a batch of 100:
# all of it; 8 rows of Fashion-MNIST estimate a batch's density to +-0.05, 100 rows
# to +-0.015), and rows spread over an evaluation's input counted for its pass.
DENSITY_ROWS = 128
PROBE_ROWS = 64
# A batch goes to the other pass than the one before only when its fraction of
# nonzeros is this far past the crossover (see NetworkPasses._goes_sparse).
SWITCH_MARGIN = 0.05

_plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def passes_for(net) -> NetworkPasses | None:
    """The network's compiled passes (kept from the last call while its stack still
    holds), or None when the rule refuses the network."""
    try:
        plan = _plans.get(net)
    except TypeError:  # not weak-referenceable: examined afresh each time
        plan = None
    if plan is not None and plan.stack.still_holds(net):
        return plan
    stack = rule.examine(net, norms=True)
    if isinstance(stack, str):
        return None
    plan = NetworkPasses(stack)
    try:
        _plans[net] = plan
    except TypeError:
        pass
    return plan


class NetworkPasses:
    """The compiled gradient, loss, accuracy and numerical gradient of one stack."""

    def __init__(self, stack: rule.Stack):
        self.stack = stack
        self._step = None  # the SGDStep, made for the input dtype and batch size met
        self._dense = None  # the DenseStep (NormStep with norms), for the largest batch met
        self._threads = {}  # a ThreadChoice per (pass, dense?)
        self._last_sparse = None  # whether the last batch went to the zero-skipping pass
        # the stack's dtype and layout are ones the kernels take (the layout is part
        # of what the stack re-checks at each call)
        self._layout_ok = (stack.dtype is not None
                           and all(p.flags.c_contiguous and p.flags.writeable
                                   for p in stack.params + stack.norm_params))

    # -- what the compiled kernels take, beyond the rule --------------------------
    def _kernels_take(self) -> bool:
        """The stack is one the zero-skipping kernels take (``_fused.MAX_LAYERS``
        deep at most) and its parameters are finite, their squares summing to a
        finite number (the kernels skip zero inputs, where 0 * inf would be NaN; see
        ``_core.finite_norm``)."""
        if not self._layout_ok or self.stack.n_affine > _fused.MAX_LAYERS:
            return False
        step = self._step if self._step is not None else self._step_for(self.stack.dtype, 1)
        return step.params_finite()

    def _dense_for(self, n) -> DenseStep | normalized.NormStep:
        """The dense step (``NormStep`` for a stack with batch normalisation), with
        buffers for at least ``n`` rows (kept: a batch's float64 copy is not
        allocated anew at every call)."""
        if self._dense is None or self._dense.n < n:
            kind = normalized.NormStep if self.stack.norms else DenseStep
            self._dense = kind(self.stack, n)
        return self._dense

    def _step_for(self, x_dtype, n) -> _fused.SGDStep:
        step = self._step
        if step is None or step.batch_size < n or step.x_dtype != x_dtype:
            s = self.stack
            step = _fused.SGDStep(list(s.W), list(s.b), np.empty((0, s.sizes[0]), dtype=x_dtype),
                                  None, s.sigmoid, max(n, 100), backend.STEP_THREADS)
            self._step = step
        return step

    def _choice(self, name: str, dense: bool) -> ThreadChoice:
        key = (name, dense)
        choice = self._threads.get(key)
        if choice is None:
            choice = self._threads[key] = ThreadChoice(pool=BLAS if dense else OPENMP,
                                                       owner=self)
        return choice

    def _loss_threads(self, dense: bool, run, *args):
        """``run(threads, *args)`` for a loss: on the thread count the network's
        gradient chose, once that choice has measured both options; before that
        (a network whose loss alone is called) by a choice of the loss's own.

        A loss right after a gradient (the book's loops: gradient, update, loss)
        on a count of its own switches the kernels' thread team at every call,
        and each switch costs more than the count saves: ch06's
        optimizer_compare loop took 1.565 s with the loss choosing for itself,
        1.377 s with it following the gradient (150 iterations, 5 rounds
        interleaved, medians; the same losses).
        """
        choice = self._choice("gradient", dense)
        if choice.fixed or choice.calls > 2 * TRIES:
            return run(choice.best(), *args)
        return self._choice("loss", dense).timed(run, *args)

    def _sparse_gradient(self, threads, step, b, gW, gb):
        step.threads = threads
        return step.gradient(b.x, b.labels, gW, gb)

    def _sparse_loss(self, threads, step, b):
        step.threads = threads
        return step.gradient(b.x, b.labels)

    def _goes_sparse(self, density: float) -> bool:
        """Whether input of this fraction of nonzeros goes to the zero-skipping pass
        (the kernels' own checks aside), the last batch's pass kept near the crossover.

        Near the crossover either pass costs about the same, and switching costs
        more than that: after its work each pass's threads (the kernels' OpenMP
        team, BLAS's own) spin for a while, and on a small machine the spinning
        team holds up the other's. Fashion-MNIST's batches straddle the crossover:
        its course loop took 2.5 ms a step with the pass chosen afresh for each
        batch (half went each way), 1.8-1.9 ms on either pass alone (2 cores). So
        a batch changes pass only when its density is ``SWITCH_MARGIN`` past the
        crossover.
        """
        last = self._last_sparse
        if last is not None:  # judged as if SWITCH_MARGIN nearer the last pass's side
            density += -SWITCH_MARGIN if last else SWITCH_MARGIN
        return zero_skipping_pays(density, self.stack.dtype)

    def _batch(self, x, t):
        """(the batch as the passes take it, whether it goes to the dense pass), or
        (None, False) for what the book's code runs."""
        b = rule.batch(self.stack, x, t)
        if b is None:
            return None, False
        sparse = (b.x.size <= MAX_ENTRIES
                  and self._goes_sparse(_sparse.nonzero_fraction(b.x, DENSITY_ROWS))
                  and self._kernels_take())
        self._last_sparse = sparse
        return b, not sparse

    # -- the passes -------------------------------------------------------------
    def gradient(self, x, t) -> dict | None:
        """The gradients dict of ``network.gradient(x, t)``, or None when not taken."""
        if self.stack.norms:
            return self._norm_gradient(x, t)
        b, dense = self._batch(x, t)
        if b is None:
            return None
        s = self.stack
        gW = [np.empty(w.shape, dtype=w.dtype) for w in s.W]
        gb = [np.empty(v.shape, dtype=v.dtype) for v in s.b]
        if dense:
            step = self._dense_for(len(b.x))
            loss = self._choice("gradient", True).timed(step.gradient_on, b.x, b.labels, gW, gb)
            self._leave_layers(b, t, loss, *step.hand_over(len(b.x)))
        else:
            step = self._step_for(b.x.dtype, len(b.x))
            loss = self._choice("gradient", False).timed(self._sparse_gradient, step, b, gW, gb)
            # zero-skipped terms are exact only when every backward gradient is finite:
            # a non-finite one shows in the loss or in its layer's bias gradient
            if not (np.isfinite(loss) and step.bias_gradients_finite):
                return None
            self._leave_layers(b, t, loss, *step.hand_over(len(b.x)))
        return _gradients(s, gW, gb)

    def loss(self, x, t, train_flg=False):
        """``network.loss(x, t)`` (forward only), or None when not taken.
        ``train_flg``: BatchNorm layers in training mode (no effect without them)."""
        if self.stack.norms:
            return self._norm_loss(x, t, bool(train_flg))
        b, dense = self._batch(x, t)
        if b is None:
            return None
        if dense:
            step = self._dense_for(len(b.x))
            loss = self._loss_threads(True, step.loss_on, b.x, b.labels)
        else:
            step = self._step_for(b.x.dtype, len(b.x))
            loss = self._loss_threads(False, self._sparse_loss, step, b)
        self._leave_layers(b, t, loss, *step.hand_over(len(b.x)))
        # the zero-skipping pass is taken only on weights _kernels_take has just checked
        return with_weight_decay(self.stack, self.stack.last.loss, norms_checked=not dense)

    def accuracy(self, x, t) -> float | None:
        """``network.accuracy(x, t)``, counted in compiled chunks, or None when not
        taken. The parameters and the layers are left alone (a BatchNorm layer
        without running statistics gets zeros, as its first forward gives it)."""
        s = self.stack
        if not isinstance(x, np.ndarray) or x.ndim < 2 or not len(x):
            return None
        if s.norms:
            return self._norm_accuracy(x, t)
        # PROBE_ROWS rows spread over x
        probe = rule.input_rows(s, x[::max(1, len(x) // PROBE_ROWS)][:PROBE_ROWS])
        if probe is None:
            return None  # what the passes do not take: the book's code
        labels = _class_indices(t, len(x), s.sizes[-1])
        if labels is None:
            return None
        sparse = (self._goes_sparse(_sparse.nonzero_fraction(probe, PROBE_ROWS))
                  and self._kernels_take())
        self._last_sparse = sparse
        dense = None if sparse else self._dense_for(min(len(x), EVAL_CHUNK))
        n = len(x)
        threads = self._choice("gradient", dense is not None).best()  # the machine's state
        # an input to convert (uint8, strided, ...) is converted a chunk at a time
        chunk = n if x.flags.c_contiguous and x.dtype in (np.float32, s.dtype) else 8 * EVAL_CHUNK
        correct = 0
        for start in range(0, n, chunk):
            rows = rule.input_rows(s, x[start:start + chunk])
            part = labels[start:start + len(rows)]
            if dense is not None:
                correct += dense.count_correct_on(threads, rows, part)
            else:
                step = self._step_for(rows.dtype, 1)
                step.threads = threads
                correct += step.count_correct(rows, part)
        return correct / float(n)

    def _leave_layers(self, b: rule.Batch, t, loss, hidden, probabilities):
        """Set the layers' forward state as the layer-by-layer pass does: their inputs
        (``b.x``, then each hidden layer's output), the loss and softmax output."""
        s = self.stack
        inputs = [b.x, *hidden]
        for i, layer in enumerate(s.affines):
            layer.x = inputs[i]
            layer.original_x_shape = b.shape if i == 0 else inputs[i].shape
            layer._state.pop("lists", None)
        for layer, out in zip(s.activations, inputs[1:]):
            layer.out = out
        last = s.last
        last.loss = s.dtype.type(loss)
        last.y = probabilities
        last.t = np.asarray(t).reshape(len(b.x), -1) if b.one_hot else t
        last.labels = b.labels
        last.one_hot = b.one_hot

    # -- the exact numerical gradient ------------------------------------------
    def numerical_gradient(self, x, t, track_kinks=False):
        """The book's ``network.numerical_gradient(x, t)`` from one cached forward
        pass (``minidl.engine.netgrad``), or None when not taken (non-finite
        numbers: the book's loop gives its NaNs)."""
        from . import netgrad

        if self.stack.norms:  # (MultiLayerNetExtend's numerical_gradient has its own)
            return None
        return netgrad.numerical_gradient(self.stack, x, t, track_kinks)

    # -- a stack with batch normalisation (minidl.engine.normalized) ---------------
    def _norm_batch(self, x, t, train: bool):
        """The batch as ``NormStep`` takes it, or None for the layers' code."""
        if not self._layout_ok or not normalized.norms_ready(self.stack, train):
            return None
        return rule.batch(self.stack, x, t)

    def _skips_zeros(self, x) -> bool:
        """Whether the first product of a stack with batch normalisation skips the
        zeros of ``x`` (rows as ``rule.input_rows`` gives them): mostly-zero input
        (MNIST's), as the Affine layer decides, and finite first weights."""
        return (zero_skipping_pays(_sparse.nonzero_fraction(x, DENSITY_ROWS), self.stack.dtype)
                and _core.finite_norm(self.stack.W[0].reshape(-1)))

    def _norm_gradient(self, x, t):
        b = self._norm_batch(x, t, train=True)
        if b is None:
            return None
        s = self.stack
        step = self._dense_for(len(b.x))
        f, loss, y, (gW, gb, dgamma, dbeta) = self._choice("gradient", True).timed(
            step.gradient_on, b.x, b.labels, self._skips_zeros(b.x))
        normalized.commit_forward(s, f, b, t, loss, y)
        return _gradients(s, gW, gb, dgamma, dbeta)

    def _norm_loss(self, x, t, train: bool):
        b = self._norm_batch(x, t, train)
        if b is None:
            return None
        if not train:
            normalized.running_statistics(self.stack)
        step = self._dense_for(len(b.x))
        f, loss, y = self._loss_threads(True, step.loss_on, b.x, b.labels, train,
                                        self._skips_zeros(b.x))
        normalized.commit_forward(self.stack, f, b, t, loss, y)
        return with_weight_decay(self.stack, self.stack.last.loss)

    def _norm_accuracy(self, x, t):
        s = self.stack
        if not self._layout_ok or not normalized.norms_ready(s, train=False):
            return None
        # PROBE_ROWS rows spread over x
        probe = rule.input_rows(s, x[::max(1, len(x) // PROBE_ROWS)][:PROBE_ROWS])
        if probe is None:
            return None
        labels = _class_indices(t, len(x), s.sizes[-1])
        if labels is None:
            return None
        normalized.running_statistics(s)
        n = len(x)
        step = self._dense_for(min(n, EVAL_CHUNK))
        threads = self._choice("gradient", True).best()  # the machine's state
        skip_zeros = self._skips_zeros(probe)
        chunk = n if x.flags.c_contiguous and x.dtype in (np.float32, s.dtype) else 8 * EVAL_CHUNK
        correct = 0
        for start in range(0, n, chunk):
            rows = rule.input_rows(s, x[start:start + chunk])
            correct += step.count_correct_on(threads, rows, labels[start:start + len(rows)],
                                             skip_zeros)
        return correct / float(n)


def _gradients(stack: rule.Stack, gW, gb, dgamma=(), dbeta=()) -> dict:
    """The book's gradients dict (W1, b1, gamma1, beta1, W2, ...), the layers given
    their dW, db (and dgamma, dbeta) as their backward passes leave them."""
    grads = {}
    for i, layer in enumerate(stack.affines):
        layer.dW, layer.db = gW[i], gb[i]
        grads[f"W{i + 1}"] = gW[i]
        if stack.weight_decay:  # as the book's gradient: dW + lambda * W
            grads[f"W{i + 1}"] = gW[i] + stack.weight_decay * stack.W[i]
        grads[f"b{i + 1}"] = gb[i]
        if i < len(stack.norms):
            norm = stack.norms[i]
            norm.dgamma, norm.dbeta = dgamma[i], dbeta[i]
            grads[f"gamma{i + 1}"], grads[f"beta{i + 1}"] = dgamma[i], dbeta[i]
    return grads


def with_weight_decay(stack: rule.Stack, loss, norms_checked: bool = False):
    """The loss plus the book's weight-decay term: lambda/2 * sum(W ** 2), or at
    lambda 0 (MultiLayerNet's loss always adds it) 0 * sum(W ** 2), which is 0
    while the weights' squares sum to a finite number (checked in C), else NaN.
    ``norms_checked``: the caller has just found every weight's squares to sum to a
    finite number (``SGDStep.params_finite``, the same check), and nothing has
    changed the weights since."""
    if stack.weight_decay or (stack.decay_term and not norms_checked and not all(
            _core.finite_norm(w.reshape(-1)) for w in stack.W)):
        return loss + weight_decay_loss(stack.W, stack.weight_decay)
    return loss


def _class_indices(t, n, n_classes):
    """Labels as the book's accuracy reads them (argmax of one-hot rows), int64
    indices, or None for what the book's code should decide."""
    t = np.asarray(t)
    if t.ndim != 1:
        if t.ndim != 2 or t.shape[0] != n or t.dtype.kind not in "biuf":
            return None
        t = np.argmax(t, axis=1)
    if t.shape != (n,) or t.dtype.kind not in "iu":
        return None
    return np.ascontiguousarray(t, dtype=np.int64)
