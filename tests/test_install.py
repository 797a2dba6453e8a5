"""The compiled extension is really there and really used."""

import importlib.machinery

import minidl
from minidl import _core, backend
from minidl.backend.cython_ops import CythonOps


def test_the_kernels_are_compiled_extensions():
    from minidl import _fused, _netgrad, _sparse

    for module in (_core, _sparse, _fused, _netgrad):
        assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_default_backend_is_cython():
    assert minidl.get_backend() == "cython"
    assert isinstance(backend.ops(), CythonOps)


def test_set_backend_switches_and_rejects_unknown():
    try:
        minidl.set_backend("numpy")
        assert minidl.get_backend() == "numpy"
        minidl.set_backend("cython", gemm="cython")
        assert backend.ops().gemm_impl == "cython"
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
    code = ("from minidl import backend as b; "
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


def test_the_numpy_backend_imports_nothing_compiled():
    """MINIDL_BACKEND=numpy: training, numerical gradients and the gradient check
    run on pure NumPy, with every compiled module made unimportable."""
    import os
    import subprocess
    import sys

    code = """
import importlib.abc, sys
COMPILED = {"minidl._core", "minidl._sparse", "minidl._fused", "minidl._netgrad", "minidl._conv",
            "minidl._convblock",
            "minidl._norm", "minidl._optim"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in COMPILED or any(name.startswith(c + ".") for c in COMPILED):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import numpy as np
import minidl
from minidl.gradient import gradient_check, numerical_gradient
from minidl.networks import MultiLayerNet, TwoLayerNet
from minidl.layers import Convolution, Pooling
rng = np.random.default_rng(0)
x = rng.random((30, 12)); x[x < 0.6] = 0; t = rng.integers(0, 3, 30)
np.random.seed(0)
net = TwoLayerNet(12, 5, 3, weight_init_std=0.3)
h = minidl.train(net, x, t, x, t, lr=0.1, batch_size=10, iters=6)
g = net.numerical_gradient(x[:3], t[:3])
report = gradient_check(MultiLayerNet(12, [4], 3), x[:3], t[:3])
numerical_gradient(lambda w: float(np.sum(w ** 2)), np.ones(3))
Convolution(rng.random((2, 1, 3, 3)), np.zeros(2)).forward(rng.random((1, 1, 5, 5)))
Pooling(2, 2).forward(rng.random((1, 1, 4, 4)))
loaded = sorted(m for m in sys.modules if m in COMPILED)
print(minidl.get_backend(), len(h.train_loss), report.ok, loaded)
"""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(minidl.__file__)))
    env = {**os.environ, "MINIDL_BACKEND": "numpy", "PYTHONPATH": package_parent}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=os.path.dirname(__file__), timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["numpy", "6", "True", "[]"]
