"""Reading CIFAR-10: the binary version, the python version (safely), or their archives.

Binary version (``cifar-10-batches-bin``): each batch is a run of 3073-byte records, one label
byte then 3072 pixel bytes (the red plane, then green, then blue, each 32x32 row-major).

Python version (``cifar-10-batches-py``): each batch is a pickled dict with ``b'data'``, a uint8
array (N, 3072) in the same pixel order, and ``b'labels'``, a list of N ints. Unpickling can run
arbitrary code, so these files go through ``SafeUnpickler``, which builds only what that format
holds (dicts, lists, bytes, strings, ints and uint8 NumPy arrays) and refuses every other global.

Either way the result is colour uint8 (N, 3072) images and uint8 (N,) labels.
"""

from __future__ import annotations

import codecs
import io
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np

from . import _checksum
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

try:  # NumPy >= 2 moved the module; old pickles name numpy.core, new ones numpy._core.
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct


class RefusedPickle(pickle.UnpicklingError):
    """The pickle asks for something a CIFAR-10 batch never holds."""


def _safe_dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise RefusedPickle("object arrays are not allowed")
    return dtype


def _latin1_encode(text, encoding="latin1"):
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedPickle("_codecs.encode is only allowed for latin-1 text")
    return codecs.encode(text, "latin1")


# The only globals a CIFAR-10 batch refers to: what rebuilds a NumPy array (numpy.core in the
# original Python 2 files, numpy._core in pickles written by NumPy 2), and _codecs.encode, with
# which Python 3 writes bytes into a protocol-2 pickle.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR-10 python-version batches that refuses everything else.

    Only the globals that pickled NumPy arrays need are resolved; any other (``os.system``,
    ``builtins.eval``, ...) raises ``RefusedPickle`` before anything is called.
    """

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedPickle(
                f"refused to load '{module}.{name}': a CIFAR-10 batch holds only dicts, lists, "
                "bytes, ints and NumPy arrays"
            ) from None

    def persistent_load(self, pid):
        raise RefusedPickle("persistent ids are not allowed")


def _check_batch(x: np.ndarray, t: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    if len(t) and t.max() >= N_CLASSES:
        raise ValueError(
            f"{where}: label {int(t.max())} at record {int(np.argmax(t))} is not a CIFAR-10 "
            f"class (0 to {N_CLASSES - 1})"
        )
    return x, t


def parse_bin_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3072) and labels (N,) of a binary-version batch; ``where`` names it."""
    if not data:
        raise ValueError(f"{where}: empty file, not a CIFAR-10 binary batch")
    if len(data) % RECORD:
        raise ValueError(
            f"{where}: truncated or not a CIFAR-10 binary batch: {len(data)} bytes is not a "
            f"whole number of {RECORD}-byte records (1 label byte + {N_PIXELS} pixel bytes)"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)
    return _check_batch(records[:, 1:].copy(), records[:, 0].copy(), where)


# What a truncated or garbled pickle stream raises besides UnpicklingError.
_GARBLED = (
    EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError,
    RecursionError, MemoryError, struct.error,
)


def parse_py_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3072) and labels (N,) of a python-version batch, unpickled safely."""
    try:
        # encoding='bytes': the batches were pickled by Python 2, whose str is our bytes.
        batch = SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
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
    if len(t) and (t.min() < 0 or t.max() >= N_CLASSES):
        bad = int(t[(t < 0) | (t >= N_CLASSES)][0])
        raise ValueError(f"{where}: label {bad} is not a CIFAR-10 class (0 to {N_CLASSES - 1})")
    return np.ascontiguousarray(x), t.astype(np.uint8)


def _join(batches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def _arrays(train: list, test: tuple) -> dict[str, np.ndarray]:
    x_train, t_train = _join(train)
    return {"x_train": x_train, "t_train": t_train, "x_test": test[0], "t_test": test[1]}


def read_bin_folder(folder: Path) -> dict[str, np.ndarray]:
    train = [parse_bin_batch((folder / f).read_bytes(), str(folder / f)) for f in CIFAR_BIN_TRAIN]
    test = parse_bin_batch((folder / CIFAR_BIN_TEST).read_bytes(), str(folder / CIFAR_BIN_TEST))
    return _arrays(train, test)


def read_py_folder(folder: Path) -> dict[str, np.ndarray]:
    batches = []
    for name in (*CIFAR_PY_TRAIN, CIFAR_PY_TEST):
        path = folder / name
        data = path.read_bytes()
        batches.append(parse_py_batch(data, str(path)))
        _checksum.verify_bytes(data, f"{CIFAR_PY_DIR}/{name}", str(path))
    return _arrays(batches[:-1], batches[-1])


def read_archive(path: Path) -> dict[str, np.ndarray]:
    """The arrays in a ``cifar-10-binary.tar.gz`` or ``cifar-10-python.tar.gz``, not extracted."""
    binary = path.name == CIFAR_BIN_ARCHIVE
    folder, train, test = (
        (CIFAR_BIN_DIR, CIFAR_BIN_TRAIN, CIFAR_BIN_TEST) if binary
        else (CIFAR_PY_DIR, CIFAR_PY_TRAIN, CIFAR_PY_TEST)
    )
    wanted = {f"{folder}/{name}": name for name in (*train, test)}
    parse = parse_bin_batch if binary else parse_py_batch
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        # One pass in archive order: a gzip stream cannot seek backwards cheaply.
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                name = wanted.get(member.name.removeprefix("./"))
                if name is None or not member.isfile():
                    continue
                data = archive.extractfile(member).read()
                found[name] = parse(data, f"{path}:{member.name}")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        # OSError covers gzip.BadGzipFile and CRC errors; a missing file fails before this.
        raise ValueError(f"{path}: unreadable archive ({type(e).__name__}: {e})") from None
    missing = [f"{folder}/{name}" for name in (*train, test) if name not in found]
    if missing:
        raise ValueError(f"{path}: the archive lacks {', '.join(missing)}")
    _checksum.verify_file(path, path.name)
    return _arrays([found[name] for name in train], found[test])
