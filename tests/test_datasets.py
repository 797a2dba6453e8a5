"""minidl.datasets: MNIST-style loading, options, damaged files, where data is found, the cache,
the registry, argument checks and the shipped mnist-mini. No network, no real data needed."""

from __future__ import annotations

import gzip
import itertools
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _datasets_helpers import (  # noqa: F401 - isolated is an autouse fixture
    IDX_FILES,
    cache_root,
    idx_bytes,
    isolated,
    register_idx,
    small_idx_arrays,
    system_root,
    unregister_idx,
    write_idx,
)

import minidl.datasets as ds
from minidl.datasets import (
    DATASETS,
    DatasetInfo,
    DatasetNotFoundError,
    _cache,
    _idx,
    _load,
    dataset_status,
    fetch,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
    load_mnist_mini,
)


@pytest.fixture
def mnist_dir(tmp_path, monkeypatch):
    """A data folder with a small MNIST (raw IDX), its checksums recorded; (folder, arrays)."""
    arrays = small_idx_arrays()
    write_idx(tmp_path / "data" / "mnist", arrays, gz=False)
    register_idx(monkeypatch, "mnist", arrays)
    return tmp_path / "data", arrays


def flat(arrays, key):
    return arrays[key].reshape(len(arrays[key]), -1)


# --- reading and options ----------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("loader,name", [(load_mnist, "mnist"),
                                         (load_fashion_mnist, "fashion-mnist")])
@pytest.mark.parametrize("normalize,flatten,one_hot_label",
                         list(itertools.product([True, False], repeat=3)))
def test_every_option(tmp_path, monkeypatch, loader, name, gz, normalize, flatten,
                      one_hot_label):
    arrays = small_idx_arrays(seed=3)
    write_idx(tmp_path / "d" / name, arrays, gz=gz)
    register_idx(monkeypatch, name, arrays)
    (x_train, t_train), (x_test, t_test) = loader(
        normalize=normalize, flatten=flatten, one_hot_label=one_hot_label, data_dir=tmp_path / "d")
    for x, t, split in ((x_train, t_train, "train"), (x_test, t_test, "test")):
        raw = arrays["x_" + split]
        n = len(raw)
        assert x.shape == ((n, 784) if flatten else (n, 1, 28, 28))
        if normalize:
            assert x.dtype == np.float32
            # the book: float32 pixels divided by 255
            np.testing.assert_array_equal(
                x.reshape(n, -1), raw.reshape(n, -1).astype(np.float32) / np.float32(255))
            assert 0.0 <= x.min() and x.max() <= 1.0
        else:
            assert x.dtype == np.uint8
            np.testing.assert_array_equal(x.reshape(n, 28, 28), raw)
        labels = arrays["t_" + split]
        if one_hot_label:
            assert t.shape == (n, 10) and t.dtype == np.float32
            np.testing.assert_array_equal(t.argmax(axis=1), labels)
            np.testing.assert_array_equal(t.sum(axis=1), np.ones(n))
        else:
            assert t.shape == (n,) and t.dtype == np.uint8
            np.testing.assert_array_equal(t, labels)


def test_book_positional_signature(mnist_dir, monkeypatch):
    folder, _arrays = mnist_dir
    monkeypatch.setenv("MINIDL_DATA_DIR", str(folder))
    (x, t), _ = load_mnist(False, False, True)  # the book's (normalize, flatten, one_hot_label)
    assert x.shape == (30, 1, 28, 28) and x.dtype == np.uint8 and t.shape == (30, 10)


def test_returned_arrays_are_writable_and_fresh(mnist_dir):
    folder, _ = mnist_dir
    for normalize in (False, True):
        (x, t), _ = load_mnist(normalize=normalize, data_dir=folder)
        assert x.flags.writeable and t.flags.writeable
        x[0] = 0  # must not change what the next load gives
    (x_again, _), _ = load_mnist(normalize=False, data_dir=folder)
    assert x_again[0].any()


def test_raw_preferred_over_gzip_in_one_folder(tmp_path, monkeypatch):
    arrays = small_idx_arrays()
    write_idx(tmp_path / "mnist", arrays, gz=True)
    write_idx(tmp_path / "mnist", arrays, gz=False)
    register_idx(monkeypatch, "mnist", arrays)
    (x, _), _ = load_mnist(normalize=False, data_dir=tmp_path)
    np.testing.assert_array_equal(x, flat(arrays, "x_train"))


