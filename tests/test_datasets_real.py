"""minidl.datasets on the real files: MNIST and Fashion-MNIST from MINIDL_DATA_DIR, and the
shipped mnist-mini against the real MNIST. Skipped cleanly when MINIDL_DATA_DIR does not hold
them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from _datasets_helpers import isolated  # noqa: F401 - an autouse fixture
from conftest import real_data_dir

from minidl.datasets import (
    _idx,
    dataset_status,
    load_fashion_mnist,
    load_mnist,
    load_mnist_mini,
)

# Read before the isolated fixture clears MINIDL_DATA_DIR.
REAL_DIRS = os.environ.get("MINIDL_DATA_DIR", "")
REAL = real_data_dir("mnist")
REAL_FASHION = real_data_dir("fashion-mnist")
needs_mnist = pytest.mark.skipif(REAL is None, reason="no real MNIST in $MINIDL_DATA_DIR")
needs_fashion = pytest.mark.skipif(REAL_FASHION is None,
                                   reason="no real Fashion-MNIST in $MINIDL_DATA_DIR")

# Published class counts of MNIST (train, test).
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    # One cache for this module: the real files are parsed once, not in every test.
    return tmp_path_factory.mktemp("real-cache")


@pytest.fixture
def real_env(monkeypatch, shared_cache):
    monkeypatch.setenv("MINIDL_DATA_DIR", REAL_DIRS)
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared_cache))


@needs_mnist
def test_real_mnist(real_env):
    (x, t), (xt, tt) = load_mnist()
    assert x.shape == (60000, 784) and xt.shape == (10000, 784)
    assert x.dtype == np.float32 and 0.0 == x.min() and x.max() == 1.0
    assert list(t[:5]) == [5, 0, 4, 1, 9]
    assert list(tt[:5]) == [7, 2, 1, 0, 4]
    assert list(np.bincount(t)) == MNIST_TRAIN_COUNTS
    assert list(np.bincount(tt)) == MNIST_TEST_COUNTS
    assert dataset_status("mnist")["found"] == str(REAL / "mnist")
    assert dataset_status("mnist")["cached"] is True


@needs_mnist
def test_real_mnist_from_cache_is_identical(real_env, monkeypatch):
    first = load_mnist(normalize=False, flatten=False)

    def no_parsing(*args, **kwargs):
        raise AssertionError("parsed again")

    monkeypatch.setattr(_idx, "read_dataset", no_parsing)
    second = load_mnist(normalize=False, flatten=False)
    for a, b in zip((*first[0], *first[1]), (*second[0], *second[1])):
        np.testing.assert_array_equal(a, b)
    assert second[0][0].shape == (60000, 1, 28, 28)


@needs_fashion
def test_real_fashion_mnist(real_env):
    (x, t), (xt, tt) = load_fashion_mnist(normalize=False, one_hot_label=True)
    assert x.shape == (60000, 784) and x.dtype == np.uint8 and xt.shape == (10000, 784)
    assert t.shape == (60000, 10) and tt.shape == (10000, 10)
    assert list(t[:5].argmax(1)) == [9, 0, 0, 3, 0]
    assert list(tt[:5].argmax(1)) == [9, 2, 1, 1, 6]
    assert list(t.sum(0)) == [6000] * 10 and list(tt.sum(0)) == [1000] * 10


@needs_fashion
def test_real_fashion_mnist_in_debians_place(tmp_path, monkeypatch, shared_cache):
    # Debian's dataset-fashion-mnist installs /usr/share/datasets/fashion-mnist/*.gz.
    share = tmp_path / "usr" / "share"
    (share / "datasets").mkdir(parents=True)
    (share / "datasets" / "fashion-mnist").symlink_to(REAL_FASHION / "fashion-mnist")
    monkeypatch.setenv("XDG_DATA_DIRS", str(share))
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared_cache))
    (_, t), _ = load_fashion_mnist()
    assert len(t) == 60000
    assert dataset_status("fashion-mnist")["found"] == str(share / "datasets" / "fashion-mnist")


@needs_mnist
def test_mini_is_a_sample_of_the_real_mnist(real_env):
    mini_path = Path(__file__).resolve().parents[1] / "minidl" / "datasets" / "data"
    with np.load(mini_path / "mnist-mini.npz", allow_pickle=False) as npz:
        mini = {k: npz[k] for k in npz.files}
    (x, t), (xt, tt) = load_mnist(normalize=False)
    np.testing.assert_array_equal(mini["x_train"], x[mini["train_indices"]])
    np.testing.assert_array_equal(mini["t_train"], t[mini["train_indices"]])
    np.testing.assert_array_equal(mini["x_test"], xt[mini["test_indices"]])
    np.testing.assert_array_equal(mini["t_test"], tt[mini["test_indices"]])
    # Stratified: each class's share within 0.1 percentage point of the real set's.
    for sample, full in ((mini["t_train"], t), (mini["t_test"], tt)):
        share = np.bincount(sample, minlength=10) / len(sample)
        np.testing.assert_allclose(share, np.bincount(full) / len(full), atol=1e-3)
    (mx, _mt), _ = load_mnist_mini(normalize=False)
    np.testing.assert_array_equal(mx, mini["x_train"])
