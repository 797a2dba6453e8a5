"""One run: load the data, seed NumPy, build the network, train it, record and write it.

``run_experiment`` is ``minidl train`` without the command line. Evaluations
follow the course notebook's loop: after iterations 0, e, 2e, ... where an epoch e is
``max(n_train / batch_size, 1)`` iterations. A row's ``loss`` is the mean batch
loss over the iterations since the previous evaluation, up to and including
this one (the first row: iteration 0's loss). ``final`` evaluates the network
as training left it, which ``model.npz`` holds. Non-finite losses (a diverging
run) are written as ``null``.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from .. import training
from ..networks import MultiLayerNet, MultiLayerNetExtend, SimpleConvNet
from . import records
from .config import ExperimentConfig, architecture, config_from
from .memory import check_memory

__all__ = ["RunResult", "run_experiment"]


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

    error: BaseException | None = None  # what made a run of a comparison fail

    @property
    def status(self) -> str:
        """'finished', 'interrupted', 'diverged' (stopped at a non-finite loss) or 'failed'."""
        return self.metrics["status"]

    @property
    def interrupted(self) -> bool:
        return self.metrics["status"] == "interrupted"

    @property
    def diverged(self) -> bool:
        """Whether the loss became NaN or infinite (``metrics['divergence']`` says where)."""
        return self.metrics.get("divergence") is not None

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
        """The best test accuracy of all evaluations: the per-epoch ones and the final one."""
        accs = [row["test_acc"] for row in self.metrics["epochs"]]
        if self.final_test_acc is not None:
            accs.append(self.final_test_acc)
        return max(accs) if accs else None

    @property
    def best_epoch(self) -> int | str | None:
        """The epoch of ``best_test_acc`` (the first, if several tie), or 'final' when only
        the final evaluation reached it."""
        best = self.best_test_acc
        for row in self.metrics["epochs"]:
            if row["test_acc"] == best:
                return row["epoch"]
        return None if best is None else "final"

    @property
    def seconds(self) -> float:
        """Training time, the per-epoch evaluations included (as the course notebook times it)."""
        return self.metrics["timings"]["train_seconds"]

    def __repr__(self) -> str:
        acc = self.final_test_acc
        acc = "n/a" if acc is None else f"{acc:.4f}"
        where = f", out={str(self.out)!r}" if self.out else ""
        return (f"RunResult({self.label or self.config.label(['dataset', 'hidden', 'lr'])!r}, "
                f"final test acc {acc}, {self.seconds:.1f} s{where})")


# -- data and network ---------------------------------------------------------------------------


@dataclass
class Data:
    """A loaded dataset, flattened and normalised, with what the record says about it."""

    x_train: np.ndarray
    t_train: np.ndarray
    x_test: np.ndarray
    t_test: np.ndarray
    info: dict
    seconds: float


def data_key(config: ExperimentConfig) -> tuple:
    """Configurations with the same key train on the same loaded ``Data``."""
    return config.dataset, config.data_dir, config.model == "convnet"


def load(config: ExperimentConfig, download: bool | None = None) -> Data:
    """``config``'s dataset as a run trains on it. ``download``: as ``load_dataset``'s."""
    from ..datasets import DATASETS, dataset_status, load_dataset

    start = time.perf_counter()
    convnet = config.model == "convnet"  # images as (C, H, W); CIFAR-10's colours matter
    colour = {"grayscale": False} if convnet and config.dataset == "cifar-10" else {}
    (x_train, t_train), (x_test, t_test) = load_dataset(
        config.dataset, normalize=True, flatten=not convnet, one_hot_label=False,
        data_dir=config.data_dir, download=download, **colour,
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
    return Data(x_train, t_train, x_test, t_test, info, seconds)


def check_sizes(config: ExperimentConfig, n_train: int) -> None:
    if config.batch_size > n_train:
        raise ValueError(
            f"batch_size {config.batch_size} is larger than {config.dataset}'s "
            f"{n_train} training images"
        )


def layer_sizes(config: ExperimentConfig, data: Data) -> list[int]:
    return [data.info["n_features"], *config.hidden, data.info["n_classes"]]


def build_network(config: ExperimentConfig, data: Data) -> MultiLayerNet | SimpleConvNet:
    """The configuration's network, weights drawn right after ``np.random.seed(config.seed)``.

    Raises ``NotEnoughMemory`` (a ``MemoryError``) first when a fully connected
    network clearly cannot fit.
    """
    if config.model != "convnet":
        check_memory(layer_sizes(config, data), config.dtype, config.batch_size)
    np.random.seed(config.seed)  # right before building, as the course notebook does
    if config.model == "convnet":  # the book's ch07 network, its hidden layer from the config
        return SimpleConvNet(
            input_dim=data.x_train.shape[1:], hidden_size=config.hidden[0],
            output_size=data.info["n_classes"], weight_init_std=config.weight_init_std,
            dtype=config.dtype)
    common = {"activation": config.activation, "weight_init_std": config.weight_init_std,
              "weight_decay_lambda": config.weight_decay, "dtype": config.dtype}
    if config.dropout or config.batchnorm:  # the book's network for both
        return MultiLayerNetExtend(
            data.info["n_features"], list(config.hidden), data.info["n_classes"], **common,
            use_dropout=bool(config.dropout), dropout_ration=config.dropout,
            use_batchnorm=config.batchnorm)
    return MultiLayerNet(data.info["n_features"], list(config.hidden), data.info["n_classes"],
                         **common)


def _as_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    # float32 runs compute in float32 only if the images are float32 too; for float64,
    # NumPy's promotion of float32 images is exact, so the images are left as loaded.
    if dtype == "float32" and x.dtype != np.float32:
        return x.astype(np.float32)
    return x


# -- progress and per-epoch lines ------------------------------------------------------------------


class _Recorder:
    """Training callbacks: progress bar, per-epoch lines, and the metrics kept up to date."""

    WRITE_INTERVAL = 5.0  # seconds between rewrites of metrics.json during training

    STOP_CHECK = 100  # iterations between two calls of ``stop`` (on Dask: at most 1/s)

    def __init__(self, metrics: dict, out: Path | None, bar, verbose: bool, prefix: str,
                 keep_going: bool = False, stop=None):
        self.stop = stop
        self.metrics = metrics
        self.out = out
        self.bar = bar
        self.verbose = verbose
        self.prefix = prefix
        self.keep_going = keep_going
        self.last_eval = -1
        self.last_write = -float("inf")

    def on_iteration(self, i: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
        if not math.isfinite(loss) and self.metrics.get("divergence") is None:
            self._diverged(i, loss)
        if self.stop is not None and i % self.STOP_CHECK == 0 and self.stop():
            raise Cancelled(f"cancelled at iteration {i}")

    def _diverged(self, i: int, loss: float) -> None:
        """Say once that the loss became non-finite; stop unless told to keep going."""
        lr = self.metrics["config"]["lr"]
        message = (f"the loss became {loss} at iteration {i} (lr {lr:g}): training diverged; "
                   "try a smaller learning rate")
        message += ("; training goes on (keep_going)" if self.keep_going else
                    "; stopped there (keep_going=True, or --keep-going, trains on)")
        self.metrics["divergence"] = {"iteration": i, "loss": str(loss), "message": message}
        if self.verbose:
            say(self.prefix + message, file=sys.stderr)
        if not self.keep_going:
            raise _Diverged(message)

    def on_epoch(self, i: int, history: training.History) -> None:
        losses = history.train_loss[self.last_eval + 1: i + 1]
        self.last_eval = i
        row = {
            "epoch": len(self.metrics["epochs"]),
            "iteration": i,
            "train_acc": history.train_acc[-1],
            "test_acc": history.test_acc[-1],
            "loss": records.finite(np.mean(losses)),
            "elapsed": history.epoch_seconds[-1],
        }
        self.metrics["epochs"].append(row)
        if self.bar is not None:
            self.bar.set_postfix_str(f"test acc {row['test_acc']:.4f}", refresh=False)
        if self.verbose:
            say(self.prefix + format_epoch(row))
        # keep metrics.json current for a run that dies, without slowing a timed run down
        now = time.perf_counter()
        if self.out is not None and now - self.last_write >= self.WRITE_INTERVAL:
            self.metrics["iteration_loss"] = [records.finite(v) for v in history.train_loss]
            records.write_metrics(self.out, self.metrics)
            self.last_write = now


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (Jupyter, JupyterLab, Colab, VS Code)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    get_ipython = getattr(ipython, "get_ipython", None)  # None while IPython is half imported
    shell = get_ipython() if get_ipython is not None else None
    return shell is not None and ("IPKernelApp" in getattr(shell, "config", {})
                                  or type(shell).__name__ == "ZMQInteractiveShell")


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in ("", "0", "false", "no", "off")


def progress_default() -> bool:
    """Whether a progress bar shows when ``progress=None``.

    ``MINIDL_PROGRESS=1`` or ``0`` decides; otherwise never under CI (``$CI``
    set, as CI services do), always in a notebook, and on a terminal only when
    stderr is one (not in a pipe or a log file).
    """
    forced = os.environ.get("MINIDL_PROGRESS")
    if forced is not None and forced.strip():
        return _truthy(forced)
    if _truthy(os.environ.get("CI")):
        return False
    if in_notebook():
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # no stderr, or a closed one
        return False


def _tqdm():
    """``tqdm.auto``'s class: a widget in a notebook with ipywidgets, text elsewhere."""
    with warnings.catch_warnings():
        # without ipywidgets, tqdm.auto falls back to text and warns about it: the text is fine
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm
    return tqdm