# --- damaged files ----------------------------------------------------------------------------

def damage(folder: Path, name: str, how: str) -> Path:
    path = folder / name
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[:-100])
    elif how == "extra":
        path.write_bytes(data + b"\0" * 7)
    elif how == "magic-labels":  # a label file's magic in the images file
        path.write_bytes(bytes([0, 0, 8, 1]) + data[4:])
    elif how == "magic-type":  # IDX of int32 instead of unsigned bytes
        path.write_bytes(bytes([0, 0, 0x0C]) + data[3:])
    elif how == "not-idx":
        path.write_bytes(b"<html>403 Forbidden</html>")
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "header":
        path.write_bytes(data[:9])
    elif how == "flip-pixel":  # structure intact, contents changed
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    return path


@pytest.mark.parametrize("name,how,message", [
    ("train-images-idx3-ubyte", "truncate", "truncated: the header declares 30 images"),
    ("train-labels-idx1-ubyte", "truncate", "truncated"),
    ("t10k-images-idx3-ubyte", "extra", "7 unexpected bytes after the 12 images"),
    ("train-images-idx3-ubyte", "magic-labels", "wrong magic number 0x00000801, expected 0x00000803"),
    ("t10k-labels-idx1-ubyte", "magic-type", "wrong magic number 0x00000c01"),
    ("train-labels-idx1-ubyte", "not-idx", "wrong magic number"),
    ("t10k-images-idx3-ubyte", "empty", "too short for an IDX header"),
    ("train-images-idx3-ubyte", "header", "truncated inside the IDX header"),
    ("train-images-idx3-ubyte", "flip-pixel", "checksum mismatch"),
    ("t10k-labels-idx1-ubyte", "flip-pixel", "checksum mismatch"),
])
def test_damaged_idx_refused(mnist_dir, name, how, message):
    folder, _ = mnist_dir
    path = damage(folder / "mnist", name, how)
    with pytest.raises(ValueError, match=message) as err:
        load_mnist(data_dir=folder)
    assert str(path) in str(err.value)
    assert not _cache.parsed_path("mnist").exists()  # nothing cached from a bad source


def test_wrong_image_size_refused(tmp_path, monkeypatch):
    arrays = small_idx_arrays(hw=(27, 28))
    write_idx(tmp_path / "mnist", arrays, gz=False)
    unregister_idx(monkeypatch, "mnist")
    with pytest.raises(ValueError, match="images of shape 27x28, expected 28x28"):
        load_mnist(data_dir=tmp_path)


def test_mismatched_counts_refused(tmp_path, monkeypatch):
    arrays = small_idx_arrays()
    arrays["t_train"] = arrays["t_train"][:-1]
    write_idx(tmp_path / "mnist", arrays, gz=False)
    register_idx(monkeypatch, "mnist", arrays)
    with pytest.raises(ValueError, match="has 30 images but .*train-labels-idx1-ubyte has 29"):
        load_mnist(data_dir=tmp_path)


def test_label_out_of_range_refused(tmp_path, monkeypatch):
    arrays = small_idx_arrays()
    arrays["t_test"] = arrays["t_test"].copy()
    arrays["t_test"][5] = 10
    write_idx(tmp_path / "mnist", arrays, gz=False)
    register_idx(monkeypatch, "mnist", arrays)
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte: label 10 at index 5"):
        load_mnist(data_dir=tmp_path)


@pytest.mark.parametrize("how,message", [
    ("truncate", "unreadable gzip file"),
    ("not-gzip", "unreadable gzip file"),
    ("corrupt", "unreadable gzip file|checksum mismatch|wrong magic"),
])
def test_damaged_gzip_refused(tmp_path, monkeypatch, how, message):
    arrays = small_idx_arrays()
    paths = write_idx(tmp_path / "mnist", arrays, gz=True)
    register_idx(monkeypatch, "mnist", arrays)
    path = paths["train-images-idx3-ubyte"]
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "not-gzip":
        path.write_bytes(idx_bytes(arrays["x_train"]))  # raw bytes under a .gz name
    else:
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0x55]) + data[middle + 1:])
    with pytest.raises(ValueError, match=message) as err:
        load_mnist(data_dir=tmp_path)
    assert str(path) in str(err.value)


