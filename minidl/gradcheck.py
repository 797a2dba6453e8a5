"""Network numerical gradients and the gradient check (``ch05/gradient_check.py``).

``fast_numerical_gradient`` is what ``network.numerical_gradient(x, t)`` asks
first: the exact network numerical gradient from one cached forward pass
(``minidl.engine.netgrad``), which computes the book's numbers in milliseconds
when the one rule (``minidl.engine.rule``) takes the network; otherwise the
book's loop runs.

``gradient_check(network, x, t)`` compares backpropagation with it, parameter
by parameter, and counts the entries whose ``p +- h`` crosses a ReLU kink,
where finite differences are expected to disagree with the derivative.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field

import numpy as np

from .backend import ops

__all__ = [
    "METHODS",
    "GradientCheckReport",
    "GradientCheckRow",
    "fast_numerical_gradient",
    "gradient_check",
]

METHODS = ("auto", "fast", "generic")


def _fast(network, x, t, method, track_kinks):
    """(grads, kinks) from the exact kernel, or None when the book's loop must run
    ('generic', or 'auto' on what the kernel does not take); 'fast' raises then."""
    if method not in METHODS:
        raise ValueError(f"numerical_gradient: method must be one of {METHODS}, got {method!r}")
    if method == "generic":
        return None
    fused = ops().fused(network)
    result = fused.numerical_gradient(x, t, track_kinks) if fused is not None else None
    if result is None and method == "fast":
        from .engine.rule import why_not  # (the engine loads with the first fused pass)

        reason = why_not(network)
        if reason is None and fused is not None and fused.stack.norms:
            reason = ("the exact kernel takes Affine/activation stacks, not batch "
                      "normalisation")
        if reason is None:
            reason = ("the NumPy reference backend is selected" if fused is None
                      else "the parameters or x hold NaN or infinity")
        raise ValueError(f"numerical_gradient(method='fast'): {reason}")
    return result


def fast_numerical_gradient(network, x, t, method: str = "auto") -> dict | None:
    """``network.numerical_gradient(x, t)`` by the exact kernel, or None when the
    book's loop must run. ``method``: 'auto' (the kernel when it takes the
    network and input), 'fast' (the kernel or a ValueError saying why not),
    'generic' (always None: the book's loop)."""
    result = _fast(network, x, t, method, track_kinks=False)
    return None if result is None else result[0]


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
            return f"NOT ok: {_entries(row.n_bad)} off"
        if row.n_kink:
            return f"ok (ReLU kinks excluded: {_entries(row.n_kink)})"
        return "ok"

    def _summary(self) -> str:
        if not self.ok:
            return f"NOT ok: {_entries(sum(r.n_bad for r in self.rows))} off"
        kinks = self.n_kink
        return f"ok (ReLU kinks excluded: {_entries(kinks)})" if kinks else "ok"

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


def _tolerance(value) -> bool:
    """A tolerance that means something: a finite real number >= 0 (NaN and infinity pass
    every entry, a string or None would fail in the comparison with a NumPy message)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


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
    if not all(_tolerance(v) for v in (atol, rtol)):
        raise ValueError(f"gradient_check: atol and rtol must be finite numbers >= 0, got "
                         f"{atol!r}, {rtol!r}")
    start = time.perf_counter()
    backprop = network.gradient(x, t)
    backprop_seconds = time.perf_counter() - start

    start = time.perf_counter()
    fast = _fast(network, x, t, method, track_kinks=True)
    if fast is not None:
        (numerical, kinks), used = fast, "fast"
    else:
        numerical, kinks, used = _book_numerical_gradient(network, x, t), None, "generic"
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


def _book_numerical_gradient(network, x, t):
    """The network's own numerical gradient, by the book's loop where it has a choice."""
    try:
        return network.numerical_gradient(x, t, method="generic")
    except TypeError:  # a network of the student's own: the book's signature
        return network.numerical_gradient(x, t)


def _entries(n: int) -> str:
    """'1 entry', '2 entries'."""
    return f"{n} entry" if n == 1 else f"{n} entries"
