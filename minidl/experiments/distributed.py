"""A sweep's runs on Dask: several at once on this machine's cores, or on a cluster.

``jobs=N`` starts a local Dask cluster of N worker processes (one thread each,
``MINIDL_NUM_THREADS=1`` inside; ``'auto'``: the usable cores); ``scheduler=
'tcp://host:8786'`` or ``client=`` sends the runs to an existing cluster. Each
run is seeded as it is alone, so the results are the serial ones; the workers
return them (history, network, metrics) and the caller writes every file, so a
remote cluster needs no shared disk. The datasets go to the workers once
(``scatter``). Dask is optional: ``pip install "minidl[distributed]"``.
"""

from __future__ import annotations

import logging
import os
import uuid

from . import records
from . import run as run_module

__all__ = ["DistributedMissing", "usable_cores"]

INSTALL = 'pip install "minidl[distributed]"'
CONNECT_TIMEOUT = 10.0  # seconds to reach a scheduler before saying it is unreachable


def connect_timeout() -> float:
    """``CONNECT_TIMEOUT``, or ``$MINIDL_SCHEDULER_TIMEOUT`` seconds."""
    try:
        value = float(os.environ.get("MINIDL_SCHEDULER_TIMEOUT", CONNECT_TIMEOUT))
    except ValueError:
        return CONNECT_TIMEOUT
    return value if value > 0 else CONNECT_TIMEOUT


class DistributedMissing(ImportError):
    """--jobs or --scheduler without Dask installed."""


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def parse_jobs(value) -> int | None:
    """``jobs``: None or 1 (serial), a positive integer, or 'auto' (the usable cores)."""
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return usable_cores()
        try:
            value = int(value)
        except ValueError:
            raise ValueError(f"jobs must be a positive integer or 'auto', got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"jobs must be a positive integer or 'auto', got {value!r}")
    return value


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise DistributedMissing(f"running runs in parallel needs Dask: {INSTALL}") from None
    return distributed


def _remote_run(config, data, label, keep_going, stop_event):
    """On a worker: the run, without files (the caller writes them).

    Dask cannot interrupt a task that is running: the run asks the sweep's
    ``Event`` every ``_Recorder.STOP_CHECK`` iterations whether it was cancelled.
    """
    import distributed

    event = distributed.Event(stop_event)
    return run_module._run(config, data, None, progress=False, verbose=False, label=label,
                           keep_going=keep_going, stop=event.is_set)


class _Cluster:
    """The client to use, and what to close afterwards (only what this module started)."""

    def __init__(self, jobs: int | None, scheduler: str | None, client, timeout: float):
        self.client, self.owned = client, []
        if client is not None:
            return
        distributed = _import_distributed()
        if scheduler is not None:
            try:
                self.client = distributed.Client(scheduler, timeout=timeout)
            except (OSError, TimeoutError, ValueError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise OSError(f"cannot reach the Dask scheduler at {scheduler} within "
                              f"{timeout:g} s ({reason})") from None
            self.owned.append(self.client)
            return
        cluster = distributed.LocalCluster(
            n_workers=jobs, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=":0", silence_logs=logging.ERROR,  # any free port
            env={"MINIDL_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                 "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        self.owned.append(cluster)
        self.client = distributed.Client(cluster)
        self.owned.insert(0, self.client)

    def close(self):
        for thing in self.owned:
            try:
                thing.close()
            except Exception as exc:  # noqa: BLE001 (closing what may be half gone)
                logging.getLogger("minidl").debug("closing %r: %s", thing, exc)


def run_on_dask(tasks: list, *, progress: bool | None, verbose: bool, keep_going: bool,
                jobs: int | None = None, scheduler: str | None = None, client=None,
                timeout: float | None = None, on_result=None) -> list:
    """``sweep.run_tasks`` on Dask: the same results, in the same order."""
    cluster = _Cluster(jobs, scheduler, client, connect_timeout() if timeout is None else timeout)
    distributed = _import_distributed()
    client = cluster.client
    results: dict[int, object] = {}
    futures = {}
    bar = stop = None
    try:
        scattered = {}
        for task in tasks:  # each dataset once to every worker
            if id(task.data) not in scattered:
                scattered[id(task.data)] = client.scatter(task.data, broadcast=True)
        sweep_id = uuid.uuid4().hex[:8]
        stop = distributed.Event(f"minidl-stop-{sweep_id}", client=client)
        for k, task in enumerate(tasks):
            future = client.submit(_remote_run, task.config, scattered[id(task.data)],
                                   task.label, keep_going, stop.name, pure=False,
                                   key=f"minidl-run-{sweep_id}-{k:04d}")
            futures[future] = k
        workers = max(len(client.scheduler_info().get("workers", {})), 1)
        bar = run_module._tqdm()(
            total=len(tasks), unit="run", leave=run_module.in_notebook(),
            disable=not (run_module.progress_default() if progress is None else progress))
        for future in distributed.as_completed(futures):
            k = futures[future]
            task = tasks[k]
            if task.out is not None:
                records.prepare_out(task.out, overwrite=True)
            try:
                result = future.result()
                result.out = task.out
                if task.out is not None:  # the caller writes, the workers never do
                    records.write_run(task.out, result.metrics,
                                      result.network if task.full else None)
            except Exception as exc:  # noqa: BLE001 (a failed run is a row with its reason)
                result = run_module.failed_result(task.config, task.label, task.out, exc)
            results[k] = result
            done = len(results)
            bar.update(1)
            bar.set_postfix_str(f"{min(workers, len(tasks) - done)} running", refresh=False)
            if verbose:
                run_module.say(f"[{done}/{len(tasks)}] {task.label}: {_summary(result)}")
            if on_result is not None:
                on_result(k, result)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM: cancel the rest, keep what finished
        client.cancel(list(futures))
        if stop is not None:
            stop.set()  # the runs already started stop within STOP_CHECK iterations
        exc.results = [results[k] for k in sorted(results)]
        raise
    finally:
        if bar is not None:
            bar.close()
        cluster.close()
    return [results[k] for k in range(len(tasks))]


def _summary(result) -> str:
    if result.metrics["status"] == "failed":
        return f"failed: {result.metrics['error']}"
    acc = result.final_test_acc
    acc = "n/a" if acc is None else f"{acc:.4f}"
    return f"final test acc {acc} in {result.seconds:.1f} s ({result.metrics['status']})"
