"""Helpers for the dataset tests: an isolated environment and small files in the real formats.

Imported by the tests/test_datasets*.py modules (not a conftest: the lead owns that). The
``isolated`` fixture is autouse in every module that imports it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import urllib.request
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from minidl.datasets import _registry

IDX_FILES = _registry.IDX_FILES
# The mirrors as minidl ships them, before any fixture empties them.
REAL_MIRRORS = {name: list(urls) for name, urls in _registry.MIRRORS.items()}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real data folder, a private cache, no system folders, offline, no network at all."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("XDG_DATA_DIRS", str(tmp_path / "xdg-system"))
    monkeypatch.setenv("MINIDL_OFFLINE", "1")
    monkeypatch.delenv("MINIDL_DATA_DIR", raising=False)
    # CIFAR-10 batches of SMALL_CIFAR_RECORDS images instead of 10000 (see small_cifar).
    monkeypatch.setattr(_registry, "CIFAR_BATCH_RECORDS", SMALL_CIFAR_RECORDS)
    for name in list(_registry.MIRRORS):
        monkeypatch.setitem(_registry.MIRRORS, name, [])
    real_urlopen = urllib.request.urlopen

    def file_urls_only(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        assert url.startswith("file:"), f"a test tried to reach the network: {url}"
        return real_urlopen(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", file_urls_only)
    return tmp_path


def cache_root(tmp_path: Path) -> Path:
    return tmp_path / "xdg-cache" / "minidl"


def system_root(tmp_path: Path) -> Path:
    return tmp_path / "xdg-system" / "datasets"


# --- IDX ------------------------------------------------------------------------------------

def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def small_idx_arrays(seed: int = 0, n_train: int = 30, n_test: int = 12, hw=(28, 28)) -> dict:
    """Random images (N, H, W) and labels covering all ten classes."""
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, *hw), dtype=np.uint8),
        "t_train": (np.arange(n_train) + seed) % 10,
        "x_test": rng.integers(0, 256, (n_test, *hw), dtype=np.uint8),
        "t_test": (np.arange(n_test) * 3 + seed) % 10,
    }


def write_idx(folder: Path, arrays: dict, gz: bool) -> dict[str, Path]:
    """The four IDX files of ``arrays`` in ``folder``; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, name in zip(("x_train", "t_train", "x_test", "t_test"), IDX_FILES):
        data = idx_bytes(np.asarray(arrays[key], dtype=np.uint8))
        path = folder / (name + ".gz" if gz else name)
        path.write_bytes(gzip.compress(data) if gz else data)
        paths[name] = path
    return paths


def register_idx(monkeypatch, dataset: str, arrays: dict) -> None:
    """Record the contents' sha256 of ``arrays`` as the checksums of ``dataset``."""
    for key, name in zip(("x_train", "t_train", "x_test", "t_test"), IDX_FILES):
        digest = hashlib.sha256(idx_bytes(np.asarray(arrays[key], dtype=np.uint8))).hexdigest()
        monkeypatch.setitem(_registry.CHECKSUMS, f"{dataset}/{name}", ("sha256", digest))


def unregister_idx(monkeypatch, dataset: str) -> None:
    for name in IDX_FILES:
        monkeypatch.delitem(_registry.CHECKSUMS, f"{dataset}/{name}", raising=False)


# --- CIFAR-10 -------------------------------------------------------------------------------

# Images per batch of the small CIFAR-10 copies (the isolated fixture makes it the expected
# count): ten, so that the published class counts can hold, scaled down.
SMALL_CIFAR_RECORDS = 10


