"""How runs end badly, at the command line (issue 16, items 1, 3, 8, 9).

SIGTERM and SIGHUP end a run as Ctrl-C does (real processes); memory errors are
one line with how much was needed; a diverging loss is said once and stops the
run (or not, with --keep-going), with its own exit status; an --out that holds
results is refused unless --overwrite.
"""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import minidl
from minidl.cli import main
from minidl.datasets import DATASETS
from minidl.experiments import compare, memory, run_experiment
from minidl.networks import MultiLayerNet

PACKAGE_PARENT = Path(minidl.__file__).resolve().parents[1]
MINI = DATASETS["mnist-mini"]
QUICK = ["--dataset", "mnist-mini", "--hidden", "10", "--batch-size", "500", "--iters", "40"]
# float32 with this learning rate overflows at the second step (the loss becomes nan)
DIVERGING = ["--dtype", "float32", "--lr", "1e17"]
HUGE = "99999999"  # 784 x 99999999 weights: about 584 GiB in float64


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIDL_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- SIGTERM and SIGHUP: a real process, stopped as Ctrl-C stops it ------------------------------------


def _start(tmp_path, command, *args):
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_PARENT), "MINIDL_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "minidl", command, *args], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_a_signal_ends_a_run_as_ctrl_c_does(tmp_path, signame):
    out = tmp_path / "d"
    proc = _start(tmp_path, "train", "--dataset", "mnist-mini", "--hidden", "10",
                  "--iters", "100000", "--out", str(out))
    try:
        _wait_for(out / "metrics.json", proc)  # the first evaluation is recorded
        time.sleep(0.3)
        proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    signum = getattr(signal, signame)
    assert proc.returncode == 128 + signum, err
    assert _one_error_line(err) == f"minidl: stopped by {signame}; what it recorded is in {out}/"
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "interrupted" and m["stopped_by"] == signame
    assert 0 < m["iterations_done"] < 100000 and len(m["iteration_loss"]) == m["iterations_done"]
    assert MultiLayerNet.load(out / "model.npz").sizes == [MINI.n_features, 10, MINI.n_classes]
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]


def test_sigterm_during_a_comparison_writes_the_table_so_far(tmp_path):
    out = tmp_path / "cmp"
    proc = _start(tmp_path, "compare", "--dataset", "mnist-mini", "--hidden", "10",
                  "--iters", "100000", "--lr", "0.1", "0.05", "--out", str(out))
    try:
        _wait_for(out / "01-lr-0.1" / "metrics.json", proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    rows = list(csv.DictReader(io.StringIO((out / "comparison.csv").read_text())))
    assert [r["status"] for r in rows] == ["interrupted"]
    assert not (out / "02-lr-0.05").exists()


# -- memory -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["train", "gradcheck"])
def test_not_enough_memory_is_one_line_with_the_size(command, capsys):
    assert main([command, "--dataset", "mnist-mini", "--hidden", HUGE]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("minidl: error: not enough memory: the network 784-99999999-10")
    assert "TiB" in line and "weights alone" in line and "available" in line


def test_numpys_memory_error_is_one_line_too(monkeypatch, capsys):
    # where the available memory is unknown, NumPy refuses the allocation itself
    monkeypatch.setattr(memory, "available_memory", lambda: None)
    assert main(["train", "--dataset", "mnist-mini", "--hidden", HUGE]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("minidl: error: not enough memory: Unable to allocate")
    assert "GiB" in line


def test_compare_with_an_impossible_run_tabulates_the_others(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--dataset", "mnist-mini", "--hidden", "10", HUGE, "20",
                 "--iters", "5", "--quiet", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "run hidden=99999999: not enough memory" in captured.err
    rows = list(csv.DictReader(io.StringIO((out / "comparison.csv").read_text())))
    assert [r["hidden"] for r in rows] == ["10", HUGE, "20"]
    assert [r["status"].split(" (")[0] for r in rows] == [
        "finished", "failed: not enough memory", "finished"]
    assert rows[0]["final_test_acc"] and rows[2]["final_test_acc"] and not rows[1]["final_test_acc"]
    assert (out / "comparison.png").exists() and (out / "03-hidden-20" / "model.npz").exists()
    failed = json.loads((out / "02-hidden-99999999" / "metrics.json").read_text())
    assert failed["status"] == "failed" and "TiB" in failed["error"]


# -- divergence ---------------------------------------------------------------------------------------------


def test_divergence_is_said_once_and_stops_the_run(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["train", *QUICK, *DIVERGING, "--out", str(out)]) == 3
    captured = capsys.readouterr()
    said = [line for line in (captured.out + captured.err).splitlines()
            if "the loss became" in line]
    assert len(said) == 1, said
    assert "the loss became nan at iteration 1 (lr 1e+17)" in said[0]
    assert "smaller learning rate" in said[0] and "--keep-going" in said[0]
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "diverged" and m["divergence"]["iteration"] == 1
    assert m["iterations_done"] == 2 and m["iteration_loss"][1] is None
    assert (out / "model.npz").exists() and (out / "curves.png").exists()


def test_keep_going_trains_on_and_the_status_still_says_it(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["train", *QUICK, *DIVERGING, "--keep-going", "--quiet", "--out", str(out)]) == 3
    captured = capsys.readouterr()
    assert captured.err.count("the loss became nan at iteration 1") == 1
    assert "training goes on" in captured.err
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "finished" and m["iterations_done"] == 40
    assert m["divergence"]["iteration"] == 1


def test_divergence_in_a_comparison_and_from_python():
    table = compare(dataset="mnist-mini", hidden=10, batch_size=500, iters=40, dtype="float32",
                    lr=[0.1, 1e17], progress=False, verbose=False)
    assert [row["status"] for row in table] == ["finished", "diverged at iteration 1"]
    assert [r.diverged for r in table.results] == [False, True]
    result = run_experiment(dataset="mnist-mini", hidden=10, batch_size=500, iters=40,
                            dtype="float32", lr=1e17, progress=False, verbose=False)
    assert result.status == "diverged" and result.history.iterations == 2


# -- --out that already holds results ---------------------------------------------------------------------------


def test_an_existing_run_folder_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "d"
    quick = [*QUICK, "--iters", "2"]
    assert main(["train", *quick, "--quiet", "--out", str(out)]) == 0
    before = (out / "metrics.json").read_text()
    capsys.readouterr()
    assert main(["train", *quick, "--lr", "0.05", "--quiet", "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "already holds results (metrics.json)" in line and "--overwrite" in line
    assert (out / "metrics.json").read_text() == before  # untouched
    assert main(["train", *quick, "--lr", "0.05", "--quiet", "--overwrite",
                 "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["config"]["lr"] == 0.05
    with pytest.raises(FileExistsError, match="overwrite=True"):
        run_experiment(dataset="mnist-mini", iters=1, out=out, progress=False, verbose=False)


def test_overwriting_a_comparison_leaves_nothing_of_the_old_one(tmp_path, capsys):
    out = tmp_path / "cmp"
    common = ["compare", "--dataset", "mnist-mini", "--hidden", "10", "--iters", "3", "--quiet",
              "--out", str(out)]
    assert main([*common, "--lr", "0.1", "0.05"]) == 0
    (out / "notes.txt").write_text("mine")  # not minidl's: kept
    assert main([*common, "--lr", "0.2"]) == 2
    assert main([*common, "--lr", "0.2", "--overwrite"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["01-run", "comparison.csv", "comparison.json", "comparison.md",
                     "comparison.png", "notes.txt"]
