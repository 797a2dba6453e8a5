"""What this installation of minidl is: ``minidl.show_config()``.

The facts a bug report or a slow run needs: minidl's and NumPy's versions, whether
the kernels were compiled with OpenMP (a compiler without it, e.g. Apple clang
without libomp, gives a serial build: the same results on one thread), the
threads and SIMD kernels in use, NumPy's BLAS and the backend.
"""

from __future__ import annotations

import platform
import sys

import numpy as np

SERIAL_NOTE = ("serial build (compiled without OpenMP): the kernels run on one thread, with the "
               "same results, slower on several cores; README's Set up says how to get OpenMP")


def _openmp_version(code: int) -> str:
    """``_OPENMP``'s date code as the version it stands for (201511 -> '4.5')."""
    known = {200505: "2.5", 200805: "3.0", 201107: "3.1", 201307: "4.0", 201511: "4.5",
             201811: "5.0", 202011: "5.1", 202111: "5.2", 202411: "6.0"}
    if code in known:
        return known[code]
    if code == 200203:
        return "2.0"  # MSVC's /openmp
    return str(code)


def _blas() -> str:
    """NumPy's BLAS, as ``numpy.show_config`` names it."""
    try:
        deps = np.show_config(mode="dicts").get("Build Dependencies", {})
        blas = deps.get("blas", {})
        name, version = blas.get("name", "unknown"), blas.get("version", "")
        return f"{name} {version}".strip()
    except (TypeError, ValueError, AttributeError, ImportError):  # older NumPy (no mode=)
        return "unknown (see numpy.show_config())"


def build_config() -> dict:
    """This installation's facts as a dict (``show_config`` prints them).

    Keys: ``minidl``, ``python``, ``platform``, ``numpy``, ``blas``, ``openmp``
    (the OpenMP version the kernels were compiled with, or None for a serial
    build), ``threads`` (``{'whole passes': n, 'layer by layer': n}``, what the
    compiled kernels use; ``MINIDL_NUM_THREADS`` sets both), ``simd`` (the kernels
    of ``minidl.backend.use_simd()`` in use), ``backend`` and ``gemm``.
    """
    from . import __version__, _buildinfo, backend
    from .backend.cython_ops import simd_name

    openmp = _buildinfo.OPENMP_VERSION
    if openmp:
        threads = {"whole passes": backend.STEP_THREADS, "layer by layer": backend.NUM_THREADS}
    else:  # every parallel loop runs on the calling thread, whatever was asked for
        threads = {"whole passes": 1, "layer by layer": 1}
    ops = backend.ops()
    return {
        "minidl": __version__,
        "python": platform.python_version(),
        "platform": f"{sys.platform} {platform.machine()}",
        "numpy": np.__version__,
        "blas": _blas(),
        "openmp": _openmp_version(openmp) if openmp else None,
        "threads": threads,
        "simd": simd_name(),  # what use_simd() last selected (reading it changes nothing)
        "backend": ops.name,
        "gemm": getattr(ops, "gemm_impl", "numpy"),
    }


def show_config() -> None:
    """Print how this minidl was built and what it runs on (for bug reports).

    A serial build (compiled without OpenMP) says so here, in one line.
    """
    c = build_config()
    if c["openmp"]:
        openmp = f"yes (OpenMP {c['openmp']}, {_buildinfo_procs()} processors seen)"
    else:
        openmp = "no: serial build"
    threads = c["threads"]
    rows = [
        ("minidl", c["minidl"]),
        ("python", f"{c['python']} ({c['platform']})"),
        ("numpy", c["numpy"]),
        ("BLAS", f"{c['blas']} (numpy's; the affine products with gemm='blas')"),
        ("OpenMP", openmp),
        ("threads", (f"{threads['whole passes']} for whole passes, "
                     f"{threads['layer by layer']} layer by layer (MINIDL_NUM_THREADS)")),
        ("SIMD", f"{c['simd']} (minidl.backend.use_simd)"),
        ("backend", f"{c['backend']}, gemm={c['gemm']} (minidl.set_backend)"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if not c["openmp"]:
        print(f"note: {SERIAL_NOTE}")


def _buildinfo_procs() -> int:
    from . import _buildinfo

    return _buildinfo.openmp_num_procs()


def environment_note() -> dict:
    """The build facts a run's record keeps (``minidl train``'s environment)."""
    c = build_config()
    out = {"openmp": c["openmp"], "threads": c["threads"]["whole passes"], "simd": c["simd"]}
    if not c["openmp"]:
        out["note"] = SERIAL_NOTE
    return out
