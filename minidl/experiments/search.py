"""The book's random hyperparameter search (``ch06/hyperparameter_optimization.py``).

Each trial draws a weight decay and a learning rate log-uniformly
(``10 ** uniform(-8, -4)`` and ``10 ** uniform(-6, -2)`` by default, in the
book's order), trains on the training images less a validation split taken
from them, and is judged on that validation split; the test set is not used.
The book's setting is the default: the first 500 training images, 20% of them
for validation, a 784-100x6-10 ReLU network with He initialisation, 50 epochs
of SGD with batches of 100.

Reproducible: the split and the draws come from ``np.random.RandomState(seed)``,
and every trial's network starts from ``np.random.seed(seed)`` as a single run
does, so trials differ only in their hyperparameters (and a sweep on several
processes gives the serial results).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np

from . import distributed, records, sweep
from . import run as run_module
from .compare import ComparisonTable, status_text
from .config import ExperimentConfig, config_from, format_value

__all__ = ["SearchResult", "search"]

# the book's hyperparameter_optimization.py, where it differs from a run's defaults
BOOK_SEARCH = {"hidden": (100,) * 6, "epochs": 50, "weight_init_std": "he"}

SEARCH_HEADERS = {"rank": "rank", "trial": "trial", "lr": "lr", "weight_decay": "weight decay",
                  "val_acc": "val acc", "best_val_acc": "best val acc",
                  "train_acc": "train acc", "seconds": "time (s)", "status": "status"}


class SearchResult(ComparisonTable):
    """The trials of ``search``, best validation accuracy first.

    ``rows``: dicts with ``rank``, ``trial``, ``lr``, ``weight_decay``,
    ``val_acc`` (the final network's), ``best_val_acc``, ``train_acc``,
    ``seconds``; ``results``: each trial's ``RunResult`` in the same order;
    ``best``: the best row. ``to_markdown()``, ``to_csv()`` as a comparison's.
    """

    headers = SEARCH_HEADERS

    def _cell(self, key, value):
        if key in ("lr", "weight_decay") and isinstance(value, float):
            return f"{value:.3g}"  # a draw: three digits say enough
        return super()._cell(key, value)

    @property
    def best(self) -> dict | None:
        return self.rows[0] if self.rows else None

    @property
    def note(self) -> str:
        return ("val acc: accuracy on the validation split (taken from the training images, "
                "never trained on) of the network as training left it; best val acc: the "
                "highest of all its evaluations. Sorted by val acc.")

    def book_lines(self, top: int = 20) -> list[str]:
        """The book's closing print: ``Best-1(val acc:0.86) | lr:..., weight decay:...``."""
        lines = ["=========== Hyper-Parameter Optimization Result ==========="]
        for row in self.rows[:top]:
            if row["val_acc"] is None:
                continue
            lines.append(f"Best-{row['rank']}(val acc:{row['val_acc']}) | lr:{row['lr']}, "
                         f"weight decay:{row['weight_decay']}")
        return lines

    def __repr__(self) -> str:
        best = self.best
        where = "" if best is None or best["val_acc"] is None else (
            f", best val acc {best['val_acc']:.4f} at lr {best['lr']:.3g}, "
            f"weight decay {best['weight_decay']:.3g}")
        return f"SearchResult({len(self.rows)} trials{where})"


def draw_hyperparameters(trials: int, lr: tuple[float, float],
                         weight_decay: tuple[float, float], rng: np.random.RandomState
                         ) -> list[tuple[float, float]]:
    """``(lr, weight_decay)`` of each trial, log-uniform, drawn as the book draws them."""
    out = []
    for _ in range(trials):
        wd = 10 ** rng.uniform(math.log10(weight_decay[0]), math.log10(weight_decay[1]))
        rate = 10 ** rng.uniform(math.log10(lr[0]), math.log10(lr[1]))
        out.append((float(rate), float(wd)))
    return out


def _range(name: str, value, zero_ok: bool = False) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected (low, high), got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(f"{name}: a range 0 < low <= high of finite numbers (drawn "
                         f"log-uniformly), got ({lo:g}, {hi:g})")
    return lo, hi


def split_validation(data: run_module.Data, validation: float, train_size: int | None,
                     rng: np.random.RandomState) -> run_module.Data:
    """The book's split: the first ``train_size`` training images, shuffled, the first
    ``validation`` fraction of them held out. The test set is left out."""
    n = data.info["n_train"] if train_size is None else min(train_size, data.info["n_train"])
    order = rng.permutation(n)  # the book's shuffle_dataset
    x, t = data.x_train[:n][order], data.t_train[:n][order]
    n_val = int(n * validation)
    if n_val < 1 or n - n_val < 1:
        raise ValueError(f"validation {validation:g} of {n} images leaves {n_val} for "
                         f"validation and {n - n_val} for training: both need at least one")
    info = {**data.info, "n_train": n - n_val, "n_test": n_val,
            "evaluated_on": f"validation: {n_val} of the first {n} training images"}
    return run_module.Data(x[n_val:], t[n_val:], x[:n_val], t[:n_val], info, data.seconds)


def search(config: ExperimentConfig | dict | None = None, /, *, trials: int = 100,
           lr: tuple[float, float] = (1e-6, 1e-2),
           weight_decay: tuple[float, float] = (1e-8, 1e-4), validation: float = 0.2,
           train_size: int | None = 500, top: int = 20, out: str | os.PathLike | None = None,
           progress: bool | None = None, verbose: bool = True, keep_going: bool = False,
           overwrite: bool = False, jobs: int | str | None = None,
           scheduler: str | None = None, client=None, **options) -> SearchResult:
    """The book's random search of learning rate and weight decay; returns a ``SearchResult``.

    ``config``/``options``: the network and its training, as ``run_experiment``
    takes them, starting from the book's search (``BOOK_SEARCH``: 784-100x6-10,
    He initialisation, 50 epochs); ``lr`` and ``weight_decay`` are the ranges
    drawn from. ``train_size``: how many of the first training images to use
    (None: all), ``validation``: the fraction of them held out. ``top``: how many
    of the best trials ``search.png`` plots and the book's closing lines list.
    ``out``: ``search.md``/``.csv``/``.json``/``.png`` and each trial's metrics.
    ``jobs``: run N at once on a local Dask cluster ('auto': the usable
    cores); ``scheduler`` (an address such as 'tcp://host:8786') or ``client``
    (a ``dask.distributed.Client``): on an existing one. The results and their
    order are the serial ones; the files are written here, not by the workers.
    On Ctrl-C the trials so far are written and the ``KeyboardInterrupt`` is
    re-raised with ``.table`` and ``.out``.
    """
    try:
        base = config_from(config, {**BOOK_SEARCH, **options} if config is None else options)
        if isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials < 1:
            raise ValueError(f"trials must be a positive integer, got {trials!r}")
        lr, weight_decay = _range("lr", lr), _range("weight_decay", weight_decay)
        if not (isinstance(validation, (int, float)) and 0 < validation < 1):
            raise ValueError(f"validation must be a fraction in (0, 1), got {validation!r}")
        if train_size is not None and (isinstance(train_size, bool)
                                       or not isinstance(train_size, (int, np.integer))
                                       or train_size < 2):
            raise ValueError(f"train_size must be an integer >= 2 or None, got {train_size!r}")
        if base.model == "convnet":
            raise ValueError("search: the book's search trains MultiLayerNet (model mlp)")
        jobs = distributed.parse_jobs(jobs)
    except (ValueError, TypeError) as exc:
        raise exc.with_traceback(None) from None

    created = []
    if out is not None:
        out, created = records.prepare_out(out, overwrite=overwrite)
    results: list = []
    cluster = None
    try:
        cluster = sweep.start(jobs, scheduler, client)  # starts while the data loads
        rng = np.random.RandomState(base.seed)
        data = split_validation(run_module.load(base), validation, train_size, rng)
        try:
            run_module.check_sizes(base, data.info["n_train"])
        except ValueError as exc:
            raise exc.with_traceback(None) from None
        draws = draw_hyperparameters(trials, lr, weight_decay, rng)
        tasks = []
        for k, (rate, wd) in enumerate(draws, 1):
            trial = dataclasses.replace(base, lr=rate, weight_decay=wd)
            label = f"trial {k}: lr={rate:.3g} weight_decay={wd:.3g}"
            trial_out = None if out is None else out / "trials" / f"{k:03d}"
            tasks.append(sweep.Task(trial, data, label, trial_out, full=False))

        def said(k, result):  # the book's line per trial
            if verbose and result.final_test_acc is not None:
                run_module.say(f"val acc:{result.final_test_acc} | lr:{result.config.lr}, "
                               f"weight decay:{result.config.weight_decay}")

        try:
            results = sweep.run_tasks(tasks, progress=progress, verbose=False,
                                      keep_going=keep_going, on_result=said, jobs=jobs,
                                      scheduler=scheduler, client=client, cluster=cluster)
        except KeyboardInterrupt as exc:
            results = exc.results
            table = _search_table(results)
            if out is not None and results:
                write_search(out, table, top)
            exc.table, exc.out = table, out
            raise
    except BaseException:
        if not results:
            records.remove_if_empty(created)
        raise
    finally:
        if cluster is not None:
            cluster.close()
    table = _search_table(results)
    if verbose:
        for line in table.book_lines(top):
            run_module.say(line)
    if out is not None:
        write_search(out, table, top)
    return table


def _search_table(results: list) -> SearchResult:
    def key(item):
        acc = item[1].final_test_acc
        return (acc is None, -(acc or 0.0), item[0])  # best first; failed last; ties by trial

    ordered = sorted(enumerate(results, 1), key=key)
    statuses = [status_text(r) for _, r in ordered]
    columns = ["rank", "trial", "lr", "weight_decay", "val_acc", "best_val_acc", "train_acc",
               "seconds"]
    if any(s != "finished" for s in statuses):
        columns.append("status")
    rows = []
    for rank, ((trial, r), status) in enumerate(zip(ordered, statuses), 1):
        rows.append({"rank": rank, "trial": trial, "lr": r.config.lr,
                     "weight_decay": r.config.weight_decay, "val_acc": r.final_test_acc,
                     "best_val_acc": r.best_test_acc, "train_acc": r.final_train_acc,
                     "seconds": r.seconds, "status": status})
    return SearchResult(columns, rows, [r for _, r in ordered], ["lr", "weight_decay"])


def write_search(out: Path, table: SearchResult, top: int) -> None:
    import json

    records.write_text(out / "search.md", table.to_markdown())
    records.write_text(out / "search.csv", table.to_csv())
    env = records.environment()
    record = {"minidl_version": env["minidl"], "rows": table.rows,
              "config": table.results[0].metrics["config"] if table.results else None,
              "dataset": next((r.metrics.get("dataset") for r in table.results
                               if "dataset" in r.metrics), None),
              "environment": env}
    records.write_text(out / "search.json", json.dumps(record, indent=1, allow_nan=False) + "\n")
    from .plotting import plot_search

    shown = [(row, r) for row, r in zip(table.rows, table.results)
             if r.metrics["status"] != "failed"][:top]
    plot_search([r.metrics for _, r in shown],
                [f"Best-{row['rank']} lr {format_value(row['lr'])[:6]}" for row, _ in shown],
                out / "search.png")
