"""A comparison: several configurations trained one after another, and their table.

``compare`` is ``minidl compare`` without the command line. Every run starts
from the same seed unless told otherwise, so the runs differ only in what is
compared.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from typing import Any

from . import distributed, records, sweep
from . import run as run_module
from .config import ExperimentConfig, alternatives, config_from, field_names, format_value

__all__ = ["ComparisonTable", "compare", "expand_configs"]

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

    headers = TABLE_HEADERS

    def __init__(self, columns: list[str], rows: list[dict], results: list,
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
        return format_value(value)

    @property
    def note(self) -> str:
        """What the columns mean, printed under the table."""
        return ("final: the network as training left it (the saved model). best: the highest "
                "test accuracy of all its evaluations, the per-epoch ones and the final one; "
                "best epoch: when ('final': at the final evaluation). time: training, "
                "per-epoch evaluations included.")

    def to_markdown(self, note: bool = True) -> str:
        """A GitHub-flavoured Markdown table, columns padded to line up, then ``note``."""
        headers = [self.headers.get(c, c) for c in self.columns]
        cells = [[self._cell(c, row.get(c)) for c in self.columns] for row in self.rows]
        widths = [max([len(h)] + [len(r[j]) for r in cells]) for j, h in enumerate(headers)]
        numeric = [c not in ("run", "status", *self.varied) for c in self.columns]

        def line(values):
            padded = [v.rjust(w) if num else v.ljust(w)
                      for v, w, num in zip(values, widths, numeric)]
            return "| " + " | ".join(padded) + " |"

        rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                              for w, num in zip(widths, numeric)) + "|"
        table = "\n".join([line(headers), rule, *(line(r) for r in cells)]) + "\n"
        return table + (f"\n{self.note}\n" if note else "")

    def to_csv(self) -> str:
        """CSV with a header of the column keys; hidden sizes as '100,50'."""
        rows = [{k: (format_value(v) if isinstance(v, tuple) else v) for k, v in row.items()}
                for row in self.rows]
        return records.csv_text(self.columns, rows)

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


def expand_configs(options: dict) -> tuple[list[ExperimentConfig], list[str]]:
    """Every combination of the options' values (their cartesian product), and which vary.

    Options given one value are the same in every configuration. Duplicate
    configurations are dropped, keeping the first.
    """
    fields = field_names()
    for name in options:
        if name not in fields:
            raise TypeError(f"unknown option {name!r}; options are {', '.join(fields)}")
    names = list(options)
    choices = []
    for name in names:
        values = alternatives(name, options[name])
        if not values:
            raise ValueError(f"{name}: no values to compare")
        choices.append(values)
    configs: list[ExperimentConfig] = []
    for combo in itertools.product(*choices):
        config = ExperimentConfig(**dict(zip(names, combo)))
        if config not in configs:
            configs.append(config)
    # a field that follows from another (each optimizer's default lr) is shown too
    return configs, _varied(configs, [*names, *(n for n in field_names() if n not in names)])


def _varied(configs: list[ExperimentConfig], names: Iterable[str] | None = None) -> list[str]:
    if names is None:
        names = field_names()
    return [n for n in names if len({getattr(c, n) for c in configs}) > 1]


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in ".-_" else "-" for c in text.replace(" ", "_"))
    return keep.strip("-_") or "run"


def status_text(result) -> str:
    """A run's status for the table: 'finished', 'interrupted', 'diverged at iteration 37',
    'failed: not enough memory: ...'."""
    status = result.metrics["status"]
    divergence = result.metrics.get("divergence")
    if status == "failed":
        return f"failed: {result.metrics['error_short']}"
    if divergence is not None:
        where = f"at iteration {divergence['iteration']}"
        return f"diverged {where}" if status == "diverged" else f"{status} (diverged {where})"
    return status


def _table(results: list, varied: list[str]) -> ComparisonTable:
    columns = ["run", *varied, "final_test_acc", "best_test_acc", "best_epoch",
               "final_train_acc", "iterations", "seconds"]
    statuses = [status_text(r) for r in results]
    with_status = any(s != "finished" for s in statuses)
    if with_status:
        columns.append("status")
    rows = []
    for r, status in zip(results, statuses):
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
        if with_status:
            row["status"] = status
        rows.append(row)
    return ComparisonTable(columns, rows, results, varied)


def compare(configs: Iterable[ExperimentConfig | dict] | None = None, /, *,
            out: str | os.PathLike | None = None, progress: bool | None = None,
            verbose: bool = True, keep_going: bool = False, overwrite: bool = False,
            jobs: int | str | None = None, scheduler: str | None = None, client=None,
            **options) -> ComparisonTable:
    """Train several configurations one after another and tabulate them.

    Either give ``options`` where a list means alternatives, e.g.
    ``compare(lr=[0.1, 0.01])``, ``compare(hidden=[50, (100, 50)], iters=2000)``
    (several lists: every combination), or a list of configurations
    ``compare([ExperimentConfig(lr=0.1), ExperimentConfig(lr=0.01)])``. All runs
    use the same seed unless told otherwise. ``hidden``: only a list gives
    alternatives, a tuple ``(100, 50)`` is one two-layer architecture.

    ``out``: a folder for ``comparison.md``, ``comparison.csv``,
    ``comparison.json``, ``comparison.png`` (every run's curves) and a
    sub-folder per run with its own files (a folder holding results already is
    refused unless ``overwrite``). Returns a ``ComparisonTable``: the final
    network's test and train accuracy, the best test accuracy of all
    evaluations and its epoch, the training time; ``.results`` holds each run's
    ``RunResult``. Values and sizes are checked before anything trains; a run
    that fails while training (not enough memory, say) is a row with its
    reason, and the others go on; a run whose loss diverges stops there unless
    ``keep_going``.
    ``jobs``: run N at once on a local Dask cluster ('auto': the usable
    cores); ``scheduler`` (an address such as 'tcp://host:8786') or ``client``
    (a ``dask.distributed.Client``): on an existing one. The results and their
    order are the serial ones; the files are written here, not by the workers.
    On Ctrl-C the table of the runs so far is written, and the
    ``KeyboardInterrupt`` is re-raised with ``.table`` and ``.out``.
    """
    try:
        if configs is not None:
            if options:
                raise TypeError("compare(): give configurations or options, not both")
            configs = [config_from(c, {}) for c in configs]
            if not configs:
                raise ValueError("compare(): no configurations")
            varied = _varied(configs)
        else:
            configs, varied = expand_configs(options)
        jobs = distributed.parse_jobs(jobs)
    except (ValueError, TypeError) as exc:
        raise exc.with_traceback(None) from None  # the message names the option

    created = []
    if out is not None:
        out, created = records.prepare_out(out, overwrite=overwrite)
    results: list = []
    cluster = None
    try:
        cluster = sweep.start(jobs, scheduler, client)  # starts while the data loads
        data = {}
        for config in configs:  # load every dataset first: a missing one fails before training
            key = run_module.data_key(config)
            if key not in data:
                data[key] = run_module.load(config)
        try:
            for config in configs:
                run_module.check_sizes(config, data[run_module.data_key(config)].info["n_train"])
        except ValueError as exc:
            raise exc.with_traceback(None) from None
        tasks = []
        for k, config in enumerate(configs, 1):
            label = config.label(varied) if varied else "run"
            run_out = None if out is None else out / f"{k:02d}-{_slug(label)}"
            tasks.append(sweep.Task(config, data[run_module.data_key(config)], label, run_out))
        try:
            results = sweep.run_tasks(tasks, progress=progress, verbose=verbose,
                                      keep_going=keep_going, jobs=jobs, scheduler=scheduler,
                                      client=client, cluster=cluster)
        except KeyboardInterrupt as exc:
            results = exc.results
            table = _table(results, varied)
            if out is not None and results:
                records.write_comparison(out, table)
            exc.table = table
            exc.out = out
            raise
    except BaseException:
        if not results:
            records.remove_if_empty(created)
        raise
    finally:
        if cluster is not None:
            cluster.close()
    table = _table(results, varied)
    if out is not None:
        records.write_comparison(out, table)
    return table
