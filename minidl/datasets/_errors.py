"""The errors the dataset loaders raise besides plain ``ValueError`` and ``TypeError``."""

from __future__ import annotations


class DatasetNotFoundError(FileNotFoundError):
    """No copy of the dataset was found and it could not (or may not) be downloaded.

    The message names every place searched, in order, and how to fix it. ``summary``, when
    set, is the same in one line for a command line: what failed and what to do (set
    ``MINIDL_DATA_DIR``, allow the download, or try ``--dataset mnist-mini``).
    """

    summary: str | None = None


class DatasetChecksumError(DatasetNotFoundError, ValueError):
    """Every mirror gave a file whose checksum is wrong (the bad downloads were deleted).

    It is both a ``DatasetNotFoundError`` (nothing usable was found) and a ``ValueError``
    (what arrived was damaged), so either ``except`` catches it.
    """
