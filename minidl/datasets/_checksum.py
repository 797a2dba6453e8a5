"""Checksums of files and of decompressed contents, checked against ``_registry.CHECKSUMS``."""

from __future__ import annotations

from pathlib import Path

from . import _registry

_CHUNK = 1 << 20


def new_hash(algorithm: str):
    import hashlib  # (~3 ms to import: OpenSSL; a load from the cache hashes nothing)

    if algorithm == "md5":
        # md5 only because that is what the publishers list; sha256 where we computed our own.
        return hashlib.md5(usedforsecurity=False)
    return hashlib.new(algorithm)


def file_digest(path: Path, algorithm: str) -> str:
    h = new_hash(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def expected(key: str) -> tuple[str, str] | None:
    """(algorithm, hex digest) recorded for ``key``, or None when no checksum is known."""
    return _registry.CHECKSUMS.get(key)


def mismatch_message(what: str, algorithm: str, got: str, want: str) -> str:
    return (
        f"{what}: checksum mismatch ({algorithm} is {got}, expected {want}); "
        "the file is damaged or is not the original"
    )


def verify_bytes(data: bytes, key: str, what: str) -> None:
    """``ValueError`` naming ``what`` when the checksum recorded for ``key`` does not match."""
    known = expected(key)
    if known is None:
        return
    algorithm, want = known
    got = new_hash(algorithm)
    got.update(data)
    if got.hexdigest() != want:
        raise ValueError(mismatch_message(what, algorithm, got.hexdigest(), want))


def verify_file(path: Path, key: str) -> None:
    """``ValueError`` naming ``path`` when the checksum recorded for ``key`` does not match."""
    known = expected(key)
    if known is None:
        return
    algorithm, want = known
    got = file_digest(path, algorithm)
    if got != want:
        raise ValueError(mismatch_message(str(path), algorithm, got, want))
