"""Training curves, drawn from the metrics a run records: PNG files, and inline in notebooks.

The figures are ``matplotlib.figure.Figure`` objects on the Agg canvas, made
without ``pyplot``: nothing here changes the user's matplotlib backend, and it
works on machines without a display. They define ``_repr_png_``, so a notebook
(Jupyter, Colab) shows the returned figure as an image even where no inline
backend is active. matplotlib is imported only when a plot is drawn, so
``import minidl`` stays quick.

``plot_curves(metrics)`` draws one run (``metrics`` is what ``metrics.json``
holds, or ``RunResult.metrics``); ``plot_comparison`` draws several.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np

from .._atomic import atomic_write

__all__ = ["plot_comparison", "plot_curves", "plot_search"]

DPI = 100


@cache
def _figure_class():
    from matplotlib.figure import Figure

    class MinidlFigure(Figure):
        """A Figure that notebooks display as a PNG image (``_repr_png_``)."""

        def _repr_png_(self) -> bytes:
            buf = io.BytesIO()
            self.savefig(buf, format="png", dpi=DPI)
            return buf.getvalue()

    return MinidlFigure


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = _figure_class()(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> None:
    """Save ``fig`` as a PNG, atomically."""
    with atomic_write(Path(path)) as fh:
        fig.savefig(fh, format="png", dpi=DPI)


def _losses(metrics: dict) -> np.ndarray:
    # non-finite losses are recorded as None; NaN leaves a gap in the line
    return np.array([np.nan if v is None else v for v in metrics["iteration_loss"]], dtype=float)


def running_mean(y: np.ndarray, window: int) -> np.ndarray:
    """The mean of ``y`` over a window centred on each point, NaNs left out.

    Point i averages ``y[i - h : i + h + 1]`` with ``h = window // 2``, the
    half-width shrinking near the ends so that every point stays at the middle
    of its window and the curve reaches the first and the last iteration.
    """
    y = np.asarray(y, dtype=float)
    n = len(y)
    if n == 0:
        return y
    finite = np.isfinite(y)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, y, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    i = np.arange(n)
    h = np.minimum(np.minimum(window // 2, i), n - 1 - i)
    lo, hi = i - h, i + h + 1
    count = counts[hi] - counts[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (sums[hi] - sums[lo]) / count, np.nan)


def _window(n: int) -> int:
    return max(1, min(201, n // 25) | 1)  # odd, so that a window has a middle iteration


def _epoch_axis(metrics: dict) -> list[float]:
    # epochs as fractions of the course notebook's epoch size, so runs with different batch sizes line up
    ipe = metrics.get("iter_per_epoch") or 1
    return [row["iteration"] / ipe for row in metrics["epochs"]]


def _final_point(metrics: dict):
    """(epoch, train acc, test acc) of the final evaluation, or None."""
    final = metrics.get("final")
    if not final:
        return None
    ipe = metrics.get("iter_per_epoch") or 1
    # the final evaluation follows the last step, as an evaluation at iteration i follows step i
    return (max(final["iterations"] - 1, 0) / ipe, final["train_acc"], final["test_acc"])


def zoomed_limits(values: Sequence[float], later: Sequence[float]) -> tuple[float, float]:
    """Accuracy axis limits around ``later`` (the evaluations after the first few).

    The first evaluations (near chance) would otherwise squeeze the end of
    training, where the train/test gap is, into a few pixels.
    """
    later = [v for v in later if v is not None]
    values = [v for v in values if v is not None]
    basis = later or values
    if not basis:
        return 0.0, 1.0
    lo, hi = min(basis), max(basis)
    pad = max(0.15 * (hi - lo), 0.005)
    return max(0.0, lo - pad), min(1.0, hi + pad)


def _later(rows: list, key: str) -> list:
    # zoom on the evaluations from the second on (or all, when there are at most two)
    return [r[key] for r in (rows[1:] if len(rows) > 2 else rows)]


def _title(metrics: dict) -> str:
    c = metrics["config"]
    dataset = metrics.get("dataset", {}).get("title", c["dataset"])
    arch = metrics.get("network", {}).get("description", "")
    return f"{dataset}, {arch}, lr {c['lr']:g}, batch {c['batch_size']}"


def plot_curves(metrics: dict, path: str | os.PathLike | None = None, *,
                title: str | None = None):
    """Loss per iteration (left) and train/test accuracy per epoch (right) of one run.

    The loss is drawn as every batch's (faint) and as a running mean, each
    point at the middle of its window, up to the last iteration. The accuracy
    axis is zoomed on the later evaluations, so that the train/test gap is
    visible (earlier points below it are noted); the final evaluation (the
    saved network) is marked. Writes a PNG to ``path`` when given; returns the
    matplotlib ``Figure`` (shown as an image in a notebook).
    """
    fig = _figure(11, 4.2)
    ax_loss, ax_acc = fig.subplots(1, 2)
    loss = _losses(metrics)
    rows = metrics["epochs"]
    x = np.arange(len(loss))
    ax_loss.plot(x, loss, color="tab:blue", alpha=0.3, linewidth=0.7, label="batch loss")
    window = _window(len(loss))
    if window > 1:
        ax_loss.plot(x, running_mean(loss, window), color="tab:blue", linewidth=1.6,
                     label=f"running mean ({window} iterations, centred)")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss")
    if len(loss):
        ax_loss.set_xlim(0, max(len(loss) - 1, 1))
    ax_loss.legend(loc="upper right")

    epochs = _epoch_axis(metrics)
    train = [r["train_acc"] for r in rows]
    test = [r["test_acc"] for r in rows]
    ax_acc.plot(epochs, train, marker="o", markersize=3, color="tab:orange", label="train")
    ax_acc.plot(epochs, test, marker="s", markersize=3, linestyle="--", color="tab:green",
                label="test")
    final = _final_point(metrics)
    later_train, later_test = _later(rows, "train_acc"), _later(rows, "test_acc")
    if final is not None:
        epoch, final_train, final_test = final
        ax_acc.plot([epoch], [final_train], marker="*", markersize=11, color="tab:orange",
                    linestyle="none", label=f"final train {final_train:.4f}")
        ax_acc.plot([epoch], [final_test], marker="*", markersize=11, color="tab:green",
                    linestyle="none", label=f"final test {final_test:.4f}")
        later_train, later_test = later_train + [final_train], later_test + [final_test]
    lo, hi = zoomed_limits(train + test, later_train + later_test)
    ax_acc.set_ylim(lo, hi)
    below = [(e, min(a, b)) for e, a, b in zip(epochs, train, test) if min(a, b) < lo]
    note = ""
    if below:
        first = f"epoch {below[0][0]:g} at {below[0][1]:.2f}"
        more = f" and {len(below) - 1} more" if len(below) > 1 else ""
        note = f" (zoomed: {first}{more} below the axis)"
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_title("accuracy" + note)
    ax_acc.legend(loc="lower right")
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
    status = "" if metrics.get("status") == "finished" else f" ({metrics.get('status')})"
    fig.suptitle((title or _title(metrics)) + status)
    if path is not None:
        _save(fig, path)
    return fig


def plot_comparison(metrics_list: Sequence[dict], labels: Sequence[str],
                    path: str | os.PathLike | None = None, *, title: str | None = None):
    """Every run's running-mean loss (left) and test accuracy, solid, and train accuracy,
    dashed (right), one colour per run, the final evaluations marked. Writes a PNG to
    ``path`` when given; returns the ``Figure`` (shown as an image in a notebook)."""
    fig = _figure(12, 4.6)
    ax_loss, ax_acc = fig.subplots(1, 2)
    colors = [f"C{i % 10}" for i in range(len(metrics_list))]
    everything, later = [], []
    for metrics, label, color in zip(metrics_list, labels, colors):
        loss = _losses(metrics)
        ax_loss.plot(np.arange(len(loss)), running_mean(loss, _window(len(loss))), color=color,
                     linewidth=1.2, label=label)
        rows = metrics["epochs"]
        epochs = _epoch_axis(metrics)
        test = [r["test_acc"] for r in rows]
        train = [r["train_acc"] for r in rows]
        ax_acc.plot(epochs, test, color=color, marker="o", markersize=3, label=label)
        ax_acc.plot(epochs, train, color=color, linestyle="--", linewidth=1, alpha=0.8)
        everything += test + train
        later += _later(rows, "test_acc") + _later(rows, "train_acc")
        final = _final_point(metrics)
        if final is not None:
            ax_acc.plot([final[0]], [final[2]], marker="*", markersize=10, color=color,
                        linestyle="none")
            later += [final[1], final[2]]
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss (running mean)")
    ax_loss.set_title("training loss")
    ax_acc.set_ylim(*zoomed_limits(everything, later))
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_title("accuracy: test solid, train dashed, final *")
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
    if metrics_list:
        ax_loss.legend(loc="upper right", fontsize="small")
        ax_acc.legend(loc="lower right", fontsize="small")
    fig.suptitle(title or "comparison")
    if path is not None:
        _save(fig, path)
    return fig


def plot_search(metrics_list: Sequence[dict], titles: Sequence[str],
                path: str | os.PathLike | None = None, *, columns: int = 5):
    """The book's search figure: one small panel per trial (best first), validation
    accuracy solid and train accuracy dashed, on 0..1. Returns the ``Figure``."""
    n = max(len(metrics_list), 1)
    rows = -(-n // columns)
    fig = _figure(2.4 * columns, 2.0 * rows + 0.4)
    axes = np.atleast_1d(fig.subplots(rows, columns, sharey=True)).ravel()
    for ax in axes[len(metrics_list):]:
        ax.set_axis_off()
    for ax, metrics, title in zip(axes, metrics_list, titles):
        epochs = _epoch_axis(metrics)
        ax.plot(epochs, [r["test_acc"] for r in metrics["epochs"]], label="val")
        ax.plot(epochs, [r["train_acc"] for r in metrics["epochs"]], "--", label="train")
        ax.set_ylim(0.0, 1.0)
        ax.set_title(title, fontsize="small")
        ax.tick_params(labelsize="x-small")
        ax.grid(True, alpha=0.3)
    if metrics_list:
        axes[0].legend(loc="lower right", fontsize="x-small")
    fig.suptitle("random search: validation accuracy (solid), train (dashed), best first")
    if path is not None:
        _save(fig, path)
    return fig
