"""minidl.experiments and minidl.plotting: runs, comparisons, the files they write.

Every run here trains on the bundled ``mnist-mini`` with a small network and a
few dozen iterations, so the whole file takes seconds.
"""

import csv
import io
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minidl
from minidl import training
from minidl.datasets import DATASETS, DatasetNotFoundError
from minidl.experiments import (
    ExperimentConfig,
    compare,
    expand_configs,
    parse_hidden,
    run_experiment,
)
from minidl.experiments import run as run_module
from minidl.networks import MultiLayerNet

# the folder holding the minidl under test (the source tree, or site-packages when installed)
PACKAGE_PARENT = Path(minidl.__file__).resolve().parents[1]
MINI = DATASETS["mnist-mini"]
BATCH = MINI.n_train // 20  # an epoch of 20 iterations: evaluations at 0 and 20 in 30 steps
QUICK = {"dataset": "mnist-mini", "hidden": (10,), "batch_size": BATCH, "iters": 30}


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; fails unless the file is a PNG."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data[-8:-4] == b"IEND"
    return width, height


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    # never download during tests; the bundled mnist-mini needs nothing
    monkeypatch.setenv("MINIDL_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


# -- configuration --------------------------------------------------------------------


def test_defaults_are_the_seed_experiment():
    c = ExperimentConfig()
    assert (c.dataset, c.hidden, c.activation, c.lr, c.batch_size) == (
        "mnist", (50,), "relu", 0.1, 100)
    assert (c.seed, c.weight_init_std, c.dtype, c.grad) == (1211, 0.01, "float64", "backprop")
    assert c.iterations(60000) == 10000
    assert c.iter_per_epoch(60000) == 600


@pytest.mark.parametrize("epochs, batch_size, n_train, iters", [
    (2, 100, 60000, 1200),
    (0.1, 100, 60000, 60),       # 0.1 * 600 is 60.000000000000007 in floating point
    (1, 128, 60000, 469),        # 468.75 rounds up
    (3, 5000, 1000, 3),          # epoch size max(n / batch, 1) = 1
])
def test_epochs_convert_with_the_seed_epoch_size(epochs, batch_size, n_train, iters):
    c = ExperimentConfig(epochs=epochs, batch_size=batch_size)
    assert c.iterations(n_train) == iters


@pytest.mark.parametrize("value, sizes", [
    (50, (50,)), ("100,50", (100, 50)), ((100, 50), (100, 50)), ([7], (7,)), ("8", (8,)),
])
def test_parse_hidden(value, sizes):
    assert parse_hidden(value) == sizes


@pytest.mark.parametrize("options, error, words", [
    ({"dataset": "nope"}, ValueError, "unknown dataset 'nope'"),
    ({"hidden": "100,x"}, ValueError, "hidden"),
    ({"hidden": 0}, ValueError, "hidden"),
    ({"hidden": (50, -1)}, ValueError, "hidden"),
    ({"hidden": 1.5}, TypeError, "hidden"),
    ({"activation": "tanh"}, ValueError, "activation"),
    ({"lr": 0}, ValueError, "lr"),
    ({"lr": -0.1}, ValueError, "lr"),
    ({"lr": float("nan")}, ValueError, "lr"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": 10.0}, TypeError, "batch_size"),
    ({"iters": -1}, ValueError, "iters"),
    ({"iters": 10, "epochs": 1}, ValueError, "iters or epochs"),
    ({"epochs": 0}, ValueError, "epochs"),
    ({"seed": -1}, ValueError, "seed"),
    ({"seed": 2**32}, ValueError, "seed"),
    ({"dtype": "int32"}, ValueError, "dtype"),
    ({"grad": "magic"}, ValueError, "grad"),
    ({"weight_init_std": "big"}, ValueError, "weight_init_std"),
    ({"weight_init_std": 0}, ValueError, "weight_init_std"),
])
def test_bad_configurations_are_refused_by_name(options, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(")):
        ExperimentConfig(**options)


def test_config_normalises_values():
    c = ExperimentConfig(hidden="100,50", dtype=np.float32, weight_init_std="He", lr=1)
    assert c.hidden == (100, 50) and c.dtype == "float32" and c.weight_init_std == "he"
    assert isinstance(c.lr, float)
    assert c.label(["lr", "hidden"]) == "lr=1 hidden=100,50"


# -- one run ----------------------------------------------------------------------------


def test_run_writes_metrics_curves_and_model(tmp_path):
    out = tmp_path / "run"
    result = run_experiment(**QUICK, out=out, progress=False, verbose=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "curves.png", "metrics.csv", "metrics.json", "model.npz"]

    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "finished"
    assert m["config"]["dataset"] == "mnist-mini" and m["config"]["hidden"] == [10]
    assert m["config"]["lr"] == 0.1 and m["config"]["seed"] == 1211 and m["config"]["iters"] == 30
    assert m["dataset"]["n_train"] == MINI.n_train and m["dataset"]["n_test"] == MINI.n_test
    assert m["network"]["sizes"] == [MINI.n_features, 10, MINI.n_classes]
    assert m["minidl_version"] == m["environment"]["minidl"]
    assert m["environment"]["backend"] in ("cython", "numpy")
    for key in ("load_seconds", "train_seconds", "seconds_per_iteration", "total_seconds"):
        assert m["timings"][key] >= 0

    # one loss per iteration, the same as the History's
    assert len(m["iteration_loss"]) == 30 == result.history.iterations
    np.testing.assert_allclose(m["iteration_loss"], result.history.train_loss)

    # evaluations at the seed's iterations; each row's loss is the mean since the previous one
    ipe = max(MINI.n_train / BATCH, 1)
    assert m["iter_per_epoch"] == ipe
    rows = m["epochs"]
    assert [r["iteration"] for r in rows] == [i for i in range(30) if i % ipe == 0]
    assert [r["epoch"] for r in rows] == list(range(len(rows)))
    previous = -1
    for r in rows:
        expected = np.mean(m["iteration_loss"][previous + 1: r["iteration"] + 1])
        assert r["loss"] == pytest.approx(expected, rel=1e-12)
        previous = r["iteration"]
    assert [r["test_acc"] for r in rows] == result.history.test_acc
    assert [r["train_acc"] for r in rows] == result.history.train_acc
    assert all(0 <= r["train_acc"] <= 1 and 0 <= r["test_acc"] <= 1 for r in rows)
    elapsed = [r["elapsed"] for r in rows]
    assert elapsed == sorted(elapsed)

    # the CSV holds the same rows
    with open(out / "metrics.csv", newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert list(csv_rows[0]) == ["epoch", "iteration", "train_acc", "test_acc", "loss", "elapsed"]
    assert len(csv_rows) == len(rows)
    for c, r in zip(csv_rows, rows):
        assert int(c["iteration"]) == r["iteration"]
        assert float(c["test_acc"]) == r["test_acc"] and float(c["loss"]) == r["loss"]

    # the saved model is the trained network and scores the final accuracy
    from minidl.datasets import load_mnist_mini

    net = MultiLayerNet.load(out / "model.npz")
    assert net.sizes == result.network.sizes and net.activation == "relu"
    for key, value in result.network.params.items():
        np.testing.assert_array_equal(net.params[key], value)
    (x_train, t_train), (x_test, t_test) = load_mnist_mini(normalize=True, flatten=True)
    assert m["final"]["iterations"] == 30
    assert net.accuracy(x_test, t_test) == m["final"]["test_acc"] == result.final_test_acc
    assert net.accuracy(x_train, t_train) == m["final"]["train_acc"]

    width, height = png_size(out / "curves.png")
    assert width > 300 and height > 200


def test_run_matches_the_notebook_loop():
    # the notebook: load, np.random.seed, build the network, then the SGD loop
    from minidl.datasets import load_dataset

    (x_train, t_train), (x_test, t_test) = load_dataset("mnist-mini")
    np.random.seed(1211)
    net = MultiLayerNet(MINI.n_features, [10], MINI.n_classes, weight_init_std=0.01)
    expected = training.train(net, x_train, t_train, x_test, t_test, lr=0.1, batch_size=BATCH,
                              iters=30)
    result = run_experiment(**QUICK, progress=False, verbose=False)
    assert result.history.train_loss == expected.train_loss
    assert result.history.test_acc == expected.test_acc


def test_same_seed_same_run_other_seed_other_run():
    a = run_experiment(**{**QUICK, "iters": 5}, progress=False, verbose=False)
    b = run_experiment(**{**QUICK, "iters": 5}, progress=False, verbose=False)
    c = run_experiment(**{**QUICK, "iters": 5, "seed": 7}, progress=False, verbose=False)
    assert a.history.train_loss == b.history.train_loss
    assert a.history.train_loss != c.history.train_loss


def test_run_without_out_writes_nothing(tmp_path):
    result = run_experiment(**QUICK, progress=False, verbose=False)
    assert result.out is None
    assert list(tmp_path.iterdir()) == []


def test_run_prints_a_line_per_epoch(capsys):
    result = run_experiment(**QUICK, progress=False, verbose=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(result.history.epochs)
    assert lines[0].startswith("epoch   0  iter      0  train acc ")
    assert "test acc" in lines[0] and "loss" in lines[0]


def test_epochs_option_and_final_evaluation_reuse():
    # 2 epochs of 20 steps on 1000 images: evaluations at 0 and 20; the final
    # network (after step 39) is evaluated once more
    result = run_experiment(**{**QUICK, "iters": None, "epochs": 2}, progress=False,
                            verbose=False)
    ipe = max(MINI.n_train / BATCH, 1)
    assert result.history.iterations == math.ceil(2 * ipe)
    # iters=1: the only evaluation (iteration 0) already saw the final network
    one = run_experiment(**{**QUICK, "iters": 1}, progress=False, verbose=False)
    assert one.metrics["final"]["test_acc"] == one.metrics["epochs"][0]["test_acc"]


def test_zero_iterations_still_records_and_plots(tmp_path):
    result = run_experiment(**{**QUICK, "iters": 0}, out=tmp_path / "r", progress=False,
                            verbose=False)
    assert result.metrics["epochs"] == [] and result.metrics["iteration_loss"] == []
    assert 0 <= result.final_test_acc <= 1
    png_size(tmp_path / "r" / "curves.png")


def test_float32_run_trains_in_float32():
    result = run_experiment(**QUICK, dtype="float32", progress=False, verbose=False)
    assert all(p.dtype == np.float32 for p in result.network.params.values())
    assert result.metrics["config"]["dtype"] == "float32"


def test_non_finite_losses_are_written_as_null(tmp_path, monkeypatch):
    # a diverging run's NaN/inf losses must leave metrics.json valid (strict) JSON
    def diverging_train(network, x_train, t_train, x_test, t_test, *, on_epoch, on_iteration,
                        **kwargs):
        history = training.History()
        for i, loss in enumerate([2.3, float("inf"), float("nan")]):
            history.train_loss.append(loss)
            history.iterations = i + 1
            on_iteration(i, loss)
        history.epochs.append(2)
        history.train_acc.append(0.1)
        history.test_acc.append(0.1)
        history.epoch_seconds.append(0.5)
        on_epoch(2, history)
        history.seconds = 0.5
        return history

    monkeypatch.setattr(training, "train", diverging_train)
    # keep_going: the run records the non-finite losses instead of stopping at the first
    run_experiment(**QUICK, out=tmp_path / "r", progress=False, verbose=False, keep_going=True)

    def refuse(name):
        raise AssertionError(f"{name} in metrics.json")

    m = json.loads((tmp_path / "r" / "metrics.json").read_text(), parse_constant=refuse)
    assert m["iteration_loss"] == [2.3, None, None]
    assert m["epochs"][0]["loss"] is None  # the mean over inf and nan
    png_size(tmp_path / "r" / "curves.png")


def test_batch_larger_than_training_set_is_refused(tmp_path):
    with pytest.raises(ValueError, match="larger than"):
        run_experiment(**{**QUICK, "batch_size": MINI.n_train + 1}, out=tmp_path / "r",
                       progress=False, verbose=False)
    assert not (tmp_path / "r").exists()  # the folder we created is removed again


def test_unwritable_out_is_refused_before_training(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(training, "train", lambda *a, **k: calls.append(1))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="cannot write to the output folder"):
        run_experiment(**QUICK, out=blocker / "run", progress=False, verbose=False)
    assert calls == []


def test_dataset_missing_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("MINIDL_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError):
        run_experiment(dataset="cifar-10", data_dir=empty, iters=1, out=tmp_path / "r",
                       progress=False, verbose=False)
    assert not (tmp_path / "r").exists()


def _interrupt_at(monkeypatch, at):
    """Make training stop as Ctrl-C would, after iteration ``at`` (0-based)."""
    original = run_module._Recorder.on_iteration

    def on_iteration(self, i, loss):
        original(self, i, loss)
        if i == at:
            raise KeyboardInterrupt

    monkeypatch.setattr(run_module._Recorder, "on_iteration", on_iteration)


def test_interrupted_run_keeps_what_it_recorded(tmp_path, monkeypatch):
    _interrupt_at(monkeypatch, 24)
    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt) as info:
        run_experiment(**QUICK, out=out, progress=False, verbose=False)
    assert info.value.out == out
    result = info.value.result
    assert result.interrupted and result.history.iterations == 25
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "interrupted" and m["final"] is None
    assert len(m["iteration_loss"]) == 25 and m["iterations_done"] == 25
    assert [r["iteration"] for r in m["epochs"]] == [0, 20]
    assert MultiLayerNet.load(out / "model.npz").sizes == [MINI.n_features, 10, MINI.n_classes]
    png_size(out / "curves.png")


# -- comparisons ----------------------------------------------------------------------------


def test_expand_configs_is_a_cartesian_product():
    configs, varied = expand_configs({"dataset": "mnist-mini", "lr": [0.1, 0.01],
                                          "activation": ["relu", "sigmoid"], "iters": 5})
    assert varied == ["lr", "activation"]
    assert [(c.lr, c.activation) for c in configs] == [
        (0.1, "relu"), (0.1, "sigmoid"), (0.01, "relu"), (0.01, "sigmoid")]
    assert {c.seed for c in configs} == {1211} and {c.iters for c in configs} == {5}


def test_expand_configs_hidden_list_means_alternatives():
    configs, varied = expand_configs({"hidden": [50, (100, 50), "20,10"]})
    assert [c.hidden for c in configs] == [(50,), (100, 50), (20, 10)]
    configs, varied = expand_configs({"hidden": (100, 50)})  # a tuple is one architecture
    assert [c.hidden for c in configs] == [(100, 50)] and varied == []


def test_expand_configs_drops_duplicates_and_unknown_options():
    configs, _varied = expand_configs({"lr": [0.1, 0.1, 0.01]})
    assert [c.lr for c in configs] == [0.1, 0.01]
    with pytest.raises(TypeError, match="unknown option 'learning_rate'"):
        expand_configs({"learning_rate": [0.1]})
    with pytest.raises(ValueError, match="no values"):
        expand_configs({"lr": []})


def test_compare_table_files_and_same_seed(tmp_path):
    out = tmp_path / "cmp"
    table = compare(**QUICK, lr=[0.1, 0.05], out=out, progress=False, verbose=False)
    assert table.varied == ["lr"]
    assert table.columns[:2] == ["run", "lr"]
    assert [row["run"] for row in table.rows] == ["lr=0.1", "lr=0.05"]
    assert [row["lr"] for row in table] == [0.1, 0.05]
    for row, result in zip(table.rows, table.results):
        assert row["final_test_acc"] == result.final_test_acc
        # best: of every evaluation, the final one included
        assert row["best_test_acc"] == max([*result.history.test_acc, result.final_test_acc])
        if row["best_epoch"] == "final":
            assert result.final_test_acc > max(result.history.test_acc)
        else:
            assert result.history.test_acc[row["best_epoch"]] == row["best_test_acc"]
        assert row["iterations"] == 30 and row["seconds"] > 0

    # the same seed for every run: the lr=0.1 row is exactly the single run
    single = run_experiment(**QUICK, progress=False, verbose=False)
    assert table.results[0].history.train_loss == single.history.train_loss
    assert table[0]["final_test_acc"] == single.final_test_acc

    names = sorted(p.name for p in out.iterdir())
    assert names == ["01-lr-0.1", "02-lr-0.05", "comparison.csv", "comparison.json",
                     "comparison.md", "comparison.png"]
    for run in ("01-lr-0.1", "02-lr-0.05"):
        assert {p.name for p in (out / run).iterdir()} == {
            "metrics.json", "metrics.csv", "curves.png", "model.npz"}
    rows = list(csv.DictReader(io.StringIO((out / "comparison.csv").read_text())))
    assert [r["run"] for r in rows] == ["lr=0.1", "lr=0.05"]
    assert [float(r["final_test_acc"]) for r in rows] == [r["final_test_acc"] for r in table]
    md = (out / "comparison.md").read_text().splitlines()
    assert md[0].startswith("| run ") and "final test acc" in md[0]
    assert len([line for line in md if line.startswith("|")]) == 4 and md[-1] == table.note
    assert f"{table[1]['final_test_acc']:.4f}" in md[3]
    record = json.loads((out / "comparison.json").read_text())
    assert record["varied"] == ["lr"] and len(record["runs"]) == 2
    png_size(out / "comparison.png")


def test_compare_depth_and_activation_in_memory():
    table = compare(**{**QUICK, "hidden": [10, (10, 5)], "iters": 5},
                    activation=["relu", "sigmoid"], progress=False, verbose=False)
    assert len(table) == 4 and table.varied == ["hidden", "activation"]
    assert [r.network.sizes[1:-1] for r in table.results] == [[10], [10], [10, 5], [10, 5]]
    csv_rows = list(csv.DictReader(io.StringIO(table.to_csv())))
    assert [r["hidden"] for r in csv_rows] == ["10", "10", "10,5", "10,5"]
    assert "| 10,5 " in table.to_markdown()
    assert table._repr_markdown_() == str(table) == table.to_markdown()


def test_compare_with_explicit_configs():
    configs = [ExperimentConfig(**{**QUICK, "iters": 5}), dict(QUICK, iters=5,
                                                               batch_size=BATCH // 2)]
    table = compare(configs, progress=False, verbose=False)
    assert table.varied == ["batch_size"] and [r["batch_size"] for r in table] == [BATCH, BATCH // 2]
    with pytest.raises(TypeError, match="not both"):
        compare(configs, lr=[0.1, 0.2])


def test_compare_checks_every_size_before_training(monkeypatch):
    calls = []
    monkeypatch.setattr(training, "train", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match="larger than"):
        compare(**{**QUICK, "batch_size": [10, MINI.n_train + 1]}, progress=False,
                verbose=False)
    assert calls == []


def test_interrupted_compare_writes_the_table_so_far(tmp_path, monkeypatch):
    count = {"runs": 0}
    original = run_module._run

    def run(*args, **kwargs):
        count["runs"] += 1
        if count["runs"] == 2:
            _interrupt_at(monkeypatch, 9)
        return original(*args, **kwargs)

    monkeypatch.setattr(run_module, "_run", run)
    out = tmp_path / "cmp"
    with pytest.raises(KeyboardInterrupt) as info:
        compare(**QUICK, lr=[0.1, 0.05, 0.01], out=out, progress=False, verbose=False)
    table = info.value.table
    assert info.value.out == out
    assert [r["status"] for r in table] == ["finished", "interrupted"]
    rows = list(csv.DictReader(io.StringIO((out / "comparison.csv").read_text())))
    assert [r["status"] for r in rows] == ["finished", "interrupted"]
    assert rows[1]["final_test_acc"] == "" and rows[1]["iterations"] == "10"
    assert not (out / "03-lr-0.01").exists()


# -- plotting and imports ----------------------------------------------------------------------


def test_plots_do_not_touch_pyplot_and_import_is_lazy(tmp_path):
    code = (
        "import sys, minidl, minidl.experiments\n"
        "assert 'matplotlib' not in sys.modules, 'import minidl loaded matplotlib'\n"
        "from minidl import run_experiment, compare, ExperimentConfig\n"
        "from minidl.plotting import plot_curves, plot_comparison\n"
        "m = {'config': {'dataset': 'x', 'lr': 0.1, 'batch_size': 1}, 'epochs': [\n"
        "     {'epoch': 0, 'iteration': 0, 'train_acc': 0.5, 'test_acc': 0.4, 'loss': None}],\n"
        "     'iteration_loss': [2.3, None], 'iter_per_epoch': 1, 'status': 'finished'}\n"
        f"plot_curves(m, {str(tmp_path / 'a.png')!r})\n"
        f"plot_comparison([m, m], ['a', 'b'], {str(tmp_path / 'b.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["PYTHONPATH"] = str(PACKAGE_PARENT)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path,
                   timeout=120)
    png_size(tmp_path / "a.png")
    png_size(tmp_path / "b.png")


def test_metrics_are_on_disk_while_training(tmp_path, monkeypatch):
    # a run that dies (not Ctrl-C) still leaves the metrics of its first evaluation
    original = run_module._Recorder.on_iteration

    def on_iteration(self, i, loss):
        original(self, i, loss)
        if i == 25:
            raise RuntimeError("the machine caught fire")

    monkeypatch.setattr(run_module._Recorder, "on_iteration", on_iteration)
    with pytest.raises(RuntimeError):
        run_experiment(**QUICK, out=tmp_path / "r", progress=False, verbose=False)
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["status"] == "running" and m["epochs"][0]["iteration"] == 0
    assert len(m["iteration_loss"]) >= 1
