"""Reading MNIST-style IDX files, gzip-compressed or not, refusing anything malformed.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the data. MNIST and Fashion-MNIST use unsigned bytes
(type 0x08): images have 3 dimensions (N, rows, cols), labels 1 (N,).

Files are read as a stream (``.gz`` decompressed on the fly): the header first, its declared
size checked against what the dataset can hold and against the file's size, then exactly that
many bytes, stopping at the first byte too many (see ``_stream``).
"""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from . import _checksum, _stream
from ._registry import IDX_FILES

UBYTE = 0x08


def _open(path: Path) -> BinaryIO:
    """``path`` for reading, decompressed on the fly when its name ends in ``.gz``."""
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def read_stream(
    f: BinaryIO,
    where: str,
    ndim: int,
    item_shape: tuple[int, ...] = (),
    max_items: int | None = None,
    file_size: int | None = None,
    hasher=None,
) -> np.ndarray:
    """The uint8 array of the IDX data read from ``f``, as (N,) or (N, prod(item_shape)).

    Nothing is read beyond the header before the declared size has been checked: against
    ``max_items`` (the most the dataset has) and, for a file whose size is known
    (``file_size``), against that size. The data is then read in chunks, stopping at the first
    byte past what the header declares. ``where`` names the file in error messages; ``hasher``
    is updated with every byte read (header included).
    """
    what = "images" if ndim > 1 else "labels"
    want_magic = UBYTE << 8 | ndim
    head = _stream.read_up_to(f, 4)
    if len(head) < 4:
        raise ValueError(f"{where}: truncated: {len(head)} bytes, too short for an IDX header")
    magic = int.from_bytes(head, "big")
    if magic != want_magic:
        raise ValueError(
            f"{where}: wrong magic number 0x{magic:08x}, expected 0x{want_magic:08x} "
            f"(IDX file of unsigned bytes with {ndim} dimension{'s' if ndim > 1 else ''}, "
            f"as MNIST {what} are)"
        )
    header = 4 + 4 * ndim
    head += _stream.read_up_to(f, header - 4)
    if len(head) < header:
        raise ValueError(f"{where}: truncated inside the IDX header ({len(head)} bytes)")
    dims = tuple(int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if item_shape and dims[1:] != item_shape:
        raise ValueError(
            f"{where}: {what} of shape {'x'.join(map(str, dims[1:]))}, "
            f"expected {'x'.join(map(str, item_shape))}"
        )
    n = dims[0]
    if max_items is not None and n > max_items:
        raise ValueError(
            f"{where}: the header declares {n} {what}, more than the {max_items} this "
            "dataset has: not one of its files"
        )
    item = int(np.prod(dims[1:], dtype=np.int64))
    size = n * item
    expected = header + size
    if file_size is not None and file_size != expected:
        if file_size < expected:
            raise ValueError(f"{where}: truncated: the header declares {n} {what} "
                             f"({expected} bytes) but the file has {file_size} bytes")
        raise ValueError(f"{where}: {file_size - expected} unexpected bytes after the {n} "
                         f"{what} the header declares ({expected} bytes; the file has "
                         f"{file_size})")
    if hasher is not None:
        hasher.update(head)
    data, got = _stream.read_into(f, size, hasher)
    if got < size:
        raise ValueError(f"{where}: truncated: the header declares {n} {what} ({expected} "
                         f"bytes) but the data ends after {header + got} bytes")
    if _stream.has_more(f):
        raise ValueError(f"{where}: unexpected bytes after the {n} {what} the header declares "
                         f"({expected} bytes): the data goes on")
    return data.reshape((n, item) if ndim > 1 else (n,))


def read_file(
    path: Path, ndim: int, item_shape: tuple[int, ...] = (), max_items: int | None = None,
    checksum_key: str | None = None,
) -> np.ndarray:
    """The array in IDX file ``path`` (raw or ``.gz``), checked for structure, then checksum.

    ``checksum_key`` selects the checksum recorded for the (uncompressed) contents.
    """
    known = _checksum.expected(checksum_key) if checksum_key else None
    hasher = _checksum.new_hash(known[0]) if known else None
    gz = path.name.endswith(".gz")
    try:
        with _open(path) as f:
            array = read_stream(f, str(path), ndim, item_shape, max_items,
                                None if gz else path.stat().st_size, hasher)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        # BadGzipFile: not gzip or CRC error; EOFError: truncated; zlib.error: corrupt stream.
        raise ValueError(f"{path}: unreadable gzip file ({e})") from None
    if known is not None and hasher.hexdigest() != known[1]:
        raise ValueError(_checksum.mismatch_message(str(path), known[0], hasher.hexdigest(),
                                                    known[1]))
    return array


def declared_count(path: Path, ndim: int) -> int | None:
    """The number of items the header of IDX file ``path`` declares; None if unreadable."""
    try:
        with _open(path) as f:
            head = _stream.read_up_to(f, 4 + 4 * ndim)
    except (OSError, EOFError, zlib.error):
        return None
    if len(head) < 4 + 4 * ndim or int.from_bytes(head[:4], "big") != UBYTE << 8 | ndim:
        return None
    return int.from_bytes(head[4:8], "big")


def parse(data: bytes, where: str, ndim: int, item_shape: tuple[int, ...] = ()) -> np.ndarray:
    """The uint8 array held by IDX bytes ``data``; ``where`` names them in error messages."""
    return read_stream(io.BytesIO(data), where, ndim, item_shape, file_size=len(data))


def read_dataset(
    files: dict[str, Path], folder_key: str, image_hw: tuple[int, int], n_classes: int,
    max_items: tuple[int, int] | None = None,
) -> dict[str, np.ndarray]:
    """The four arrays of an MNIST-style dataset, checked for structure and checksum.

    ``files`` maps each name of ``IDX_FILES`` to the file found (raw or ``.gz``);
    ``folder_key`` ('mnist', 'fashion-mnist') selects the recorded checksums; ``max_items``
    is the most (train, test) images the dataset has (a header declaring more is refused
    before anything is read).
    """
    max_items = max_items or (None, None)
    arrays = {}
    for key, name in zip(("x_train", "t_train", "x_test", "t_test"), IDX_FILES):
        image = key.startswith("x")
        arrays[key] = read_file(files[name], 3 if image else 1, image_hw if image else (),
                                max_items[0 if key.endswith("train") else 1],
                                f"{folder_key}/{name}")
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
