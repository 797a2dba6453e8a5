"""Reading CIFAR-10: the binary version, the python version (safely), or their archives.

Binary version (``cifar-10-batches-bin``): each batch is a run of 3073-byte records, one label
byte then 3072 pixel bytes (the red plane, then green, then blue, each 32x32 row-major).

Python version (``cifar-10-batches-py``): each batch is a pickled dict with ``b'data'``, a uint8
array (N, 3072) in the same pixel order, and ``b'labels'``, a list of N ints. Unpickling can run
arbitrary code, so these files go through ``minidl._safe_pickle.SafeUnpickler``, which builds
only dicts, lists, bytes, strings, numbers and NumPy arrays and refuses every other global.

Either way the result is colour uint8 (N, 3072) images and uint8 (N,) labels. What the Toronto
page publishes is checked: every batch holds 10000 images (a binary batch is exactly 30730000
bytes, checked before it is read; a python batch is refused when larger than 10000 images can
be), the test batch exactly 1000 of each class and the five training batches between them
5000 of each, so that a shortened batch or a training batch swapped with the test batch is
refused. Archives are read member by member without extracting; a member's declared size is
checked before it is read.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .._safe_pickle import RefusedPickle, SafeUnpickler
from . import _checksum, _registry, _stream
from ._registry import (
    CIFAR_BIN_ARCHIVE,
    CIFAR_BIN_DIR,
    CIFAR_BIN_TEST,
    CIFAR_BIN_TRAIN,
    CIFAR_PY_DIR,
    CIFAR_PY_TEST,
    CIFAR_PY_TRAIN,
)

N_PIXELS = 3 * 32 * 32
RECORD = 1 + N_PIXELS
N_CLASSES = 10
# A python batch is a pickle of the pixels plus, per image, a label and a file name of a few
# dozen bytes: 256 bytes per image and 64 KiB more bound it with room to spare.
PY_BYTES_PER_IMAGE = N_PIXELS + 256
PY_SLACK = 64 << 10
# The original archives hold the six batches, a meta file and a readme (under 1 KiB each).
MAX_MEMBERS = 64
MAX_OTHER_MEMBER = 1 << 20


def batch_records() -> int:
    """Images per batch (10000; read at call time so that tests can use small batches)."""
    return _registry.CIFAR_BATCH_RECORDS

def _check_batch(x: np.ndarray, t: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    if len(t) and t.max() >= N_CLASSES:
        raise ValueError(
            f"{where}: label {int(t.max())} at record {int(np.argmax(t))} is not a CIFAR-10 "
            f"class (0 to {N_CLASSES - 1})"
        )
    return x, t


def check_bin_size(size: int, where: str) -> None:
    """``ValueError`` unless ``size`` is that of a CIFAR-10 binary batch; nothing read yet."""
    records = batch_records()
    want = records * RECORD
    if size == want:
        return
    if size == 0:
        raise ValueError(f"{where}: empty file, not a CIFAR-10 binary batch")
    if size % RECORD:
        raise ValueError(
            f"{where}: truncated or not a CIFAR-10 binary batch: {size} bytes is not a "
            f"whole number of {RECORD}-byte records (1 label byte + {N_PIXELS} pixel bytes); "
            f"a batch is {want} bytes"
        )
    raise ValueError(
        f"{where}: {size // RECORD} records ({size} bytes), expected {records} ({want} "
        f"bytes): every CIFAR-10 batch holds {records} images"
    )


def read_bin_batch(f: BinaryIO, where: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3072) and labels (N,) of the binary batch of ``size`` bytes in ``f``."""
    check_bin_size(size, where)
    data, got = _stream.read_into(f, size)
    if got < size:
        raise ValueError(f"{where}: truncated: ended after {got} of its {size} bytes")
    records = data.reshape(-1, RECORD)
    return _check_batch(records[:, 1:].copy(), records[:, 0].copy(), where)


