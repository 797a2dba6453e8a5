"""What every fuzz case asserts, in one place, so that each family says only what it tries.

A case passes when minidl gives either a clear error or the right answer, leaves nothing
half-written, and the process lives:

- ``clear_error(*words)``: the block raises one of the clear error types (``ValueError``,
  ``TypeError`` and their subclasses, such as minidl's dataset errors) with a one-line message
  naming each of ``words``; a ``MemoryError``, ``KeyError``, ``AttributeError``... fails.
- ``clear_error_or_answer(call, reference)``: ``call()`` raises a clear error or returns what
  ``reference()`` (NumPy, the book's formula) returns; when NumPy itself refuses the input,
  minidl must refuse it clearly too. For the engine's families (dtypes, layouts, NaN/inf,
  labels, shapes), pass ``compare=`` with the tolerance of the dtype.
- ``no_partial_files(folder)``: no temporary ``.part`` file left, and every ``.npz`` there
  loads completely.
- ``example_dir(tmp_path)``: a fresh folder, and minidl cache, for one hypothesis example
  (function-scoped fixtures are shared by all the examples of a test).
- ``run_python(code)``: a separate interpreter (for kills, signals and concurrent processes)
  that imports the same minidl; a child killed by a signal it did not expect fails the case.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import minidl

CLEAR_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError)
PACKAGE_PARENT = Path(minidl.__file__).resolve().parents[1]


def check_message(exc: BaseException, words=(), one_line: bool = True) -> str:
    """The message of ``exc``, asserted non-empty, on one line, naming each of ``words``."""
    message = str(exc)
    assert message.strip(), f"{type(exc).__name__} without a message"
    if one_line:
        assert "\n" not in message.strip(), f"not one line: {message!r}"
    for word in words:
        assert str(word) in message, f"{word!r} not named in: {message}"
    return message


@contextlib.contextmanager
def clear_error(*words, types=CLEAR_ERRORS, one_line: bool = True) -> Iterator:
    """The block must raise one of ``types``, its one-line message naming each of ``words``."""
    with pytest.raises(types) as info:
        yield info
    check_message(info.value, words, one_line)


def same_arrays(got, expected) -> None:
    """Equal arrays (bit for bit, same dtype and shape), through tuples, lists and dicts."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys()
        for key in expected:
            same_arrays(got[key], expected[key])
    elif isinstance(expected, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(expected)
        for a, b in zip(got, expected):
            same_arrays(a, b)
    else:
        got, expected = np.asarray(got), np.asarray(expected)
        assert got.dtype == expected.dtype and got.shape == expected.shape, (
            f"{got.dtype} {got.shape} != {expected.dtype} {expected.shape}")
        np.testing.assert_array_equal(got, expected)


def clear_error_or_answer(
    call: Callable, reference: Callable, *, compare: Callable = same_arrays,
    errors: tuple[type[BaseException], ...] = CLEAR_ERRORS, words=(),
):
    """``call()`` gives ``reference()``'s answer or a clear error; returns the answer or None.

    If ``reference()`` raises (NumPy refuses the input), ``call()`` must raise a clear error.
    Any exception of ``call()`` outside ``errors`` propagates and fails the case.
    """
    try:
        expected, refused = reference(), None
    except Exception as e:  # noqa: BLE001 - any refusal by the reference counts
        expected, refused = None, e
    try:
        got = call()
    except errors as e:
        check_message(e, words)
        return None
    assert refused is None, f"the reference refuses this input ({refused!r}) but minidl answered"
    compare(got, expected)
    return got


def no_partial_files(folder: Path) -> None:
    """Nothing half-written under ``folder``: no ``.part`` files, every ``.npz`` complete."""
    folder = Path(folder)
    parts = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.part"))
    assert not parts, f"temporary files left: {parts}"
    for path in folder.rglob("*.npz"):
        with zipfile.ZipFile(path) as z:
            assert z.testzip() is None, f"{path}: a damaged member"
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                npz[key]  # reads (and CRC-checks) every array


@contextlib.contextmanager
def example_dir(tmp_path: Path) -> Iterator[Path]:
    """A new empty folder for one example, with minidl's cache folder inside it; removed after."""
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder / "xdg-cache")
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = before
        shutil.rmtree(folder, ignore_errors=True)


# `python -c` puts its working folder first on sys.path: started from a source checkout
# (as .ci/run runs the suite, from the unpacked sdist), a child would import that
# folder's minidl/ (no compiled modules) instead of the one under test.
_NEUTRAL_CWD = Path(__file__).resolve().parent


def run_python(code: str, *, env: dict | None = None, timeout: float = 120,
               cwd: Path | None = None, **popen) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter importing the same minidl as this one."""
    full_env = {**os.environ, "PYTHONPATH": str(PACKAGE_PARENT), **(env or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                          cwd=cwd or _NEUTRAL_CWD, capture_output=True, text=True, timeout=timeout,
                          check=False, **popen)


def start_python(code: str, *, env: dict | None = None, cwd: Path | None = None
                 ) -> subprocess.Popen:
    """Start ``code`` in a fresh interpreter (stdout piped, line by line) and return it."""
    full_env = {**os.environ, "PYTHONPATH": str(PACKAGE_PARENT), **(env or {})}
    return subprocess.Popen([sys.executable, "-u", "-c", textwrap.dedent(code)], env=full_env,
                            cwd=cwd or _NEUTRAL_CWD, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
