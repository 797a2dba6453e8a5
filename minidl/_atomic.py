"""Writing a file so that it is either complete or absent: a temporary name, then a rename.

The temporary file is ``.<name>.minidl-<random>.part`` beside the target. A process killed
while writing (``kill -9``, a power cut) leaves its part behind: every later write into the same
folder removes the stale parts of this pattern, telling them from a live writer's by a lock
that the writer holds until its rename (POSIX ``flock``; a killed process's locks are released
by the system). Where there are no such locks (Windows), parts older than ``STALE_AFTER``
seconds are taken for stale. Parts of the pattern minidl used before the lock
(``.<name>.<12 hex digits>.part``) are removed when older than ``STALE_AFTER``.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

MARK = "minidl-"
STALE_AFTER = 3600.0  # seconds: for parts no lock can tell about
_PART = re.compile(r"\..+\.minidl-[0-9a-f]{12}\.part")
_OLD_PART = re.compile(r"\..+\.[0-9a-f]{12}\.part")


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock of ``fd`` without waiting; False if another holder has it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _remove_if_stale(path: str, locked_pattern: bool, now: float) -> None:
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            return
        if fcntl is None or not locked_pattern:
            if now - st.st_mtime >= STALE_AFTER:
                os.unlink(path)
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            # Held: a live writer (it keeps the lock until its rename). Free: its writer died.
            if _try_lock(fd) and os.path.samestat(os.fstat(fd), os.lstat(path)):
                os.unlink(path)
        finally:
            os.close(fd)
    except OSError:
        pass  # gone meanwhile, or not ours to remove: never a reason to fail a write


def clean_stale_parts(folder: Path) -> None:
    """Remove the temporary files that killed writers left in ``folder`` (see the module)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    now = time.time()
    for name in names:
        if _PART.fullmatch(name):
            _remove_if_stale(os.path.join(folder, name), True, now)
        elif _OLD_PART.fullmatch(name):
            _remove_if_stale(os.path.join(folder, name), False, now)


def _open_part(target: Path) -> tuple[Path, BinaryIO]:
    """A new temporary file beside ``target``, open for writing and locked."""
    while True:
        tmp = target.parent / f".{target.name}.{MARK}{os.urandom(6).hex()}.part"
        f = open(tmp, "xb")  # noqa: SIM115 - closed by atomic_write; 'x': never clobber
        if fcntl is None:
            return tmp, f
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        # A cleaner could have taken it for stale between the open and the lock: then it
        # no longer has this name, and we start again with a new one.
        try:
            if os.path.samestat(os.fstat(f.fileno()), os.lstat(tmp)):
                return tmp, f
        except FileNotFoundError:
            pass
        f.close()


@contextlib.contextmanager
def atomic_write(target: Path) -> Iterator[BinaryIO]:
    """A binary file to write; renamed to ``target`` when the block ends without an error.

    The temporary file sits beside ``target`` (a rename within one file system is atomic) and
    is deleted on any error, so nothing half-written is ever left under ``target``'s name.
    Stale temporary files of killed writers in that folder are removed first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_parts(target.parent)
    tmp, f = _open_part(target)
    try:
        with f:
            yield f
            f.flush()
            if fcntl is not None:
                os.replace(tmp, target)  # while still locked: never taken for stale
        if fcntl is None:
            os.replace(tmp, target)  # Windows cannot rename an open file
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
