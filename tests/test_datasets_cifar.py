"""minidl.datasets: CIFAR-10 in both formats and as archives, grayscale, damaged files, and the
restricted unpickler that refuses anything but the arrays and lists of the python format."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import pickle
import shutil
import tarfile
from fractions import Fraction

import numpy as np
import pytest
from _datasets_helpers import (  # noqa: F401 - isolated is an autouse fixture
    cifar_bin_batch,
    cifar_py_batch,
    isolated,
    py2_pickle,
    small_cifar,
    write_cifar_archive,
    write_cifar_bin,
    write_cifar_py,
)

from minidl.datasets import (
    DatasetNotFoundError,
    _cache,
    _cifar,
    _registry,
    dataset_status,
    load_cifar_10,
    load_dataset,
)
from minidl.datasets._load import luma


@pytest.fixture
def data():
    return small_cifar()


def make_source(kind, root, data, monkeypatch):
    """A CIFAR-10 copy of ``kind`` in ``root``, with its checksums recorded."""
    if kind == "bin-folder":
        return write_cifar_bin(root, data)
    if kind.startswith("py-folder"):
        style = kind.split(":")[1] if ":" in kind else "py2"
        return write_cifar_py(root, data, monkeypatch, style=style)
    staging = root.parent / (root.name + "-staging")
    folder = (write_cifar_bin(staging, data) if kind == "bin-archive"
              else write_cifar_py(staging, data))
    return write_cifar_archive(root, folder, monkeypatch)


def expected_gray(x):
    """Luma of (N, 3072) colour rows, computed independently with exact fractions."""
    rgb = x.reshape(len(x), 3, 1024).astype(np.int64)
    value = 299 * rgb[:, 0] + 587 * rgb[:, 1] + 114 * rgb[:, 2]  # thousandths
    return ((value * 2 + 1000) // 2000).astype(np.uint8)  # round half up


KINDS = ["bin-folder", "py-folder", "py-folder:protocol2", "py-folder:protocol4",
         "bin-archive", "py-archive"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_format_gives_the_same_arrays(tmp_path, monkeypatch, data, kind):
    make_source(kind, tmp_path / "d", data, monkeypatch)
    (x, t), (xt, tt) = load_cifar_10(normalize=False, grayscale=False, data_dir=tmp_path / "d")
    np.testing.assert_array_equal(x, data["x_train"])
    np.testing.assert_array_equal(t, data["t_train"])
    np.testing.assert_array_equal(xt, data["x_test"])
    np.testing.assert_array_equal(tt, data["t_test"])
    assert x.dtype == np.uint8 and t.dtype == np.uint8 and x.shape == (50, 3072)


@pytest.mark.parametrize("normalize,flatten,one_hot_label,grayscale",
                         list(itertools.product([True, False], repeat=4)))
def test_every_option(tmp_path, monkeypatch, data, normalize, flatten, one_hot_label, grayscale):
    write_cifar_bin(tmp_path, data)
    (x, t), (xt, tt) = load_cifar_10(normalize, flatten, one_hot_label, grayscale,
                                     data_dir=tmp_path)
    for images, labels, split in ((x, t, "train"), (xt, tt, "test")):
        colour = data["x_" + split]
        n = len(colour)
        want = expected_gray(colour) if grayscale else colour
        c = 1 if grayscale else 3
        assert images.shape == ((n, 1024 * c) if flatten else (n, c, 32, 32))
        if normalize:
            assert images.dtype == np.float32
            np.testing.assert_array_equal(images.reshape(n, -1),
                                          want.astype(np.float32) / np.float32(255))
        else:
            assert images.dtype == np.uint8
            np.testing.assert_array_equal(images.reshape(n, -1), want)
        if one_hot_label:
            assert labels.shape == (n, 10) and labels.dtype == np.float32
            np.testing.assert_array_equal(labels.argmax(1), data["t_" + split])
        else:
            np.testing.assert_array_equal(labels, data["t_" + split])


def test_grayscale_default_has_1024_features(tmp_path, data):
    write_cifar_bin(tmp_path, data)
    (x, _), _ = load_cifar_10(data_dir=tmp_path)
    assert x.shape == (50, 1024) and x.dtype == np.float32
    (x, _), _ = load_dataset("cifar-10", data_dir=tmp_path)
    assert x.shape == (50, 1024)
    (x, _), _ = load_dataset("cifar-10", data_dir=tmp_path, grayscale=False, flatten=False)
    assert x.shape == (50, 3, 32, 32)


def test_luma_values():
    # Pure red, green, blue, white, black, and a case exactly halfway (rounds up).
    half = next((r, g, b) for r, g, b in itertools.product(range(256), repeat=3)
                if (299 * r + 587 * g + 114 * b) % 1000 == 500)
    pixels = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0), half]
    x = np.zeros((len(pixels), 3072), np.uint8)
    for i, (r, g, b) in enumerate(pixels):
        x[i, :1024], x[i, 1024:2048], x[i, 2048:] = r, g, b
    got = luma(x)[:, 0]
    want = [int(Fraction(299 * r + 587 * g + 114 * b, 1000) + Fraction(1, 2)) for r, g, b in pixels]
    assert list(got) == want
    assert list(got[:5]) == [76, 150, 29, 255, 0]
    assert luma(x).shape == (len(pixels), 1024)


def test_luma_in_blocks_matches_whole(data):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (9000, 3072), dtype=np.uint8)  # more rows than one block
    np.testing.assert_array_equal(luma(x), expected_gray(x))


def test_colour_planes_are_in_order(tmp_path):
    data = small_cifar()
    x, t = data["train"][0]
    x[0, :1024], x[0, 1024:2048], x[0, 2048:] = 10, 20, 30
    x[0, 1] = 99  # red, row 0, column 1
    write_cifar_bin(tmp_path, data)
    (images, labels), _ = load_cifar_10(False, False, False, False, data_dir=tmp_path)
    assert images.shape == (50, 3, 32, 32)
    assert images[0, 0, 0, 1] == 99 and images[0, 0, 5, 5] == 10
    assert images[0, 1, 0, 0] == 20 and images[0, 2, 31, 31] == 30
    assert labels[0] == t[0]


def test_folder_preferred_and_resolution(tmp_path, monkeypatch):
    a, b = small_cifar(seed=1), small_cifar(seed=2)
    write_cifar_bin(tmp_path / "first", a)
    make_source("py-archive", tmp_path / "second", b, monkeypatch)
    monkeypatch.setenv("MINIDL_DATA_DIR", str(tmp_path / "second"))
    (x, _), _ = load_cifar_10(normalize=False, grayscale=False, data_dir=tmp_path / "first")
    np.testing.assert_array_equal(x, a["x_train"])
    (x, _), _ = load_cifar_10(normalize=False, grayscale=False)
    np.testing.assert_array_equal(x, b["x_train"])
    status = dataset_status("cifar-10")
    assert status["found"] == str(tmp_path / "second" / _registry.CIFAR_PY_ARCHIVE)
    assert status["cached"] is True


def test_cache_serves_every_option(tmp_path, monkeypatch, data):
    make_source("py-archive", tmp_path, data, monkeypatch)
    load_cifar_10(data_dir=tmp_path)

    def no_parsing(*args, **kwargs):
        raise AssertionError("parsed again")

    monkeypatch.setattr(_cifar, "read_archive", no_parsing)
    (x, _), _ = load_cifar_10(normalize=False, grayscale=False, data_dir=tmp_path)
    np.testing.assert_array_equal(x, data["x_train"])
    (g, _), _ = load_cifar_10(normalize=False, data_dir=tmp_path)
    np.testing.assert_array_equal(g, expected_gray(data["x_train"]))


def test_not_found_names_all_four_forms(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_cifar_10(data_dir=tmp_path)
    message = str(err.value)
    for name in ("cifar-10-batches-bin", "cifar-10-batches-py", "cifar-10-binary.tar.gz",
                 "cifar-10-python.tar.gz"):
        assert name in message
    assert str(tmp_path) in message


def test_incomplete_folder_falls_through(tmp_path, data):
    folder = write_cifar_bin(tmp_path, data)
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(DatasetNotFoundError, match="incomplete, lacks data_batch_3.bin"):
        load_cifar_10(data_dir=tmp_path)


# --- damaged files ----------------------------------------------------------------------------

@pytest.mark.parametrize("how,message", [
    ("truncate", "not a whole number of 3073-byte records"),
    ("empty", "empty file, not a CIFAR-10 binary batch"),
    ("label", "label 11 at record 2 is not a CIFAR-10 class"),
    ("cifar-100", "not a whole number of 3073-byte records"),  # 2 label bytes per record
])
def test_damaged_binary_batch(tmp_path, data, how, message):
    folder = write_cifar_bin(tmp_path, data)
    path = folder / "data_batch_2.bin"
    x, t = data["train"][1]
    if how == "truncate":
        path.write_bytes(path.read_bytes()[:-10])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "label":
        t = t.copy()
        t[2] = 11
        path.write_bytes(cifar_bin_batch(x, t))
    else:
        path.write_bytes(np.concatenate([t[:, None], t[:, None], x], axis=1).tobytes())
    with pytest.raises(ValueError, match=message) as err:
        load_cifar_10(data_dir=tmp_path)
    assert str(path) in str(err.value)
    assert not _cache.parsed_path("cifar-10").exists()


def py_batch_file(tmp_path, data, monkeypatch, raw: bytes):
    folder = write_cifar_py(tmp_path, data, monkeypatch)
    path = folder / "data_batch_4"
    path.write_bytes(raw)
    monkeypatch.delitem(_registry.CHECKSUMS, f"{_registry.CIFAR_PY_DIR}/data_batch_4")
    return path


@pytest.mark.parametrize("what,message", [
    ("truncated", "damaged or not a CIFAR-10 python batch"),
    ("garbage", "damaged or not a CIFAR-10 python batch|not a CIFAR-10 python batch"),
    ("list", "holds a list, expected a dict"),
    ("no-labels", "lacks 'data' or 'labels'"),
    ("float-data", "'data' is float64 of shape \\(3, 3072\\), expected uint8"),
    ("short-rows", "'data' is uint8 of shape \\(10, 100\\)"),
    ("count", "10 images but 3 labels"),
    ("label", "label 10 is not a CIFAR-10 class"),
    ("str-labels", "'labels' is not a list of ints"),
    ("object-array", "object arrays are not allowed"),
])
def test_damaged_python_batch(tmp_path, monkeypatch, data, what, message):
    x, t = data["train"][3]
    good = cifar_py_batch(x, t)
    raws = {
        "truncated": good[: len(good) // 2],
        "garbage": b"\x80\x02garbage that is not a pickle",
        "list": py2_pickle([1, 2, 3]),
        "no-labels": py2_pickle({b"data": x}),
        # 3 rows: 10 rows of float64 would be refused sooner, as larger than a batch can be.
        "float-data": py2_pickle({b"data": x[:3].astype(np.float64),
                                  b"labels": list(map(int, t[:3]))}),
        "short-rows": py2_pickle({b"data": x[:, :100].copy(), b"labels": list(map(int, t))}),
        "count": py2_pickle({b"data": x, b"labels": [int(v) for v in t[:3]]}),
        "label": py2_pickle({b"data": x, b"labels": [10, *range(9)]}),
        "str-labels": py2_pickle({b"data": x, b"labels": [b"cat"] * 10}),
        "object-array": pickle.dumps({b"data": np.array([None, 1], dtype=object),
                                      b"labels": [1]}, protocol=2),
    }
    path = py_batch_file(tmp_path, data, monkeypatch, raws[what])
    with pytest.raises(ValueError, match=message) as err:
        load_cifar_10(data_dir=tmp_path)
    assert str(path) in str(err.value)


def test_python_batch_checksum_mismatch(tmp_path, monkeypatch, data):
    folder = write_cifar_py(tmp_path, data, monkeypatch)
    x, t = data["train"][0]
    t = t.copy()
    t[0] = (t[0] + 1) % 10  # a valid batch, but not the original
    (folder / "data_batch_1").write_bytes(cifar_py_batch(x, t, label="data_batch_1"))
    with pytest.raises(ValueError, match="data_batch_1: checksum mismatch"):
        load_cifar_10(data_dir=tmp_path)


# --- the restricted unpickler -----------------------------------------------------------------

class Exploit:
    """Unpickling this calls ``func(*args)`` (the classic pickle attack)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def attacks(marker):
    command = f"touch {marker}"
    import builtins
    import subprocess
    return {
        "os.system": Exploit(os.system, command),
        "subprocess.call": Exploit(subprocess.call, ["touch", str(marker)]),
        "builtins.exec": Exploit(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "builtins.eval": Exploit(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "numpy.load": Exploit(np.load, str(marker)),
    }


@pytest.mark.parametrize("attack", ["os.system", "subprocess.call", "builtins.exec",
                                    "builtins.eval", "numpy.load"])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_malicious_pickle_is_refused_and_not_run(tmp_path, monkeypatch, data, attack, protocol):
    marker = tmp_path / "pwned"
    x, t = data["train"][0]
    # The exploit comes first, so that it is what the unpickler meets first.
    evil = {b"extra": attacks(marker)[attack], b"data": x, b"labels": [int(v) for v in t]}
    path = py_batch_file(tmp_path, data, monkeypatch, pickle.dumps(evil, protocol=protocol))
    # (protocol 2 renames modules for Python 2: posix, __builtin__, commands)
    function = attack.split(".")[-1]
    with pytest.raises(ValueError, match=rf"refused to load '[\w.]+\.{function}'") as err:
        load_cifar_10(data_dir=tmp_path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_malicious_pickle_inside_an_archive(tmp_path, monkeypatch, data):
    marker = tmp_path / "pwned"
    folder = write_cifar_py(tmp_path / "staging", data)
    evil = pickle.dumps(attacks(marker)["os.system"], protocol=2)
    (folder / "test_batch").write_bytes(evil)
    write_cifar_archive(tmp_path / "d", folder, monkeypatch)
    with pytest.raises(ValueError, match="refused to load 'posix.system'|refused to load 'os"):
        load_cifar_10(data_dir=tmp_path / "d")
    assert not marker.exists()


def test_unpickler_allows_exactly_what_the_format_needs(data):
    x, t = data["test"]
    batch = _cifar.parse_py_batch(cifar_py_batch(x, t), "test")
    np.testing.assert_array_equal(batch[0], x)
    for module, name in [("numpy", "frombuffer"), ("numpy.lib.npyio", "load"),
                         ("builtins", "getattr"), ("copyreg", "_reconstructor"),
                         ("numpy.core.multiarray", "scalar")]:
        raw = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n."
        with pytest.raises(pickle.UnpicklingError, match=f"refused to load '{module}.{name}'"):
            _cifar.SafeUnpickler(io.BytesIO(raw)).load()


# --- archives ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["bin-archive", "py-archive"])
def test_archive_checksum_mismatch(tmp_path, monkeypatch, data, kind):
    archive = make_source(kind, tmp_path / "d", data, monkeypatch)
    monkeypatch.setitem(_registry.CHECKSUMS, archive.name, ("md5", "0" * 32))
    with pytest.raises(ValueError, match=f"{archive.name}: checksum mismatch"):
        load_cifar_10(data_dir=tmp_path / "d")


@pytest.mark.parametrize("how", ["random", "truncated", "empty", "plain-gzip"])
def test_unreadable_archive(tmp_path, monkeypatch, data, how):
    archive = make_source("bin-archive", tmp_path / "d", data, monkeypatch)
    raw = archive.read_bytes()
    archive.write_bytes({
        "random": np.random.default_rng(0).bytes(5000),
        "truncated": raw[: len(raw) // 2],
        "empty": b"",
        "plain-gzip": __import__("gzip").compress(b"not a tar file" * 100),
    }[how])
    with pytest.raises(ValueError, match="unreadable archive|the archive lacks") as err:
        load_cifar_10(data_dir=tmp_path / "d")
    assert str(archive) in str(err.value)
    assert not _cache.parsed_path("cifar-10").exists()


def test_archive_missing_a_batch(tmp_path, monkeypatch, data):
    folder = write_cifar_bin(tmp_path / "staging", data)
    (folder / "test_batch.bin").unlink()
    archive = write_cifar_archive(tmp_path / "d", folder, monkeypatch)
    with pytest.raises(ValueError, match="the archive lacks cifar-10-batches-bin/test_batch.bin"):
        load_cifar_10(data_dir=tmp_path / "d")
    assert str(archive)


def test_archive_with_dot_slash_names_and_extra_members(tmp_path, monkeypatch, data):
    folder = write_cifar_bin(tmp_path / "staging", data)
    archive = tmp_path / "d" / _registry.CIFAR_BIN_ARCHIVE
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder / "batches.meta.txt", arcname="./cifar-10-batches-bin/readme.html")
        tar.add(folder, arcname="./cifar-10-batches-bin")
    monkeypatch.setitem(_registry.CHECKSUMS, archive.name,
                        ("md5", hashlib.md5(archive.read_bytes()).hexdigest()))
    (x, _), _ = load_cifar_10(normalize=False, grayscale=False, data_dir=tmp_path / "d")
    np.testing.assert_array_equal(x, data["x_train"])
    shutil.rmtree(tmp_path / "staging")
