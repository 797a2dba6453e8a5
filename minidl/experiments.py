"""Experiments as function calls: train one configuration, or compare several.

``run_experiment`` is ``minidl train`` and ``compare`` is ``minidl compare``
without the command line, for notebooks::

    from minidl import run_experiment, compare

    result = run_experiment(lr=0.01, iters=2000)    # otherwise the seed's experiment
    result.history.test_acc                         # per-epoch test accuracy
    table = compare(activation=["relu", "sigmoid"], iters=2000, out="runs/activation")
    print(table.to_markdown())

A run's defaults are the seed's: MNIST, 784-50-10 ReLU, SGD with lr 0.1,
batches of 100, 10,000 iterations, weights drawn with std 0.01 after
``np.random.seed(1211)``. NumPy's global generator is seeded right before the
network is built, as the assignment's notebook does, so two runs with the same
configuration give the same numbers.

When ``out`` is given, a run writes there:

- ``metrics.json``: the configuration, the dataset, one row per evaluation
  (``epoch``, ``iteration``, ``train_acc``, ``test_acc``, ``loss``,
  ``elapsed``), the final evaluation, the loss of every iteration, timings,
  and the versions of minidl, NumPy and Python and the backend. Rewritten
  during training (after an evaluation, at most every 5 s) and when a run
  ends or is interrupted, so a stopped run keeps what it had.
- ``metrics.csv``: the per-evaluation rows.
- ``curves.png``: loss per iteration, train and test accuracy per epoch.
- ``model.npz``: parameters and architecture (``MultiLayerNet.load``).

Evaluations follow the seed's loop: after iterations 0, e, 2e, ... where an
epoch e is ``max(n_train / batch_size, 1)`` iterations. A row's ``loss`` is the
mean batch loss over the iterations since the previous evaluation, up to and
including this one (the first row: iteration 0's loss). ``final`` evaluates
the network as training left it, which ``model.npz`` holds. Non-finite
losses (a diverging run) are written as ``null``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import training
from ._atomic import atomic_write
from .networks import ACTIVATIONS, MultiLayerNet

__all__ = [
    "ComparisonTable",
    "ExperimentConfig",
    "RunResult",
    "compare",
    "new_run_dir",
    "run_experiment",
]

SEED = 1211
DEFAULT_ITERS = 10000
DTYPES = ("float32", "float64")
INIT_NAMES = ("he", "relu", "xavier", "sigmoid")
RUNS_DIR = "runs"


# -- configuration ----------------------------------------------------------------------


def parse_hidden(value: Any) -> tuple[int, ...]:
    """Hidden layer sizes from ``50``, ``(100, 50)`` or ``"100,50"``."""
    if isinstance(value, str):
        try:
            sizes = tuple(int(part) for part in value.split(","))
        except ValueError:
            raise ValueError(
                f"hidden: {value!r} is not a comma-separated list of layer sizes such as 100,50"
            ) from None
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        sizes = (int(value),)
    elif isinstance(value, (list, tuple)):
        sizes = tuple(_integer("hidden", v) for v in value)
    else:
        raise TypeError(f"hidden: expected sizes such as 50, (100, 50) or '100,50', got {value!r}")
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"hidden: layer sizes must be positive integers, got {value!r}")
    return sizes


def _integer(name: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value:g}")
    return value


def _dataset_names() -> list[str]:
    from .datasets import DATASETS

    return list(DATASETS)


@dataclass(frozen=True)
class ExperimentConfig:
    """One training run; every field defaults to the seed's experiment.

    ``dataset``: a name from ``minidl.datasets.DATASETS`` ('mnist',
    'fashion-mnist', 'cifar-10', 'mnist-mini'). ``hidden``: hidden layer sizes,
    ``50``, ``(100, 50)`` or ``"100,50"``. ``activation``: 'relu' or 'sigmoid'.
    ``lr``, ``batch_size``: of the SGD loop. ``iters`` or ``epochs``: how long
    (give at most one; neither means 10,000 iterations; ``epochs`` becomes
    ``ceil(epochs * max(n_train / batch_size, 1))`` iterations). ``seed``: for
    ``np.random.seed`` before the network is built. ``dtype``: 'float32' or
    'float64'. ``grad``: 'backprop' or 'numerical'. ``weight_init_std``: a
    number, or 'he'/'xavier' (the book's scaled initialisations).
    ``data_dir``: where to look for the dataset first.

    Values are checked and normalised on construction (``ValueError`` or
    ``TypeError`` naming the field).
    """

    dataset: str = "mnist"
    hidden: tuple[int, ...] = (50,)
    activation: str = "relu"
    lr: float = 0.1
    batch_size: int = 100
    iters: int | None = None
    epochs: float | None = None
    seed: int = SEED
    dtype: str = "float64"
    grad: str = "backprop"
    weight_init_std: float | str = 0.01
    data_dir: str | None = None

    def __post_init__(self) -> None:
        def put(name, value):  # frozen: normalise through object.__setattr__
            object.__setattr__(self, name, value)

        names = _dataset_names()
        if self.dataset not in names:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose from {', '.join(names)}")
        put("hidden", parse_hidden(self.hidden))
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; choose from {', '.join(ACTIVATIONS)}"
            )
        put("lr", _positive_number("lr", self.lr))
        put("batch_size", _integer("batch_size", self.batch_size, 1))
        if self.iters is not None and self.epochs is not None:
            raise ValueError("give iters or epochs, not both")
        if self.iters is not None:
            put("iters", _integer("iters", self.iters, 0))
        if self.epochs is not None:
            put("epochs", _positive_number("epochs", self.epochs))
        seed = _integer("seed", self.seed, 0)
        if seed >= 2**32:
            raise ValueError(f"seed must be below 2**32, got {seed}")
        put("seed", seed)
        try:
            dtype = np.dtype(self.dtype).name
        except TypeError:
            dtype = str(self.dtype)
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        put("dtype", dtype)
        if self.grad not in training.GRAD_METHODS:
            raise ValueError(
                f"grad must be one of {', '.join(training.GRAD_METHODS)}, got {self.grad!r}"
            )
        put("weight_init_std", _init_std(self.weight_init_std))
        if self.data_dir is not None:
            put("data_dir", os.fspath(self.data_dir))

    def iter_per_epoch(self, n_train: int) -> float:
        """The seed's epoch size: ``max(n_train / batch_size, 1)`` iterations."""
        return max(n_train / self.batch_size, 1)

    def iterations(self, n_train: int) -> int:
        """How many SGD steps this run takes on a training set of ``n_train``."""
        if self.epochs is not None:
            # round first: 0.1 * 600 is 60.000000000000007, which must stay 60
            return math.ceil(round(self.epochs * self.iter_per_epoch(n_train), 9))
        return DEFAULT_ITERS if self.iters is None else self.iters

    def label(self, names: Iterable[str] | None = None) -> str:
        """``"lr=0.01 activation=sigmoid"`` for the fields ``names`` (all of them by default)."""
        if names is None:
            names = [f.name for f in dataclasses.fields(self)]
        return " ".join(f"{name}={_format_value(getattr(self, name))}" for name in names)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d


def _init_std(value: Any) -> float | str:
    if isinstance(value, str):
        if value.lower() in INIT_NAMES:
            return value.lower()
        try:
            value = float(value)
        except ValueError:
            raise ValueError(
                f"weight_init_std must be a positive number or one of {', '.join(INIT_NAMES)}, "
                f"got {value!r}"
            ) from None
    return _positive_number("weight_init_std", value)


def _format_value(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _architecture(config: ExperimentConfig, n_features: int | str, n_classes: int | str) -> str:
    sizes = "-".join(str(s) for s in (n_features, *config.hidden, n_classes))
    return f"{sizes} {config.activation}"


# -- results ----------------------------------------------------------------------------


@dataclass
class RunResult:
    """What ``run_experiment`` returns: the curves, the trained network and the record.

    ``history``: the ``minidl.training.History`` of the run. ``metrics``: the
    dict written as ``metrics.json``. ``out``: the folder written, or None.
    """

    config: ExperimentConfig
    history: training.History
    network: MultiLayerNet
    metrics: dict
    out: Path | None = None
    label: str = ""

    @property
    def interrupted(self) -> bool:
        return self.metrics["status"] == "interrupted"

    @property
    def final_test_acc(self) -> float | None:
        final = self.metrics["final"]
        return None if final is None else final["test_acc"]

    @property
    def final_train_acc(self) -> float | None:
        final = self.metrics["final"]
        return None if final is None else final["train_acc"]

    @property
    def best_test_acc(self) -> float | None:
        """The best test accuracy of the per-epoch evaluations (the final one aside)."""
        rows = self.metrics["epochs"]
        return max(row["test_acc"] for row in rows) if rows else None

    @property
    def best_epoch(self) -> int | None:
        """The epoch of ``best_test_acc`` (the first, if several tie)."""
        rows = self.metrics["epochs"]
        return max(rows, key=lambda row: row["test_acc"])["epoch"] if rows else None

    @property
    def seconds(self) -> float:
        """Training time, the per-epoch evaluations included (as the seed times it)."""
        return self.metrics["timings"]["train_seconds"]

    def __repr__(self) -> str:
        acc = self.final_test_acc
        acc = "n/a" if acc is None else f"{acc:.4f}"
        where = f", out={str(self.out)!r}" if self.out else ""
        return (f"RunResult({self.label or self.config.label(['dataset', 'hidden', 'lr'])!r}, "
                f"final test acc {acc}, {self.seconds:.1f} s{where})")


@dataclass
class _Data:
    x_train: np.ndarray
    t_train: np.ndarray
    x_test: np.ndarray
    t_test: np.ndarray
    info: dict
    seconds: float


def _load(config: ExperimentConfig) -> _Data:
    from .datasets import DATASETS, dataset_status, load_dataset

    start = time.perf_counter()
    (x_train, t_train), (x_test, t_test) = load_dataset(
        config.dataset, normalize=True, flatten=True, one_hot_label=False,
        data_dir=config.data_dir,
    )
    seconds = time.perf_counter() - start
    meta = DATASETS[config.dataset]
    try:
        found = dataset_status(config.dataset, data_dir=config.data_dir).get("found")
    except (OSError, ValueError, KeyError):  # where it came from is a courtesy, not a failure
        found = None
    info = {
        "name": config.dataset,
        "title": meta.title,
        "found": None if found is None else os.fspath(found),
        "n_train": len(x_train),
        "n_test": len(x_test),
        "n_features": int(np.prod(x_train.shape[1:])),
        "n_classes": int(meta.n_classes),
    }
    return _Data(x_train, t_train, x_test, t_test, info, seconds)


def _check_sizes(config: ExperimentConfig, n_train: int) -> None:
    if config.batch_size > n_train:
        raise ValueError(
            f"batch_size {config.batch_size} is larger than {config.dataset}'s "
            f"{n_train} training images"
        )


def _build_network(config: ExperimentConfig, data: _Data) -> MultiLayerNet:
    np.random.seed(config.seed)  # right before building, as the seed's notebook does
    return MultiLayerNet(
        data.info["n_features"], list(config.hidden), data.info["n_classes"],
        activation=config.activation, weight_init_std=config.weight_init_std, dtype=config.dtype,
    )


def _as_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    # float32 runs compute in float32 only if the images are float32 too; for float64,
    # NumPy's promotion of float32 images is exact, so the images are left as loaded.
    if dtype == "float32" and x.dtype != np.float32:
        return x.astype(np.float32)
    return x


# -- files --------------------------------------------------------------------------------


def new_run_dir(prefix: str, root: str | os.PathLike = RUNS_DIR) -> Path:
    """A folder name under ``root`` that does not exist yet: ``runs/train-20261128-153012``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{prefix}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path(root) / f"{prefix}-{stamp}-{n}"
    return path


def _prepare_out(out: str | os.PathLike) -> tuple[Path, bool]:
    """Create ``out`` if needed and check that files can be written there.

    Returns the path and whether it was created (so that an empty folder can be
    removed again when the run fails before writing anything).
    """
    out = Path(out)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".minidl-probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OSError(f"cannot write to the output folder {os.fspath(out)!r}: {reason}") from None
    return out, created


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()  # only succeeds when empty
    except OSError:
        pass


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as UTF-8, atomically."""
    with atomic_write(path) as fh:
        fh.write(text.encode("utf-8"))


EPOCH_COLUMNS = ("epoch", "iteration", "train_acc", "test_acc", "loss", "elapsed")


def _csv_text(columns: Iterable[str], rows: Iterable[dict]) -> str:
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
    _write_atomic(out / "metrics.json", metrics_json(metrics))
    _write_atomic(out / "metrics.csv", _csv_text(EPOCH_COLUMNS, metrics["epochs"]))


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _environment() -> dict:
    from . import __version__, get_backend

    return {
        "minidl": __version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "backend": get_backend(),
    }


# -- one run --------------------------------------------------------------------------------


class _Recorder:
    """Training callbacks: progress bar, per-epoch lines, and the metrics kept up to date."""

    WRITE_INTERVAL = 5.0  # seconds between rewrites of metrics.json during training

    def __init__(self, metrics: dict, out: Path | None, bar, verbose: bool, prefix: str):
        self.metrics = metrics
        self.out = out
        self.bar = bar
        self.verbose = verbose
        self.prefix = prefix
        self.last_eval = -1
        self.last_write = -float("inf")

    def on_iteration(self, i: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_epoch(self, i: int, history: training.History) -> None:
        losses = history.train_loss[self.last_eval + 1: i + 1]
        self.last_eval = i
        row = {
            "epoch": len(self.metrics["epochs"]),
            "iteration": i,
            "train_acc": history.train_acc[-1],
            "test_acc": history.test_acc[-1],
            "loss": _finite(np.mean(losses)),
            "elapsed": history.epoch_seconds[-1],
        }
        self.metrics["epochs"].append(row)
        if self.bar is not None:
            self.bar.set_postfix_str(f"test acc {row['test_acc']:.4f}", refresh=False)
        if self.verbose:
            _say(self.prefix + format_epoch(row))
        # keep metrics.json current for a run that dies, without slowing a timed run down
        now = time.perf_counter()
        if self.out is not None and now - self.last_write >= self.WRITE_INTERVAL:
            self.metrics["iteration_loss"] = [_finite(v) for v in history.train_loss]
            write_metrics(self.out, self.metrics)
            self.last_write = now



def _say(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line)  # above the progress bar when there is one


def format_epoch(row: dict) -> str:
    """One per-epoch line, like the seed's prints."""
    loss = "nan" if row["loss"] is None else f"{row['loss']:.4f}"
    return (f"epoch {row['epoch']:3d}  iter {row['iteration']:6d}  "
            f"train acc {row['train_acc']:.4f}  test acc {row['test_acc']:.4f}  "
            f"loss {loss}  {row['elapsed']:7.1f} s")


def _make_bar(total: int, progress: bool | None, label: str):
    from tqdm import tqdm

    # disable=None: a bar only when stderr is a terminal
    disable = None if progress is None else not progress
    bar = tqdm(total=total, desc=label or None, unit="it", disable=disable, leave=False,
               dynamic_ncols=True)
    return bar


def _run(config: ExperimentConfig, data: _Data, out: Path | None, *, progress: bool | None,
         verbose: bool, label: str = "", prefix: str = "") -> RunResult:
    """Train ``config`` on already loaded ``data``; write to ``out`` (already prepared)."""
    started = datetime.now().astimezone()
    start_run = time.perf_counter()
    n_train = data.info["n_train"]
    _check_sizes(config, n_train)
    iters = config.iterations(n_train)
    x_train = _as_dtype(data.x_train, config.dtype)
    x_test = _as_dtype(data.x_test, config.dtype)
    network = _build_network(config, data)

    metrics = {
        "minidl_version": _environment()["minidl"],
        "status": "running",
        "label": label,
        "config": {**config.as_dict(), "iters": iters},
        "dataset": data.info,
        "network": {**network.architecture(),
                    "description": _architecture(config, data.info["n_features"],
                                                 data.info["n_classes"])},
        "iter_per_epoch": config.iter_per_epoch(n_train),
        "epochs": [],
        "final": None,
        "iteration_loss": [],
        "timings": {"started": started.isoformat(timespec="seconds"),
                    "load_seconds": data.seconds},
        "environment": _environment(),
    }
    bar = _make_bar(iters, progress, label)
    recorder = _Recorder(metrics, out, bar, verbose, prefix)
    interrupt = None
    try:
        history = training.train(
            network, x_train, data.t_train, x_test, data.t_test,
            lr=config.lr, batch_size=config.batch_size, iters=iters, grad=config.grad,
            on_epoch=recorder.on_epoch, on_iteration=recorder.on_iteration,
        )
    except KeyboardInterrupt as exc:
        history = getattr(exc, "history", None) or training.History()
        interrupt = exc
    finally:
        bar.close()

    metrics["iteration_loss"] = [_finite(v) for v in history.train_loss]
    timings = metrics["timings"]
    timings["train_seconds"] = history.seconds
    timings["seconds_per_iteration"] = history.seconds / max(history.iterations, 1)
    if interrupt is None:
        metrics["status"] = "finished"
        start = time.perf_counter()
        metrics["final"] = _final_evaluation(network, history, metrics, x_train, data.t_train,
                                             x_test, data.t_test)
        timings["final_eval_seconds"] = time.perf_counter() - start
    else:
        metrics["status"] = "interrupted"
    metrics["iterations_done"] = history.iterations
    timings["finished"] = datetime.now().astimezone().isoformat(timespec="seconds")
    timings["total_seconds"] = data.seconds + time.perf_counter() - start_run
    result = RunResult(config, history, network, metrics, out, label)
    if out is not None:
        write_metrics(out, metrics)
        network.save(out / "model.npz")
        from .plotting import plot_curves

        plot_curves(metrics, out / "curves.png")
    if interrupt is not None:
        interrupt.result = result
        interrupt.out = out
        raise interrupt
    return result


def _final_evaluation(network, history, metrics, x_train, t_train, x_test, t_test) -> dict:
    """Accuracy of the network as training left it (the model that is saved)."""
    rows = metrics["epochs"]
    if rows and rows[-1]["iteration"] == history.iterations - 1:
        last = rows[-1]  # the last evaluation already saw the final network
        return {"iterations": history.iterations, "train_acc": last["train_acc"],
                "test_acc": last["test_acc"]}
    return {"iterations": history.iterations,
            "train_acc": float(network.accuracy(x_train, t_train)),
            "test_acc": float(network.accuracy(x_test, t_test))}


def _config_from(config: ExperimentConfig | dict | None, options: dict) -> ExperimentConfig:
    if config is None:
        return ExperimentConfig(**options)
    if isinstance(config, dict):
        return ExperimentConfig(**{**config, **options})
    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"expected an ExperimentConfig or a dict, got {type(config).__name__}")
    return dataclasses.replace(config, **options) if options else config


def run_experiment(config: ExperimentConfig | dict | None = None, /, *,
                   out: str | os.PathLike | None = None, progress: bool | None = None,
                   verbose: bool = True, **options) -> RunResult:
    """Train one network and return its ``RunResult`` (``.history``, ``.network``, ``.metrics``).

    ``config``: an ``ExperimentConfig`` (or a dict of its fields); ``options``
    (``lr=0.01``, ``hidden=(100, 50)``, ...) override it, or give the whole
    configuration. ``out``: a folder to write ``metrics.json``, ``metrics.csv``,
    ``curves.png`` and ``model.npz`` to (created if needed; nothing is written
    when None). ``progress``: a progress bar on stderr (None: only on a
    terminal). ``verbose``: print a line per epoch.

    A ``KeyboardInterrupt`` during training writes what was recorded (status
    'interrupted') and is re-raised with ``.result`` and ``.out`` attached.
    """
    config = _config_from(config, options)
    created = False
    if out is not None:
        out, created = _prepare_out(out)
    try:
        data = _load(config)
        return _run(config, data, out, progress=progress, verbose=verbose)
    except BaseException:
        if created:
            _remove_if_empty(out)
        raise


# -- comparisons ------------------------------------------------------------------------------

TABLE_HEADERS = {
    "run": "run",
    "final_test_acc": "final test acc",
    "best_test_acc": "best test acc",
    "best_epoch": "best epoch",
    "final_train_acc": "final train acc",
    "iterations": "iterations",
    "seconds": "time (s)",
    "status": "status",
}


class ComparisonTable:
    """The result of ``compare``: one row (a dict) per run, and the runs themselves.

    ``rows``: list of dicts with the keys ``columns``; ``results``: the
    ``RunResult`` of each row. ``to_markdown()``, ``to_csv()``; ``str()`` is
    the Markdown table, which notebooks render.
    """

    def __init__(self, columns: list[str], rows: list[dict], results: list[RunResult],
                 varied: list[str]):
        self.columns = columns
        self.rows = rows
        self.results = results
        self.varied = varied

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]

    def _cell(self, key: str, value: Any) -> str:
        if value is None:
            return ""
        if key.endswith("_acc"):
            return f"{value:.4f}"
        if key == "seconds":
            return f"{value:.1f}"
        return _format_value(value)

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table, columns padded to line up."""
        headers = [TABLE_HEADERS.get(c, c) for c in self.columns]
        cells = [[self._cell(c, row.get(c)) for c in self.columns] for row in self.rows]
        widths = [max([len(h)] + [len(r[j]) for r in cells]) for j, h in enumerate(headers)]
        numeric = [c not in ("run", "status", *self.varied) for c in self.columns]

        def line(values):
            padded = [v.rjust(w) if num else v.ljust(w)
                      for v, w, num in zip(values, widths, numeric)]
            return "| " + " | ".join(padded) + " |"

        rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                              for w, num in zip(widths, numeric)) + "|"
        return "\n".join([line(headers), rule, *(line(r) for r in cells)]) + "\n"

    def to_csv(self) -> str:
        """CSV with a header of the column keys; hidden sizes as '100,50'."""
        rows = [{k: (_format_value(v) if isinstance(v, tuple) else v) for k, v in row.items()}
                for row in self.rows]
        return _csv_text(self.columns, rows)

    def to_pandas(self):
        """The rows as a ``pandas.DataFrame`` (pandas is not a dependency of minidl)."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=self.columns)

    def __str__(self) -> str:
        return self.to_markdown()

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def __repr__(self) -> str:
        return f"ComparisonTable({len(self.rows)} runs, varied: {', '.join(self.varied) or '-'})"


def _alternatives(name: str, value: Any) -> list:
    """The values an option takes in a comparison: a list gives several, anything else one."""
    if name == "hidden":
        # a tuple (100, 50) or "100,50" is one architecture; a list holds alternatives
        return list(value) if isinstance(value, list) else [value]
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    return [value]


def expand_configs(options: dict) -> tuple[list[ExperimentConfig], list[str]]:
    """Every combination of the options' values (their cartesian product), and which vary.

    Options given one value are the same in every configuration. Duplicate
    configurations are dropped, keeping the first.
    """
    fields = [f.name for f in dataclasses.fields(ExperimentConfig)]
    for name in options:
        if name not in fields:
            raise TypeError(f"unknown option {name!r}; options are {', '.join(fields)}")
    names = list(options)
    choices = []
    for name in names:
        values = _alternatives(name, options[name])
        if not values:
            raise ValueError(f"{name}: no values to compare")
        choices.append(values)
    configs: list[ExperimentConfig] = []
    for combo in itertools.product(*choices):
        config = ExperimentConfig(**dict(zip(names, combo)))
        if config not in configs:
            configs.append(config)
    return configs, _varied(configs, names)


def _varied(configs: list[ExperimentConfig], names: Iterable[str] | None = None) -> list[str]:
    if names is None:
        names = [f.name for f in dataclasses.fields(ExperimentConfig)]
    return [n for n in names if len({getattr(c, n) for c in configs}) > 1]


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in ".-_" else "-" for c in text.replace(" ", "_"))
    return keep.strip("-_") or "run"


