"""Reading exactly as many bytes as a header declares, and not one byte more.

A damaged or hostile file can declare, or hold, far more than the dataset it claims to be: a
sparse 4 GiB file behind a valid MNIST header, a small ``.gz`` of gigabytes of zeros, a tar
member declaring 30 GB. The readers check the declared size against what the dataset can hold
before reading anything, then read into an array of that size in chunks and stop at the first
byte too many, so that memory never exceeds the real dataset's size.
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np

CHUNK = 1 << 20


def read_into(f: BinaryIO, size: int, hasher=None) -> tuple[np.ndarray, int]:
    """Up to ``size`` bytes of ``f`` as a new uint8 array, and how many there were.

    Fewer than ``size`` only when ``f`` ends first. ``hasher`` (a ``hashlib`` object), when
    given, is updated with what was read.
    """
    out = np.empty(size, dtype=np.uint8)
    view = memoryview(out)
    done = 0
    while done < size:
        n = f.readinto(view[done:done + CHUNK])
        if not n:
            break
        done += n
    if hasher is not None:
        hasher.update(view[:done])
    return out, done


def read_up_to(f: BinaryIO, size: int) -> bytes:
    """At most ``size`` bytes of ``f`` (fewer only at its end); for headers."""
    parts = []
    while size > 0:
        part = f.read(size)
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def has_more(f: BinaryIO) -> bool:
    """Whether ``f`` goes on (reads one byte to find out)."""
    return bool(f.read(1))
