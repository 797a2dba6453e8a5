"""Whole training steps of a network in one compiled call each: ``minidl.train``'s engine.

A step is the course's: forward and backward on the batch, the update of every
parameter by the optimizer, and the batch loss after the update; the arithmetic
is the layers' and agrees with ``network.gradient`` and ``optimizer.update`` up
to rounding. What differs is the plumbing: the nonzero lists of the dataset's
rows are computed once, and each step runs in ``_fused.SGDStep`` on the batch's
rows of those lists. With minidl's SGD, every weight gradient is fused with its
update (``W -= lr * dW`` as it is computed); any other optimizer (any object
with the book's ``update(params, grads)``) gets the step's gradients and
updates the parameters itself, and the loss after it is computed from the same
lists. Evaluation counts correct rows in compiled chunks over the same lists.

``runner_for`` (what ``CythonOps.step_runner`` returns) decides, by the one
rule (``minidl.engine.rule``) and by what the kernels take, whether a runner
may stand in for the plain loop, and says why not otherwise.
"""

from __future__ import annotations

import numpy as np

from .. import _core, _fused, _sparse, backend
from ..backend.cython_ops import SPARSE_MAX_DENSITY
from ..functions import weight_decay_loss
from . import rule

__all__ = ["StepRunner", "runner_for"]

LIST_MAX_DENSITY = 0.3  # keep a dataset's nonzero lists when at most this dense


def runner_for(network, x, t, optimizer=None, lr=0.1):
    """(a ``StepRunner``, None), or (None, why the plain loop must run)."""
    try:
        return StepRunner(network, x, t, optimizer=optimizer, lr=lr), None
    except _Refused as exc:
        return None, str(exc)


class _Refused(ValueError):
    """What a StepRunner cannot run (the plain loop runs it)."""


def _is_plain_sgd(optimizer) -> bool:
    """Whether ``optimizer`` is minidl's SGD, untouched: its update can be fused."""
    if optimizer is None:
        return True
    try:
        from ..optimizer import SGD
    except ImportError:  # pragma: no cover - the optimizers are part of minidl
        return False
    return type(optimizer) is SGD and "update" not in vars(optimizer)


