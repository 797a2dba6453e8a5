"""Damaged and hostile CIFAR-10 copies: binary batches of every wrong length, shortened or
swapped batches, oversized (sparse) files, tar bombs and members declaring huge sizes, path
traversal and links in archives, malicious pickles (issue 16, items 2 and 5)."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from _datasets_helpers import (  # noqa: F401 - isolated is an autouse fixture
    SMALL_CIFAR_RECORDS,
    cifar_bin_batch,
    cifar_py_batch,
    isolated,
    small_cifar,
    write_cifar_archive,
    write_cifar_bin,
    write_cifar_py,
)
from hypothesis import given
from hypothesis import strategies as st

from minidl.datasets import _cache, _cifar, _registry, load_cifar_10

from .hostile import tar_member, write_gzip_bomb
from .oracle import clear_error, example_dir, no_partial_files, same_arrays

RECORD = 3073
N = SMALL_CIFAR_RECORDS
BIN_NAMES = (*_registry.CIFAR_BIN_TRAIN, _registry.CIFAR_BIN_TEST)
PY_NAMES = (*_registry.CIFAR_PY_TRAIN, _registry.CIFAR_PY_TEST)


@pytest.fixture
def data():
    return small_cifar()


def expected(data):
    return (data["x_train"], data["t_train"]), (data["x_test"], data["t_test"])


def load_colour(folder):
    return load_cifar_10(normalize=False, grayscale=False, data_dir=folder)


def assert_nothing_cached(tmp_path):
    assert not _cache.parsed_path("cifar-10").exists()
    no_partial_files(tmp_path)


# --- binary batches ---------------------------------------------------------------------------

@given(which=st.sampled_from(BIN_NAMES), records=st.integers(-N, N), bytes_=st.integers(-3, 3))
def test_binary_batch_of_any_other_length(tmp_path, data, which, records, bytes_):
    with example_dir(tmp_path) as d:
        folder = write_cifar_bin(d, data)
        path = folder / which
        raw = path.read_bytes()
        size = max(0, len(raw) + records * RECORD + bytes_)
        path.write_bytes((raw * 3)[:size])
        if size == len(raw):
            same_arrays(load_colour(d), expected(data))
            return
        named = ("empty file" if size == 0 else f"not a whole number of {RECORD}-byte records"
                 if size % RECORD else f"expected {N} ({N * RECORD} bytes)")
        with clear_error(path, named):
            load_colour(d)
        assert_nothing_cached(d)


def test_ten_records_removed_is_refused(tmp_path, data, monkeypatch):
    # The case at full size: 10 records cut from one batch of the real 10000.
    monkeypatch.setattr(_registry, "CIFAR_BATCH_RECORDS", 10000)
    raw = cifar_bin_batch(*data["train"][0])
    with clear_error("data_batch_3.bin", "9990 records (30699270 bytes), expected 10000 "
                     "(30730000 bytes)"):
        _cifar.parse_bin_batch(raw * 999, "cifar-10-batches-bin/data_batch_3.bin")


@pytest.mark.parametrize("other", BIN_NAMES[:-1])
def test_training_batch_swapped_with_the_test_batch(tmp_path, data, other):
    folder = write_cifar_bin(tmp_path, data)
    test, train = folder / _registry.CIFAR_BIN_TEST, folder / other
    a, b = test.read_bytes(), train.read_bytes()
    test.write_bytes(b)
    train.write_bytes(a)
    with clear_error(test, "images per class", "holds exactly 1 of each"):
        load_colour(tmp_path)
    assert_nothing_cached(tmp_path)


def test_sparse_30gb_batch_is_refused_before_reading(tmp_path, data):
    folder = write_cifar_bin(tmp_path, data)
    path = folder / "data_batch_2.bin"
    with open(path, "r+b") as f:
        f.truncate(30 * 10**9)  # sparse: costs no disk
    start = time.perf_counter()
    with clear_error(path, "30000000000 bytes"):
        load_colour(tmp_path)
    assert time.perf_counter() - start < 2


@given(labels=st.lists(st.integers(0, 255), min_size=N, max_size=N))
def test_labels_of_the_test_batch(tmp_path, data, labels):
    t = np.array(labels, np.uint8)
    data = {**data, "test": (data["test"][0], t), "t_test": t}
    with example_dir(tmp_path) as d:
        write_cifar_bin(d, data)
        if t.max() >= 10:
            with clear_error("test_batch.bin", "is not a CIFAR-10 class"):
                load_colour(d)
        elif (np.bincount(t, minlength=10) != N // 10).any():
            with clear_error("test_batch.bin", "images per class"):
                load_colour(d)
        else:
            same_arrays(load_colour(d), expected(data))


# --- python batches -------------------------------------------------------------------------

def test_sparse_python_batch_is_refused_before_unpickling(tmp_path, data, monkeypatch):
    folder = write_cifar_py(tmp_path, data, monkeypatch)
    path = folder / "data_batch_1"
    with open(path, "r+b") as f:
        f.truncate(30 * 10**9)
    with clear_error(path, "30000000000 bytes, more than a CIFAR-10 python batch"):
        load_colour(tmp_path)


def test_python_batch_of_fewer_images(tmp_path, data, monkeypatch):
    folder = write_cifar_py(tmp_path, data, monkeypatch)
    x, t = data["train"][2]
    path = folder / "data_batch_3"
    path.write_bytes(cifar_py_batch(x[:-1], t[:-1]))
    monkeypatch.delitem(_registry.CHECKSUMS, f"{_registry.CIFAR_PY_DIR}/data_batch_3")
    with clear_error(path, f"{N - 1} images, expected {N}"):
        load_colour(tmp_path)


DANGEROUS = st.sampled_from([
    ("os", "system"), ("posix", "system"), ("subprocess", "Popen"), ("builtins", "eval"),
    ("builtins", "exec"), ("builtins", "getattr"), ("builtins", "__import__"),
    ("numpy", "load"), ("numpy", "frombuffer"), ("shutil", "rmtree"), ("io", "open"),
    ("numpy.core.multiarray", "scalar"), ("copyreg", "_reconstructor"), ("pickle", "loads"),
])


@given(target=DANGEROUS, protocol=st.sampled_from([0, 2, 4]), first=st.booleans())
def test_malicious_pickle_globals_are_never_called(tmp_path, data, monkeypatch, target,
                                                   protocol, first):
    marker = tmp_path / "pwned"
    module, name = target
    x, t = data["train"][0]
    # GLOBAL module name, a tuple of one argument, REDUCE: a call, if anything resolved it.
    call = (b"c" + module.encode() + b"\n" + name.encode() + b"\n"
            + pickle.dumps(str(marker), protocol=protocol)[2 if protocol >= 2 else 0:-1]
            + b"\x85R")
    batch = pickle.dumps({b"data": x, b"labels": [int(v) for v in t]}, protocol=protocol)
    body = batch[2:-1] if protocol >= 2 else batch[:-1]
    prefix = b"\x80" + bytes([max(protocol, 2)]) if protocol >= 2 else b""
    raw = prefix + (call + b"0" + body if first else body + b"0" + call) + b"."
    with example_dir(tmp_path) as d:
        folder = write_cifar_py(d, data, monkeypatch)
        path = folder / "data_batch_1"
        path.write_bytes(raw)
        monkeypatch.delitem(_registry.CHECKSUMS, f"{_registry.CIFAR_PY_DIR}/data_batch_1")
        with clear_error(path, types=ValueError):
            load_colour(d)
    assert not marker.exists()


# --- archives ---------------------------------------------------------------------------------

def batch_members(data) -> list[bytes]:
    batches = [*data["train"], data["test"]]
    return [tar_member(f"{_registry.CIFAR_BIN_DIR}/{name}", cifar_bin_batch(*b))
            for name, b in zip(BIN_NAMES, batches)]


def write_archive(root: Path, *parts: bytes, zeros_mib: int = 0) -> Path:
    """A binary-version archive of raw tar ``parts``, then ``zeros_mib`` MiB of zeros."""
    root.mkdir(parents=True, exist_ok=True)
    return write_gzip_bomb(root / _registry.CIFAR_BIN_ARCHIVE, b"".join(parts), zeros_mib,
                           tail=b"\0" * 1024)


def test_tar_bomb_member_is_refused_without_decompressing_it(tmp_path, data):
    # A 2 GiB member of zeros, 2 MiB on disk, after the real batches.
    path = write_archive(tmp_path, *batch_members(data),
                         tar_member(f"{_registry.CIFAR_BIN_DIR}/junk", size=2 << 30),
                         zeros_mib=2048)
    assert path.stat().st_size < 8 << 20
    start = time.perf_counter()
    with clear_error(path, "junk", "a member of 2147483648 bytes"):
        load_colour(tmp_path)
    assert time.perf_counter() - start < 5
    assert_nothing_cached(tmp_path)


@pytest.mark.parametrize("size", [30 * 10**9, 2 << 30, N * RECORD + 1])
def test_batch_member_declaring_another_size(tmp_path, data, size):
    members = batch_members(data)
    # data_batch_1.bin's header declares ``size`` bytes; its data is the real batch's.
    real = cifar_bin_batch(*data["train"][0])
    members[0] = tar_member(f"{_registry.CIFAR_BIN_DIR}/data_batch_1.bin", size=size) + real
    path = write_archive(tmp_path, *members)
    with clear_error(path, "data_batch_1.bin", f"{size} bytes"):
        load_colour(tmp_path)


@pytest.mark.parametrize("evil", [
    "../data_batch_1.bin", "/tmp/cifar-10-batches-bin/data_batch_1.bin",
    "cifar-10-batches-bin/../../cifar-10-batches-bin/data_batch_1.bin",
])
def test_path_traversal_names_are_never_followed(tmp_path, data, evil, monkeypatch):
    members = batch_members(data)
    members[0] = tar_member(evil, cifar_bin_batch(*data["train"][0]))
    path = write_archive(tmp_path / "d", *members)
    before = sorted(p for p in tmp_path.rglob("*"))
    with clear_error(path, "the archive lacks cifar-10-batches-bin/data_batch_1.bin"):
        load_colour(tmp_path / "d")
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing extracted anywhere


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_links_in_place_of_a_batch_are_not_read(tmp_path, data, kind):
    members = batch_members(data)
    members[-1] = tar_member(f"{_registry.CIFAR_BIN_DIR}/test_batch.bin", type=kind,
                             linkname="/etc/passwd")
    path = write_archive(tmp_path, *members)
    with clear_error(path, "lacks cifar-10-batches-bin/test_batch.bin"):
        load_colour(tmp_path)


def test_duplicate_batch_in_an_archive(tmp_path, data):
    members = batch_members(data)
    path = write_archive(tmp_path, *members, members[2])
    with clear_error(path, "a second copy of data_batch_3.bin"):
        load_colour(tmp_path)


def test_archive_of_many_members(tmp_path, data):
    path = write_archive(tmp_path, *(tar_member(f"x{i}") for i in range(200)))
    with clear_error(path, "more than 64 members"):
        load_colour(tmp_path)


@given(cut=st.integers(0, 6 * N * RECORD))
def test_truncated_archive(tmp_path, data, monkeypatch, cut):
    with example_dir(tmp_path) as d:
        folder = write_cifar_bin(d / "staging", data)
        archive = write_cifar_archive(d / "d", folder, monkeypatch)
        tar = gzip.decompress(archive.read_bytes())
        archive.write_bytes(gzip.compress(tar[:cut]))
        with clear_error(archive):
            load_colour(d / "d")


def test_the_intact_archive_loads(tmp_path, data, monkeypatch):
    folder = write_cifar_bin(tmp_path / "staging", data)
    write_cifar_archive(tmp_path / "d", folder, monkeypatch)
    same_arrays(load_colour(tmp_path / "d"), expected(data))
    _, (gray, _) = load_cifar_10(normalize=False, data_dir=tmp_path / "d")
    assert gray.shape == (N, 1024)
    no_partial_files(tmp_path)


def test_unpickler_refuses_every_other_global():
    for module, name in [("os", "system"), ("numpy", "save"), ("builtins", "open")]:
        raw = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n."
        with pytest.raises(_cifar.RefusedPickle, match=f"{module}.{name}"):
            _cifar.SafeUnpickler(io.BytesIO(raw)).load()
