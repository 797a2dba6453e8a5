"""Chapter 6 at the command line: weight decay, dropout, batchnorm, --weight-init, and the
book's random hyperparameter search (``minidl search``). Short runs on mnist-mini."""

import json

import numpy as np
import pytest

from minidl.cli import main
from minidl.experiments import ExperimentConfig, compare, run_experiment, search
from minidl.experiments.search import draw_hyperparameters
from minidl.networks import MultiLayerNet, MultiLayerNetExtend

QUICK = {"dataset": "mnist-mini", "hidden": (10,), "batch_size": 500, "iters": 5}
SEARCH = {"dataset": "mnist-mini", "hidden": (10, 10), "epochs": 2, "train_size": 200,
          "trials": 3, "progress": False, "verbose": False}


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIDL_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


def test_weight_decay_dropout_batchnorm_build_the_books_networks():
    plain = run_experiment(**QUICK, weight_decay=0.1, progress=False, verbose=False)
    assert type(plain.network) is MultiLayerNet and plain.network.weight_decay_lambda == 0.1
    extend = run_experiment(**QUICK, dropout=0.3, batchnorm=True, progress=False, verbose=False)
    net = extend.network
    assert isinstance(net, MultiLayerNetExtend) and net.use_dropout and net.use_batchnorm
    assert net.dropout_ration == 0.3 and "BatchNorm1" in net.layers and "Dropout1" in net.layers
    # the same seed, the same network as the book's constructor draws it
    np.random.seed(1211)
    book = MultiLayerNetExtend(784, [10], 10, weight_init_std=0.01, use_dropout=True,
                               dropout_ration=0.3, use_batchnorm=True)
    fresh = run_experiment(**{**QUICK, "iters": 0}, dropout=0.3, batchnorm=True,
                           progress=False, verbose=False).network
    for key in book.params:
        np.testing.assert_array_equal(book.params[key], fresh.params[key])
    assert "dropout 0.3 batchnorm" in extend.metrics["network"]["description"]


@pytest.mark.parametrize("options, words", [
    ({"dropout": 1.0}, "[0, 1)"), ({"dropout": -0.1}, ">= 0"), ({"dropout": float("nan")}, ">= 0"),
    ({"weight_decay": -1}, ">= 0"), ({"weight_decay": float("inf")}, ">= 0"),
    ({"batchnorm": "yes"}, "True or False"),
    ({"model": "convnet", "dropout": 0.5}, "SimpleConvNet has no"),
])
def test_bad_chapter_6_values_name_the_field(options, words):
    with pytest.raises((ValueError, TypeError), match=words.replace("[", r"\[").replace(
            "(", r"\(").replace(")", r"\)")):
        ExperimentConfig(**options)


@pytest.mark.parametrize("args, words", [
    (["train", "--dropout", "1"], "--dropout"),
    (["train", "--dropout", "nan"], "--dropout"),
    (["train", "--weight-decay", "-0.1"], "--weight-decay"),
    (["compare", "--weight-init", "0.01", "huge"], "--weight-init"),
    (["compare", "--batchnorm", "maybe"], "--batchnorm"),
    (["search", "--lr", "0", "1"], "--lr"),
    (["search", "--weight-decay", "1e-8", "inf"], "--weight-decay"),
    (["search", "--trials", "0"], "--trials"),
])
def test_bad_chapter_6_options_are_one_line_with_status_2(args, words, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and words in err and "Traceback" not in err


def test_compare_weight_init_and_batchnorm_switch(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--dataset", "mnist-mini", "--hidden", "10", "--iters", "3",
                 "--weight-init", "0.01", "xavier", "he", "--batchnorm", "off", "on",
                 "--quiet", "--out", str(out)]) == 0
    record = json.loads((out / "comparison.json").read_text())
    assert record["varied"] == ["weight_init_std", "batchnorm"]
    assert [(r["weight_init_std"], r["batchnorm"]) for r in record["rows"]] == [
        (0.01, False), (0.01, True), ("xavier", False), ("xavier", True), ("he", False),
        ("he", True)]
    assert main(["train", "--dataset", "mnist-mini", "--hidden", "10", "--iters", "2",
                 "--batchnorm", "--quiet", "--out", str(tmp_path / "bn")]) == 0
    m = json.loads((tmp_path / "bn" / "metrics.json").read_text())
    assert m["config"]["batchnorm"] is True and m["network"]["class"] == "MultiLayerNetExtend"


def test_dropout_comparison_in_python():
    table = compare(**QUICK, dropout=[0.0, 0.5], progress=False, verbose=False)
    assert [type(r.network).__name__ for r in table.results] == ["MultiLayerNet",
                                                                  "MultiLayerNetExtend"]


# -- search ------------------------------------------------------------------------------------


