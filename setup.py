"""Build minidl's Cython extensions.

Every ``minidl/*.pyx`` becomes an extension module ``minidl.<name>``. The kernels
run with bounds, wraparound and initialisation checks off (Python validates
shapes and dtypes before calling them); ``MINIDL_DEBUG=1`` at build time turns
every check back on, for running the test suite against a checked build.
"""

import os
import sys
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("MINIDL_DEBUG", "") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}

if sys.platform == "win32":
    compile_args, link_args = ["/O2", "/openmp"], []
elif sys.platform == "darwin":
    compile_args, link_args = ["-O3"], []  # Apple clang ships no OpenMP
else:
    compile_args, link_args = ["-O3", "-fopenmp"], ["-fopenmp"]
if DEBUG:
    compile_args = [a for a in compile_args if not a.startswith("-O")] + ["-O0", "-g"]

extensions = [
    Extension(
        f"minidl.{pyx.stem}",
        [str(pyx)],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for pyx in sorted(Path("minidl").glob("*.pyx"))
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