class StepRunner:
    """Whole training steps on one of minidl's book networks (see the module docstring).

    ``optimizer``: None for SGD with ``lr``, or an optimizer object (minidl's or any
    with ``update(params, grads)``). Raises ``ValueError`` naming the reason when
    the network or the data is not one the compiled steps take. The network's
    ``params`` arrays are updated in place, as the plain loop does.
    """

    def __init__(self, network, x_train, t_train, *, optimizer=None, lr: float = 0.1,
                 num_threads: int | None = None):
        stack = rule.examine(network)
        if isinstance(stack, str):
            raise _Refused(stack)
        self.network, self.stack = network, stack
        self.optimizer = optimizer
        self.lr = None if lr is None else float(lr)  # (the course's SGD: no optimizer)
        self.num_threads = num_threads or backend.STEP_THREADS
        self._check_kernels_take()
        self.x, self.labels, self.lists = self._prepare("training data", x_train, t_train, True)
        if self.lists is None and _sparse.nonzero_fraction(self.x, 64) > SPARSE_MAX_DENSITY:
            raise _Refused("dense inputs: the layers' BLAS products are faster")
        self.eval_sets = {"train": (self.x, self.labels, self.lists)}
        self._sgd = None  # the compiled step (_fused.SGDStep), made for the batch size
        self._grads = None  # the gradients' buffers, for an optimizer of its own
        if not self.params_finite():
            raise _Refused("a parameter holds NaN or infinity (NumPy's arithmetic: the plain loop)")

    def _check_kernels_take(self):
        s = self.stack
        if s.dtype is None:
            raise _Refused("the parameters mix float32 and float64")
        if s.n_affine > _fused.MAX_LAYERS:
            raise _Refused(f"more than {_fused.MAX_LAYERS} affine layers")
        if not all(p.flags.c_contiguous and p.flags.writeable for p in s.params):
            raise _Refused("a parameter array is not writeable and C-contiguous")

    def _prepare(self, what, x, t, keep_lists):
        """(rows the kernels read, int64 labels, nonzero lists or None)."""
        s = self.stack
        rows = rule.input_rows(s, x)
        if rows is None:
            raise _Refused(f"{what}: inputs the book computes in another dtype, or of another "
                           "width than the network's")
        if not _core.finite_norm(rows.reshape(-1)):
            raise _Refused(f"{what}: inputs hold NaN or infinity (NumPy's arithmetic)")
        labels, _ = rule.hard_labels(t, len(rows), s.sizes[-1])
        if labels is None:
            raise _Refused(f"{what}: labels must be class indices in range or exact one-hot rows")
        # The nonzero lists (8 bytes a nonzero for float32 data) pay for themselves
        # on sparse data such as MNIST; denser rows are scanned at each use.
        lists = None
        if keep_lists and _sparse.nonzero_fraction(rows, 64) <= LIST_MAX_DENSITY:
            lists = _sparse.nonzero_lists(rows)
        return rows, labels, lists

    def add_eval_set(self, name: str, x, t) -> None:
        """Register a dataset for ``accuracy(name)``.

        Its rows are scanned for nonzeros at each evaluation (a small cost next to
        the products): only the training set, read at every step, keeps its lists.
        """
        self.eval_sets[name] = self._prepare(f"evaluation set {name!r}", x, t, False)

    # -- one step ----------------------------------------------------------------
    def still_holds(self) -> bool:
        """Whether the network is still the stack this runner was made for (a
        callback may have changed it) with finite parameters."""
        return self.stack.still_holds(self.network)

    def _compiled(self, n) -> _fused.SGDStep:
        """The compiled step, with buffers for batches of at least ``n`` rows."""
        if self._sgd is None or self._sgd.batch_size < n:
            s = self.stack
            self._sgd = _fused.SGDStep(list(s.W), list(s.b), self.x, self.lists, s.sigmoid,
                                       max(n, 100), self.num_threads)
        return self._sgd

    def _rows(self, rows) -> np.ndarray:
        rows = np.asarray(rows)
        if rows.dtype.kind not in "iu" or rows.ndim != 1:
            raise TypeError(f"StepRunner.step: rows must be a 1-D array of integer row "
                            f"indices, got dtype {rows.dtype} and shape {rows.shape}")
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if len(rows) == 0:
            raise ValueError("StepRunner.step: an empty batch of rows")
        if not _core.indices_in_range(rows, len(self.x)):
            bad = rows[(rows < 0) | (rows >= len(self.x))][0]
            raise ValueError(f"StepRunner.step: rows must be in [0, {len(self.x)}), got {bad}")
        return rows

    def step(self, rows) -> float | None:
        """One training step on the batch ``x[rows]``; returns the batch loss after it,
        or None, having changed nothing, when the step's gradients are not finite
        (the caller's plain loop then runs it with NumPy's arithmetic).

        The network's lock is held during the step (another thread's calls on the
        network wait for it).
        """
        rows = self._rows(rows)
        labels = self.labels[rows]
        with self.network._lock:
            sgd = self._compiled(len(rows))
            if _is_plain_sgd(self.optimizer) and not self.stack.weight_decay:
                lr = self.lr if self.optimizer is None else float(self.optimizer.lr)
                loss = sgd.step(rows, labels, lr)
                if sgd.skipped_update:
                    return None
                return self._book_decay_term(sgd, loss)
            return self._step_with_optimizer(sgd, rows, labels)

    def _step_with_optimizer(self, sgd, rows, labels) -> float:
        """Gradients from the compiled step, the optimizer's own update, and the loss
        after it on the same batch lists."""
        s = self.stack
        if self._grads is None:
            self._grads = ([np.empty_like(w) for w in s.W], [np.empty_like(v) for v in s.b])
        gW, gb = self._grads
        loss = sgd.rows_gradient(rows, labels, gW, gb)
        if not (np.isfinite(loss) and all(np.isfinite(g).all() for g in gb)):
            return None  # zero-skipped terms of non-finite gradients: NumPy's arithmetic
        grads = {}
        for i, (g, v) in enumerate(zip(gW, gb)):
            grads[f"W{i + 1}"] = g + s.weight_decay * s.W[i] if s.weight_decay else g
            grads[f"b{i + 1}"] = v
        params = self.network.params
        if self.optimizer is None:
            for key in params:
                params[key] -= self.lr * grads[key]
        else:
            self.optimizer.update(params, grads)
        loss = sgd.loss_after_update(labels)
        if s.weight_decay:
            return loss + weight_decay_loss(s.W, s.weight_decay)
        return self._book_decay_term(sgd, loss)

    def _book_decay_term(self, sgd, loss):
        """The loss plus the book's 0 * sum(W ** 2) for a network whose loss has the
        term at lambda 0: 0 while the weights' squares sum to a finite number (checked
        in C), else computed as the book computes it (NaN when they overflow)."""
        if not self.stack.decay_term or sgd.params_finite():
            return loss
        return loss + weight_decay_loss(self.stack.W, 0)

    def params_finite(self) -> bool:
        """Whether every parameter is finite with a finite sum of squares (the
        compiled kernels skip zero inputs, exact only for finite weights)."""
        return self._compiled(1).params_finite()

    # -- evaluation ------------------------------------------------------------------
    def accuracy(self, name: str = "train") -> float:
        """``network.accuracy`` on a registered dataset, in chunks over its nonzero lists."""
        x, labels, lists = self.eval_sets[name]
        with self.network._lock:
            return self._compiled(1).count_correct(x, labels, lists) / float(len(x))