def _table(results: list[RunResult], varied: list[str]) -> ComparisonTable:
    columns = ["run", *varied, "final_test_acc", "best_test_acc", "best_epoch",
               "final_train_acc", "iterations", "seconds"]
    interrupted = any(r.interrupted for r in results)
    if interrupted:
        columns.append("status")
    rows = []
    for r in results:
        row = {"run": r.label}
        row.update({name: getattr(r.config, name) for name in varied})
        row.update({
            "final_test_acc": r.final_test_acc,
            "best_test_acc": r.best_test_acc,
            "best_epoch": r.best_epoch,
            "final_train_acc": r.final_train_acc,
            "iterations": r.history.iterations,
            "seconds": r.seconds,
        })
        if interrupted:
            row["status"] = r.metrics["status"]
        rows.append(row)
    return ComparisonTable(columns, rows, results, varied)


def _write_comparison(out: Path, table: ComparisonTable) -> None:
    _write_atomic(out / "comparison.md", table.to_markdown())
    _write_atomic(out / "comparison.csv", table.to_csv())
    record = {
        "minidl_version": _environment()["minidl"],
        "varied": table.varied,
        "rows": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in row.items()}
                 for row in table.rows],
        "runs": [{"label": r.label, "folder": None if r.out is None else r.out.name,
                  "config": r.metrics["config"], "status": r.metrics["status"]}
                 for r in table.results],
        "environment": _environment(),
    }
    _write_atomic(out / "comparison.json", json.dumps(record, indent=1, allow_nan=False) + "\n")
    from .plotting import plot_comparison

    title = f"{table.results[0].metrics['dataset']['title']}: comparing {', '.join(table.varied)}" \
        if table.varied else None
    plot_comparison([r.metrics for r in table.results], [r.label for r in table.results],
                    out / "comparison.png", title=title)


