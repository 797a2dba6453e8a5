"""The ``minidl`` command: end-to-end runs on ``mnist-mini``, errors and exit codes.

Commands run in-process through ``minidl.cli.main`` (fast), and a few through a
real ``python -m minidl`` process to see what a shell sees.
"""

import csv
import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import minidl
from minidl.cli import main
from minidl.datasets import DATASETS
from minidl.experiments import run as run_module
from minidl.networks import MultiLayerNet

# the folder holding the minidl under test (the source tree, or site-packages when installed)
PACKAGE_PARENT = Path(minidl.__file__).resolve().parents[1]
MINI = DATASETS["mnist-mini"]
BATCH = MINI.n_train // 20  # an epoch of 20 iterations
QUICK = ["--dataset", "mnist-mini", "--hidden", "10", "--batch-size", str(BATCH), "--iters", "30"]


def png_size(path: Path) -> tuple[int, int]:
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path}: not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIDL_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


def run_minidl(*args, env=None, timeout=120):
    """``python -m minidl ARGS`` in a fresh process, as a shell runs it."""
    full_env = {**os.environ, "PYTHONPATH": str(PACKAGE_PARENT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "minidl", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, check=False)


# -- train --------------------------------------------------------------------------------------


def test_train_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--lr", "0.05", "--seed", "3", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    epoch_lines = [line for line in stdout.splitlines() if line.startswith("epoch")]
    assert len(epoch_lines) == len([i for i in range(30) if i % (MINI.n_train / BATCH) == 0])
    assert "final: train acc" in stdout and f"wrote {out}/" in stdout

    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "finished"
    c = m["config"]
    assert (c["dataset"], c["hidden"], c["lr"], c["batch_size"], c["iters"], c["seed"]) == (
        "mnist-mini", [10], 0.05, BATCH, 30, 3)
    assert len(m["iteration_loss"]) == 30
    rows = list(csv.DictReader(io.StringIO((out / "metrics.csv").read_text())))
    assert [int(r["iteration"]) for r in rows] == [r["iteration"] for r in m["epochs"]]
    assert png_size(out / "curves.png")[0] > 0
    net = MultiLayerNet.load(out / "model.npz")
    assert net.sizes == [MINI.n_features, 10, MINI.n_classes]
    assert f"test acc {m['final']['test_acc']:.4f}" in stdout


def test_train_default_out_is_a_new_folder_under_runs(tmp_path, capsys):
    assert main(["train", *QUICK, "--quiet"]) == 0
    assert main(["train", *QUICK, "--quiet"]) == 0
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all(r.name.startswith("train-") for r in runs)
    for run in runs:
        assert (run / "metrics.json").exists() and (run / "model.npz").exists()
    stdout = capsys.readouterr().out
    assert "epoch" not in stdout  # --quiet: no per-epoch lines, only the results
    assert stdout.count("final: train acc") == 2


def test_train_epochs_and_options(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--dataset", "mnist-mini", "--hidden", "8,6", "--activation",
                 "sigmoid", "--batch-size", str(BATCH), "--epochs", "1.5", "--dtype", "float32",
                 "--weight-init-std", "xavier", "--quiet", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    ipe = max(MINI.n_train / BATCH, 1)
    assert m["config"]["iters"] == len(m["iteration_loss"]) == int(-(-1.5 * ipe // 1))
    assert m["config"]["epochs"] == 1.5
    assert m["network"]["sizes"] == [MINI.n_features, 8, 6, MINI.n_classes]
    assert m["network"]["activation"] == "sigmoid" and m["network"]["dtype"] == "float32"
    assert m["config"]["weight_init_std"] == "xavier"


def test_ctrl_c_keeps_the_metrics_and_exits_130(tmp_path, monkeypatch, capsys):
    original = run_module._Recorder.on_iteration

    def on_iteration(self, i, loss):
        original(self, i, loss)
        if i == 22:
            raise KeyboardInterrupt  # what Ctrl-C raises in the training loop

    monkeypatch.setattr(run_module._Recorder, "on_iteration", on_iteration)
    out = tmp_path / "r"
    assert main(["train", *QUICK, "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and str(out) in err and "Traceback" not in err
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "interrupted" and len(m["iteration_loss"]) == 23
    assert (out / "metrics.csv").exists() and (out / "model.npz").exists()


# -- compare --------------------------------------------------------------------------------------


def test_compare_learning_rate_and_activation(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--dataset", "mnist-mini", "--hidden", "10", "--iters", "5",
                 "--lr", "0.1", "0.05", "--activation", "relu", "sigmoid",
                 "--quiet", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    table_lines = [line for line in stdout.splitlines() if line.startswith("|")]
    assert len(table_lines) == 2 + 4  # header, rule, four runs
    assert "final test acc" in table_lines[0] and "best test acc" in table_lines[0]
    assert "time (s)" in table_lines[0]

    rows = list(csv.DictReader(io.StringIO((out / "comparison.csv").read_text())))
    # every combination, the options in the order of 'minidl compare --help'
    assert list(rows[0])[:3] == ["run", "activation", "lr"]
    assert [(r["activation"], r["lr"]) for r in rows] == [
        ("relu", "0.1"), ("relu", "0.05"), ("sigmoid", "0.1"), ("sigmoid", "0.05")]
    md = (out / "comparison.md").read_text().splitlines()
    assert [line for line in md if line.startswith("|")] == table_lines
    assert md[-1].startswith("final: ") and "best: the highest test accuracy" in md[-1]
    assert md[-1] in stdout  # the note is printed under the table too
    png_size(out / "comparison.png")
    runs = sorted(p for p in out.iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["01-activation-relu_lr-0.1",
                                      "02-activation-relu_lr-0.05",
                                      "03-activation-sigmoid_lr-0.1",
                                      "04-activation-sigmoid_lr-0.05"]
    seeds = {json.loads((p / "metrics.json").read_text())["config"]["seed"] for p in runs}
    assert seeds == {1211}
    for r, p in zip(rows, runs):
        m = json.loads((p / "metrics.json").read_text())
        assert float(r["final_test_acc"]) == m["final"]["test_acc"]


def test_compare_depth(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--dataset", "mnist-mini", "--hidden", "10", "10,5",
                 "--batch-size", str(BATCH), "--iters", "25", "--quiet", "--out", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO((out / "comparison.csv").read_text())))
    assert [r["hidden"] for r in rows] == ["10", "10,5"]
    assert [r["iterations"] for r in rows] == ["25", "25"]
    sizes = [MultiLayerNet.load(out / d / "model.npz").sizes
             for d in ("01-hidden-10", "02-hidden-10-5")]
    assert sizes == [[MINI.n_features, 10, MINI.n_classes], [MINI.n_features, 10, 5, 10]]


# -- errors ----------------------------------------------------------------------------------------


def _blocker(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return str(path / "run")


@pytest.mark.parametrize("args, words", [
    (["train", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["frobnicate"], "invalid choice"),
    (["train", "--lr", "0"], "--lr"),
    (["train", "--lr", "-1"], "--lr"),
    (["train", "--lr", "fast"], "--lr"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--iters", "-5"], "--iters"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--iters", "5", "--epochs", "1"], "not allowed with"),
    (["train", "--hidden", "0"], "hidden"),
    (["train", "--hidden", "10,x"], "hidden"),
    (["train", "--hidden", "1.5"], "hidden"),
    (["train", "--activation", "tanh"], "invalid choice"),
    (["compare", "--lr", "0.1", "-2"], "--lr"),
    (["compare", "--dataset", "mnist-mini", "nope"], "unknown dataset 'nope'"),
    (["gradcheck", "--batch-size", "0"], "--batch-size"),
    (["datasets", "fetch", "nope"], "unknown dataset 'nope'"),
])
def test_usage_errors_are_one_line_with_status_2(args, words, capsys):
    assert main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err, err
    assert words in err and "error" in err and "Traceback" not in err
    assert captured.out == ""


@pytest.mark.parametrize("extra, words", [
    (["--batch-size", str(MINI.n_train + 1)], "larger than"),
    (["--out", None], "cannot write to the output folder"),
])
def test_run_errors_are_one_line_with_status_2(tmp_path, extra, words, capsys):
    extra = [_blocker(tmp_path) if a is None else a for a in extra]
    args = ["--dataset", "mnist-mini", "--iters", "5", "--hidden", "5"]
    for command in ("train", "compare"):
        assert main([command, *args, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("minidl: error: ") and "\n" not in err and words in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_dataset_not_found_offline(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"MINIDL_OFFLINE": "1", "MINIDL_DATA_DIR": str(empty),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path / "home")}
    for command in ("train", "compare"):
        proc = run_minidl(command, "--dataset", "cifar-10", "--data-dir", str(empty),
                          "--iters", "1", "--out", str(tmp_path / command), env=env)
        assert proc.returncode == 2, proc.stderr
        err = proc.stderr.strip()
        assert err.startswith("minidl: error: ") and "\n" not in err, err
        assert "cifar" in err.lower()
        assert not (tmp_path / command).exists()  # no empty result folder left behind
        assert "download turned off (MINIDL_OFFLINE=1)" in err


def test_datasets_fetch(capsys):
    assert main(["datasets", "fetch", "mnist-mini"]) == 0
    name, path = capsys.readouterr().out.strip().split(": ", 1)
    assert name == "mnist-mini" and Path(path).is_file()


# -- help, datasets, gradcheck ------------------------------------------------------------------


def test_python_dash_m_help():
    proc = run_minidl("--help")
    assert proc.returncode == 0
    for word in ("train", "compare", "gradcheck", "datasets", "examples:"):
        assert word in proc.stdout
    proc = run_minidl("compare", "--help")
    assert proc.returncode == 0
    assert "minidl compare --lr 0.1 0.01" in proc.stdout and "cartesian product" in proc.stdout


@pytest.mark.parametrize("command", ["train", "compare", "gradcheck", "datasets"])
def test_every_command_has_help_with_examples(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: minidl {command}") and "\nexamples" in out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage: minidl" in capsys.readouterr().out


def test_datasets_lists_every_dataset(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in DATASETS:
        assert name in out
    assert "found:" in out  # mnist-mini ships with minidl


def test_gradcheck_prints_the_report(capsys):
    assert main(["gradcheck", "--hidden", "5", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("data: the first 2 training images of MNIST mini")
    assert f"{MINI.n_features}-5-10" in out and "W1" in out and "b2" in out
    assert "backprop" in out and "numerical" in out  # the time of each method


def test_gradcheck_exit_status_1_when_gradients_disagree(monkeypatch, capsys):
    import minidl.gradient

    class Disagreeing:
        ok = False

        def __str__(self):
            return "W1 disagrees"

    monkeypatch.setattr(minidl.gradient, "gradient_check", lambda net, x, t: Disagreeing())
    assert main(["gradcheck", "--hidden", "5", "--batch-size", "2"]) == 1
    assert "W1 disagrees" in capsys.readouterr().out


def test_a_failed_start_leaves_no_runs_folder(tmp_path, capsys):
    # no --out: the default folder under runs/ (and runs/ itself) is removed again
    for command in ("train", "compare"):
        assert main([command, "--dataset", "mnist-mini", "--batch-size",
                     str(MINI.n_train + 1), "--iters", "1"]) == 2
        assert not (tmp_path / "runs").exists()
    nested = tmp_path / "a" / "b" / "run"
    assert main(["train", "--dataset", "mnist-mini", "--batch-size", str(MINI.n_train + 1),
                 "--out", str(nested)]) == 2
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("command", ["train", "compare", "gradcheck", "datasets"])
def test_help_says_assignment_not_seed(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    # 'seed' is NumPy's random seed here, never the course notebook
    assert "the seed's" not in out and "seed experiment" not in out
    if command in ("train", "compare", "gradcheck"):
        assert "--seed" in out