def test_real_checksums_refuse_other_files(tmp_path):
    # No test checksums registered: the recorded ones of the real MNIST apply and refuse these.
    write_idx(tmp_path / "mnist", small_idx_arrays(), gz=False)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte: checksum mismatch .*sha256"):
        load_mnist(data_dir=tmp_path)


# --- where data comes from --------------------------------------------------------------------

def distinct_copy(folder: Path, seed: int) -> dict:
    arrays = small_idx_arrays(seed=seed)
    write_idx(folder / "mnist", arrays, gz=bool(seed % 2))
    return arrays


def test_resolution_order(tmp_path, monkeypatch):
    unregister_idx(monkeypatch, "mnist")  # four different copies: no single checksum fits
    places = {
        "data_dir": tmp_path / "explicit",
        "env": tmp_path / "env",
        "cache": cache_root(tmp_path),
        "system": system_root(tmp_path),
    }
    copies = {key: distinct_copy(folder, seed) for seed, (key, folder) in enumerate(places.items())}
    monkeypatch.setenv("MINIDL_DATA_DIR", str(places["env"]))

    def loaded_from(key, data_dir=None):
        (x, t), _ = load_mnist(normalize=False, data_dir=data_dir)
        np.testing.assert_array_equal(x, flat(copies[key], "x_train"))
        np.testing.assert_array_equal(t, copies[key]["t_train"])
        status = dataset_status("mnist", data_dir)
        assert status["found"] == str(places[key] / "mnist")

    loaded_from("data_dir", places["data_dir"])
    loaded_from("env")
    monkeypatch.delenv("MINIDL_DATA_DIR")
    loaded_from("cache")
    import shutil
    shutil.rmtree(places["cache"] / "mnist")
    loaded_from("system")
    shutil.rmtree(places["system"] / "mnist")
    with pytest.raises(DatasetNotFoundError):
        load_mnist()


def test_searched_lists_places_in_order(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDL_DATA_DIR", os.pathsep.join([str(tmp_path / "e1"),
                                                           str(tmp_path / "e2")]))
    monkeypatch.setenv("XDG_DATA_DIRS", os.pathsep.join([str(tmp_path / "s1"),
                                                         str(tmp_path / "s2")]))
    status = dataset_status("fashion-mnist", data_dir=tmp_path / "arg")
    assert status["found"] is None and status["cached"] is False
    assert status["searched"] == [str(p / "fashion-mnist") for p in (
        tmp_path / "arg", tmp_path / "e1", tmp_path / "e2", cache_root(tmp_path),
        tmp_path / "s1" / "datasets", tmp_path / "s2" / "datasets")]
    assert status["name"] == "fashion-mnist"
    assert status["urls"] == []  # the test fixture emptied the mirrors


def test_second_env_folder_and_debian_layout(tmp_path, monkeypatch):
    arrays = small_idx_arrays(seed=5)
    # Debian's dataset-fashion-mnist: /usr/share/datasets/fashion-mnist/*.gz
    write_idx(tmp_path / "usr" / "share" / "datasets" / "fashion-mnist", arrays, gz=True)
    register_idx(monkeypatch, "fashion-mnist", arrays)
    monkeypatch.setenv("XDG_DATA_DIRS", f"{tmp_path / 'usr' / 'local' / 'share'}:"
                                        f"{tmp_path / 'usr' / 'share'}")
    (_x, t), _ = load_fashion_mnist(normalize=False)
    np.testing.assert_array_equal(t, arrays["t_train"])
    assert dataset_status("fashion-mnist")["found"] == str(
        tmp_path / "usr" / "share" / "datasets" / "fashion-mnist")


def test_incomplete_folder_is_skipped_and_reported(tmp_path, monkeypatch):
    arrays = small_idx_arrays()
    register_idx(monkeypatch, "mnist", arrays)
    paths = write_idx(tmp_path / "partial" / "mnist", arrays, gz=False)
    paths["t10k-labels-idx1-ubyte"].unlink()
    with pytest.raises(DatasetNotFoundError, match="incomplete, lacks t10k-labels-idx1-ubyte"):
        load_mnist(data_dir=tmp_path / "partial")
    write_idx(cache_root(tmp_path) / "mnist", arrays, gz=True)
    with pytest.warns(UserWarning, match="partial/mnist: incomplete, lacks t10k-labels.*; using "):
        (x, _), _ = load_mnist(normalize=False, data_dir=tmp_path / "partial")
    np.testing.assert_array_equal(x, flat(arrays, "x_train"))


