"""A sweep's runs on Dask: several at once on this machine's cores, or on a cluster.

``jobs=N`` starts a local Dask cluster of N worker processes (one thread each,
``MINIDL_NUM_THREADS=1`` inside; ``'auto'``: the usable cores); ``scheduler=
'tcp://host:8786'`` or ``client=`` sends the runs to an existing cluster. Each
run is seeded as it is alone, so the results are the serial ones; the workers
return them (history, network, metrics) and the caller writes every file, so a
remote cluster needs no shared disk. Dask is optional: ``pip install
"minidl[distributed]"``.

What made a local sweep slower than the serial one (issue 18), and what this
module does instead:

- The workers' compiled passes ran two threads each (four on two cores, their
  OpenMP barriers waiting for each other): Dask's ``env=`` reaches a worker
  after it imported minidl (the spawned process imports the caller's main
  module first, ``python -m minidl``'s included), too late for
  ``MINIDL_NUM_THREADS``. It is now set before the workers are spawned, and a
  run on any worker (one started by ``dask worker`` too) uses one thread unless
  the worker's own ``MINIDL_NUM_THREADS`` says otherwise: a Dask worker thread
  is one run on one core.
- The datasets went through Dask (``scatter``: 220 MB of MNIST pickled and
  sent to every worker). A worker now loads the dataset itself from its own
  disk or cache, once per process (no download), and uses it if its bytes are
  the caller's (a CRC-32 fingerprint); a worker that cannot (a remote machine
  without the files) asks, and only then is the caller's copy sent.
- A run asked the scheduler whether the sweep was cancelled every 100
  iterations; it now asks at most once a second.
- A local cluster's workers each loaded the dataset again (on two cores, while
  the other worker did the same: seconds before the first step). The caller
  now writes each dataset once to a temporary folder (in memory, /dev/shm,
  where there is one) and the workers of the cluster it started map those
  files (copy-on-write): no loading, no fingerprint, no copy per worker.
- The cluster started only after the caller had loaded the data; ``start``
  starts it in the background while the caller loads (``compare`` and
  ``search`` call it first).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
import zlib
from dataclasses import dataclass

import numpy as np

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


def fingerprint(data: run_module.Data) -> str:
    """Which bytes a loaded dataset holds: shapes, dtypes and a CRC-32 of each array.

    It tells a worker whether the dataset it loaded itself is the caller's (the
    same files, the same loader); about 0.1 s for MNIST.
    """
    parts = []
    for a in (data.x_train, data.t_train, data.x_test, data.t_test):
        a = a if a.flags.c_contiguous else a.copy(order="C")
        parts.append(f"{a.dtype.str}{a.shape}:{zlib.crc32(memoryview(a).cast('B')):08x}")
    return ";".join(parts)


@dataclass(frozen=True)
class DataSpec:
    """What a worker needs to load a run's dataset itself instead of receiving it."""

    config: object  # the ExperimentConfig of a run on it (dataset, data_dir, model)
    fingerprint: str
    info: dict  # the caller's record of the dataset: every run's metrics say the same
    seconds: float
    files: tuple[str, ...] = ()  # .npy files of the caller's arrays (a local cluster's)

    @property
    def key(self) -> str:
        return "|".join(self.files) if self.files else self.fingerprint


ARRAYS = ("x_train", "t_train", "x_test", "t_test")


def share_files(data: run_module.Data, folder: str) -> tuple[str, ...]:
    """The dataset's arrays as .npy files in ``folder``, for workers on this machine."""
    paths = []
    for name in ARRAYS:
        path = os.path.join(folder, f"{name}.npy")
        np.save(path, getattr(data, name), allow_pickle=False)
        paths.append(path)
    return tuple(paths)


def _share_folder() -> str:
    """A new temporary folder, in memory (/dev/shm) where the system has one."""
    shm = "/dev/shm"
    where = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    return tempfile.mkdtemp(prefix="minidl-sweep-", dir=where)


def _mapped(files: tuple[str, ...]) -> run_module.Data | None:
    """The caller's arrays from its files, mapped copy-on-write (plain ndarray views)."""
    try:
        arrays = [np.asarray(np.load(p, mmap_mode="c", allow_pickle=False)) for p in files]
    except (OSError, ValueError) as exc:  # another machine: the caller sends them
        logging.getLogger("minidl").info("cannot map the caller's dataset here: %s", exc)
        return None
    return run_module.Data(*arrays, {}, 0.0)


class NeedsData:
    """A worker's answer when it cannot load the dataset (or its copy differs)."""

    def __init__(self, key: str):
        self.key = key