def say(line: str, file=None) -> None:
    _tqdm().write(line, file=file)  # above the progress bar when there is one


class Cancelled(Exception):  # a run stopped on request, not an error in it
    """A sweep's run stopped because the sweep was cancelled (Ctrl-C on the caller's side)."""


class _Diverged(KeyboardInterrupt):
    """Stops the training loop at a non-finite loss.

    ``training.train`` hands its History over on a ``KeyboardInterrupt`` (as
    ``exc.history``): stopping through one keeps the record as Ctrl-C does.
    ``_run`` catches it; it never leaves this module.
    """


def format_epoch(row: dict) -> str:
    """One per-epoch line, like the course notebook's prints."""
    loss = "nan" if row["loss"] is None else f"{row['loss']:.4f}"
    return (f"epoch {row['epoch']:3d}  iter {row['iteration']:6d}  "
            f"train acc {row['train_acc']:.4f}  test acc {row['test_acc']:.4f}  "
            f"loss {loss}  {row['elapsed']:7.1f} s")


def _make_bar(total: int, progress: bool | None, label: str):
    if progress is None:
        progress = progress_default()
    notebook = in_notebook()
    # in a notebook the finished bar stays (the cell's record); on a terminal it is
    # cleared, the per-epoch lines and the result say the rest
    return _tqdm()(total=total, desc=label or None, unit="it", disable=not progress,
                   leave=notebook, dynamic_ncols=not notebook)


