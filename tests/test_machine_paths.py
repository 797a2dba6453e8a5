"""No path of a particular machine in the code, tests or docs (issue 16, item 10): data comes
through ``MINIDL_DATA_DIR`` and tests make their own small files in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import real_data_dir

ROOT = Path(__file__).resolve().parents[1]
# Spelled in pieces so that this file does not find itself.
MACHINE_PREFIXES = tuple("/" + p + "/" for p in ("work", "root", "home", "Users"))
TEXT_SUFFIXES = {".py", ".pyx", ".pxd", ".h", ".md", ".rst", ".toml", ".txt", ".cfg", ".sh",
                 ".ipynb", ".yml", ".yaml", ".in", ".json"}
SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "__pycache__", ".pytest_cache",
             ".hypothesis", ".ruff_cache", "runs"}


def authored_files():
    """The project's own text files (generated C, build folders and venvs left out)."""
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            path = Path(folder) / name
            if path.suffix in TEXT_SUFFIXES or path.relative_to(ROOT).as_posix() == ".ci/run":
                yield path


def test_no_path_of_a_particular_machine():
    hits = []
    for path in authored_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if any(prefix in line for prefix in MACHINE_PREFIXES):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, "paths of a particular machine:\n" + "\n".join(hits)


def test_real_data_only_through_minidl_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MINIDL_DATA_DIR", raising=False)
    assert real_data_dir() is None  # no fallback folder: tests that need real data skip
    (tmp_path / "b" / "mnist").mkdir(parents=True)
    (tmp_path / "a").mkdir()
    monkeypatch.setenv("MINIDL_DATA_DIR", os.pathsep.join([str(tmp_path / "a"),
                                                           str(tmp_path / "b")]))
    assert real_data_dir() == tmp_path / "b"
    assert real_data_dir("fashion-mnist") is None