def test_not_found_message_names_every_place_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDL_DATA_DIR", str(tmp_path / "envdir"))
    with pytest.raises(DatasetNotFoundError) as err:
        load_mnist(data_dir=tmp_path / "argdir")
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    for place in (tmp_path / "argdir" / "mnist", tmp_path / "envdir" / "mnist",
                  cache_root(tmp_path) / "mnist", system_root(tmp_path) / "mnist"):
        assert str(place) in message
    order = [message.index(s) for s in ("data_dir argument", "MINIDL_DATA_DIR",
                                         "minidl's cache", "system", "download")]
    assert order == sorted(order)
    assert "turned off (MINIDL_OFFLINE=1)" in message
    assert "set MINIDL_DATA_DIR" in message and "data_dir=" in message
    assert "download=True" in message


def test_not_found_with_download_false(monkeypatch):
    monkeypatch.delenv("MINIDL_OFFLINE")
    with pytest.raises(DatasetNotFoundError, match=r"turned off \(download=False\)"):
        load_fashion_mnist(download=False)
    with pytest.raises(DatasetNotFoundError, match="MINIDL_DATA_DIR: not set"):
        load_fashion_mnist(download=False)


# --- the parsed-array cache -------------------------------------------------------------------

def test_second_load_comes_from_the_cache(mnist_dir, monkeypatch):
    folder, _arrays = mnist_dir
    first = load_mnist(data_dir=folder)
    assert _cache.parsed_path("mnist").is_file()
    assert dataset_status("mnist", folder)["cached"] is True

    def no_parsing(*args, **kwargs):
        raise AssertionError("parsed again instead of using the cache")

    monkeypatch.setattr(_idx, "read_dataset", no_parsing)
    second = load_mnist(data_dir=folder)
    for a, b in zip(itertools.chain(*first), itertools.chain(*second)):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    # The cache holds uint8 and no pickle.
    with np.load(_cache.parsed_path("mnist"), allow_pickle=False) as npz:
        assert all(npz[k].dtype == np.uint8 for k in _cache.KEYS)


def test_changed_source_invalidates_the_cache(mnist_dir, monkeypatch):
    folder, _ = mnist_dir
    load_mnist(data_dir=folder)
    new = small_idx_arrays(seed=9)
    write_idx(folder / "mnist", new, gz=False)
    register_idx(monkeypatch, "mnist", new)
    path = folder / "mnist" / "train-images-idx3-ubyte"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert dataset_status("mnist", folder)["cached"] is False
    (x, _), _ = load_mnist(normalize=False, data_dir=folder)
    np.testing.assert_array_equal(x, flat(new, "x_train"))


def test_other_source_invalidates_the_cache(mnist_dir, tmp_path, monkeypatch):
    folder, _arrays = mnist_dir
    load_mnist(data_dir=folder)
    other = small_idx_arrays(seed=4)
    unregister_idx(monkeypatch, "mnist")
    write_idx(tmp_path / "other" / "mnist", other, gz=True)
    (x, _), _ = load_mnist(normalize=False, data_dir=tmp_path / "other")
    np.testing.assert_array_equal(x, flat(other, "x_train"))


def test_damaged_cache_is_ignored_and_rewritten(mnist_dir):
    folder, arrays = mnist_dir
    load_mnist(data_dir=folder)
    _cache.parsed_path("mnist").write_bytes(b"PK\x03\x04 not really a zip")
    (x, _), _ = load_mnist(normalize=False, data_dir=folder)
    np.testing.assert_array_equal(x, flat(arrays, "x_train"))
    with np.load(_cache.parsed_path("mnist"), allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["x_train"], flat(arrays, "x_train"))


def test_pickled_cache_is_not_loaded(mnist_dir):
    folder, arrays = mnist_dir
    load_mnist(data_dir=folder)
    path = _cache.parsed_path("mnist")
    with np.load(path, allow_pickle=False) as npz:
        saved = {k: npz[k] for k in npz.files}
    saved["x_train"] = np.array([object()], dtype=object)  # would need pickle to load
    np.savez(path, **saved)
    (x, _), _ = load_mnist(normalize=False, data_dir=folder)
    np.testing.assert_array_equal(x, flat(arrays, "x_train"))


