"""Build minidl's Cython extensions.

Every ``minidl/*.pyx`` becomes an extension module ``minidl.<name>``; the build
stops with a clear message when there is none (a broken checkout or sdist), when
there is no working C compiler, or when the Python headers are missing.

The kernels run with bounds, wraparound and initialisation checks off (Python
validates shapes and dtypes before calling them); ``MINIDL_DEBUG=1`` at build
time turns every check back on, for running the test suite against a checked
build.

OpenMP is optional: the build tries the compiler's OpenMP flag on a tiny
program and compiles serial kernels (one thread, same results) when it fails,
saying so once. ``MINIDL_OPENMP=0`` forces a serial build, ``MINIDL_OPENMP=1``
makes a missing OpenMP an error. ``minidl.show_config()`` tells which build is
installed.

Nothing is written into the source folder except by ``build_ext --inplace``
(which puts the compiled modules beside the sources, for development):
generated C, object files, build/ and egg-info go to a folder per checkout
under the system's temporary directory, kept for development builds (so that
a rebuild compiles only what changed) and removed after any other.
"""

import atexit
import hashlib
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError, ExecError, LinkError, PlatformError

HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "minidl"
DEBUG = os.environ.get("MINIDL_DEBUG", "") not in ("", "0")
DEVELOPMENT_COMMANDS = {"--inplace", "-i", "develop", "editable_wheel"}
OPENMP_CHOICE = os.environ.get("MINIDL_OPENMP", "auto").strip().lower() or "auto"

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}


def fail(*lines):
    """Stop the build with ``lines`` as the last thing the student reads (pip shows
    a failed build's output: these lines end it, before pip's own summary)."""
    bar = "=" * 78
    sys.exit("\n".join(["", bar, *(f"minidl: {line}" if i == 0 else f"        {line}"
                                   for i, line in enumerate(lines)), bar, ""]))


def compiler_help(platform=sys.platform):
    """What to install for a C compiler and the Python headers, on ``platform``."""
    if platform == "win32":
        return ["On Windows, install the Microsoft C++ Build Tools (MSVC):",
                "  https://visualstudio.microsoft.com/visual-cpp-build-tools/",
                "  and select the workload 'Desktop development with C++'."]
    if platform == "darwin":
        return ["On macOS, install Apple's command line tools:",
                "  xcode-select --install"]
    return ["On Debian/Ubuntu (and Colab, WSL):  sudo apt-get install build-essential python3-dev",
            "On Fedora/RHEL:  sudo dnf install gcc python3-devel",
            "On Arch:         sudo pacman -S base-devel",
            "On conda:        conda install -c conda-forge c-compiler"]


def no_compiler(problem, detail, platform=sys.platform):
    """Stop: no usable C compiler or no Python headers, and what to install."""
    fail(f"cannot compile minidl's C extensions: {problem}.",
         *(f"({line})" for line in detail.strip().splitlines()[-3:] if line.strip()),
         "",
         *compiler_help(platform),
         "then run the install again (pip install .).")


def _sources():
    pyx = sorted(PACKAGE.glob("*.pyx"))
    if not pyx:
        fail(f"no Cython sources (minidl/*.pyx) in {HERE}.",
             "This checkout or source distribution is incomplete: get a complete one",
             "(git clone, or the sdist from `python -m build --sdist`).")
    return pyx


def _scratch_dir():
    """Where the build's by-products go: a folder per source folder, build flags and
    Python, outside the source folder (see DEVELOPMENT_COMMANDS for when it is kept)."""
    key = "|".join([str(HERE), sys.version, sysconfig.get_platform(), str(DEBUG), OPENMP_CHOICE])
    user = str(os.getuid()) if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"minidl-build-{user}" / hashlib.sha1(
        key.encode()).hexdigest()[:16]


def _openmp_candidates(compiler_type, platform=sys.platform):
    """(name, compile args, link args, include dirs, library dirs) to try, best first."""
    if compiler_type == "msvc":
        return [("/openmp", ["/openmp"], [], [], [])]
    out = [("-fopenmp", ["-fopenmp"], ["-fopenmp"], [], [])]
    if platform == "darwin":  # Apple clang: OpenMP only through libomp (Homebrew or MacPorts)
        prefixes = [os.environ.get("LIBOMP_PREFIX", ""), "/opt/homebrew/opt/libomp",
                    "/usr/local/opt/libomp", "/opt/local"]
        brew = shutil.which("brew")
        if brew:
            import subprocess

            found = subprocess.run([brew, "--prefix", "libomp"], capture_output=True,
                                   text=True, check=False).stdout.strip()
            prefixes.insert(1, found)
        for prefix in dict.fromkeys(p for p in prefixes if p):
            include, lib = Path(prefix) / "include", Path(prefix) / "lib"
            if prefix == "/opt/local":  # MacPorts
                include, lib = include / "libomp", lib / "libomp"
            if (include / "omp.h").is_file():
                out.append((f"-Xpreprocessor -fopenmp -lomp ({prefix})",
                            ["-Xpreprocessor", "-fopenmp"], ["-lomp"], [str(include)],
                            [str(lib)]))
    return out


OPENMP_PROBE = r"""
#include <omp.h>
int main(void) {
    int n = 0;
#pragma omp parallel reduction(+:n)
    n += 1;
    return (n >= 1 && omp_get_max_threads() >= 1) ? 0 : 1;
}
"""

COMPILER_PROBE = r"""
#include <Python.h>
int main(void) { return 0; }
"""


