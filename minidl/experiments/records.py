"""What a run and a comparison leave on disk: run folders, metrics.json/csv, atomic writes.

A run folder holds ``metrics.json`` (the configuration, the dataset, one row
per evaluation, the final evaluation, the loss of every iteration, timings,
versions), ``metrics.csv`` (the per-evaluation rows), ``curves.png`` and
``model.npz``. Every file is written atomically (a temporary name, then a
rename): a run that dies leaves the previous complete version, never half a file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import tempfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import numpy as np

from .._atomic import atomic_write

__all__ = ["metrics_json", "new_run_dir", "write_metrics"]

RUNS_DIR = "runs"
EPOCH_COLUMNS = ("epoch", "iteration", "train_acc", "test_acc", "loss", "elapsed")


# -- folders --------------------------------------------------------------------------------


def new_run_dir(prefix: str, root: str | os.PathLike = RUNS_DIR) -> Path:
    """A folder name under ``root`` that does not exist yet: ``runs/train-20261128-153012``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{prefix}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path(root) / f"{prefix}-{stamp}-{n}"
    return path


RUN_FILES = ("metrics.json", "metrics.csv", "curves.png", "model.npz")
COMPARISON_FILES = ("comparison.md", "comparison.csv", "comparison.json", "comparison.png")


def holds_results(folder: Path) -> str | None:
    """The name of a result file minidl wrote in ``folder``, or None."""
    for name in ("metrics.json", "comparison.json"):
        if (folder / name).is_file():
            return name
    return None


def clear_results(folder: Path) -> None:
    """Remove what an earlier run or comparison wrote in ``folder`` (and nothing else).

    A comparison's run folders (``01-...`` holding ``metrics.json``) go too,
    when nothing but minidl's files is left in them.
    """
    for name in RUN_FILES + COMPARISON_FILES:
        (folder / name).unlink(missing_ok=True)
    for sub in folder.iterdir():
        if sub.is_dir() and sub.name[:2].isdigit() and (sub / "metrics.json").is_file():
            for name in RUN_FILES:
                (sub / name).unlink(missing_ok=True)
            remove_if_empty([sub])


def prepare_out(out: str | os.PathLike, *, overwrite: bool = False) -> tuple[Path, list[Path]]:
    """Create ``out`` if needed and check that files can be written there.

    A folder that already holds a run or a comparison is refused with
    ``FileExistsError``, unless ``overwrite``: then its earlier results are
    removed first, so that nothing of them is mixed with the new ones.

    Returns the path and the folders this call created, innermost first (so
    that a failed start can remove them again: no empty ``runs/`` is left).
    """
    out = Path(out)
    found = holds_results(out) if out.is_dir() else None
    if found is not None and not overwrite:
        raise FileExistsError(
            f"{os.fspath(out)!r} already holds results ({found}); choose another folder, "
            "or overwrite them (--overwrite, overwrite=True)")
    created = []
    for parent in (out, *out.parents):
        if parent.exists() or parent == parent.parent:
            break
        created.append(parent)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".minidl-probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
        if found is not None:
            clear_results(out)
    except OSError as exc:
        remove_if_empty(created)
        reason = exc.strerror or str(exc)
        raise OSError(f"cannot write to the output folder {os.fspath(out)!r}: {reason}") from None
    return out, created


def remove_if_empty(folders: Iterable[Path]) -> None:
    """Remove each folder that is empty, innermost first; leave the others."""
    for path in folders:
        try:
            path.rmdir()  # only succeeds when empty
        except OSError:
            pass


# -- files ------------------------------------------------------------------------------------


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as UTF-8, atomically."""
    with atomic_write(path) as fh:
        fh.write(text.encode("utf-8"))


def csv_text(columns: Iterable[str], rows: Iterable[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def metrics_json(metrics: dict) -> str:
    """``metrics`` as JSON, indented, with the long per-iteration list on one line."""
    head = {k: v for k, v in metrics.items() if k != "iteration_loss"}
    text = json.dumps(head, indent=1, allow_nan=False)
    losses = json.dumps(metrics.get("iteration_loss", []), allow_nan=False)
    return f'{text[:-2]},\n "iteration_loss": {losses}\n}}\n'


def write_metrics(out: Path, metrics: dict) -> None:
    """Write ``metrics.json`` and ``metrics.csv`` to ``out``, each atomically."""
    write_text(out / "metrics.json", metrics_json(metrics))
    write_text(out / "metrics.csv", csv_text(EPOCH_COLUMNS, metrics["epochs"]))


def write_run(out: Path, metrics: dict, network) -> None:
    """A finished or stopped run's files: metrics, the model and its curves (not without
    ``network``: a search's trials keep their metrics only)."""
    write_metrics(out, metrics)
    if network is None:
        return
    network.save(out / "model.npz")
    from .plotting import plot_curves

    plot_curves(metrics, out / "curves.png")


def finite(value: float) -> float | None:
    """``value`` as a float, or None when it is NaN or infinite (JSON has neither)."""
    value = float(value)
    return value if math.isfinite(value) else None


def environment() -> dict:
    from .. import __version__, get_backend
    from .._config import environment_note

    return {
        "minidl": __version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "backend": get_backend(),
        "build": environment_note(),  # OpenMP or a serial build, threads, SIMD kernels
    }


def write_comparison(out: Path, table) -> None:
    """``comparison.md``, ``.csv``, ``.json`` and ``.png`` of a ``ComparisonTable``."""
    write_text(out / "comparison.md", table.to_markdown())
    write_text(out / "comparison.csv", table.to_csv())
    env = environment()
    record = {
        "minidl_version": env["minidl"],
        "varied": table.varied,
        "rows": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in row.items()}
                 for row in table.rows],
        "runs": [{"label": r.label, "folder": None if r.out is None else r.out.name,
                  "config": r.metrics["config"], "status": r.metrics["status"]}
                 for r in table.results],
        "environment": env,
    }
    write_text(out / "comparison.json", json.dumps(record, indent=1, allow_nan=False) + "\n")
    from .plotting import plot_comparison

    plotted = [r for r in table.results if r.metrics["status"] != "failed"]  # failed: no curves
    dataset = plotted[0].metrics["dataset"]["title"] if plotted else ""
    title = f"{dataset}: comparing {', '.join(table.varied)}" if table.varied else None
    plot_comparison([r.metrics for r in plotted], [r.label for r in plotted],
                    out / "comparison.png", title=title)
