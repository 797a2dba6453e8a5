"""Downloading a dataset's files: mirrors in turn, checksums verified, nothing half-written.

Each file is streamed to a temporary name beside its destination while its checksum is
computed; only a file whose checksum matches the published one is renamed into place. A failed
or damaged download is deleted and the next mirror is tried. A progress bar (tqdm) is shown
when stderr is a terminal.
"""

from __future__ import annotations

import http.client
import sys
import urllib.request
from pathlib import Path

from .._atomic import atomic_write
from . import _checksum
from ._registry import DOWNLOADS, MIRRORS

TIMEOUT = 60  # seconds without data before a mirror is given up
_CHUNK = 1 << 16
_USER_AGENT = "minidl (dataset download; python urllib)"


class DownloadFailed(Exception):
    """Every mirror failed for some file; ``attempts`` holds (url, reason) for each try."""

    def __init__(self) -> None:
        super().__init__("download failed")
        self.attempts: list[tuple[str, str]] = []
        self.bad_checksum = False


class _ChecksumMismatch(Exception):
    pass


def _progress(total: int | None, desc: str):
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency, but a missing bar is no reason to fail
        return None
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, leave=False)


def _fetch_one(url: str, target: Path, key: str) -> None:
    """Download ``url`` to ``target``, verified against ``CHECKSUMS[key]``; atomic."""
    known = _checksum.expected(key)
    if known is None:  # a download without a published checksum would be unverifiable
        raise _ChecksumMismatch(f"no checksum is recorded for {key}; refusing to download it")
    algorithm, want = known
    digest = _checksum.new_hash(algorithm)
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with atomic_write(target) as out, urllib.request.urlopen(request, timeout=TIMEOUT) as resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        bar = _progress(total, target.name)
        try:
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        # Raising inside the block deletes the temporary file: a bad download never lands.
        if total is not None and received != total:
            raise OSError(f"incomplete: received {received} of {total} bytes")
        if digest.hexdigest() != want:
            raise _ChecksumMismatch(
                _checksum.mismatch_message(url, algorithm, digest.hexdigest(), want)
                + "; the download was deleted"
            )


def download_file(mirrors: list[str], name: str, target: Path, key: str) -> None:
    """Fetch file ``name`` from the first mirror that gives a verified copy."""
    failed = DownloadFailed()
    for base in mirrors:
        url = base + name
        print(f"minidl: downloading {url}", file=sys.stderr)
        try:
            _fetch_one(url, target, key)
            return
        except _ChecksumMismatch as e:
            failed.attempts.append((url, str(e)))
            failed.bad_checksum = True
        except (OSError, http.client.HTTPException, ValueError) as e:
            # URLError and HTTPError are OSErrors; ValueError: a malformed URL.
            failed.attempts.append((url, f"{type(e).__name__}: {e}"))
    if not mirrors:
        failed.attempts.append((name, "no download mirror is configured"))
    raise failed


def download(name: str, root: Path) -> Path:
    """Download the files of dataset ``name`` missing from data folder ``root``.

    Returns the folder (MNIST-style) or archive (CIFAR-10) downloaded to. Files already there
    are kept: they were verified when they arrived, and are checked again when parsed.
    """
    spec = DOWNLOADS[name]
    folder = root / spec.folder if spec.folder else root
    mirrors = list(MIRRORS.get(name, []))
    created = not folder.exists()
    try:
        for file_name in spec.files:
            target = folder / file_name
            # An IDX file may also be there uncompressed.
            if target.is_file() or (
                file_name.endswith(".gz") and target.with_suffix("").is_file()
            ):
                continue
            key = f"{spec.folder}/{file_name}" if spec.folder else file_name
            download_file(mirrors, file_name, target, key)
    except DownloadFailed:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # leave no empty folder behind a failed first download
        raise
    return folder if spec.folder else folder / spec.files[0]