# -- the run ------------------------------------------------------------------------------------------


def _run(config: ExperimentConfig, data: Data, out: Path | None, *, progress: bool | None,
         verbose: bool, label: str = "", prefix: str = "", keep_going: bool = False,
         full: bool = True, stop=None) -> RunResult:
    """Train ``config`` on already loaded ``data``; write to ``out`` (already prepared)."""
    started = datetime.now().astimezone()
    start_run = time.perf_counter()
    n_train = data.info["n_train"]
    check_sizes(config, n_train)
    iters = config.iterations(n_train)
    x_train = _as_dtype(data.x_train, config.dtype)
    x_test = _as_dtype(data.x_test, config.dtype)
    network = build_network(config, data)

    env = records.environment()
    metrics = {
        "minidl_version": env["minidl"],
        "status": "running",
        "label": label,
        "config": {**config.as_dict(), "iters": iters},
        "dataset": data.info,
        "network": {**network.architecture(),
                    "description": architecture(config, data.info["n_features"],
                                                data.info["n_classes"])},
        "iter_per_epoch": config.iter_per_epoch(n_train),
        "epochs": [],
        "final": None,
        "iteration_loss": [],
        "timings": {"started": started.isoformat(timespec="seconds"),
                    "load_seconds": data.seconds},
        "environment": env,
    }
    bar = _make_bar(iters, progress, label)
    recorder = _Recorder(metrics, out, bar, verbose, prefix, keep_going, stop)
    interrupt = diverged = None
    try:
        history = training.train(
            network, x_train, data.t_train, x_test, data.t_test,
            lr=config.lr, optimizer=config.optimizer, batch_size=config.batch_size,
            iters=iters, grad=config.grad,
            on_epoch=recorder.on_epoch, on_iteration=recorder.on_iteration,
        )
    except _Diverged as exc:
        history = getattr(exc, "history", None) or training.History()
        diverged = exc
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP through the command line
        history = getattr(exc, "history", None) or training.History()
        interrupt = exc
    finally:
        bar.close()

    metrics["iteration_loss"] = [records.finite(v) for v in history.train_loss]
    timings = metrics["timings"]
    timings["train_seconds"] = history.seconds
    timings["seconds_per_iteration"] = history.seconds / max(history.iterations, 1)
    if interrupt is None:
        # a diverged run is evaluated too: the saved model is what training left
        metrics["status"] = "finished" if diverged is None else "diverged"
        start = time.perf_counter()
        metrics["final"] = _final_evaluation(network, history, metrics, x_train, data.t_train,
                                             x_test, data.t_test)
        timings["final_eval_seconds"] = time.perf_counter() - start
    else:
        metrics["status"] = "interrupted"
        metrics["stopped_by"] = getattr(interrupt, "signal_name", "SIGINT")
    metrics["iterations_done"] = history.iterations
    timings["finished"] = datetime.now().astimezone().isoformat(timespec="seconds")
    timings["total_seconds"] = data.seconds + time.perf_counter() - start_run
    result = RunResult(config, history, network, metrics, out, label)
    if out is not None:
        records.write_run(out, metrics, network if full else None)
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


