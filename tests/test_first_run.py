"""A student's first run with no dataset on disk (issue 17, first-run details): the error line
suggests MINIDL_DATA_DIR and --dataset mnist-mini, 'minidl datasets' mentions MINIDL_DATA_DIR,
and 'datasets fetch' failing does not send the student back to 'minidl datasets'."""

from __future__ import annotations

import pytest
from _datasets_helpers import isolated  # noqa: F401 - an autouse fixture

from minidl.cli import main
from minidl.datasets import DatasetNotFoundError, _registry, load_mnist


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Downloads allowed, but every mirror unreachable (a file URL that does not exist)."""
    monkeypatch.delenv("MINIDL_OFFLINE", raising=False)
    for name in _registry.MIRRORS:
        monkeypatch.setitem(_registry.MIRRORS, name, [(tmp_path / "no-host").as_uri() + "/"])


def error_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("minidl: error: ")
    assert all(line.startswith("minidl: downloading ") for line in err[:-1])
    return err[-1]


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist", "cifar-10"])
def test_train_offline_suggests_the_data_dir_and_mnist_mini(capsys, tmp_path, monkeypatch,
                                                           dataset):
    monkeypatch.chdir(tmp_path)
    line = error_line(capsys, ["train", "--dataset", dataset, "--iters", "1"])
    for words in ("was not found", "MINIDL_OFFLINE=1", "MINIDL_DATA_DIR", "--dataset mnist-mini"):
        assert words in line, line
    assert not (tmp_path / "runs").exists()  # no empty runs/ left by the failed start


def test_train_without_network(capsys, tmp_path, monkeypatch, no_network):
    monkeypatch.chdir(tmp_path)
    line = error_line(capsys, ["train", "--iters", "1"])
    for words in ("could not be downloaded", "check the network", "MINIDL_DATA_DIR",
                  "--dataset mnist-mini"):
        assert words in line, line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("offline", [True, False])
def test_fetch_failing_does_not_point_back_to_datasets(capsys, monkeypatch, no_network,
                                                       offline):
    if offline:  # fetch is an explicit request: it downloads even then
        monkeypatch.setenv("MINIDL_OFFLINE", "1")
    line = error_line(capsys, ["datasets", "fetch", "mnist"])
    assert "minidl datasets" not in line, line  # no circle
    assert "could not be downloaded" in line and "MINIDL_DATA_DIR" in line, line


def test_datasets_mentions_minidl_data_dir(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("mnist", "fashion-mnist", "cifar-10"):
        assert (f"get it with: minidl datasets fetch {name}, or set MINIDL_DATA_DIR to a folder "
                "holding") in out


def test_the_python_message_names_the_shipped_sample():
    with pytest.raises(DatasetNotFoundError) as err:
        load_mnist()
    assert "load_mnist_mini()" in str(err.value) and "MINIDL_DATA_DIR" in str(err.value)
    assert "\n" not in err.value.summary and "MINIDL_DATA_DIR" in err.value.summary
