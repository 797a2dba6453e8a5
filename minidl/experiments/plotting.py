"""Training curves as PNG files, drawn from the metrics a run records.

The figures are built on ``matplotlib.figure.Figure`` with the Agg canvas
directly, without ``pyplot``: nothing here changes the user's matplotlib
backend, and it works on machines without a display. matplotlib is imported
only when a plot is drawn, so ``import minidl`` stays quick.

``plot_curves(metrics)`` draws one run (``metrics`` is what ``metrics.json``
holds, or ``RunResult.metrics``); ``plot_comparison`` draws several.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._atomic import atomic_write

__all__ = ["plot_comparison", "plot_curves"]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> None:
    """Save ``fig`` as a PNG, atomically."""
    with atomic_write(Path(path)) as fh:
        fig.savefig(fh, format="png", dpi=100)


def _losses(metrics: dict) -> np.ndarray:
    # non-finite losses are recorded as None; NaN leaves a gap in the line
    return np.array([np.nan if v is None else v for v in metrics["iteration_loss"]], dtype=float)


def _moving_average(y: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean over ``window`` iterations, plotted at each window's last iteration."""
    if window <= 1 or len(y) < window:
        return np.arange(len(y)), y
    kernel = np.ones(window) / window
    return np.arange(window - 1, len(y)), np.convolve(y, kernel, mode="valid")


def _epoch_axis(metrics: dict) -> list[float]:
    # epochs as fractions of the seed's epoch size, so runs with different batch sizes line up
    ipe = metrics.get("iter_per_epoch") or 1
    return [row["iteration"] / ipe for row in metrics["epochs"]]


def _title(metrics: dict) -> str:
    c = metrics["config"]
    dataset = metrics.get("dataset", {}).get("title", c["dataset"])
    arch = metrics.get("network", {}).get("description", "")
    return f"{dataset}, {arch}, lr {c['lr']:g}, batch {c['batch_size']}"


def plot_curves(metrics: dict, path: str | os.PathLike | None = None, *,
                title: str | None = None):
    """Loss per iteration (left) and train/test accuracy per epoch (right) of one run.

    Writes a PNG to ``path`` when given; returns the matplotlib ``Figure``.
    """
    fig = _figure(11, 4.2)
    ax_loss, ax_acc = fig.subplots(1, 2)
    loss = _losses(metrics)
    rows = metrics["epochs"]
    ax_loss.plot(np.arange(len(loss)), loss, color="tab:blue", alpha=0.35, linewidth=0.8,
                 label="batch loss")
    if rows:
        ax_loss.plot([r["iteration"] for r in rows],
                     [np.nan if r["loss"] is None else r["loss"] for r in rows],
                     color="tab:blue", marker="o", markersize=3, label="mean since last epoch")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss")
    ax_loss.legend(loc="upper right")

    epochs = _epoch_axis(metrics)
    ax_acc.plot(epochs, [r["train_acc"] for r in rows], marker="o", markersize=3, label="train")
    ax_acc.plot(epochs, [r["test_acc"] for r in rows], marker="s", markersize=3,
                linestyle="--", label="test")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1.0)
    ax_acc.set_title("accuracy")
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
    """Every run's smoothed loss (left) and test accuracy, solid, and train accuracy,
    dashed (right), one colour per run. Writes a PNG to ``path`` when given;
    returns the ``Figure``."""
    fig = _figure(12, 4.6)
    ax_loss, ax_acc = fig.subplots(1, 2)
    colors = [f"C{i % 10}" for i in range(len(metrics_list))]
    for metrics, label, color in zip(metrics_list, labels, colors):
        loss = _losses(metrics)
        window = max(1, min(100, len(loss) // 50))
        ax_loss.plot(*_moving_average(loss, window), color=color, linewidth=1.2, label=label)
        rows = metrics["epochs"]
        epochs = _epoch_axis(metrics)
        ax_acc.plot(epochs, [r["test_acc"] for r in rows], color=color, marker="o",
                    markersize=3, label=label)
        ax_acc.plot(epochs, [r["train_acc"] for r in rows], color=color, linestyle="--",
                    linewidth=1, alpha=0.8)
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss (moving average)")
    ax_loss.set_title("training loss")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1.0)
    ax_acc.set_title("accuracy: test solid, train dashed")
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
    if metrics_list:
        ax_loss.legend(loc="upper right", fontsize="small")
        ax_acc.legend(loc="lower right", fontsize="small")
    fig.suptitle(title or "comparison")
    if path is not None:
        _save(fig, path)
    return fig