class BuildExt(build_ext):
    """build_ext that checks the compiler first and turns OpenMP on where it works.

    Cython's own build_ext (which setuptools uses when Cython is installed) turns
    the .pyx into C, in the build's temporary folder (``cython_c_in_temp``).
    """

    def initialize_options(self):
        super().initialize_options()
        self.cython_c_in_temp = 1
        self.cython_directives = dict(DIRECTIVES)

    def _try(self, source, name, compile_args=(), link_args=(), include_dirs=(),
             library_dirs=(), link=True):
        """Compile (and link) ``source``; the compiler's error text, or None when it worked."""
        import contextlib
        import io

        tmp = Path(tempfile.mkdtemp(prefix="minidl-probe-"))
        try:
            c_file = tmp / f"{name}.c"
            c_file.write_text(source)
            out = io.StringIO()
            # the compiler's own messages go to the file descriptors: capture them too
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), \
                    _quiet_fds() as fd_text:
                try:
                    objects = self.compiler.compile(
                        [str(c_file)], output_dir=str(tmp),
                        include_dirs=[sysconfig.get_paths()["include"], *include_dirs],
                        extra_postargs=list(compile_args))
                    if link:
                        self.compiler.link_executable(
                            objects, str(tmp / name), library_dirs=list(library_dirs),
                            extra_postargs=list(link_args))
                except (CompileError, LinkError, ExecError, PlatformError, OSError) as exc:
                    return f"{out.getvalue()}{fd_text()}\n{type(exc).__name__}: {exc}"
            return None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _check_compiler(self):
        error = self._try(COMPILER_PROBE, "compiler_probe", link=False)
        if error is None:
            return
        if "Python.h" in error:
            no_compiler("the Python headers (Python.h) are missing", error)
        no_compiler("no working C compiler was found", error)

    def _openmp_flags(self):
        """The OpenMP flags that compile and link here, or None (a serial build)."""
        if OPENMP_CHOICE in ("0", "no", "off", "false"):
            self._say("building serial kernels (MINIDL_OPENMP=0): one thread.")
            return None
        tried = []
        for name, cargs, largs, incs, libs in _openmp_candidates(self.compiler.compiler_type):
            if self._try(OPENMP_PROBE, "openmp_probe", cargs, largs, incs, libs) is None:
                self._say(f"OpenMP on ({name}).")
                return cargs, largs, incs, libs
            tried.append(name)
        if OPENMP_CHOICE in ("1", "yes", "on", "true"):
            fail(f"MINIDL_OPENMP=1, but the compiler has no OpenMP (tried {', '.join(tried)}).")
        how = " (brew install libomp, then reinstall)" if sys.platform == "darwin" else ""
        self._say(f"the C compiler has no OpenMP (tried {', '.join(tried)}): building serial "
                  f"kernels, one thread, same results{how}.")
        return None

    @staticmethod
    def _say(message):
        print(f"minidl: {message}", file=sys.stderr, flush=True)

    def build_extensions(self):
        self._check_compiler()
        openmp = self._openmp_flags()
        if sys.platform == "win32":
            opt = ["/O2"]
        else:
            opt = ["-O0", "-g"] if DEBUG else ["-O3"]
        import numpy as np  # here, not at the top: sdist and the compiler check need no numpy

        for ext in self.extensions:
            ext.include_dirs.append(np.get_include())
            ext.extra_compile_args = opt + (openmp[0] if openmp else [])
            ext.extra_link_args = list(openmp[1]) if openmp else []
            if openmp:
                ext.include_dirs += openmp[2]
                ext.library_dirs += openmp[3]
        self._short_object_paths()
        super().build_extensions()

    def _short_object_paths(self):
        """Object files of the C that Cython wrote into build_temp go beside it, not under
        build_temp + the C file's whole absolute path (distutils' rule for absolute
        sources), which repeats the scratch folder's path and can pass Windows' 260."""
        temp = Path(self.build_temp).resolve()
        names = self.compiler.object_filenames

        def object_filenames(sources, strip_dir=0, output_dir=""):
            inside = []
            for source in sources:
                path = Path(source)
                if path.is_absolute() and temp in path.resolve().parents:
                    source = str(path.resolve().relative_to(temp))
                inside.append(source)
            return names(inside, strip_dir=strip_dir, output_dir=output_dir)

        self.compiler.object_filenames = object_filenames


class _quiet_fds:
    """Send file descriptors 1 and 2 to a temporary file (a probe's compiler output);
    calling the object given by ``with`` returns what was written."""

    def __enter__(self):
        self._file = tempfile.TemporaryFile(mode="w+b")
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = [os.dup(1), os.dup(2)]
        os.dup2(self._file.fileno(), 1)
        os.dup2(self._file.fileno(), 2)
        return self._read

    def _read(self):
        self._file.seek(0)
        return self._file.read().decode(errors="replace")

    def __exit__(self, *exc):
        for fd, saved in zip((1, 2), self._saved):
            os.dup2(saved, fd)
            os.close(saved)
        return False


def extensions():
    return [
        Extension(
            f"minidl.{pyx.stem}",
            [str(pyx.relative_to(HERE)).replace(os.sep, "/")],
            include_dirs=[str(PACKAGE)],  # the .h files, beside the .pyx
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        )
        for pyx in _sources()
    ]


if __name__ == "__main__":
    scratch = _scratch_dir()
    scratch.mkdir(parents=True, exist_ok=True)
    # kept for development builds (a rebuild compiles only what changed); removed after
    # the others (pip install, python -m build), which would otherwise leave ~20 MB each
    if not DEVELOPMENT_COMMANDS.intersection(sys.argv[1:]):
        atexit.register(shutil.rmtree, scratch, True)
    setup(
        ext_modules=extensions(),
        cmdclass={"build_ext": BuildExt},
        options={"build": {"build_base": str(scratch / "build")},
                 "egg_info": {"egg_base": str(scratch)}},
    )