def parse_bin_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3072) and labels (N,) of a binary-version batch; ``where`` names it."""
    return read_bin_batch(io.BytesIO(data), where, len(data))


def check_py_size(size: int, where: str) -> None:
    """``ValueError`` when ``size`` is more than a python batch can be; nothing read yet."""
    records = batch_records()
    limit = records * PY_BYTES_PER_IMAGE + PY_SLACK
    if size > limit:
        raise ValueError(
            f"{where}: {size} bytes, more than a CIFAR-10 python batch of {records} images "
            f"can be ({limit} bytes at most)"
        )


def read_py_batch(f: BinaryIO, where: str, size: int) -> tuple[bytes, tuple]:
    """The bytes of the python batch of ``size`` bytes in ``f``, and its (images, labels)."""
    check_py_size(size, where)
    data = _stream.read_up_to(f, size)
    if len(data) < size:
        raise ValueError(f"{where}: truncated: ended after {len(data)} of its {size} bytes")
    return data, parse_py_batch(data, where)


# What a truncated or garbled pickle stream raises besides UnpicklingError.
_GARBLED = (
    EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError,
    RecursionError, MemoryError, struct.error,
)


def parse_py_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3072) and labels (N,) of a python-version batch, unpickled safely."""
    try:
        # encoding='bytes': the batches were pickled by Python 2, whose str is our bytes.
        batch = SafeUnpickler(io.BytesIO(data), encoding="bytes", what="a CIFAR-10 batch").load()
    except RefusedPickle as e:
        raise ValueError(f"{where}: not a CIFAR-10 python batch, and unsafe: {e}") from None
    except (pickle.UnpicklingError, *_GARBLED) as e:
        raise ValueError(
            f"{where}: damaged or not a CIFAR-10 python batch ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(batch, dict):
        raise ValueError(  # noqa: TRY004 - a damaged file, not a wrong argument
            f"{where}: holds a {type(batch).__name__}, expected a dict"
        )
    x = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if x is None or labels is None:
        raise ValueError(f"{where}: the dict lacks 'data' or 'labels'")
    if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 2
            and x.shape[1] == N_PIXELS):
        shape = getattr(x, "shape", None)
        dtype = getattr(x, "dtype", type(x).__name__)
        raise ValueError(
            f"{where}: 'data' is {dtype} of shape {shape}, expected uint8 (N, {N_PIXELS})"
        )
    if not (isinstance(labels, (list, np.ndarray))
            and all(isinstance(v, (int, np.integer)) for v in labels)):
        raise ValueError(f"{where}: 'labels' is not a list of ints")
    t = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(t) != len(x):
        raise ValueError(f"{where}: {len(x)} images but {len(t)} labels")
    if len(t) != batch_records():
        raise ValueError(f"{where}: {len(t)} images, expected {batch_records()}: every "
                         f"CIFAR-10 batch holds {batch_records()} images")
    if len(t) and (t.min() < 0 or t.max() >= N_CLASSES):
        bad = int(t[(t < 0) | (t >= N_CLASSES)][0])
        raise ValueError(f"{where}: label {bad} is not a CIFAR-10 class (0 to {N_CLASSES - 1})")
    return np.ascontiguousarray(x), t.astype(np.uint8)


def _check_classes(t_train: np.ndarray, t_test: np.ndarray, train_where: str,
                   test_where: str) -> None:
    """The published class counts: a batch in the wrong place does not have them."""
    per_class = batch_records() // N_CLASSES
    test_counts = np.bincount(t_test, minlength=N_CLASSES)
    if (test_counts != per_class).any():
        raise ValueError(
            f"{test_where}: {test_counts.tolist()} images per class, but the CIFAR-10 test "
            f"batch holds exactly {per_class} of each: a training batch in its place "
            "(swapped or renamed), or not the original"
        )
    train_counts = np.bincount(t_train, minlength=N_CLASSES)
    if (train_counts != 5 * per_class).any():
        raise ValueError(
            f"{train_where}: the training batches hold {train_counts.tolist()} images per "
            f"class, but CIFAR-10's five hold exactly {5 * per_class} of each between them: "
            "not the original batches"
        )


