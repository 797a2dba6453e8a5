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
