"""``minidl train/compare --model convnet``: the book's SimpleConvNet from the command line."""

import json

import numpy as np
import pytest

from minidl import backend
from minidl.cli import main
from minidl.experiments import ExperimentConfig
from minidl.experiments import run as run_module
from minidl.networks import SimpleConvNet, load_network

QUICK = ["--dataset", "mnist-mini", "--batch-size", "50", "--iters", "3", "--hidden", "12"]


@pytest.fixture(autouse=True)
def _offline_and_small(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIDL_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    # mnist-mini's first 400 training and 200 test images: a convnet evaluates every
    # image once per epoch, and the whole of mnist-mini would cost seconds per run
    load = run_module.load

    def small(config):
        data = load(config)
        data.x_train, data.t_train = data.x_train[:400], data.t_train[:400]
        data.x_test, data.t_test = data.x_test[:200], data.t_test[:200]
        data.info = {**data.info, "n_train": 400, "n_test": 200}
        return data

    monkeypatch.setattr(run_module, "load", small)


def test_train_convnet_writes_the_run_and_a_model_that_loads(tmp_path, capsys, monkeypatch):
    # the two runs below must draw the same numbers: their convolutions' BLAS products on
    # one fixed thread count, as OpenBLAS's last bits depend on it (minidl.engine.threads)
    monkeypatch.setattr(backend, "THREADS_FIXED", True)
    out = tmp_path / "run"
    assert main(["train", "--model", "convnet", *QUICK, "--seed", "4", "--out", str(out)]) == 0
    assert "final: train acc" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["model"] == "convnet"
    assert metrics["network"]["class"] == "SimpleConvNet"
    assert metrics["network"]["sizes"] == [1, 28, 28, 12, 10]
    net = load_network(out / "model.npz")
    assert isinstance(net, SimpleConvNet) and net.params["W2"].shape == (4320, 12)
    # the run's network is the one the seed draws, trained by the seed's loop
    result = run_module.run_experiment(model="convnet", dataset="mnist-mini", batch_size=50,
                                       iters=3, hidden=12, seed=4, verbose=False)
    for key, value in result.network.params.items():
        np.testing.assert_array_equal(net.params[key], value)
    assert (out / "curves.png").stat().st_size > 0


def test_compare_mlp_and_convnet(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--model", "mlp", "convnet", *QUICK, "--out", str(out)]) == 0
    record = json.loads((out / "comparison.json").read_text())
    assert record["varied"] == ["model"]
    assert [run["config"]["model"] for run in record["runs"]] == ["mlp", "convnet"]


def test_convnet_data_are_images():
    config = ExperimentConfig(model="convnet", dataset="mnist-mini")
    data = run_module.load(config)
    assert data.x_train.shape[1:] == (1, 28, 28) and data.x_train.dtype == np.float32
    assert run_module.data_key(config) != run_module.data_key(ExperimentConfig(dataset="mnist-mini"))
    net = run_module.build_network(config, data)
    assert net.params["W1"].shape == (30, 1, 5, 5)


@pytest.mark.parametrize("model, expected", [
    ("convnet", {"flatten": False, "grayscale": False}),  # a convnet sees the colours
    ("mlp", {"flatten": True}),  # the course's grayscale default, as before
])
def test_cifar_10_in_colour_for_the_convnet(monkeypatch, model, expected):
    import minidl.datasets

    asked = {}

    def fake_load(name, normalize, flatten, one_hot_label, **options):
        asked.update(flatten=flatten, **options)
        shape = (3, 32, 32) if options.get("grayscale") is False else (1, 32, 32)
        x = np.zeros((4, *shape), dtype=np.float32)
        x = x if not flatten else x.reshape(4, -1)
        t = np.zeros(4, dtype=np.uint8)
        return (x, t), (x, t)

    monkeypatch.setattr(minidl.datasets, "load_dataset", fake_load)
    monkeypatch.setattr(minidl.datasets, "dataset_status", lambda *a, **k: {})
    data = run_module.load(ExperimentConfig(model=model, dataset="cifar-10"))
    assert {k: asked.get(k) for k in expected} == expected
    if model == "convnet":
        net = run_module.build_network(ExperimentConfig(model=model, dataset="cifar-10"), data)
        assert net.params["W1"].shape == (30, 3, 5, 5) and net.params["W2"].shape[0] == 5880


@pytest.mark.parametrize("options, message", [
    ({"hidden": (100, 50)}, "hidden must be one size"),
    ({"activation": "sigmoid"}, "uses relu"),
    ({"weight_init_std": "he"}, "weight_init_std must be a number"),
    ({"model": "resnet"}, "unknown model 'resnet'"),
])
def test_what_the_convnet_cannot_take_is_a_clear_error(options, message):
    with pytest.raises(ValueError, match=message):
        ExperimentConfig(**{"model": "convnet", **options})


def test_the_command_line_says_so_in_one_line(capsys):
    assert main(["train", "--model", "convnet", "--hidden", "100,50", *QUICK[:2]]) == 2
    assert "hidden must be one size" in capsys.readouterr().err
