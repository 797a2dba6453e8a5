"""Data folders holding the wrong kind of thing: a folder where a file should be (an IDX file,
a CIFAR-10 batch or archive), a file where a folder should be, a data_dir that is a file. Each
is named in the not-found error, or, when a later place has the data, in a warning that says
which copy is used instead (issue 16, item 9)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _datasets_helpers import (  # noqa: F401 - isolated is an autouse fixture
    IDX_FILES,
    cache_root,
    isolated,
    register_idx,
    small_cifar,
    small_idx_arrays,
    write_cifar_bin,
    write_idx,
)

from minidl.datasets import DatasetNotFoundError, _registry, load_cifar_10, load_mnist

from .oracle import clear_error, same_arrays


def mnist_copies(tmp_path, monkeypatch):
    """A good copy in minidl's cache folder and a data_dir to break; (data_dir, arrays)."""
    arrays = small_idx_arrays()
    register_idx(monkeypatch, "mnist", arrays)
    write_idx(tmp_path / "broken" / "mnist", arrays, gz=False)
    return tmp_path / "broken", arrays


def want_mnist(arrays):
    return arrays["x_train"].reshape(len(arrays["x_train"]), -1), arrays["t_train"].astype(np.uint8)


@pytest.mark.parametrize("how,named", [
    ("raw-is-a-folder", "train-images-idx3-ubyte is a folder where a file should be"),
    ("both-are-folders", "train-images-idx3-ubyte is a folder where a file should be"),
    ("gz-is-a-folder", "train-images-idx3-ubyte.gz is a folder where a file should be"),
    ("mnist-is-a-file", "mnist: a file where a folder should be"),
    ("data-dir-is-a-file", "broken: a file, not a data folder"),
])
def test_wrong_kind_of_entry(tmp_path, monkeypatch, how, named):
    data_dir, arrays = mnist_copies(tmp_path, monkeypatch)
    folder = data_dir / "mnist"
    image = folder / IDX_FILES[0]
    if how in ("raw-is-a-folder", "both-are-folders", "gz-is-a-folder"):
        image.unlink()
        if how != "gz-is-a-folder":
            image.mkdir()
        if how != "raw-is-a-folder":
            (folder / (IDX_FILES[0] + ".gz")).mkdir()
    elif how == "mnist-is-a-file":
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
        folder.write_bytes(b"not a folder")
    else:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
        data_dir.rmdir()
        data_dir.write_bytes(b"not a folder")
    # Nowhere else: the not-found error names it, and so does its line for the command line.
    with clear_error(named, types=DatasetNotFoundError, one_line=False) as info:
        load_mnist(data_dir=data_dir)
    assert named in info.value.summary and "\n" not in info.value.summary
    # A copy further down the search: used, with a warning that says why.
    write_idx(cache_root(tmp_path) / "mnist", arrays, gz=True)
    with pytest.warns(UserWarning, match="using .*xdg-cache/minidl/mnist instead") as record:
        (x, t), _ = load_mnist(normalize=False, data_dir=data_dir)
    assert any(named in str(w.message) for w in record)
    same_arrays((x, t), want_mnist(arrays))


def test_no_warning_when_the_first_place_is_simply_absent(tmp_path, monkeypatch):
    arrays = small_idx_arrays()
    register_idx(monkeypatch, "mnist", arrays)
    write_idx(cache_root(tmp_path) / "mnist", arrays, gz=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (x, t), _ = load_mnist(normalize=False, data_dir=tmp_path / "nothing-here")
    same_arrays((x, t), want_mnist(arrays))


@pytest.mark.parametrize("how,named", [
    ("batch-is-a-folder", "test_batch.bin is a folder where a file should be"),
    ("archive-is-a-folder", "cifar-10-binary.tar.gz: a folder where the archive should be"),
])
def test_cifar_wrong_kind_of_entry(tmp_path, how, named):
    data = small_cifar()
    root = tmp_path / "broken"
    if how == "batch-is-a-folder":
        folder = write_cifar_bin(root, data)
        (folder / _registry.CIFAR_BIN_TEST).unlink()
        (folder / _registry.CIFAR_BIN_TEST).mkdir()
    else:
        (root / _registry.CIFAR_BIN_ARCHIVE).mkdir(parents=True)
    with clear_error(named, types=DatasetNotFoundError, one_line=False):
        load_cifar_10(data_dir=root)
    write_cifar_bin(cache_root(tmp_path), data)
    with pytest.warns(UserWarning, match=named):
        (x, _), _ = load_cifar_10(normalize=False, grayscale=False, data_dir=root)
    np.testing.assert_array_equal(x, data["x_train"])