def test_draws_are_log_uniform_in_the_books_order():
    rng = np.random.RandomState(0)
    draws = draw_hyperparameters(2000, (1e-6, 1e-2), (1e-8, 1e-4), rng)
    lrs, wds = np.log10([d[0] for d in draws]), np.log10([d[1] for d in draws])
    assert lrs.min() >= -6 and lrs.max() <= -2 and abs(lrs.mean() + 4) < 0.1
    assert wds.min() >= -8 and wds.max() <= -4 and abs(wds.mean() + 6) < 0.1
    # the book: weight_decay = 10 ** uniform(-8, -4), then lr = 10 ** uniform(-6, -2)
    rng = np.random.RandomState(0)
    wd, lr = 10 ** rng.uniform(-8, -4), 10 ** rng.uniform(-6, -2)
    assert draws[0] == (lr, wd)


def test_search_validates_on_a_split_of_the_training_set(tmp_path):
    out = tmp_path / "s"
    result = search(**SEARCH, lr=(1e-2, 1e-1), out=out)
    assert len(result) == 3
    accs = [row["val_acc"] for row in result]
    assert accs == sorted(accs, reverse=True) and [row["rank"] for row in result] == [1, 2, 3]
    for row, r in zip(result.rows, result.results):
        assert r.metrics["dataset"]["n_train"] == 160 and r.metrics["dataset"]["n_test"] == 40
        assert "validation" in r.metrics["dataset"]["evaluated_on"]
        assert 1e-2 <= row["lr"] <= 1e-1 and 1e-8 <= row["weight_decay"] <= 1e-4
        assert r.network.weight_decay_lambda == row["weight_decay"]
    again = search(**SEARCH, lr=(1e-2, 1e-1))
    assert [row["lr"] for row in again] == [row["lr"] for row in result]  # seeded
    assert sorted(p.name for p in out.iterdir()) == [
        "search.csv", "search.json", "search.md", "search.png", "trials"]
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["001", "002", "003"]
    assert repr(result).startswith("SearchResult(3 trials, best val acc ")


def test_search_command_prints_the_books_lines(tmp_path, capsys):
    assert main(["search", "--dataset", "mnist-mini", "--hidden", "10", "--epochs", "1",
                 "--train-size", "100", "--batch-size", "20", "--trials", "2", "--top", "1",
                 "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len([line for line in lines if line.startswith("val acc:") and "| lr:" in line]) == 2
    assert "=========== Hyper-Parameter Optimization Result ===========" in out
    assert "Best-1(val acc:" in out and "Best-2" not in out
    assert "| rank | trial |" in out


# -- optimizers ---------------------------------------------------------------------------------


def test_optimizers_take_the_books_default_learning_rate():
    assert ExperimentConfig().lr == 0.1 and ExperimentConfig().optimizer is None  # the course
    assert ExperimentConfig(optimizer="adam").lr == 0.001
    assert ExperimentConfig(optimizer="SGD").lr == 0.01 and ExperimentConfig(optimizer="sgd",
                                                                             lr=0.5).lr == 0.5
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'; choose from sgd"):
        ExperimentConfig(optimizer="adamw")


def test_a_run_with_an_optimizer_is_the_books_update():
    from minidl import optimizer as book
    from minidl import training
    from minidl.datasets import load_dataset

    result = run_experiment(**QUICK, optimizer="momentum", progress=False, verbose=False)
    (x, t), (xt, tt) = load_dataset("mnist-mini")
    np.random.seed(1211)
    net = MultiLayerNet(784, [10], 10, weight_init_std=0.01)
    expected = training.train(net, x, t, xt, tt, optimizer=book.Momentum(lr=0.01),
                              batch_size=500, iters=5)
    np.testing.assert_allclose(result.history.train_loss, expected.train_loss, rtol=1e-10)
    assert "momentum" in result.metrics["network"]["description"]


def test_the_books_optimizer_comparison_in_one_command(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--dataset", "mnist-mini", "--hidden", "10", "--iters", "3",
                 "--optimizer", "sgd", "momentum", "adagrad", "adam", "--quiet",
                 "--out", str(out)]) == 0
    record = json.loads((out / "comparison.json").read_text())
    assert record["varied"] == ["optimizer", "lr"]  # each optimizer's own default lr
    assert [(r["optimizer"], r["lr"]) for r in record["rows"]] == [
        ("sgd", 0.01), ("momentum", 0.01), ("adagrad", 0.01), ("adam", 0.001)]
    assert (out / "comparison.png").exists()


@pytest.mark.parametrize("args", [["train", "--optimizer", "adamw"],
                                  ["compare", "--optimizer", "sgd", "bogus"]])
def test_unknown_optimizers_are_one_line(args, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--optimizer" in err and "invalid choice" in err
