"""Check what minidl's sdist and wheel hold (run by .ci/run; stdlib only).

    python .ci/check_dist.py sdist dist/minidl-X.tar.gz
    python .ci/check_dist.py wheel dist/minidl-X-cpXY-cpXY-PLATFORM.whl dist/minidl-X.tar.gz

The sdist must hold the Cython and C sources, the packaged data, the whole test
suite with what it reads, README and licence, and nothing generated; the wheel
must be a platform wheel with a compiled extension for every minidl/*.pyx of the
sdist, and the packaged data.
Exits non-zero naming each problem.
"""

from __future__ import annotations

import fnmatch
import sys
import tarfile
import zipfile
from pathlib import PurePosixPath

GENERATED = ["*.c", "*.so", "*.pyd", "*.dylib", "*.o", "*.obj", "*.pyc", "*/__pycache__/*",
             "build/*", "dist/*", "*.egg-info/*", ".venv*"]


def _sdist_names(path: str) -> list[str]:
    with tarfile.open(path) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    # drop the top folder (minidl-X.Y.Z/)
    return [str(PurePosixPath(*PurePosixPath(n).parts[1:])) for n in names]


def _wheel_names(path: str) -> list[str]:
    with zipfile.ZipFile(path) as whl:
        return whl.namelist()


def check_sdist(names: list[str]) -> list[str]:
    problems = []
    must = ["README.md", "LICENSE", "pyproject.toml", "setup.py", "MANIFEST.in",
            "minidl/__init__.py", "minidl/_openmp.h", "minidl/_openmp.pxd",
            "minidl/datasets/data/mnist-mini.npz", "tests/conftest.py", "tests/book_common.py",
            "bench/book_numpy.py"]
    problems += [f"sdist lacks {name}" for name in must if name not in names]
    for pattern, what in [("minidl/*.pyx", "Cython sources"), ("minidl/*.h", "C headers"),
                          ("tests/test_*.py", "tests")]:
        if not fnmatch.filter(names, pattern):
            problems.append(f"sdist holds no {what} ({pattern})")
    problems += [f"sdist holds a generated file: {name}" for name in names
                 if any(fnmatch.fnmatch(name, g) for g in GENERATED)]
    return problems


def tracked_files() -> list[str]:
    """The files git tracks under the folders the sdist must carry whole ([] outside a checkout)."""
    import subprocess

    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", "minidl", "tests", "bench"],
                             capture_output=True, check=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return [name for name in out.split("\0") if name]


def extension_modules(sdist_names: list[str]) -> list[str]:
    """The compiled modules a wheel must hold: one per minidl/*.pyx of the sdist."""
    return sorted(PurePosixPath(n).stem for n in fnmatch.filter(sdist_names, "minidl/*.pyx"))


def check_wheel(path: str, names: list[str], modules: list[str]) -> list[str]:
    problems = []
    tags = PurePosixPath(path).name[:-len(".whl")].split("-")[-3:]
    if tags[2] == "any" or tags[1] == "none":
        problems.append(f"not a platform wheel: {'-'.join(tags)}")
    ext_suffixes = (".so", ".pyd")
    compiled = {PurePosixPath(n).name.split(".")[0] for n in names if n.endswith(ext_suffixes)}
    if not modules:
        problems.append("no extension modules expected: the sdist holds no minidl/*.pyx")
    for module in modules:
        if module not in compiled:
            problems.append(f"wheel lacks the compiled extension minidl/{module}")
    for name in ("minidl/__init__.py", "minidl/datasets/data/mnist-mini.npz"):
        if name not in names:
            problems.append(f"wheel lacks {name}")
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        problems.append("wheel lacks the licence file")
    problems += [f"wheel holds a build by-product: {n}" for n in names
                 if n.endswith((".c", ".o", ".obj", ".pyx"))]
    return problems


def main(argv: list[str]) -> int:
    if not (argv[1:2] == ["sdist"] and len(argv) == 3 or argv[1:2] == ["wheel"] and len(argv) == 4):
        print(__doc__, file=sys.stderr)
        return 2
    kind, path = argv[1], argv[2]
    if kind == "sdist":
        names = _sdist_names(path)
        problems = check_sdist(names)
        # the checkout's own files: every tracked source, test, helper and data file
        problems += [f"sdist lacks {name} (tracked by git)" for name in tracked_files()
                     if name not in names]
    else:
        names = _wheel_names(path)
        problems = check_wheel(path, names, extension_modules(_sdist_names(argv[3])))
    for problem in problems:
        print(f"check_dist: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_dist: {kind} ok, {len(names)} files: {PurePosixPath(path).name}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
