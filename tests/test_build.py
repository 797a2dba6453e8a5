"""The build: setup.py's checks and messages, the OpenMP shim's serial branch, show_config.

The builds here compile small projects in tmp_path with the checkout's setup.py and
headers (they skip where the tests run without the sources beside them). The full
serial build of minidl takes minutes: ``MINIDL_SLOW_TESTS=1`` runs it (.ci/run does).
"""

import importlib.machinery
import json
import os
import runpy
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import minidl

SOURCE = Path(__file__).resolve().parents[1]
SETUP = SOURCE / "setup.py"
needs_sources = pytest.mark.skipif(not SETUP.is_file() or not (SOURCE / "minidl/_openmp.h").is_file(),
                                   reason="the sources (setup.py, minidl/*.h) are not beside tests/")


def _setup_module():
    """setup.py's functions, without running setup() (it does only as __main__)."""
    return runpy.run_path(str(SETUP), run_name="minidl_setup")


# A kernel that reports which threads ran its loop, with the omp functions the
# real kernels cimport: the serial branch must compile and run every iteration once.
PROBE_PYX = textwrap.dedent("""
    # cython: language_level=3
    from cython.parallel cimport parallel, prange, threadid
    from ._openmp cimport MINIDL_OPENMP, omp_get_max_threads

    def run(int n, int nt):
        import array
        cdef int i, tid
        out = array.array("i", [-1]) * n
        cdef int[::1] o = out
        with nogil, parallel(num_threads=nt):
            tid = threadid()
            for i in prange(n, schedule="dynamic"):
                o[i] = tid
        return list(out), omp_get_max_threads(), MINIDL_OPENMP
""")