_LOADED: dict[str, run_module.Data | None] = {}  # on a worker: by DataSpec.key (None: cannot)
_LOADING = threading.Lock()


def _worker_data(spec: DataSpec) -> run_module.Data | None:
    """The dataset of ``spec``, loaded once per worker process; None if this worker can't."""
    with _LOADING:
        if spec.files and spec.key not in _LOADED:
            _LOADED[spec.key] = _mapped(spec.files)
        if spec.key not in _LOADED:
            try:
                data = run_module.load(spec.config, download=False)
            except Exception as exc:  # noqa: BLE001 (no files here: the caller sends them)
                logging.getLogger("minidl").info("cannot load %s here: %s",
                                                 spec.config.dataset, exc)
                data = None
            if data is not None and fingerprint(data) != spec.fingerprint:
                logging.getLogger("minidl").info("%s here differs from the caller's",
                                                 spec.config.dataset)
                data = None
            _LOADED[spec.key] = data
        data = _LOADED[spec.key]
    if data is None:
        return None
    return run_module.Data(data.x_train, data.t_train, data.x_test, data.t_test,
                           spec.info, spec.seconds)


def _one_thread_per_run() -> None:
    """On a worker: the compiled passes on one thread (``MINIDL_NUM_THREADS`` overrides).

    Each of a worker's threads runs one run at a time, so a run is one core's
    work; two threads per run on busy cores wait for each other at every step.
    """
    from .. import backend

    wanted = os.environ.get("MINIDL_NUM_THREADS")
    backend.STEP_THREADS = backend._num_threads(wanted) if wanted else 1


class _StopCheck:
    """``Event.is_set`` asked of the scheduler at most every ``interval`` seconds."""

    def __init__(self, event, interval: float = 1.0):
        self.event, self.interval, self.last = event, interval, time.monotonic()

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.interval:
            return False
        self.last = now
        return self.event.is_set()


def _remote_run(config, data, label, keep_going, stop_event):
    """On a worker: the run, without files (the caller writes them).

    ``data``: the loaded dataset, or a ``DataSpec`` to load it here (a
    ``NeedsData`` answer when this worker cannot). Dask cannot interrupt a task
    that is running: the run asks the sweep's ``Event`` whether it was
    cancelled, at most once a second.
    """
    import distributed

    if isinstance(data, DataSpec):
        spec, data = data, _worker_data(data)
        if data is None:
            return NeedsData(spec.key)
    _one_thread_per_run()
    event = distributed.Event(stop_event)
    return run_module._run(config, data, None, progress=False, verbose=False, label=label,
                           keep_going=keep_going, stop=_StopCheck(event))


class _Cluster:
    """The client to use, and what to close afterwards (only what this module started)."""

    def __init__(self, jobs: int | None, scheduler: str | None, client, timeout: float):
        self.client, self.owned, self.saved_env = client, [], {}
        self.local = False  # a LocalCluster started here: its workers can read our files
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
        one = {"MINIDL_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        # before the spawn: a worker imports minidl (the caller's main module) before
        # Dask's env= applies. Dask sets them in this process too: restored below.
        self.saved_env = {k: os.environ.get(k) for k in one}
        import dask

        spawn_env = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **one}
        try:
            with dask.config.set({"distributed.nanny.pre-spawn-environ": spawn_env}):
                cluster = distributed.LocalCluster(
                    n_workers=jobs, threads_per_worker=1, processes=True, host="127.0.0.1",
                    dashboard_address=":0", silence_logs=logging.ERROR,  # any free port
                    env=one)
        finally:
            self._restore_env()
        self.owned.append(cluster)
        self.client = distributed.Client(cluster)
        self.owned.insert(0, self.client)
        self.local = True

    def _restore_env(self):  # (a worker Dask restarts sets them here again)
        for k, v in self.saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def close(self):
        owned, self.owned = self.owned, []
        for thing in owned:
            try:
                thing.close()
            except Exception as exc:  # noqa: BLE001 (closing what may be half gone)
                logging.getLogger("minidl").debug("closing %r: %s", thing, exc)
        self._restore_env()