def compare(configs: Iterable[ExperimentConfig | dict] | None = None, /, *,
            out: str | os.PathLike | None = None, progress: bool | None = None,
            verbose: bool = True, **options) -> ComparisonTable:
    """Train several configurations one after another and tabulate them.

    Either give ``options`` where a list means alternatives, e.g.
    ``compare(lr=[0.1, 0.01])``, ``compare(hidden=[50, (100, 50)], iters=2000)``
    (several lists: every combination), or a list of configurations
    ``compare([ExperimentConfig(lr=0.1), ExperimentConfig(lr=0.01)])``. All runs
    use the same seed unless told otherwise. ``hidden``: only a list gives
    alternatives, a tuple ``(100, 50)`` is one two-layer architecture.

    ``out``: a folder for ``comparison.md``, ``comparison.csv``,
    ``comparison.json``, ``comparison.png`` (every run's curves) and a
    sub-folder per run with its own files. Returns a ``ComparisonTable``: the
    final network's test and train accuracy, the best per-epoch test accuracy
    and its epoch, the training time; ``.results`` holds each run's
    ``RunResult``. On Ctrl-C the table of the runs so far is written,
    and the ``KeyboardInterrupt`` is re-raised with ``.table`` and ``.out``.
    """
    if configs is not None:
        if options:
            raise TypeError("compare(): give configurations or options, not both")
        configs = [_config_from(c, {}) for c in configs]
        if not configs:
            raise ValueError("compare(): no configurations")
        varied = _varied(configs)
    else:
        configs, varied = expand_configs(options)

    created = False
    if out is not None:
        out, created = _prepare_out(out)
    results: list[RunResult] = []
    try:
        data = {}
        for config in configs:  # load every dataset first: a missing one fails before training
            key = (config.dataset, config.data_dir)
            if key not in data:
                data[key] = _load(config)
        for config in configs:
            _check_sizes(config, data[(config.dataset, config.data_dir)].info["n_train"])
        for k, config in enumerate(configs, 1):
            label = config.label(varied) if varied else "run"
            run_out = None
            if out is not None:
                run_out, _ = _prepare_out(out / f"{k:02d}-{_slug(label)}")
            if verbose:
                _say(f"[{k}/{len(configs)}] {label}")
            try:
                results.append(_run(config, data[(config.dataset, config.data_dir)], run_out,
                                    progress=progress, verbose=verbose, label=label,
                                    prefix="  "))
            except KeyboardInterrupt as exc:
                if getattr(exc, "result", None) is not None:
                    results.append(exc.result)
                table = _table(results, varied)
                if out is not None and results:
                    _write_comparison(out, table)
                exc.table = table
                exc.out = out
                raise
    except BaseException:
        if created and not results:
            _remove_if_empty(out)
        raise
    table = _table(results, varied)
    if out is not None:
        _write_comparison(out, table)
    return table
