"""Hostile files, small on disk: sparse files, gzip bombs and hand-made tar members.

Nothing here writes more than a few MiB: a "4 GiB" file is sparse, a "2 GiB" gzip stream is
one compressed MiB of zeros repeated as gzip members (a gzip reader joins them into one stream).
"""

from __future__ import annotations

import functools
import gzip
import tarfile
from pathlib import Path


@functools.cache
def _one_mib_of_zeros() -> bytes:
    return gzip.compress(b"\0" * (1 << 20), compresslevel=9)  # about 1 KiB


def write_gzip_bomb(path: Path, head: bytes, zeros_mib: int, tail: bytes = b"") -> Path:
    """A gzip file of ``head``, ``zeros_mib`` MiB of zeros, then ``tail``; ~1 KiB per MiB."""
    with open(path, "wb") as f:
        f.write(gzip.compress(head))
        f.writelines(_one_mib_of_zeros() for _ in range(zeros_mib))
        if tail:
            f.write(gzip.compress(tail))
    return path


def write_sparse(path: Path, head: bytes, size: int) -> Path:
    """``head`` then zeros up to ``size`` bytes, as a sparse file (no disk for the zeros)."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def tar_member(name: str, data: bytes = b"", **fields) -> bytes:
    """The raw tar bytes of one member: a header (``fields`` set on its TarInfo, ``size``
    defaulting to ``len(data)``), then ``data`` padded to a 512-byte block."""
    info = tarfile.TarInfo(name)
    info.size = fields.pop("size", len(data))
    for key, value in fields.items():
        setattr(info, key, value)
    padding = b"\0" * (-len(data) % 512)
    return info.tobuf(format=tarfile.GNU_FORMAT) + data + padding