class Starting:
    """A cluster (or a scheduler's connection) started in a background thread.

    ``start(...)`` returns one before the caller loads its datasets, so that the
    workers' start-up and the loading overlap; ``run_on_dask(..., cluster=)``
    waits for it. Errors (an unreachable scheduler) are raised by ``get``;
    ``close`` may be called any number of times.
    """

    def __init__(self, jobs: int | None, scheduler: str | None, client,
                 timeout: float | None = None):
        if client is None:
            _import_distributed()  # without Dask: the one line now, before any loading
        timeout = connect_timeout() if timeout is None else timeout
        self._cluster = self._error = None
        self._closed = False
        self._thread = threading.Thread(target=self._start, name="minidl-dask-start",
                                        args=(jobs, scheduler, client, timeout), daemon=True)
        self._thread.start()

    def _start(self, *args):
        try:
            self._cluster = _Cluster(*args)
        except BaseException as exc:  # noqa: BLE001 (raised in the caller's thread by get)
            self._error = exc

    def get(self) -> _Cluster:
        self._thread.join()
        if self._error is not None:
            raise self._error.with_traceback(None)
        return self._cluster

    def close(self):
        if self._closed:
            return
        self._thread.join()
        self._closed = True
        if self._cluster is not None:
            self._cluster.close()


def start(jobs=None, scheduler: str | None = None, client=None) -> Starting | None:
    """Start what a sweep of ``jobs``/``scheduler``/``client`` runs on; None: serial."""
    n_jobs = parse_jobs(jobs)
    if client is None and scheduler is None and (n_jobs or 1) <= 1:
        return None
    return Starting(n_jobs, scheduler, client)


def run_on_dask(tasks: list, *, progress: bool | None, verbose: bool, keep_going: bool,
                jobs: int | None = None, scheduler: str | None = None, client=None,
                timeout: float | None = None, on_result=None,
                cluster: Starting | None = None) -> list:
    """``sweep.run_tasks`` on Dask: the same results, in the same order.

    ``cluster``: what ``start`` started (closed here); otherwise started here.
    """
    if cluster is None:
        cluster = Starting(jobs, scheduler, client, timeout)
    try:
        return _run_on(cluster.get(), tasks, progress=progress, verbose=verbose,
                       keep_going=keep_going, on_result=on_result)
    finally:
        cluster.close()


def _run_on(cluster: _Cluster, tasks: list, *, progress, verbose, keep_going,
            on_result) -> list:
    distributed = _import_distributed()
    client = cluster.client
    results: dict[int, object] = {}
    futures = {}
    bar = stop = None
    shared = None
    try:
        specs, scattered = {}, {}
        for task in tasks:
            if id(task.data) in specs:
                continue
            if cluster.local:  # workers on this machine map the caller's arrays
                shared = shared or _share_folder()
                files = share_files(task.data, tempfile.mkdtemp(dir=shared))
                specs[id(task.data)] = DataSpec(task.config, "", task.data.info,
                                                task.data.seconds, files)
            else:  # the workers load each dataset themselves, once per process
                specs[id(task.data)] = DataSpec(task.config, fingerprint(task.data),
                                                task.data.info, task.data.seconds)
        sweep_id = uuid.uuid4().hex[:8]
        stop = distributed.Event(f"minidl-stop-{sweep_id}", client=client)

        def submit(k, data, attempt=""):
            task = tasks[k]
            future = client.submit(_remote_run, task.config, data, task.label, keep_going,
                                   stop.name, pure=False,
                                   key=f"minidl-run-{sweep_id}-{k:04d}{attempt}")
            futures[future] = k
            return future

        for k, task in enumerate(tasks):
            submit(k, specs[id(task.data)])
        workers = max(sum(client.nthreads().values()), 1)  # runs at once: worker threads
        bar = run_module._tqdm()(
            total=len(tasks), unit="run", leave=run_module.in_notebook(),
            mininterval=0,  # a few updates, each one a run's end: show every one
            disable=not (run_module.progress_default() if progress is None else progress))
        bar.set_postfix_str(f"{min(workers, len(tasks))} running")
        finished = distributed.as_completed(list(futures))
        for future in finished:
            k = futures[future]
            task = tasks[k]
            if future.status == "finished" and isinstance(future.result(), NeedsData):
                # that worker has not got the files: send the caller's copy (once)
                if id(task.data) not in scattered:
                    scattered[id(task.data)] = client.scatter(task.data, broadcast=True)
                finished.add(submit(k, scattered[id(task.data)], "-sent"))
                continue
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
            # finished / running (the runs left, as many as there are workers, run)
            bar.set_postfix_str(f"{min(workers, len(tasks) - done)} running", refresh=False)
            bar.update(1)
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
        if shared is not None:
            cluster.close()  # the workers first: they map the files
            shutil.rmtree(shared, ignore_errors=True)
    return [results[k] for k in range(len(tasks))]


def _summary(result) -> str:
    if result.metrics["status"] == "failed":
        return f"failed: {result.metrics['error']}"
    acc = result.final_test_acc
    acc = "n/a" if acc is None else f"{acc:.4f}"
    return f"final test acc {acc} in {result.seconds:.1f} s ({result.metrics['status']})"
