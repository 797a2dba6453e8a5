"""Many independent runs (a comparison's, a search's trials), one after another.

Every run is a ``Task``: a configuration, its loaded data, a label, and the
folder its files go to. Each run is seeded as it would be alone, so a sweep's
results do not depend on what ran before. A run that fails while training (not
enough memory, say) becomes a 'failed' result with its reason and the others
go on; Ctrl-C (or SIGTERM through the command line) stops the sweep, keeping
the finished runs and the interrupted one's record, as ``exc.results``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import records
from . import run as run_module
from .config import ExperimentConfig

__all__ = ["Task", "run_tasks", "start"]


def start(jobs=None, scheduler: str | None = None, client=None):
    """Start the Dask cluster a sweep will run on while the caller loads its data.

    None when the sweep is serial; otherwise pass it to ``run_tasks(cluster=)``
    and ``close()`` it if ``run_tasks`` is not reached (closing twice is fine).
    Without Dask it raises ``DistributedMissing`` at once.
    """
    from . import distributed

    return distributed.start(jobs, scheduler, client)


@dataclass
class Task:
    """One run of a sweep. ``full``: write the model and the curves too, not only metrics."""

    config: ExperimentConfig
    data: run_module.Data
    label: str
    out: Path | None = None
    full: bool = True


def run_tasks(tasks: list[Task], *, progress: bool | None, verbose: bool, keep_going: bool,
              announce: bool = True,
              on_result: Callable[[int, run_module.RunResult], None] | None = None,
              jobs=None, scheduler: str | None = None, client=None, cluster=None) -> list:
    """Train every task; return their ``RunResult`` in task order (failed ones included).

    One after another, unless ``jobs`` (more than 1, or 'auto'), ``scheduler``
    (a Dask scheduler's address) or ``client`` (a ``dask.distributed.Client``)
    say to run them on Dask (``minidl.experiments.distributed``); ``cluster``:
    what ``start`` started for them (closed here).
    """
    from . import distributed

    n_jobs = distributed.parse_jobs(jobs)
    if (cluster is not None or client is not None or scheduler is not None
            or (n_jobs or 1) > 1):
        return distributed.run_on_dask(tasks, progress=progress, verbose=verbose,
                                       keep_going=keep_going, jobs=n_jobs,
                                       scheduler=scheduler, client=client,
                                       on_result=on_result, cluster=cluster)
    results: list = []
    for k, task in enumerate(tasks, 1):
        if task.out is not None:
            records.prepare_out(task.out, overwrite=True)
        if verbose and announce:
            run_module.say(f"[{k}/{len(tasks)}] {task.label}")
        try:
            result = run_module._run(task.config, task.data, task.out, progress=progress,
                                     verbose=verbose, label=task.label, prefix="  ",
                                     keep_going=keep_going, full=task.full)
        except KeyboardInterrupt as exc:
            if getattr(exc, "result", None) is not None:
                results.append(exc.result)
            exc.results = results
            raise
        except Exception as exc:  # noqa: BLE001 (this run failed: its row says why; train on)
            result = run_module.failed_result(task.config, task.label, task.out, exc)
            if verbose:
                run_module.say(f"  failed: {result.metrics['error']}")
        results.append(result)
        if on_result is not None:
            on_result(k - 1, result)
    return results