def test_unwritable_cache_warns_and_still_loads(mnist_dir, tmp_path):
    folder, arrays = mnist_dir
    cache_root(tmp_path).parent.mkdir(parents=True)
    cache_root(tmp_path).write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="could not write the dataset cache"):
        (x, _), _ = load_mnist(normalize=False, data_dir=folder)
    np.testing.assert_array_equal(x, flat(arrays, "x_train"))


def test_no_temporary_files_left_in_the_cache(mnist_dir):
    folder, _ = mnist_dir
    load_mnist(data_dir=folder)
    assert [p.name for p in _cache.parsed_path("mnist").parent.iterdir()] == ["mnist.npz"]


def test_cache_home_default_and_relative(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _cache.cache_dir() == tmp_path / "home" / ".cache" / "minidl"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # ignored, as the XDG spec says
    assert _cache.cache_dir() == tmp_path / "home" / ".cache" / "minidl"


# --- registry and arguments -------------------------------------------------------------------

def test_registry():
    assert list(DATASETS) == ["mnist", "fashion-mnist", "cifar-10", "mnist-mini"]
    expect = {"mnist": (784, (1, 28, 28), 60000, 10000),
              "fashion-mnist": (784, (1, 28, 28), 60000, 10000),
              "cifar-10": (1024, (3, 32, 32), 50000, 10000),
              "mnist-mini": (784, (1, 28, 28), 10000, 2000)}
    for name, info in DATASETS.items():
        assert isinstance(info, DatasetInfo) and info.name == name
        assert (info.n_features, info.image_shape, info.n_train, info.n_test) == expect[name]
        assert info.n_classes == len(info.class_names) == 10
        assert all(isinstance(c, str) for c in info.class_names)
        assert info.title and info.source
    assert DATASETS["fashion-mnist"].class_names[9] == "Ankle boot"
    assert DATASETS["cifar-10"].class_names[0] == "airplane"
    with pytest.raises(AttributeError):
        DATASETS["mnist"].n_classes = 3  # frozen


def test_every_registry_checksum_has_a_known_form():
    for key, (algorithm, digest) in ds._registry.CHECKSUMS.items():
        assert algorithm in ("md5", "sha256"), key
        assert len(digest) == {"md5": 32, "sha256": 64}[algorithm], key
        int(digest, 16)
    for spec in ds._registry.DOWNLOADS.values():
        for f in spec.files:  # a download without a checksum would be refused
            key = f"{spec.folder}/{f}" if spec.folder else f
            assert key in ds._registry.CHECKSUMS, key


def test_unknown_name_lists_the_names():
    with pytest.raises(ValueError, match="unknown dataset 'emnist'.*mnist, fashion-mnist, "
                                         "cifar-10, mnist-mini"):
        load_dataset("emnist")
    with pytest.raises(ValueError, match="unknown dataset"):
        dataset_status("svhn")
    with pytest.raises(TypeError, match="dataset name must be a string"):
        load_dataset(3)


def test_aliases(mnist_dir):
    assert dataset_status("MNIST_mini")["name"] == "mnist-mini"
    assert dataset_status("cifar10")["name"] == "cifar-10"
    assert dataset_status("Fashion_MNIST")["name"] == "fashion-mnist"


@pytest.mark.parametrize("kwargs,message", [
    ({"normalize": 1}, "normalize must be True or False"),
    ({"flatten": "no"}, "flatten must be True or False"),
    ({"one_hot_label": None}, "one_hot_label must be True or False"),
    ({"download": "yes"}, "download must be True or False"),
    ({"data_dir": 42}, "data_dir must be a path"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(TypeError, match=message):
        load_mnist(**kwargs)


def test_bad_options():
    with pytest.raises(TypeError, match="mnist: unexpected option grayscale"):
        load_dataset("mnist", grayscale=True)
    with pytest.raises(TypeError, match=r"unexpected option colour \(it takes grayscale\)"):
        load_dataset("cifar-10", colour=True)
    with pytest.raises(TypeError, match="grayscale must be True or False"):
        load_dataset("cifar-10", grayscale="yes")
    with pytest.raises(ValueError, match="data_dir is an empty string"):
        load_mnist(data_dir="")


def test_numpy_bools_accepted(mnist_dir):
    folder, _ = mnist_dir
    (x, _), _ = load_mnist(np.True_, np.False_, data_dir=folder)
    assert x.shape == (30, 1, 28, 28)


def test_load_dataset_matches_the_named_loader(mnist_dir):
    folder, _ = mnist_dir
    a = load_dataset("mnist", False, True, True, data_dir=folder)
    b = load_mnist(False, True, True, data_dir=folder)
    for u, v in zip(itertools.chain(*a), itertools.chain(*b)):
        np.testing.assert_array_equal(u, v)


def test_fetch_finds_without_downloading(mnist_dir):
    folder, _ = mnist_dir
    assert fetch("mnist", data_dir=folder) == folder / "mnist"


def test_public_names():
    assert set(ds.__all__) == {
        "DATASETS", "DatasetInfo", "DatasetNotFoundError", "dataset_status", "fetch",
        "load_cifar_10", "load_dataset", "load_fashion_mnist", "load_mnist", "load_mnist_mini"}
    assert issubclass(DatasetNotFoundError, FileNotFoundError)


# --- mnist-mini -------------------------------------------------------------------------------

MINI = Path(ds.__file__).parent / "data" / "mnist-mini.npz"


def test_mini_is_shipped_small_and_pickle_free():
    assert MINI.is_file()
    assert MINI.stat().st_size <= 3 * 1024 * 1024
    with zipfile.ZipFile(MINI) as z:
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in z.infolist())
    with np.load(MINI, allow_pickle=False) as npz:
        assert npz["x_train"].shape == (10000, 784) and npz["x_train"].dtype == np.uint8
        assert npz["x_test"].shape == (2000, 784) and npz["t_test"].dtype == np.uint8
        assert npz["train_indices"].shape == (10000,)
        assert np.all(np.diff(npz["train_indices"]) > 0)  # distinct, in the original order
        assert npz["test_indices"].max() < 10000 and npz["train_indices"].max() < 60000


@pytest.mark.parametrize("normalize,flatten,one_hot_label",
                         list(itertools.product([True, False], repeat=3)))
def test_mini_loads_offline_with_every_option(normalize, flatten, one_hot_label):
    # The isolated fixture leaves no data folder, no mirror and MINIDL_OFFLINE=1.
    (x, t), (xt, _tt) = load_mnist_mini(normalize, flatten, one_hot_label)
    assert x.shape == ((10000, 784) if flatten else (10000, 1, 28, 28))
    assert xt.shape[0] == 2000
    assert x.dtype == (np.float32 if normalize else np.uint8)
    assert t.shape == ((10000, 10) if one_hot_label else (10000,))


def test_mini_is_stratified():
    (_, t), (_, tt) = load_mnist_mini()
    counts, test_counts = np.bincount(t, minlength=10), np.bincount(tt, minlength=10)
    assert counts.sum() == 10000 and test_counts.sum() == 2000
    # MNIST's classes hold 9.0% to 11.2% of each set; a proportional sample keeps that.
    assert counts.min() >= 900 and counts.max() <= 1130
    assert test_counts.min() >= 175 and test_counts.max() <= 230


def test_mini_status_fetch_and_registry():
    status = dataset_status("mnist-mini")
    assert status["found"] == "shipped with minidl"
    assert status["urls"] == [] and status["cached"] is False
    assert fetch("mnist-mini") == MINI
    a = load_dataset("mnist-mini", data_dir="/nonexistent", download=False)
    assert a[0][0].shape == (10000, 784)


def test_mini_damaged_is_refused(monkeypatch, tmp_path):
    bad = tmp_path / "mnist-mini.npz"
    np.savez(bad, x_train=np.zeros((3, 5)), t_train=np.zeros(3, np.uint8),
             x_test=np.zeros((1, 784), np.uint8), t_test=np.zeros(1, np.uint8))
    monkeypatch.setattr(_load, "_mini_path", lambda: bad)
    with pytest.raises(ValueError, match="x_train is float64"):
        load_mnist_mini()
    monkeypatch.setattr(_load, "_mini_path", lambda: tmp_path / "gone.npz")
    with pytest.raises(DatasetNotFoundError, match="reinstall minidl"):
        load_mnist_mini()


def test_gzip_helper_roundtrip(tmp_path):
    # The test's own IDX writer agrees with the reader (so the tests above test the reader).
    a = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(idx_bytes(a)))
    np.testing.assert_array_equal(_idx.read_file(p, 3, (28, 28)), a.reshape(2, -1))
    np.testing.assert_array_equal(_idx.parse(idx_bytes(a), "x", 3, (28, 28)), a.reshape(2, -1))
    assert IDX_FILES[0] == "train-images-idx3-ubyte"