def failed_result(config: ExperimentConfig, label: str, out: Path | None,
                  error: BaseException) -> RunResult:
    """The record of a run that could not train (a comparison reports it and goes on)."""
    reason = str(error).splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, MemoryError):
        reason = f"not enough memory: {reason}"
        short = getattr(error, "short", "not enough memory")
    else:
        short = f"{type(error).__name__}: {reason}"
        short = short if len(short) <= 60 else short[:57] + "..."
    env = records.environment()
    metrics = {"minidl_version": env["minidl"], "status": "failed", "error": reason,
               "error_short": short,
               "label": label, "config": config.as_dict(), "epochs": [], "final": None,
               "iteration_loss": [], "timings": {"train_seconds": 0.0}, "environment": env}
    if out is not None:
        records.write_metrics(out, metrics)
    return RunResult(config, training.History(), None, metrics, out, label, error)


def run_experiment(config: ExperimentConfig | dict | None = None, /, *,
                   out: str | os.PathLike | None = None, progress: bool | None = None,
                   verbose: bool = True, keep_going: bool = False, overwrite: bool = False,
                   **options) -> RunResult:
    """Train one network and return its ``RunResult`` (``.history``, ``.network``, ``.metrics``).

    ``config``: an ``ExperimentConfig`` (or a dict of its fields); ``options``
    (``lr=0.01``, ``hidden=(100, 50)``, ...) override it, or give the whole
    configuration. ``out``: a folder to write ``metrics.json``, ``metrics.csv``,
    ``curves.png`` and ``model.npz`` to (created if needed; nothing is written
    when None); a folder that already holds a run is refused (``FileExistsError``)
    unless ``overwrite``. ``progress``: a progress bar (a widget in a notebook, text
    on stderr elsewhere); None: in a notebook or on a terminal, not under CI or in
    a pipe (see ``progress_default``). ``verbose``: print a line per epoch.

    A loss that becomes NaN or infinite is said once; the run stops there
    (status 'diverged', ``result.diverged``) unless ``keep_going``. A network
    that clearly cannot fit in memory raises ``NotEnoughMemory`` (a
    ``MemoryError`` saying how much it needs) before anything is drawn.

    A ``KeyboardInterrupt`` during training writes what was recorded (status
    'interrupted') and is re-raised with ``.result`` and ``.out`` attached.
    """
    try:
        config = config_from(config, options)
    except (ValueError, TypeError) as exc:
        raise exc.with_traceback(None) from None  # the message names the field
    created = []
    if out is not None:
        out, created = records.prepare_out(out, overwrite=overwrite)
    try:
        data = load(config)
        try:
            check_sizes(config, data.info["n_train"])
        except ValueError as exc:
            raise exc.with_traceback(None) from None
        return _run(config, data, out, progress=progress, verbose=verbose,
                    keep_going=keep_going)
    except BaseException:
        records.remove_if_empty(created)
        raise
