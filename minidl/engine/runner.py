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

Dense data (Fashion-MNIST, CIFAR-10: more nonzeros than ``zero_skipping_pays``
allows) runs on NumPy's BLAS instead (``minidl.engine.dense``): each step
gathers its rows into the step's buffer (float32 images converted there, a
batch at a time), runs the fused forward and backward passes, updates as the
book's SGD does (``W -= lr * dW``) or through the optimizer, and computes the
loss after the update from the same rows.

``runner_for`` (what ``CythonOps.step_runner`` returns) decides, by the one
rule (``minidl.engine.rule``) and by what the kernels take, whether a runner
may stand in for the plain loop, and says why not otherwise.
"""

from __future__ import annotations

import numpy as np

from .. import _core, _fused, _sparse, backend
from ..backend import blas_threads
from ..backend.cython_ops import zero_skipping_pays
from . import rule
from .dense import EVAL_CHUNK, DenseStep
from .passes import with_weight_decay
from .threads import BLAS, OPENMP, ThreadChoice

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
        rows = rule.input_rows(stack, x_train)
        self.dense = rows is not None and not zero_skipping_pays(
            _sparse.nonzero_fraction(rows, 64), stack.dtype)
        self.x, self.labels, self.lists = self._prepare("training data", x_train, t_train,
                                                        not self.dense)
        self.eval_sets = {"train": (self.x, self.labels, self.lists)}
        self._sgd = None  # the compiled step (_fused.SGDStep), made for the batch size
        self._dense = None  # the dense step (DenseStep), made for the batch size
        self._eval = None  # the dense evaluation's (EVAL_CHUNK rows)
        self.threads = ThreadChoice(self.num_threads, fixed=True if num_threads is not None else None,
                                    pool=BLAS if self.dense else OPENMP, owner=self)
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
            return self.threads.timed(self._step_on, rows, labels)

    def _step_on(self, threads: int, rows, labels) -> float | None:
        """One step on ``threads`` threads (BLAS's for dense data, else the kernels')."""
        if self.dense:
            with blas_threads.local(threads):
                return self._dense_step(rows, labels)
        sgd = self._compiled(len(rows))
        sgd.threads = threads
        if _is_plain_sgd(self.optimizer) and not self.stack.weight_decay:
            loss = sgd.step(rows, labels, self._sgd_lr())
            if sgd.skipped_update:
                return None
            return with_weight_decay(self.stack, loss)
        return self._step_with_optimizer(sgd, rows, labels)

    def _step_with_optimizer(self, sgd, rows, labels) -> float:
        """Gradients from the compiled step, the optimizer's own update, and the loss
        after it on the same batch lists."""
        gW, gb = self._gradient_buffers()
        loss = sgd.rows_gradient(rows, labels, gW, gb)
        if not (np.isfinite(loss) and sgd.bias_gradients_finite):
            return None  # zero-skipped terms of non-finite gradients: NumPy's arithmetic
        self._update(gW, gb)
        return with_weight_decay(self.stack, sgd.loss_after_update(labels))

    def _sgd_lr(self) -> float:
        """The learning rate of the course's SGD: ``lr``, or minidl's SGD object's."""
        return self.lr if self.optimizer is None else float(self.optimizer.lr)

    def _gradient_buffers(self):
        if self._grads is None:
            s = self.stack
            self._grads = ([np.empty_like(w) for w in s.W], [np.empty_like(v) for v in s.b])
        return self._grads

    def _update(self, gW, gb) -> None:
        """The optimizer's update (the course's SGD without one) from the step's gradients,
        with the book's weight-decay term added to each weight gradient. The course's
        SGD leaves ``lr`` times the gradients in ``gW`` and ``gb``."""
        s = self.stack
        params = self.network.params
        if _is_plain_sgd(self.optimizer) and not s.weight_decay:
            lr = self._sgd_lr()
            # the book's params[key] -= lr * grads[key], the products lr * grads[key] made
            # in the step's own gradient buffers (the same numbers, no temporary to allocate
            # and fault in at every step: 0.3 MB for a 784 x 50 float64 weight)
            for w, v, g, h in zip(s.W, s.b, gW, gb):
                w -= np.multiply(g, lr, out=g)
                v -= np.multiply(h, lr, out=h)
            return
        grads = {}
        for i, (g, v) in enumerate(zip(gW, gb)):
            grads[f"W{i + 1}"] = g + s.weight_decay * s.W[i] if s.weight_decay else g
            grads[f"b{i + 1}"] = v
        if self.optimizer is None:
            for key in params:
                params[key] -= self.lr * grads[key]
        else:
            self.optimizer.update(params, grads)

    def _dense_step(self, rows, labels) -> float:
        """One step on BLAS: gradients, update, and the loss after it on the same rows."""
        if self._dense is None or self._dense.n < len(rows):
            self._dense = DenseStep(self.stack, max(len(rows), 100))
        step = self._dense
        x = step.rows_from(self.x, rows)
        gW, gb = self._gradient_buffers()
        step.forward(x)
        step.loss(labels)
        step.backward(x, labels, gW, gb)
        self._update(gW, gb)
        step.forward(x)
        return with_weight_decay(self.stack, step.loss(labels))

    def params_finite(self) -> bool:
        """Whether every parameter is finite with a finite sum of squares (the
        compiled kernels skip zero inputs, exact only for finite weights)."""
        return self._compiled(1).params_finite()

    # -- evaluation ------------------------------------------------------------------
    def accuracy(self, name: str = "train") -> float:
        """``network.accuracy`` on a registered dataset, in compiled chunks (over its
        nonzero lists, or on BLAS for dense data)."""
        x, labels, lists = self.eval_sets[name]
        with self.network._lock:
            threads = self.threads.best()
            if self.dense:
                if self._eval is None:
                    self._eval = DenseStep(self.stack, EVAL_CHUNK)
                return self._eval.count_correct_on(threads, x, labels) / float(len(x))
            sgd = self._compiled(1)
            sgd.threads = threads
            return sgd.count_correct(x, labels, lists) / float(len(x))
