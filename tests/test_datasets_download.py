"""minidl.datasets downloads, tested offline: mirrors are file:// URLs of files the tests wrote,
with checksums the tests computed. The isolated fixture fails any other URL."""

from __future__ import annotations

import gzip
import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
from _datasets_helpers import (  # noqa: F401 - isolated is an autouse fixture
    IDX_FILES,
    REAL_MIRRORS,
    cache_root,
    idx_bytes,
    isolated,
    register_idx,
    small_cifar,
    small_idx_arrays,
    write_cifar_archive,
    write_cifar_bin,
)

from minidl.datasets import (
    DatasetNotFoundError,
    _download,
    _registry,
    dataset_status,
    fetch,
    load_cifar_10,
    load_fashion_mnist,
    load_mnist,
)
from minidl.datasets._errors import DatasetChecksumError


def serve_idx(folder: Path, dataset: str, arrays: dict, monkeypatch) -> str:
    """Put the .gz files of ``arrays`` in ``folder`` and record their md5s as published."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in zip(("x_train", "t_train", "x_test", "t_test"), IDX_FILES):
        data = gzip.compress(idx_bytes(np.asarray(arrays[key], np.uint8)))
        (folder / (name + ".gz")).write_bytes(data)
        monkeypatch.setitem(_registry.CHECKSUMS, f"{dataset}/{name}.gz",
                            ("md5", hashlib.md5(data).hexdigest()))
    register_idx(monkeypatch, dataset, arrays)
    return folder.as_uri() + "/"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".part"))


@pytest.fixture
def served(tmp_path, monkeypatch):
    arrays = small_idx_arrays(seed=7)
    good = serve_idx(tmp_path / "mirror-good", "mnist", arrays, monkeypatch)
    dead = (tmp_path / "mirror-dead").as_uri() + "/"  # does not exist, like yann.lecun.com
    monkeypatch.setitem(_registry.MIRRORS, "mnist", [dead, good])
    return arrays


def test_download_falls_back_to_the_next_mirror(tmp_path, served, capsys):
    (_x, t), (xt, _tt) = load_mnist(normalize=False, download=True)
    np.testing.assert_array_equal(t, served["t_train"])
    np.testing.assert_array_equal(xt.reshape(-1, 28, 28), served["x_test"])
    folder = cache_root(tmp_path) / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f + ".gz" for f in IDX_FILES)
    assert "mirror-dead" in capsys.readouterr().err  # says what it downloads
    status = dataset_status("mnist")
    assert status["found"] == str(folder) and status["cached"] is True


def test_download_none_follows_minidl_offline(tmp_path, served, monkeypatch):
    with pytest.raises(DatasetNotFoundError, match="MINIDL_OFFLINE=1"):
        load_mnist()
    monkeypatch.setenv("MINIDL_OFFLINE", "0")
    (x, _), _ = load_mnist(normalize=False)
    np.testing.assert_array_equal(x.reshape(-1, 28, 28), served["x_train"])


def test_download_into_data_dir(tmp_path, served):
    target = tmp_path / "mine"
    load_mnist(data_dir=target, download=True)
    assert (target / "mnist" / "train-images-idx3-ubyte.gz").is_file()
    assert not (cache_root(tmp_path) / "mnist").exists()


def test_fetch_downloads_even_offline(tmp_path, served):
    assert fetch("mnist") == cache_root(tmp_path) / "mnist"  # MINIDL_OFFLINE=1 is set
    assert fetch("mnist") == cache_root(tmp_path) / "mnist"  # found this time


def test_only_missing_files_are_downloaded(tmp_path, served, monkeypatch):
    folder = cache_root(tmp_path) / "mnist"
    folder.mkdir(parents=True)
    raw = idx_bytes(served["x_train"])
    (folder / "train-images-idx3-ubyte").write_bytes(raw)  # uncompressed, already there
    fetched = []
    real = _download.download_file

    def spy(mirrors, name, target, key):
        fetched.append(name)
        return real(mirrors, name, target, key)

    monkeypatch.setattr(_download, "download_file", spy)
    load_mnist(download=True)
    assert fetched == [f + ".gz" for f in IDX_FILES[1:]]


def test_bad_checksum_everywhere_is_refused_and_deleted(tmp_path, monkeypatch):
    arrays = small_idx_arrays()
    url = serve_idx(tmp_path / "mirror", "fashion-mnist", arrays, monkeypatch)
    monkeypatch.setitem(_registry.MIRRORS, "fashion-mnist", [url, url])
    key = "fashion-mnist/t10k-images-idx3-ubyte.gz"
    monkeypatch.setitem(_registry.CHECKSUMS, key, ("md5", "0" * 32))
    with pytest.raises(DatasetChecksumError) as err:
        load_fashion_mnist(download=True)
    assert isinstance(err.value, ValueError) and isinstance(err.value, DatasetNotFoundError)
    message = str(err.value)
    assert message.count("t10k-images-idx3-ubyte.gz: checksum mismatch") == 2
    assert "the download was deleted" in message
    folder = cache_root(tmp_path) / "fashion-mnist"
    assert not (folder / "t10k-images-idx3-ubyte.gz").exists()
    assert leftovers(cache_root(tmp_path)) == []
    # The verified files that came before it are whole and stay.
    assert (folder / "train-images-idx3-ubyte.gz").is_file()


def test_bad_first_mirror_then_good(tmp_path, monkeypatch):
    arrays = small_idx_arrays(seed=2)
    good = serve_idx(tmp_path / "good", "mnist", arrays, monkeypatch)
    bad_folder = tmp_path / "bad"
    bad_folder.mkdir()
    for name in IDX_FILES:  # right names, wrong bytes (an HTML error page, say)
        (bad_folder / (name + ".gz")).write_bytes(b"<html>Access denied</html>")
    monkeypatch.setitem(_registry.MIRRORS, "mnist", [bad_folder.as_uri() + "/", good])
    (x, _), _ = load_mnist(normalize=False, download=True)
    np.testing.assert_array_equal(x.reshape(-1, 28, 28), arrays["x_train"])
    assert leftovers(cache_root(tmp_path)) == []


def test_every_mirror_down_names_urls_and_places(tmp_path, monkeypatch):
    dead = [(tmp_path / f"dead{i}").as_uri() + "/" for i in range(2)]
    monkeypatch.setitem(_registry.MIRRORS, "mnist", dead)
    with pytest.raises(DatasetNotFoundError) as err:
        load_mnist(data_dir=tmp_path / "arg", download=True)
    assert not isinstance(err.value, ValueError)
    message = str(err.value)
    for url in dead:
        assert url + "train-images-idx3-ubyte.gz" in message
    assert "download: failed" in message
    assert str(tmp_path / "arg" / "mnist") in message
    assert str(cache_root(tmp_path) / "mnist") in message
    assert "check the network" in message and "MINIDL_DATA_DIR" in message
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "arg" / "mnist").exists()  # no empty folder left behind


def test_no_mirror_configured(monkeypatch):
    with pytest.raises(DatasetNotFoundError, match="no download mirror is configured"):
        load_mnist(download=True)


def test_download_without_a_recorded_checksum_is_refused(tmp_path, monkeypatch):
    url = serve_idx(tmp_path / "mirror", "mnist", small_idx_arrays(), monkeypatch)
    monkeypatch.setitem(_registry.MIRRORS, "mnist", [url])
    monkeypatch.delitem(_registry.CHECKSUMS, "mnist/train-images-idx3-ubyte.gz")
    with pytest.raises(DatasetNotFoundError, match="no checksum is recorded"):
        load_mnist(download=True)
    assert not (cache_root(tmp_path) / "mnist" / "train-images-idx3-ubyte.gz").exists()


def test_downloaded_file_with_bad_contents_is_refused(tmp_path, monkeypatch):
    # Published md5 matches (the mirror and the record agree), but the contents do not match
    # the recorded contents' checksum: the loader refuses it.
    arrays = small_idx_arrays()
    url = serve_idx(tmp_path / "mirror", "mnist", arrays, monkeypatch)
    monkeypatch.setitem(_registry.MIRRORS, "mnist", [url])
    monkeypatch.setitem(_registry.CHECKSUMS, "mnist/train-labels-idx1-ubyte", ("sha256", "1" * 64))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz: checksum mismatch"):
        load_mnist(download=True)


def test_cifar_downloads_the_binary_archive(tmp_path, monkeypatch):
    data = small_cifar(seed=4)
    server = tmp_path / "toronto"
    folder = write_cifar_bin(tmp_path / "staging", data)
    write_cifar_archive(server, folder, monkeypatch)
    monkeypatch.setitem(_registry.MIRRORS, "cifar-10", [server.as_uri() + "/"])
    (x, _t), _ = load_cifar_10(normalize=False, grayscale=False, download=True)
    np.testing.assert_array_equal(x, data["x_train"])
    archive = cache_root(tmp_path) / _registry.CIFAR_BIN_ARCHIVE
    assert archive.is_file()
    assert dataset_status("cifar-10")["found"] == str(archive)
    assert fetch("cifar-10") == archive


def test_progress_bar_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert _download._progress(100, "x") is None
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = _download._progress(100, "x")
    assert bar is not None and bar.total == 100
    bar.close()


def test_real_mirrors_and_published_checksums_are_recorded():
    # The book's host is gone; the mirrors we use are listed (as they were before the fixture
    # emptied them), and the published checksums are there.
    assert not any("yann.lecun.com" in m for m in REAL_MIRRORS["mnist"])
    assert REAL_MIRRORS["mnist"][0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert len(REAL_MIRRORS["fashion-mnist"]) == 2
    assert REAL_MIRRORS["cifar-10"] == ["https://www.cs.toronto.edu/~kriz/"]
    assert _registry.CHECKSUMS["cifar-10-binary.tar.gz"] == (
        "md5", "c32a1d4ab5d03f1284b67883e8d87530")
    assert _registry.CHECKSUMS["mnist/train-images-idx3-ubyte.gz"] == (
        "md5", "f68b3c2dcbeaaa9fbdd348bbdeb94873")
