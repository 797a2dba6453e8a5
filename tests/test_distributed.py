"""compare and search on Dask (issue 18): a real LocalCluster on the loopback interface.

The same table as the serial run, in the same order; files written by the
caller; a failing run among good ones; an unreachable scheduler; Ctrl-C; and,
without Dask, one line saying what to install.
"""

import csv
import io
import sys
import time

import pytest

from minidl.cli import main
from minidl.experiments import compare, search, sweep
from minidl.experiments import run as run_module

QUICK = {"dataset": "mnist-mini", "hidden": 10, "batch_size": 500, "iters": 30,
         "progress": False, "verbose": False}
CLI = ["compare", "--dataset", "mnist-mini", "--hidden", "10", "--batch-size", "500",
       "--iters", "30", "--quiet"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIDL_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip(
        "distributed", reason='Dask is an optional extra: pip install "minidl[distributed]"')
    import logging

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None,
                                       silence_logs=logging.ERROR,
                                       env={"MINIDL_NUM_THREADS": "1"})
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def _same(table_a, table_b):
    drop = {"seconds"}  # wall time is the one column that differs
    rows_a = [{k: v for k, v in row.items() if k not in drop} for row in table_a.rows]
    rows_b = [{k: v for k, v in row.items() if k not in drop} for row in table_b.rows]
    assert rows_a == rows_b
    for a, b in zip(table_a.results, table_b.results):
        assert a.history.train_loss == b.history.train_loss
        assert a.history.test_acc == b.history.test_acc


def test_the_same_table_as_the_serial_run_in_the_same_order(client, tmp_path):
    options = {**QUICK, "lr": [0.1, 0.05, 0.01], "activation": ["relu", "sigmoid"]}
    serial = compare(**options)
    out = tmp_path / "cmp"
    parallel = compare(**options, client=client, out=out)
    _same(serial, parallel)
    assert [r["run"] for r in parallel] == [r["run"] for r in serial]
    # the caller wrote every file
    assert len([p for p in out.iterdir() if p.is_dir()]) == 6
    for run_dir in (p for p in out.iterdir() if p.is_dir()):
        assert {p.name for p in run_dir.iterdir()} == {
            "metrics.json", "metrics.csv", "curves.png", "model.npz"}
    rows = list(csv.DictReader(io.StringIO((out / "comparison.csv").read_text())))
    assert [r["run"] for r in rows] == [r["run"] for r in serial]


def test_a_failing_run_is_a_row_and_the_others_finish(client):
    table = compare(**{**QUICK, "hidden": [10, 99999999, 20]}, client=client)
    assert [row["status"].split(" (")[0] for row in table] == [
        "finished", "failed: not enough memory", "finished"]
    assert table[0]["final_test_acc"] is not None and table[2]["final_test_acc"] is not None
    assert "TiB" in table.results[1].metrics["error"]


def test_search_on_dask_gives_the_serial_trials(client):
    options = {"dataset": "mnist-mini", "hidden": (10,), "epochs": 2, "train_size": 200,
               "batch_size": 20, "trials": 4, "progress": False, "verbose": False}
    serial, parallel = search(**options), search(**options, client=client)
    _same(serial, parallel)


def test_ctrl_c_cancels_and_keeps_the_finished_runs(client, tmp_path):
    data = run_module.load(run_module.config_from(None, {"dataset": "mnist-mini"}))
    configs = [run_module.config_from(None, {"dataset": "mnist-mini", "hidden": 10,
                                             "iters": n}) for n in (5, 100000, 100000)]
    tasks = [sweep.Task(c, data, f"run {k}", tmp_path / f"r{k}") for k, c in enumerate(configs)]

    def interrupt(k, result):
        raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt) as info:
        sweep.run_tasks(tasks, progress=False, verbose=False, keep_going=False, client=client,
                        on_result=interrupt)
    assert time.monotonic() - start < 60  # the long runs were cancelled, not waited for
    assert [r.label for r in info.value.results] == ["run 0"]
    assert (tmp_path / "r0" / "model.npz").exists() and not (tmp_path / "r1").exists()
    # the cluster is free again for the next sweep
    assert client.submit(sum, [1, 2]).result(timeout=30) == 3


