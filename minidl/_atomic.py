"""Writing a file so that it is either complete or absent: a temporary name, then a rename."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_write(target: Path) -> Iterator[BinaryIO]:
    """A binary file to write; renamed to ``target`` when the block ends without an error.

    The temporary file sits beside ``target`` (a rename within one file system is atomic) and
    is deleted on any error, so nothing half-written is ever left under ``target``'s name.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.part"
    try:
        with open(tmp, "xb") as f:  # 'x': never clobber; open() honours the umask
            yield f
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
