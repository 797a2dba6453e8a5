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
import warnings
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

    @property
    def problems(self) -> list[tuple[Path, str]]:
        """The places that held something, but not a usable copy."""
        return [(p, what) for _, _, looked in self.places for p, what in looked
                if what not in ("absent", "found")]


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


def _folder_state(folder: Path) -> str | None:
    """None for a folder; else what is there instead ('absent', or a file in its place)."""
    if folder.is_dir():
        return None
    return "a file where a folder should be" if folder.exists() else "absent"


def _not_files(paths: list[Path]) -> str:
    """What is wrong with ``paths`` (each expected to be a file): a folder, or nothing."""
    folders = [p.name for p in paths if p.is_dir()]
    absent = [p.name for p in paths if not p.exists()]
    parts = [f"lacks {', '.join(absent)}"] if absent else []
    if folders:
        parts.append(f"{', '.join(folders)} {'is a folder' if len(folders) == 1 else 'are folders'}"
                     " where a file should be")
    return "incomplete, " + "; ".join(parts)


def look_idx(root: Path, folder_name: str) -> tuple[Source | None, list[tuple[Path, str]]]:
    folder = root / folder_name
    state = _folder_state(folder)
    if state is not None:
        return None, [(folder, state)]
    found, lacking = {}, []
    for name in IDX_FILES:  # raw preferred to .gz
        candidates = (folder / name, folder / (name + ".gz"))
        file = next((c for c in candidates if c.is_file()), None)
        if file is None:
            lacking.append(next((c for c in candidates if c.is_dir()),
                                folder / (name + "[.gz]")))
        else:
            found[name] = file
    if lacking:
        return None, [(folder, _not_files(lacking))]
    return Source("idx", folder, tuple(found[name] for name in IDX_FILES)), [(folder, "found")]


def look_cifar(root: Path) -> tuple[Source | None, list[tuple[Path, str]]]:
    looked = []
    for kind, folder_name, names in (
        ("cifar-bin", CIFAR_BIN_DIR, (*CIFAR_BIN_TRAIN, CIFAR_BIN_TEST)),
        ("cifar-py", CIFAR_PY_DIR, (*CIFAR_PY_TRAIN, CIFAR_PY_TEST)),
    ):
        folder = root / folder_name
        state = _folder_state(folder)
        if state is not None:
            looked.append((folder, state))
            continue
        lacking = [folder / n for n in names if not (folder / n).is_file()]
        if lacking:
            looked.append((folder, _not_files(lacking)))
            continue
        looked.append((folder, "found"))
        return Source(kind, folder, tuple(folder / n for n in names)), looked
    for archive_name in (CIFAR_BIN_ARCHIVE, CIFAR_PY_ARCHIVE):
        archive = root / archive_name
        if archive.is_file():
            looked.append((archive, "found"))
            return Source("cifar-archive", archive, (archive,)), looked
        looked.append((archive, "a folder where the archive should be" if archive.is_dir()
                       else "absent"))
    return None, looked


def look(name: str, root: Path) -> tuple[Source | None, list[tuple[Path, str]]]:
    """Whether data folder ``root`` holds a complete copy of dataset ``name``."""
    if root.exists() and not root.is_dir():
        return None, [(root, "a file, not a data folder")]
    if name == "cifar-10":
        return look_cifar(root)
    return look_idx(root, name)


def find(name: str, data_dir: str | os.PathLike | None, warn: bool = False) -> Search:
    """Search the data folders in order and stop at the first complete copy of ``name``.

    With ``warn``, a copy found after an earlier place held something broken (an incomplete
    folder, a folder where a file should be, ...) is used with a warning that says so.
    """
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
    if warn and search.source is not None and search.problems:
        passed = "; ".join(f"{path}: {what}" for path, what in search.problems)
        warnings.warn(f"minidl: {passed}; using {search.source.path} instead", stacklevel=4)
    return search
