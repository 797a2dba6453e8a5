"""Reading MNIST-style IDX files, gzip-compressed or not, refusing anything malformed.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the data. MNIST and Fashion-MNIST use unsigned bytes
(type 0x08): images have 3 dimensions (N, rows, cols), labels 1 (N,).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from . import _checksum
from ._registry import IDX_FILES

UBYTE = 0x08


def read_file(path: Path) -> bytes:
    """The contents of ``path``, decompressed when its name ends in ``.gz``."""
    if path.name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            # BadGzipFile: not gzip or CRC error; EOFError: truncated; zlib.error: corrupt stream.
            raise ValueError(f"{path}: unreadable gzip file ({e})") from None
    return path.read_bytes()


def parse(data: bytes, where: str, ndim: int, item_shape: tuple[int, ...] = ()) -> np.ndarray:
    """The uint8 array held by IDX bytes ``data``, as (N,) or (N, prod(item_shape)).

    ``where`` names the file in error messages.
    """
    what = "images" if ndim > 1 else "labels"
    want_magic = UBYTE << 8 | ndim
    if len(data) < 4:
        raise ValueError(f"{where}: truncated: {len(data)} bytes, too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic != want_magic:
        raise ValueError(
            f"{where}: wrong magic number 0x{magic:08x}, expected 0x{want_magic:08x} "
            f"(IDX file of unsigned bytes with {ndim} dimension{'s' if ndim > 1 else ''}, "
            f"as MNIST {what} are)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{where}: truncated inside the IDX header ({len(data)} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if item_shape and dims[1:] != item_shape:
        raise ValueError(
            f"{where}: {what} of shape {'x'.join(map(str, dims[1:]))}, "
            f"expected {'x'.join(map(str, item_shape))}"
        )
    n = dims[0]
    size = int(np.prod(dims, dtype=np.int64))
    if len(data) < header + size:
        raise ValueError(
            f"{where}: truncated: the header declares {n} {what} ({header + size} bytes) "
            f"but the file has {len(data)} bytes"
        )
    if len(data) > header + size:
        raise ValueError(
            f"{where}: {len(data) - header - size} unexpected bytes after the {n} {what} "
            "the header declares"
        )
    array = np.frombuffer(data, dtype=np.uint8, count=size, offset=header)
    # A copy, so that callers get a writable array that does not pin the file's bytes.
    return array.reshape((n, -1) if ndim > 1 else (n,)).copy()


def read_dataset(
    files: dict[str, Path], folder_key: str, image_hw: tuple[int, int], n_classes: int
) -> dict[str, np.ndarray]:
    """The four arrays of an MNIST-style dataset, checked for structure and checksum.

    ``files`` maps each name of ``IDX_FILES`` to the file found (raw or ``.gz``);
    ``folder_key`` ('mnist', 'fashion-mnist') selects the recorded checksums.
    """
    arrays = {}
    for key, name in zip(("x_train", "t_train", "x_test", "t_test"), IDX_FILES):
        path = files[name]
        data = read_file(path)
        if key.startswith("x"):
            arrays[key] = parse(data, str(path), 3, image_hw)
        else:
            arrays[key] = parse(data, str(path), 1)
        # Structure first (its messages say more), then the exact contents.
        _checksum.verify_bytes(data, f"{folder_key}/{name}", str(path))
        del data
    for split, (images, labels) in {"train": IDX_FILES[:2], "test": IDX_FILES[2:]}.items():
        n_x, n_t = len(arrays["x_" + split]), len(arrays["t_" + split])
        if n_x != n_t:
            raise ValueError(
                f"{files[images]} has {n_x} images but {files[labels]} has {n_t} labels"
            )
        t = arrays["t_" + split]
        if n_t and t.max() >= n_classes:
            raise ValueError(
                f"{files[labels]}: label {int(t.max())} at index {int(np.argmax(t))} is not a "
                f"class index (0 to {n_classes - 1})"
            )
    return arrays