def _arrays(train: list, test: tuple, train_where: str, test_where: str) -> dict[str, np.ndarray]:
    x_train = np.concatenate([b[0] for b in train])
    t_train = np.concatenate([b[1] for b in train])
    _check_classes(t_train, test[1], train_where, test_where)
    return {"x_train": x_train, "t_train": t_train, "x_test": test[0], "t_test": test[1]}


def read_bin_folder(folder: Path) -> dict[str, np.ndarray]:
    batches = []
    for name in (*CIFAR_BIN_TRAIN, CIFAR_BIN_TEST):
        path = folder / name
        with open(path, "rb") as f:
            # The size is checked before anything is read: a sparse 30 GB file costs nothing.
            batches.append(read_bin_batch(f, str(path), os.fstat(f.fileno()).st_size))
    return _arrays(batches[:-1], batches[-1], str(folder), str(folder / CIFAR_BIN_TEST))


def read_py_folder(folder: Path) -> dict[str, np.ndarray]:
    batches = []
    for name in (*CIFAR_PY_TRAIN, CIFAR_PY_TEST):
        path = folder / name
        with open(path, "rb") as f:
            data, batch = read_py_batch(f, str(path), os.fstat(f.fileno()).st_size)
        batches.append(batch)
        _checksum.verify_bytes(data, f"{CIFAR_PY_DIR}/{name}", str(path))
        del data
    return _arrays(batches[:-1], batches[-1], str(folder), str(folder / CIFAR_PY_TEST))


def read_archive(path: Path) -> dict[str, np.ndarray]:
    """The arrays in a ``cifar-10-binary.tar.gz`` or ``cifar-10-python.tar.gz``, not extracted."""
    binary = path.name == CIFAR_BIN_ARCHIVE
    folder, train, test = (
        (CIFAR_BIN_DIR, CIFAR_BIN_TRAIN, CIFAR_BIN_TEST) if binary
        else (CIFAR_PY_DIR, CIFAR_PY_TRAIN, CIFAR_PY_TEST)
    )
    wanted = {f"{folder}/{name}": name for name in (*train, test)}
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        # One pass in archive order: a gzip stream cannot seek backwards cheaply.
        with tarfile.open(path, "r:*") as archive:
            for count, member in enumerate(archive, 1):
                where = f"{path}:{member.name}"
                if count > MAX_MEMBERS:
                    raise ValueError(f"{path}: more than {MAX_MEMBERS} members, not a CIFAR-10 "
                                     "archive (the original has nine)")
                name = wanted.get(member.name.removeprefix("./"))
                if name is None:
                    if member.size > MAX_OTHER_MEMBER:  # skipping it would decompress it all
                        raise ValueError(
                            f"{where}: a member of {member.size} bytes; besides its batches "
                            "the CIFAR-10 archive holds nothing that large"
                        )
                    continue
                if not member.isfile():
                    continue
                if name in found:
                    raise ValueError(f"{where}: a second copy of {name} in the archive")
                # The declared size first: nothing of a member too large is decompressed.
                f = archive.extractfile(member)
                if binary:
                    found[name] = read_bin_batch(f, where, member.size)
                else:
                    found[name] = read_py_batch(f, where, member.size)[1]
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        # OSError covers gzip.BadGzipFile and CRC errors; a missing file fails before this.
        detail = " ".join(str(e).split())  # tarfile lists each method tried on a line
        raise ValueError(f"{path}: unreadable archive ({type(e).__name__}: {detail})") from None
    missing = [f"{folder}/{name}" for name in (*train, test) if name not in found]
    if missing:
        raise ValueError(f"{path}: the archive lacks {', '.join(missing)}")
    arrays = _arrays([found[name] for name in train], found[test], str(path),
                     f"{path}:{folder}/{test}")
    _checksum.verify_file(path, path.name)
    return arrays