def small_cifar(seed: int = 0) -> dict:
    """Colour images (N, 3072) as five training batches and a test batch, with labels.

    As in the real CIFAR-10, scaled to batches of ``SMALL_CIFAR_RECORDS`` images: the test
    batch holds each class equally often, the training batches too between them but not each
    (so that a training batch in the test batch's place is detected).
    """
    n = SMALL_CIFAR_RECORDS
    rng = np.random.default_rng(seed)
    t_train = np.repeat(np.arange(10, dtype=np.uint8), 5 * n // 10)
    while True:
        rng.shuffle(t_train)
        batches = t_train.reshape(5, n)
        if all(np.bincount(b, minlength=10).max() > n // 10 for b in batches):
            break
    train = [(rng.integers(0, 256, (n, 3072), dtype=np.uint8), b.copy()) for b in batches]
    test = (rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), n // 10)))
    return {"train": train, "test": test,
            "x_train": np.concatenate([b[0] for b in train]),
            "t_train": np.concatenate([b[1] for b in train]),
            "x_test": test[0], "t_test": test[1]}


def cifar_bin_batch(x: np.ndarray, t: np.ndarray) -> bytes:
    return np.concatenate([t.reshape(-1, 1).astype(np.uint8), x], axis=1).tobytes()


class Python2Pickler(pickle._Pickler):
    """Writes pickles as Python 2's cPickle did: every string a byte string, numpy.core names.

    The CIFAR-10 python version was pickled by Python 2; loading it under Python 3 meets
    BINSTRING opcodes and 'numpy.core.multiarray', which this reproduces.
    """

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_str(self, obj):
        self.save_bytes(obj.encode("latin1"))

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Python2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar_py_batch(x: np.ndarray, t: np.ndarray, style: str = "py2", label: str = "batch") -> bytes:
    batch = {
        b"batch_label": label.encode(),
        b"labels": [int(v) for v in t],
        b"data": x,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(t))],
    }
    if style == "py2":
        return py2_pickle(batch)
    if style == "protocol2":  # Python 3, protocol 2: bytes via _codecs.encode
        return pickle.dumps(batch, protocol=2)
    return pickle.dumps(batch, protocol=4)


def cifar_meta(style: str = "py2") -> bytes:
    names = [n.encode() for n in _registry.DATASETS["cifar-10"].class_names]
    meta = {b"label_names": names, b"num_cases_per_batch": 10000, b"num_vis": 3072}
    return py2_pickle(meta) if style == "py2" else pickle.dumps(meta, protocol=4)


def write_cifar_bin(root: Path, data: dict) -> Path:
    folder = root / _registry.CIFAR_BIN_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name, (x, t) in zip(_registry.CIFAR_BIN_TRAIN, data["train"]):
        (folder / name).write_bytes(cifar_bin_batch(x, t))
    (folder / _registry.CIFAR_BIN_TEST).write_bytes(cifar_bin_batch(*data["test"]))
    names = _registry.DATASETS["cifar-10"].class_names
    (folder / "batches.meta.txt").write_text("\n".join(names) + "\n")
    return folder


def write_cifar_py(root: Path, data: dict, monkeypatch=None, style: str = "py2") -> Path:
    """The python-version folder; with ``monkeypatch``, its md5s become the recorded ones."""
    folder = root / _registry.CIFAR_PY_DIR
    folder.mkdir(parents=True, exist_ok=True)
    batches = [*zip(_registry.CIFAR_PY_TRAIN, data["train"]),
               (_registry.CIFAR_PY_TEST, data["test"])]
    for name, (x, t) in batches:
        raw = cifar_py_batch(x, t, style, label=name)
        (folder / name).write_bytes(raw)
        if monkeypatch is not None:
            monkeypatch.setitem(_registry.CHECKSUMS, f"{_registry.CIFAR_PY_DIR}/{name}",
                                ("md5", hashlib.md5(raw).hexdigest()))
    (folder / "batches.meta").write_bytes(cifar_meta(style))
    return folder


def write_cifar_archive(root: Path, folder: Path, monkeypatch=None) -> Path:
    """The original archive of ``folder`` (bin or py) in ``root``; md5 recorded if asked."""
    name = (_registry.CIFAR_BIN_ARCHIVE if folder.name == _registry.CIFAR_BIN_DIR
            else _registry.CIFAR_PY_ARCHIVE)
    archive = root / name
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    if monkeypatch is not None:
        monkeypatch.setitem(_registry.CHECKSUMS, name,
                            ("md5", hashlib.md5(archive.read_bytes()).hexdigest()))
    return archive
