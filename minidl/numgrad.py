"""Exact numerical gradients of whole networks, fast enough to train with, and gradient checks.

``network.numerical_gradient(x, t)`` in the book perturbs every parameter entry
to ``p + h`` and ``p - h`` (h = 1e-4) and reruns the full forward pass for each:
for a 784-50-10 network that is 2 x 39,760 forward passes, about 13 s per
gradient. ``numerical_gradient_of(network, x, t)`` computes the same numbers,
``(L(p + h) - L(p - h)) / 2h`` for every entry with nothing approximated, from
one cached forward pass: a perturbation of ``W1[i, j]`` changes hidden unit
``j`` only, and only in the batch rows where pixel ``i`` is non-zero, so only
those rows and the layers above them are recomputed (``minidl._netgrad``).

``gradient_check(network, x, t)`` compares backpropagation with it, parameter
by parameter, and counts the entries whose ``p +- h`` crosses a ReLU kink,
where finite differences are expected to disagree with the derivative.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import _netgrad
from ._checks import FLOAT_DTYPES, batch_size_of, float_array, labels_as_indices
from .layers import Affine, Relu, Sigmoid, SoftmaxWithLoss

__all__ = [
    "GradientCheckReport",
    "GradientCheckRow",
    "H",
    "fast_path_problem",
    "gradient_check",
    "numerical_gradient_of",
    "use_fast_path",
]

H = 1e-4  # the book's step (minidl.gradient re-exports it)
METHODS = ("auto", "fast", "generic")
_ACT = {"relu": (Relu, _netgrad.ACT_RELU), "sigmoid": (Sigmoid, _netgrad.ACT_SIGMOID)}


# -- which networks the fast path serves -------------------------------------------------

def fast_path_problem(network) -> str | None:
    """Why ``network`` cannot use the network-level kernel, or None if it can.

    The kernel knows one architecture: minidl's ``TwoLayerNet``, ``ThreeLayerNet``
    or ``MultiLayerNet`` as built (Affine and ReLU/Sigmoid layers, softmax with
    cross-entropy, optional weight decay), ``predict`` and ``loss`` not
    overridden, and each Affine layer computing with the very arrays in
    ``params``. Anything else is left to the book's loop, which handles any loss.
    """
    from .networks import _LayerNet  # here, not at the top: networks imports this module

    if not isinstance(network, _LayerNet):
        return f"{type(network).__name__} is not one of minidl's networks"
    for name in ("predict", "loss"):
        if getattr(type(network), name) is not getattr(_LayerNet, name):
            return f"{type(network).__name__}.{name} is overridden"
    if network.activation not in _ACT:
        return f"unknown activation {network.activation!r}"
    act_layer = _ACT[network.activation][0]
    L = len(network.sizes) - 1
    layers = list(network.layers.values())
    expected = [Affine if i % 2 == 0 else act_layer for i in range(2 * L - 1)]
    if [type(layer) for layer in layers] != expected:
        return "its layers are not the standard Affine/activation stack"
    if type(network.lastLayer) is not SoftmaxWithLoss:
        return "its last layer is not SoftmaxWithLoss"
    keys = [f"{p}{k}" for k in range(1, L + 1) for p in ("W", "b")]
    if sorted(network.params) != sorted(keys):
        return f"its params are {sorted(network.params)}, expected {sorted(keys)}"
    for k in range(1, L + 1):
        W, b, affine = network.params[f"W{k}"], network.params[f"b{k}"], layers[2 * (k - 1)]
        if affine.W is not W or affine.b is not b:
            return f"Affine{k} does not compute with params['W{k}'] and params['b{k}']"
        for key, value, shape in ((f"W{k}", W, network.sizes[k - 1: k + 1]),
                                  (f"b{k}", b, network.sizes[k: k + 1])):
            if not isinstance(value, np.ndarray) or value.dtype not in FLOAT_DTYPES:
                return f"params['{key}'] is not a float32 or float64 array"
            if value.shape != tuple(shape):
                return f"params['{key}'] has shape {value.shape}, expected {tuple(shape)}"
    wd = network.weight_decay_lambda
    if not isinstance(wd, (int, float, np.floating, np.integer)) or not np.isfinite(wd):
        return f"weight_decay_lambda {wd!r} is not a finite number"
    return None


def use_fast_path(network, method: str = "auto") -> bool:
    """Whether ``network.numerical_gradient(x, t, method)`` runs the kernel.

    'generic': never; 'fast': always (ValueError if the network does not fit);
    'auto': when the network fits (see ``fast_path_problem``).
    """
    if method not in METHODS:
        raise ValueError(f"numerical_gradient: method must be one of {METHODS}, got {method!r}")
    if method == "generic":
        return False
    problem = fast_path_problem(network)
    if problem is not None and method == "fast":
        raise ValueError(f"numerical_gradient(method='fast'): {problem}")
    return problem is None


# -- the network-level gradient ------------------------------------------------------------

def numerical_gradient_of(network, x, t) -> dict[str, np.ndarray]:
    """The book's ``network.numerical_gradient(x, t)``, computed from one cached forward pass.

    For every entry ``p`` of every parameter: ``(L(p + h) - L(p - h)) / 2h``
    with h = 1e-4, ``p + h`` stored as the book stores it (computed in the
    parameter's dtype, as NumPy 2 does), and ``L`` the network's loss on ``(x, t)`` (mean
    cross-entropy, plus ``0.5 * weight_decay_lambda * sum(W ** 2)`` over the
    weights). For float64 networks the result equals the book's loop within
    about 1e-12 (rounding of summation order).

    Float32 networks: the perturbation is the one float32 storage gives, but
    the losses are evaluated in float64 rather than float32, so the result is
    free of the float32 rounding noise (about 1e-3) that the book's loop
    carries; it is not bit-for-bit the book's float32 number.

    ``x``: (N, ...) float32 or float64, N >= 1, ``sizes[0]`` features per row;
    ``t``: class indices (N,) or one-hot rows (N, classes; argmax is the
    class, as in the book's loss). Returns a dict like ``network.params`` of
    arrays in each parameter's shape and dtype.
    """
    problem = fast_path_problem(network)
    if problem is not None:
        raise ValueError(f"numerical_gradient_of: {problem}; use network.numerical_gradient")
    grads, _ = _fast_gradient(network, x, t, track_kinks=False)
    return grads


def _fast_gradient(network, x, t, track_kinks, shortcuts=_netgrad.SHORTCUTS_ALL, n_threads=0):
    """(grads, kink masks or None), for a network that ``fast_path_problem`` accepts.

    ``shortcuts`` and ``n_threads`` exist for the tests: every shortcut of the
    kernel can be switched off, and the thread count must not change the result.
    """
    sizes = network.sizes
    L = len(sizes) - 1
    x, labels = _validate_batch("numerical_gradient", sizes, x, t)
    params = network.params
    for key, value in params.items():
        if not np.isfinite(value).all():
            raise ValueError(f"numerical_gradient: params['{key}'] contains NaN or infinity")
    act = _ACT[network.activation][1]

    # the cached forward pass, in float64
    W = [np.ascontiguousarray(params[f"W{k}"], dtype=np.float64) for k in range(1, L + 1)]
    b = [np.ascontiguousarray(params[f"b{k}"], dtype=np.float64) for k in range(1, L + 1)]
    a, z = [x], []
    for l in range(L):
        zl = a[l] @ W[l]
        zl += b[l]
        z.append(zl)
        if l < L - 1:
            al = np.empty_like(zl)
            _netgrad.activate(zl, al, act)
            a.append(al)
    csc = [_columns(al) for al in a]

    def flags(prefix):
        return np.array([params[f"{prefix}{k}"].dtype == np.float32 for k in range(1, L + 1)],
                        dtype=np.uint8)

    gW = [np.empty(w.shape) for w in W]
    gb = [np.empty(v.shape) for v in b]
    kW = [np.empty(w.shape, np.uint8) for w in W] if track_kinks else None
    kb = [np.empty(v.shape, np.uint8) for v in b] if track_kinks else None
    _netgrad.network_gradient(
        W, b, z, a, [c[0] for c in csc], [c[1] for c in csc], [c[2] for c in csc],
        flags("W"), flags("b"), labels, act, H,
        float(network.weight_decay_lambda), gW, gb, kW, kb, n_threads, shortcuts,
    )
    grads, kinks = {}, {} if track_kinks else None
    for key in params:  # the book's order: W1, b1, W2, ...
        l = int(key[1:]) - 1
        g = gW[l] if key[0] == "W" else gb[l]
        grads[key] = g.astype(params[key].dtype, copy=False)
        if track_kinks:
            kinks[key] = (kW[l] if key[0] == "W" else kb[l]).astype(bool)
    return grads, kinks


def _validate_batch(what, sizes, x, t):
    """x as C-contiguous float64 (N, sizes[0]) and t as int64 class indices (N,)."""
    x = float_array(f"{what}: x", x)
    n = batch_size_of(f"{what}: x", x)
    width = int(np.prod(x.shape[1:]))
    if width != sizes[0]:
        raise ValueError(f"{what}: x of shape {x.shape} has {width} features per sample, "
                         f"but the network's input size is {sizes[0]}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: x contains NaN or infinity")
    n_classes = sizes[-1]
    t = np.asarray(t)
    if t.size == n * n_classes and n_classes > 1:  # one-hot rows, as SoftmaxWithLoss decides
        if t.dtype.kind not in "biuf":
            raise TypeError(f"{what}: one-hot labels of dtype {t.dtype}")
        labels = t.reshape(n, n_classes).argmax(axis=1).astype(np.int64)
    else:
        labels = labels_as_indices(t, n, n_classes)
    x = np.ascontiguousarray(x.reshape(n, width), dtype=np.float64)
    return x, np.ascontiguousarray(labels)


def _columns(a):
    """The non-zeros of ``a`` (N, M) column by column, plus a bias column of ones.

    Returns (colptr (M + 2,), rows, vals): the non-zeros of column i are
    ``rows[colptr[i]:colptr[i+1]]`` with values ``vals[...]``; column M is the
    bias input, 1 in every row.
    """
    n, m = a.shape
    cols, rows = np.nonzero(a.T)  # column-major order, rows ascending within a column
    colptr = np.zeros(m + 2, dtype=np.intp)
    np.cumsum(np.bincount(cols, minlength=m), out=colptr[1:m + 1])
    colptr[m + 1] = colptr[m] + n
    all_rows = np.concatenate([rows, np.arange(n)]).astype(np.intp)
    vals = np.concatenate([a[rows, cols], np.ones(n)])
    return colptr, all_rows, vals


# -- gradient check ------------------------------------------------------------------------

@dataclass
class GradientCheckRow:
    """One parameter's comparison of backpropagation with central differences."""

    key: str
    shape: tuple
    max_abs_diff: float  # max |backprop - numerical|
    max_rel_diff: float  # max |a - b| / (|a| + |b|), over entries with |a| + |b| > atol
    mean_abs_diff: float  # the book's gradient_check figure
    n_kink: int | None  # entries whose p +- h crosses a ReLU kink (None: not counted)
    n_bad: int  # entries outside tolerance, kinks excluded
    max_abs_diff_smooth: float  # max |a - b| away from kinks

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class GradientCheckReport:
    """What ``gradient_check`` found; ``print(report)`` shows a table."""

    network: str
    batch_size: int
    rows: list = field(default_factory=list)
    backprop_seconds: float = 0.0
    numerical_seconds: float = 0.0
    numerical_method: str = "fast"  # 'fast' (minidl's kernel) or 'generic' (the book's loop)
    atol: float = 1e-6
    rtol: float = 1e-3

    @property
    def ok(self) -> bool:
        """Every entry away from a ReLU kink agrees within tolerance."""
        return all(row.n_bad == 0 for row in self.rows)

    @property
    def n_kink(self) -> int | None:
        counts = [row.n_kink for row in self.rows]
        return None if any(c is None for c in counts) else sum(counts)

    def _verdict(self, row) -> str:
        """A row's verdict with its reason, for the same line as its differences."""
        if row.n_bad:
            return f"NOT ok: {row.n_bad} entries off"
        if row.n_kink:
            return f"ok (ReLU kinks excluded: {row.n_kink} entries)"
        return "ok"

    def _summary(self) -> str:
        if not self.ok:
            return f"NOT ok: {sum(r.n_bad for r in self.rows)} entries off"
        kinks = self.n_kink
        return f"ok (ReLU kinks excluded: {kinks} entries)" if kinks else "ok"

    def __str__(self) -> str:
        n_params = sum(row.size for row in self.rows)
        lines = [
            (f"gradient check: {self.network}, batch of {self.batch_size}, "
             f"{n_params:,} parameters"),
            (f"  backprop {_fmt_seconds(self.backprop_seconds)} (one forward, one backward); "
             f"numerical {_fmt_seconds(self.numerical_seconds)} "
             f"({self.numerical_method}: 2 losses per parameter)"),
            (f"  {'key':<5} {'shape':<12} {'max|diff|':>10} {'max rel':>10} {'mean|diff|':>10} "
             f"{'kinks':>7} {'max|diff| off kinks':>20}  verdict"),
        ]
        for row in self.rows:
            kinks = "-" if row.n_kink is None else f"{row.n_kink:d}"
            lines.append(
                f"  {row.key:<5} {row.shape!s:<12} {row.max_abs_diff:10.2e} "
                f"{row.max_rel_diff:10.2e} {row.mean_abs_diff:10.2e} {kinks:>7} "
                f"{row.max_abs_diff_smooth:20.2e}  {self._verdict(row)}"
            )
        lines.append(
            f"  {self._summary()}: an entry agrees if |diff| <= {self.atol:g} or "
            f"rel <= {self.rtol:g}; at a ReLU kink p +- h crosses a corner of the loss, "
            "so those entries are not judged"
        )
        lines.append(
            "  (differences of about 1e-7 away from kinks are the book's loss, -log(y + 1e-7): "
            "backprop's y - t leaves out the 1e-7)"
        )
        # the book's ch05/gradient_check.py prints np.average(np.abs(backprop - numerical))
        lines.append("  as the book's ch05/gradient_check.py prints it (mean |diff|):")
        lines.extend(f"    {row.key}:{row.mean_abs_diff!s}" for row in self.rows)
        return "\n".join(lines)

    def __repr__(self) -> str:
        worst = max((row.max_abs_diff_smooth for row in self.rows), default=0.0)
        return (f"GradientCheckReport({self.network}, batch of {self.batch_size}: "
                f"{self._summary()}, max |diff| off kinks {worst:.2e})")

    def _repr_markdown_(self) -> str:
        head = ("| key | shape | max abs diff | max rel | mean abs diff (the book's) | kinks "
                "| max abs diff off kinks | verdict |\n"
                "|---|---|--:|--:|--:|--:|--:|---|\n")
        rows = "".join(
            f"| {r.key} | {r.shape} | {r.max_abs_diff:.2e} | {r.max_rel_diff:.2e} "
            f"| {r.mean_abs_diff:.2e} | {'-' if r.n_kink is None else r.n_kink} "
            f"| {r.max_abs_diff_smooth:.2e} | {self._verdict(r)} |\n" for r in self.rows)
        return (f"**gradient check**: {self.network}, batch of {self.batch_size}: "
                f"**{self._summary()}**  \n"
                f"backprop {_fmt_seconds(self.backprop_seconds)}, numerical "
                f"{_fmt_seconds(self.numerical_seconds)} ({self.numerical_method})\n\n"
                + head + rows +
                f"\nAn entry agrees if abs diff <= {self.atol:g} or rel <= {self.rtol:g}; "
                "entries at ReLU kinks are not judged.\n")


def gradient_check(network, x, t, *, atol: float = 1e-6, rtol: float = 1e-3,
                   method: str = "auto") -> GradientCheckReport:
    """Compare ``network.gradient`` (backprop) with the numerical gradient, per parameter.

    For each parameter: the maximum absolute difference, the maximum relative
    difference ``|a - b| / (|a| + |b|)`` (over entries with ``|a| + |b| > atol``,
    so that two round-off-sized numbers do not count as 100% apart), the book's
    mean absolute difference, and the number of entries whose ``p + h`` or
    ``p - h`` changes the sign of some ReLU input in the batch: there the loss
    has a corner between the two evaluations and the central difference is not
    the derivative (always 0 for sigmoid networks). The report is ``ok`` when
    every other entry agrees (``|diff| <= atol`` or relative difference
    ``<= rtol``). Both methods are timed: that is the teaching point.

    Expect differences of about 1e-7 even away from kinks: the book's loss is
    ``-log(y + 1e-7)``, whose exact gradient is not quite backprop's ``y - t``;
    the central difference itself is exact to about 1e-10 here.

    ``method`` chooses the numerical gradient as ``network.numerical_gradient``
    does; kinks are counted only by the fast path (``n_kink`` None otherwise).
    """
    if atol < 0 or rtol < 0:
        raise ValueError(f"gradient_check: atol and rtol must be >= 0, got {atol}, {rtol}")
    start = time.perf_counter()
    backprop = network.gradient(x, t)
    backprop_seconds = time.perf_counter() - start

    start = time.perf_counter()
    if use_fast_path(network, method):
        numerical, kinks = _fast_gradient(network, x, t, track_kinks=True)
        used = "fast"
    else:
        numerical, kinks = network.numerical_gradient(x, t, method="generic"), None
        used = "generic"
    numerical_seconds = time.perf_counter() - start

    sizes = getattr(network, "sizes", None)
    name = type(network).__name__
    if sizes is not None:
        name += " " + "-".join(str(s) for s in sizes)
        name += f" ({getattr(network, 'activation', '?')})"
    report = GradientCheckReport(
        network=name, batch_size=len(x), backprop_seconds=backprop_seconds,
        numerical_seconds=numerical_seconds, numerical_method=used, atol=atol, rtol=rtol,
    )
    for key in network.params:
        a = np.asarray(backprop[key], dtype=np.float64)
        b = np.asarray(numerical[key], dtype=np.float64)
        diff = np.abs(a - b)
        scale = np.maximum(np.abs(a) + np.abs(b), np.finfo(np.float64).tiny)
        rel = np.where(np.abs(a) + np.abs(b) > atol, diff / scale, 0.0)
        kink = kinks[key] if kinks is not None else np.zeros(a.shape, dtype=bool)
        bad = (diff > atol) & (rel > rtol) & ~kink
        report.rows.append(GradientCheckRow(
            key=key, shape=tuple(a.shape),
            max_abs_diff=float(diff.max(initial=0.0)),
            max_rel_diff=float(rel.max(initial=0.0)),
            mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
            n_kink=int(kink.sum()) if kinks is not None else None,
            n_bad=int(bad.sum()),
            max_abs_diff_smooth=float(np.where(kink, 0.0, diff).max(initial=0.0)),
        ))
    return report


def _fmt_seconds(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"
