"""The compiled extension is really there and really used."""

import importlib.machinery

import minidl
from minidl import _backend, _core


def test_core_is_a_compiled_extension():
    assert _core.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_default_backend_is_cython():
    assert minidl.get_backend() == "cython"
    assert isinstance(_backend.ops(), _backend.CythonOps)


def test_set_backend_switches_and_rejects_unknown():
    try:
        minidl.set_backend("numpy")
        assert minidl.get_backend() == "numpy"
        minidl.set_backend("cython", gemm="cython")
        assert _backend.ops().gemm_impl == "cython"
    finally:
        minidl.set_backend("cython")
    import pytest

    with pytest.raises(ValueError, match="unknown backend"):
        minidl.set_backend("torch")
    with pytest.raises(ValueError, match="gemm"):
        minidl.set_backend("cython", gemm="mkl")


def test_bad_environment_settings_fail_with_a_clear_message():
    import os
    import subprocess
    import sys

    for name, value, message in [("MINIDL_BACKEND", "torch", "unknown backend"),
                                 ("MINIDL_GEMM", "mkl", "gemm must be one of"),
                                 ("MINIDL_NUM_THREADS", "two", "MINIDL_NUM_THREADS must be"),
                                 ("MINIDL_NUM_THREADS", "0", "MINIDL_NUM_THREADS must be")]:
        # the minidl under test: the source tree, or site-packages when installed
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(minidl.__file__)))
        env = {**os.environ, name: value, "PYTHONPATH": package_parent}
        proc = subprocess.run([sys.executable, "-c", "import minidl"], capture_output=True,
                              text=True, env=env, cwd=os.path.dirname(__file__), timeout=60,
                              check=False)
        assert proc.returncode != 0
        assert message in proc.stderr.splitlines()[-1], proc.stderr


def test_thread_settings():
    import os
    import subprocess
    import sys

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(minidl.__file__)))
    code = ("from minidl import _backend as b; "
            "print(b.NUM_THREADS, b.STEP_THREADS, min(2, b._available_cpus()))")
    for value in ("3", None):
        env = {**os.environ, "PYTHONPATH": package_parent}
        env.pop("MINIDL_NUM_THREADS", None)
        if value is not None:
            env["MINIDL_NUM_THREADS"] = value
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, cwd=os.path.dirname(__file__), timeout=60, check=True)
        layer, step, default = map(int, out.stdout.split())
        # set: both counts; unset: one thread layer by layer, up to two for whole passes
        assert (layer, step) == ((3, 3) if value else (1, default))