def test_jobs_starts_a_local_cluster_from_the_command_line(tmp_path, capsys):
    pytest.importorskip("distributed", reason='pip install "minidl[distributed]"')
    assert main([*CLI, "--lr", "0.1", "0.05", "--out", str(tmp_path / "s")]) == 0
    assert main([*CLI, "--lr", "0.1", "0.05", "--jobs", "2", "--out", str(tmp_path / "p")]) == 0
    serial = list(csv.DictReader(io.StringIO((tmp_path / "s" / "comparison.csv").read_text())))
    parallel = list(csv.DictReader(io.StringIO((tmp_path / "p" / "comparison.csv").read_text())))
    for row in serial + parallel:
        row.pop("seconds")
    assert serial == parallel


def test_an_unreachable_scheduler_is_one_line_within_the_timeout(monkeypatch, capsys):
    pytest.importorskip("distributed", reason='pip install "minidl[distributed]"')
    monkeypatch.setenv("MINIDL_SCHEDULER_TIMEOUT", "2")
    start = time.monotonic()
    assert main([*CLI, "--lr", "0.1", "0.05", "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("minidl: error: cannot reach the Dask scheduler at tcp://127.0.0.1:9")


def test_without_dask_jobs_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    assert main([*CLI, "--lr", "0.1", "0.05", "--jobs", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == 'minidl: error: running runs in parallel needs Dask: pip install ' \
                  '"minidl[distributed]"'
    # one job never needs it
    assert main([*CLI, "--lr", "0.1", "--jobs", "1"]) == 0


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_bad_jobs_are_usage_errors(value, capsys):
    assert main([*CLI, "--jobs", value]) == 2
    assert "--jobs" in capsys.readouterr().err


def test_a_worker_without_the_callers_dataset_is_sent_it(client):
    # the caller's copy differs from what the workers load from their disk: each
    # worker answers that it cannot use its own, and the caller's copy is sent
    data = run_module.load(run_module.config_from(None, {"dataset": "mnist-mini"}))
    changed = run_module.Data(data.x_train[::-1].copy(), data.t_train[::-1].copy(),
                              data.x_test, data.t_test, data.info, data.seconds)
    configs = [run_module.config_from(None, {"dataset": "mnist-mini", "hidden": 10,
                                             "batch_size": 50, "iters": 20, "lr": lr})
               for lr in (0.1, 0.01)]
    tasks = [sweep.Task(c, changed, f"lr {c.lr}") for c in configs]
    serial = sweep.run_tasks(tasks, progress=False, verbose=False, keep_going=False)
    parallel = sweep.run_tasks(tasks, progress=False, verbose=False, keep_going=False,
                               client=client)
    assert [r.status for r in parallel] == ["finished", "finished"]
    for a, b in zip(serial, parallel):
        assert a.history.train_loss == b.history.train_loss
    # the mnist-mini a worker loads itself is not this one
    own = sweep.run_tasks([sweep.Task(configs[0], data, "own")], progress=False,
                          verbose=False, keep_going=False, client=client)
    assert own[0].history.train_loss != serial[0].history.train_loss


def test_the_local_clusters_workers_run_one_thread(tmp_path):
    # a spawned worker imports the caller's main module, minidl with it, before Dask's
    # env= applies: the thread count must be in place before the spawn. Run as
    # `python -m minidl` runs (a main module that imports minidl).
    pytest.importorskip("distributed", reason='pip install "minidl[distributed]"')
    import os
    import subprocess

    (tmp_path / "probe_threads.py").write_text(
        "import minidl.cli  # noqa: F401\n"
        "from minidl.experiments import distributed as md\n\n\n"
        "def probe():\n"
        "    from minidl import backend\n"
        "    return backend.STEP_THREADS\n\n\n"
        "if __name__ == '__main__':\n"
        "    import os\n"
        "    c = md._Cluster(2, None, None, 30)\n"
        "    try:\n"
        "        print(sorted(c.client.run(probe).values()))\n"
        "    finally:\n"
        "        c.close()\n"
        "    print(os.environ.get('MINIDL_NUM_THREADS'))\n")
    env = {k: v for k, v in os.environ.items() if k != "MINIDL_NUM_THREADS"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-m", "probe_threads"], check=False, cwd=tmp_path,
                         env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # one thread in each worker; the caller's environment as it was
    assert out.stdout.split() == ["[1,", "1]", "None"]


def test_a_run_on_any_worker_uses_one_thread(client):
    from minidl.experiments import distributed as md

    def threads_in_a_run():
        from minidl import backend

        backend.STEP_THREADS = 2  # as a `dask worker` without MINIDL_NUM_THREADS imports it
        import os

        os.environ.pop("MINIDL_NUM_THREADS", None)
        md._one_thread_per_run()
        return backend.STEP_THREADS

    assert client.submit(threads_in_a_run, pure=False).result(timeout=60) == 1


@pytest.fixture
def dask_processes(tmp_path):
    """A `dask scheduler` and a `dask worker --nworkers 2 --nthreads 1`, as a user starts
    them, on the loopback interface; stopped afterwards."""
    pytest.importorskip("distributed", reason='pip install "minidl[distributed]"')
    import json
    import os
    import shutil
    import subprocess

    dask_cli = shutil.which("dask", path=os.path.dirname(sys.executable)) or shutil.which("dask")
    if dask_cli is None:
        pytest.skip("the dask command is not installed")
    file = tmp_path / "scheduler.json"
    started = []
    log = (tmp_path / "dask.log").open("w")  # the processes' log, closed below
    try:
        started.append(subprocess.Popen(
            [dask_cli, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(file)], stdout=log, stderr=log))
        deadline = time.monotonic() + 60
        while not file.exists() or not file.read_text().strip():
            assert time.monotonic() < deadline, "the scheduler did not start"
            assert started[0].poll() is None, (tmp_path / "dask.log").read_text()
            time.sleep(0.2)
        time.sleep(0.2)  # written whole
        address = json.loads(file.read_text())["address"]
        started.append(subprocess.Popen(
            [dask_cli, "worker", address, "--nworkers", "2", "--nthreads", "1",
             "--no-dashboard", "--host", "127.0.0.1"], stdout=log, stderr=log))
        distributed = pytest.importorskip("distributed")
        with distributed.Client(address, timeout=30) as c:
            c.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for p in reversed(started):
            p.terminate()
        for p in reversed(started):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()


def test_scheduler_runs_the_sweep_on_separately_started_dask_processes(dask_processes,
                                                                        tmp_path):
    args = [*CLI, "--lr", "0.1", "0.05", "--activation", "relu", "sigmoid"]
    assert main([*args, "--out", str(tmp_path / "s")]) == 0
    assert main([*args, "--scheduler", dask_processes, "--out", str(tmp_path / "d")]) == 0
    serial = list(csv.DictReader(io.StringIO((tmp_path / "s" / "comparison.csv").read_text())))
    remote = list(csv.DictReader(io.StringIO((tmp_path / "d" / "comparison.csv").read_text())))
    assert len(serial) == 4
    for row in serial + remote:
        row.pop("seconds")
    assert serial == remote
    # the caller wrote the runs' files; the scheduler's workers are still there
    assert len([p for p in (tmp_path / "d").iterdir() if p.is_dir()]) == 4


def test_jobs_search_maps_the_callers_arrays_and_removes_them(monkeypatch):
    # a search trains on the caller's split of the dataset, which no worker loads itself:
    # the local cluster's workers map the caller's files, removed after the sweep
    pytest.importorskip("distributed", reason='pip install "minidl[distributed]"')
    from minidl.experiments import distributed as md

    folders = []
    share_folder = md._share_folder

    def recorded():
        folders.append(share_folder())
        return folders[-1]

    monkeypatch.setattr(md, "_share_folder", recorded)
    options = {"dataset": "mnist-mini", "hidden": (10,), "epochs": 2, "train_size": 200,
               "batch_size": 20, "trials": 3, "progress": False, "verbose": False}
    serial, parallel = search(**options), search(**options, jobs=2)
    _same(serial, parallel)
    assert len(folders) == 1
    import os

    assert not os.path.exists(folders[0])


def test_a_worker_maps_the_callers_files_copy_on_write(tmp_path):
    import numpy as np

    from minidl.experiments import distributed as md

    data = run_module.load(run_module.config_from(None, {"dataset": "mnist-mini"}))
    spec = md.DataSpec(None, "", data.info, data.seconds, md.share_files(data, str(tmp_path)))
    mapped = md._worker_data(spec)
    for name in md.ARRAYS:
        a, b = getattr(data, name), getattr(mapped, name)
        assert type(b) is np.ndarray and b.flags.writeable and b.dtype == a.dtype
        np.testing.assert_array_equal(a, b)
    mapped.x_train[0, 0] = 7  # the run's private copy of the page, not the file
    assert np.load(spec.files[0])[0, 0] == data.x_train[0, 0]
    assert mapped.info == data.info
    # files that are not there (another machine): the worker asks for the data
    gone = md.DataSpec(None, "", data.info, data.seconds, (str(tmp_path / "none.npy"),) * 4)
    assert md._worker_data(gone) is None


def test_one_progress_bar_counts_finished_and_running_runs(client, capsys):
    compare(**{**QUICK, "lr": [0.1, 0.05, 0.01], "progress": True}, client=client)
    err = capsys.readouterr().err
    assert "0/3" in err and "3/3" in err  # runs finished of the sweep's
    assert "2 running" in err and "1 running" in err  # two workers busy, then one
    assert "epoch" not in err  # one bar for the sweep, none per run


def test_the_cluster_starts_while_the_data_loads_and_closes_once(monkeypatch):
    pytest.importorskip("distributed", reason='pip install "minidl[distributed]"')
    from minidl.experiments import distributed as md

    assert sweep.start(None) is None and sweep.start(1) is None
    events = []
    real_load, real_init = run_module.load, md._Cluster.__init__

    def load(*args, **kwargs):  # the data loads while the cluster starts, not before it
        deadline = time.monotonic() + 30
        while "cluster" not in events and time.monotonic() < deadline:
            time.sleep(0.01)
        events.append("load")
        return real_load(*args, **kwargs)

    def init(self, *args):
        events.append("cluster")
        real_init(self, *args)

    monkeypatch.setattr(run_module, "load", load)
    monkeypatch.setattr(md._Cluster, "__init__", init)
    table = compare(**{**QUICK, "lr": [0.1, 0.05]}, jobs=2)
    assert [r.status for r in table.results] == ["finished", "finished"]
    assert events[0] == "cluster"  # started before the load, in the background
    monkeypatch.setenv("MINIDL_SCHEDULER_TIMEOUT", "2")
    started = sweep.start(scheduler="tcp://127.0.0.1:9")
    with pytest.raises(OSError, match="cannot reach the Dask scheduler"):
        started.get()
    started.close()
    started.close()  # twice is fine


def test_jobs_auto_is_the_usable_cores():
    import os

    from minidl.experiments import distributed as md

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert md.parse_jobs("auto") == md.usable_cores() == cores
    assert md.parse_jobs("3") == 3 and md.parse_jobs(None) is None


def test_ci_installs_the_distributed_extra_so_these_tests_run_there():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / ".ci" / "run").exists():
        pytest.skip("no .ci/run beside these tests (an sdist without it)")
    ci = (root / ".ci" / "run").read_text()
    default = re.search(r'^EXTRAS="\$\{MINIDL_CI_EXTRAS:-([^}]*)\}"', ci, re.MULTILINE)
    assert default is not None and "distributed" in default.group(1).split(",")
    assert '"${wheel}[${EXTRAS}]"' in ci  # the wheel is installed with them
    pyproject = (root / "pyproject.toml").read_text()
    assert re.search(r'^distributed = \["dask\[distributed\]', pyproject, re.MULTILINE)