def _tiny_project(root: Path, with_sources=True) -> Path:
    """A copy of the project's build files with one tiny extension besides _buildinfo."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        if (SOURCE / name).is_file():
            shutil.copy(SOURCE / name, root / name)
    pkg = root / "minidl"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    if with_sources:
        for name in ("_openmp.h", "_openmp.pxd", "_buildinfo.pyx"):
            shutil.copy(SOURCE / "minidl" / name, pkg / name)
        (pkg / "_probe.pyx").write_text(PROBE_PYX)
    return root


_TEMP = {}


@pytest.fixture(autouse=True, scope="module")
def _temporary_folder(tmp_path_factory):
    """The builds' system temporary folder (their scratch folders go there): one under
    pytest's own, which it cleans, instead of the machine's."""
    _TEMP["dir"] = str(tmp_path_factory.mktemp("btmp"))
    yield
    _TEMP.clear()


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIDL_")}
    if "dir" in _TEMP:
        env.update(TMPDIR=_TEMP["dir"], TEMP=_TEMP["dir"], TMP=_TEMP["dir"])
    env.update(extra)
    return env


def _build(project: Path, **env):
    return subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=project,
                          capture_output=True, text=True, env=_env(**env), timeout=600,
                          check=False)


def _compiler_without_openmp(tmp_path: Path) -> dict:
    """CC/LDSHARED for the real C compiler behind a wrapper that refuses -fopenmp
    (as Apple clang without libomp does)."""
    if sys.platform == "win32":
        pytest.skip("MSVC always takes /openmp; a POSIX shell wrapper stands in elsewhere")
    real = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if real is None:
        pytest.skip("no C compiler here")
    wrapper = tmp_path / "cc-no-openmp"
    wrapper.write_text(f'#!/bin/sh\nfor a in "$@"; do case "$a" in -fopenmp*) '
                       f'echo "unsupported option $a" >&2; exit 1;; esac; done\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    return {"CC": str(wrapper), "LDSHARED": f"{wrapper} -shared"}


@needs_sources
def test_compiler_without_openmp_gives_a_serial_build_that_runs_every_iteration(tmp_path):
    pytest.importorskip("Cython")
    project = _tiny_project(tmp_path / "p")
    proc = _build(project, **_compiler_without_openmp(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # said once, and no OpenMP flag reached the real compile commands
    assert proc.stderr.count("the C compiler has no OpenMP (tried -fopenmp)") == 1, proc.stderr
    assert "-fopenmp" not in proc.stdout
    code = ("import json; from minidl import _probe, _buildinfo; "
            "print(json.dumps([_probe.run(1000, 4), _buildinfo.OPENMP_VERSION, "
            "_buildinfo.openmp_max_threads(), _buildinfo.openmp_num_procs()]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True,
                         text=True, check=True, timeout=60, env=_env())
    (owners, max_threads, version), buildinfo_version, bi_threads, bi_procs = json.loads(out.stdout)
    assert owners == [0] * 1000  # every iteration ran, all on the calling thread
    assert (max_threads, version) == (1, 0)
    assert (buildinfo_version, bi_threads, bi_procs) == (0, 1, 1)
    # nothing generated was left beside the sources: the C went to the scratch folder
    assert not list(project.rglob("*.c")) and not (project / "build").exists()
    assert not list(project.glob("*.egg-info"))


@needs_sources
def test_openmp_required_but_missing_is_an_error(tmp_path):
    project = _tiny_project(tmp_path / "p")
    proc = _build(project, MINIDL_OPENMP="1", **_compiler_without_openmp(tmp_path))
    assert proc.returncode != 0
    assert "MINIDL_OPENMP=1, but the compiler has no OpenMP" in proc.stderr


@needs_sources
def test_no_compiler_names_what_to_install(tmp_path):
    if sys.platform == "win32":
        pytest.skip("MSVC is found through the registry, not CC")
    project = _tiny_project(tmp_path / "p")
    proc = _build(project, CC=str(tmp_path / "no-such-cc"))
    assert proc.returncode != 0
    assert "no working C compiler was found" in proc.stderr
    expected = "xcode-select --install" if sys.platform == "darwin" else "build-essential python3-dev"
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr  # the message, not a stack


@needs_sources
def test_no_compiler_message_reaches_pip(tmp_path):
    """pip shows a failed build's output: the message must be in it, not just pip's summary."""
    pytest.importorskip("Cython")
    if sys.platform == "win32":
        pytest.skip("MSVC is found through the registry, not CC")
    project = _tiny_project(tmp_path / "p")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-w", str(tmp_path / "wheels"), str(project)],
                          capture_output=True, text=True, timeout=600, check=False,
                          env=_env(CC=str(tmp_path / "no-such-cc"),
                                   PIP_DISABLE_PIP_VERSION_CHECK="1"))
    assert proc.returncode != 0
    assert "no working C compiler was found" in proc.stdout + proc.stderr


@needs_sources
def test_pip_wheel_leaves_nothing_behind(tmp_path):
    """``pip install .``'s build: a platform wheel with the compiled modules, and nothing
    left in the source folder or in the scratch folder the build used."""
    pytest.importorskip("Cython")
    project = _tiny_project(tmp_path / "p")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps",
                           "--no-build-isolation", "-w", str(tmp_path / "wheels"), str(project)],
                          capture_output=True, text=True, timeout=600, check=False,
                          env=_env(PIP_DISABLE_PIP_VERSION_CHECK="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("minidl-*.whl")
    assert not wheel.name.endswith("-none-any.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    assert {n.split("/")[-1].split(".")[0] for n in names if n.endswith(suffixes)} == {
        "_buildinfo", "_probe"}
    left = sorted(str(p.relative_to(project)) for p in project.rglob("*")
                  if p.is_dir() and p.name in ("build", "__pycache__") or p.suffix in (".c", ".so")
                  or p.name.endswith(".egg-info"))
    assert left == []
    # the build used a scratch folder, and removed it (pip's builds are not incremental)
    code = "import runpy; print(runpy.run_path('setup.py', run_name='x')['_scratch_dir']())"
    scratch = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True,
                             text=True, env=_env(), check=True, timeout=60).stdout.strip()
    assert scratch in proc.stdout + proc.stderr
    assert not Path(scratch).exists()


@needs_sources
def test_compiler_help_per_platform():
    help_for = _setup_module()["compiler_help"]
    assert any("build-essential python3-dev" in line for line in help_for("linux"))
    assert any("dnf install gcc python3-devel" in line for line in help_for("linux"))
    assert any("xcode-select --install" in line for line in help_for("darwin"))
    assert any("Microsoft C++ Build Tools" in line for line in help_for("win32"))


@needs_sources
def test_macos_tries_libomp_where_it_is_installed(tmp_path, monkeypatch):
    candidates = _setup_module()["_openmp_candidates"]
    assert [c[0] for c in candidates("msvc", "win32")] == ["/openmp"]
    assert [c[0] for c in candidates("unix", "linux")] == ["-fopenmp"]
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "omp.h").write_text("")
    monkeypatch.setenv("LIBOMP_PREFIX", str(tmp_path))
    monkeypatch.setenv("PATH", "")  # no brew to ask
    mac = candidates("unix", "darwin")
    assert mac[0][0] == "-fopenmp"  # GCC, or a clang with OpenMP, first
    _, cargs, largs, incs, libs = mac[1]
    assert cargs == ["-Xpreprocessor", "-fopenmp"] and largs == ["-lomp"]
    assert incs == [str(tmp_path / "include")] and libs == [str(tmp_path / "lib")]


@needs_sources
def test_setup_fails_loudly_without_sources(tmp_path):
    project = _tiny_project(tmp_path / "p", with_sources=False)
    proc = subprocess.run([sys.executable, "setup.py", "sdist"], cwd=project,
                          capture_output=True, text=True, env=_env(), timeout=120, check=False)
    assert proc.returncode != 0
    assert "no Cython sources (minidl/*.pyx)" in proc.stderr


def test_show_config_reports_the_build(capsys):
    from minidl import _buildinfo, _sparse

    assert _buildinfo.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    config = minidl._config.build_config()
    assert config["minidl"] == minidl.__version__
    assert config["simd"] == _sparse.SIMD_ISA
    assert config["backend"] == minidl.get_backend()
    serial = _buildinfo.OPENMP_VERSION == 0
    assert (config["openmp"] is None) == serial
    if serial:
        assert config["threads"] == {"whole passes": 1, "layer by layer": 1}
    minidl.show_config()
    out = capsys.readouterr().out
    assert f"minidl   {minidl.__version__}" in out
    assert ("note: serial build" in out) == serial
    assert ("OpenMP   no: serial build" in out) == serial


def test_show_config_leaves_the_simd_selection_alone(capsys):
    from minidl import _sparse
    from minidl.backend import use_simd

    before = _sparse.SIMD_ISA
    try:
        chosen = use_simd("scalar")
        minidl.show_config()
        assert _sparse.SIMD_ISA == chosen
        assert f"SIMD     {chosen}" in capsys.readouterr().out
    finally:
        use_simd("best")
    assert _sparse.SIMD_ISA == before


@pytest.mark.skipif(not os.environ.get("MINIDL_SLOW_TESTS"),
                    reason="a full serial build takes minutes: MINIDL_SLOW_TESTS=1 runs it "
                           "(.ci/run does)")
@needs_sources
def test_full_serial_build_passes_the_kernel_tests(tmp_path):
    """All of minidl compiled without OpenMP (as with Apple clang without libomp): the
    rest of the suite passes on it."""
    pytest.importorskip("Cython")
    copy = tmp_path / "src"
    shutil.copytree(SOURCE, copy, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "*.so", "*.pyd", "*.c", "__pycache__",
        ".pytest_cache", ".ruff_cache", "runs"))
    proc = _build(copy, MINIDL_OPENMP="0")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    env = _env(PYTHONPATH=str(copy))
    if os.environ.get("MINIDL_DATA_DIR"):
        env["MINIDL_DATA_DIR"] = os.environ["MINIDL_DATA_DIR"]
    check = subprocess.run([sys.executable, "-c", "import minidl; minidl.show_config()"],
                           cwd=copy, capture_output=True, text=True, env=env, check=True,
                           timeout=60)
    assert "OpenMP   no: serial build" in check.stdout
    assert str(copy) in subprocess.run(
        [sys.executable, "-c", "import minidl; print(minidl.__file__)"], cwd=copy,
        capture_output=True, text=True, env=env, check=True, timeout=60).stdout
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests",
                          "--ignore=tests/test_build.py"],
                         cwd=copy, capture_output=True, text=True, env=env, timeout=1800,
                         check=False)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    assert " passed" in run.stdout.splitlines()[-1]


@pytest.mark.skipif(not os.environ.get("MINIDL_CI_INSTALLED"),
                    reason=".ci/run sets MINIDL_CI_INSTALLED: there the suite must run against "
                           "the installed wheel")
def test_the_minidl_under_test_is_the_installed_wheel():
    import sysconfig

    where = Path(minidl.__file__).resolve()
    site = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    assert any(folder in where.parents for folder in site), where
    assert minidl._buildinfo.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


@pytest.mark.skipif(not (SOURCE / ".ci" / "check_dist.py").is_file(),
                    reason=".ci/check_dist.py is not beside tests/")
def test_dist_checker_names_what_is_missing_or_generated():
    check = runpy.run_path(str(SOURCE / ".ci" / "check_dist.py"), run_name="check_dist")
    good = ["README.md", "LICENSE", "pyproject.toml", "setup.py", "MANIFEST.in",
            "minidl/__init__.py", "minidl/_core.pyx", "minidl/_openmp.h", "minidl/_openmp.pxd",
            "minidl/datasets/data/mnist-mini.npz", "tests/conftest.py", "tests/book_common.py",
            "tests/test_x.py", "bench/book_numpy.py"]
    assert check["check_sdist"](good) == []
    problems = check["check_sdist"]([n for n in good if n != "tests/conftest.py"]
                                    + ["minidl/_core.c", "build/lib/minidl/_core.so"])
    assert "sdist lacks tests/conftest.py" in problems
    assert "sdist holds a generated file: minidl/_core.c" in problems
    assert "sdist holds a generated file: build/lib/minidl/_core.so" in problems
    wheel = ["minidl/__init__.py", "minidl/datasets/data/mnist-mini.npz",
             "minidl-0.1.0.dist-info/licenses/LICENSE"]
    compiled = [f"minidl/{m}.cpython-311-x86_64-linux-gnu.so"
                for m in ("_core", "_netgrad", "_buildinfo")]
    modules = check["extension_modules"](good + ["minidl/_netgrad.pyx", "minidl/_buildinfo.pyx"])
    assert modules == ["_buildinfo", "_core", "_netgrad"]
    assert check["check_wheel"]("minidl-0.1.0-cp311-cp311-linux_x86_64.whl",
                                wheel + compiled, modules) == []
    problems = check["check_wheel"]("minidl-0.1.0-py3-none-any.whl", wheel, modules)
    assert "not a platform wheel: py3-none-any" in problems
    assert "wheel lacks the compiled extension minidl/_core" in problems


@pytest.mark.skipif(not (SOURCE / "pyproject.toml").is_file(), reason="no pyproject.toml beside tests/")
def test_wheels_built_with_openmp_bundle_its_runtime():
    """cibuildwheel repairs Linux (auditwheel) and macOS (delocate) wheels by default, Windows
    wheels not at all: there MSVC's vcomp140.dll must be bundled by delvewheel."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((SOURCE / "pyproject.toml").read_text())["tool"]["cibuildwheel"]
    windows = config["windows"]
    if windows.get("environment", {}).get("MINIDL_OPENMP") != "0":
        assert "delvewheel" in windows.get("before-build", ""), windows
        assert windows.get("repair-wheel-command", "").startswith("delvewheel repair"), windows
    assert "repair-wheel-command" not in config.get("linux", {})  # auditwheel's default
