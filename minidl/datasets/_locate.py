"""Where a dataset's files are: the places searched, in order, and what was found there.

The order: the ``data_dir`` argument; ``MINIDL_DATA_DIR`` (one folder, or several separated by
``os.pathsep``); minidl's cache folder; the system folders ``<dir>/datasets`` for each ``<dir>``
of ``$XDG_DATA_DIRS`` (default ``/usr/local/share:/usr/share``), where Debian's
``dataset-fashion-mnist`` installs ``/usr/share/datasets/fashion-mnist``. Each is a data folder
laid out as ``mnist/`` and ``fashion-mnist/`` (the four IDX files, gzip or not) and
``cifar-10-batches-bin/``, ``cifar-10-batches-py/``, ``cifar-10-binary.tar.gz`` or
``cifar-10-python.tar.gz``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ._cache import cache_dir
from ._registry import (
    CIFAR_BIN_ARCHIVE,
    CIFAR_BIN_DIR,
    CIFAR_BIN_TEST,
    CIFAR_BIN_TRAIN,
    CIFAR_PY_ARCHIVE,
    CIFAR_PY_DIR,
    CIFAR_PY_TEST,
    CIFAR_PY_TRAIN,
    IDX_FILES,
)

DEFAULT_XDG_DATA_DIRS = "/usr/local/share:/usr/share"


@dataclass(frozen=True)
class Source:
    """A complete copy of a dataset: ``kind`` of source, the folder or archive, its files."""

    kind: str  # 'idx', 'cifar-bin', 'cifar-py' or 'cifar-archive'
    path: Path
    files: tuple[Path, ...]


@dataclass
class Search:
    """The result of a search: what was found (or None) and every place looked at."""

    source: Source | None = None
    # (origin, data folder, [(path looked at, what was there)]) in order
    places: list[tuple[str, Path | None, list[tuple[Path, str]]]] = field(default_factory=list)

    @property
    def searched(self) -> list[str]:
        return [str(p) for _, _, looked in self.places for p, _ in looked]


def data_roots(data_dir: str | os.PathLike | None) -> list[tuple[str, Path | None]]:
    """The data folders to search, in order, each with where it came from.

    An origin with no folder (``MINIDL_DATA_DIR`` not set) is listed with None.
    """
    roots: list[tuple[str, Path | None]] = []
    if data_dir is not None:
        roots.append(("data_dir argument", Path(data_dir).expanduser()))
    env = os.environ.get("MINIDL_DATA_DIR", "")
    env_dirs = [p for p in env.split(os.pathsep) if p]
    if env_dirs:
        roots.extend(("MINIDL_DATA_DIR", Path(p).expanduser()) for p in env_dirs)
    else:
        roots.append(("MINIDL_DATA_DIR", None))
    roots.append(("minidl's cache", cache_dir()))
    xdg = os.environ.get("XDG_DATA_DIRS", "") or DEFAULT_XDG_DATA_DIRS
    for d in xdg.split(os.pathsep):
        if d and os.path.isabs(d):
            roots.append(("system", Path(d) / "datasets"))
    return roots


def _idx_files(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """The IDX files in ``folder`` (raw preferred to ``.gz``) and the names missing."""
    found, missing = {}, []
    for name in IDX_FILES:
        for candidate in (folder / name, folder / (name + ".gz")):
            if candidate.is_file():
                found[name] = candidate
                break
        else:
            missing.append(name + "[.gz]")
    return found, missing


def look_idx(root: Path, folder_name: str) -> tuple[Source | None, list[tuple[Path, str]]]:
    folder = root / folder_name
    if not folder.is_dir():
        return None, [(folder, "absent")]
    found, missing = _idx_files(folder)
    if missing:
        return None, [(folder, f"incomplete, lacks {', '.join(missing)}")]
    return Source("idx", folder, tuple(found[name] for name in IDX_FILES)), [(folder, "found")]


def look_cifar(root: Path) -> tuple[Source | None, list[tuple[Path, str]]]:
    looked = []
    for kind, folder_name, names in (
        ("cifar-bin", CIFAR_BIN_DIR, (*CIFAR_BIN_TRAIN, CIFAR_BIN_TEST)),
        ("cifar-py", CIFAR_PY_DIR, (*CIFAR_PY_TRAIN, CIFAR_PY_TEST)),
    ):
        folder = root / folder_name
        if not folder.is_dir():
            looked.append((folder, "absent"))
            continue
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            looked.append((folder, f"incomplete, lacks {', '.join(missing)}"))
            continue
        looked.append((folder, "found"))
        return Source(kind, folder, tuple(folder / n for n in names)), looked
    for archive_name in (CIFAR_BIN_ARCHIVE, CIFAR_PY_ARCHIVE):
        archive = root / archive_name
        if archive.is_file():
            looked.append((archive, "found"))
            return Source("cifar-archive", archive, (archive,)), looked
        looked.append((archive, "absent"))
    return None, looked


def look(name: str, root: Path) -> tuple[Source | None, list[tuple[Path, str]]]:
    """Whether data folder ``root`` holds a complete copy of dataset ``name``."""
    if name == "cifar-10":
        return look_cifar(root)
    return look_idx(root, name)


def find(name: str, data_dir: str | os.PathLike | None) -> Search:
    """Search the data folders in order and stop at the first complete copy of ``name``."""
    search = Search()
    for origin, root in data_roots(data_dir):
        if root is None:
            search.places.append((origin, None, []))
            continue
        source, looked = look(name, root)
        search.places.append((origin, root, looked))
        if source is not None:
            search.source = source
            break
    return search
