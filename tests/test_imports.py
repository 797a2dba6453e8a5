"""What ``import minidl`` and ``import minidl.book`` load: only what a program uses.

The package's names and submodules are imported on first use (PEP 562), the backend
is set up on its first computation, and the book's hook imports a minidl module only
when a script imports the matching ``common.*``/``dataset.*``. Each check runs in a
fresh interpreter, the only place where "not yet imported" means anything.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import minidl

PACKAGE_PARENT = Path(minidl.__file__).resolve().parent.parent

# loaded by nothing but a use of what they hold
HEAVY = ["minidl.backend", "minidl.backend.cython_ops", "minidl.layers", "minidl.engine",
         "minidl.engine.rule", "minidl._conv_cython", "minidl._core", "minidl.training",
         "minidl.experiments", "minidl._config", "minidl.networks", "minidl.datasets"]


def loaded_after(code, cwd, env_extra=None):
    """The minidl modules in ``sys.modules`` after running ``code`` in a fresh interpreter,
    and which of NumPy, http.client, urllib.request, tarfile and hashlib."""
    code += ("\nimport json, sys\nprint(json.dumps(sorted(m for m in sys.modules "
             "if m.startswith('minidl') "
             "or m in ('numpy', 'http.client', 'urllib.request', 'tarfile', 'hashlib'))))")
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_PARENT), "MPLBACKEND": "Agg",
           **(env_extra or {})}
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_minidl_loads_nothing_heavy(tmp_path):
    loaded = loaded_after("import minidl", tmp_path)
    assert loaded == ["minidl", "minidl._env"]  # not even NumPy
    for name in HEAVY:
        assert name not in loaded


def test_import_minidl_book_loads_only_the_hook(tmp_path):
    assert loaded_after("import minidl.book", tmp_path) == ["minidl", "minidl._env",
                                                             "minidl.book"]


def test_the_hook_imports_only_what_the_script_imports(tmp_path):
    # ch03's imports: the functions and the MNIST loader, no layers, no compiled backend,
    # nothing for downloading (the book's urllib.request aside) or for CIFAR-10
    loaded = loaded_after("import minidl.book\nfrom common.functions import sigmoid, softmax\n"
                          "from dataset.mnist import load_mnist", tmp_path)
    assert "minidl.functions" in loaded and "minidl.datasets" in loaded
    for name in ["minidl.backend", "minidl.layers", "minidl.engine", "minidl._core",
                 "minidl.datasets._download", "minidl.datasets._cifar", "http.client",
                 "urllib.request", "tarfile", "hashlib"]:
        assert name not in loaded
    # ch04's two_layer_net.py: the numerical gradient's module, still without the engine
    loaded = loaded_after("import minidl.book\nfrom common.functions import *\n"
                          "from common.gradient import numerical_gradient", tmp_path)
    assert "minidl.gradient" in loaded
    for name in ["minidl.engine", "minidl.layers", "minidl._core", "minidl.backend.cython_ops"]:
        assert name not in loaded


def test_the_backend_is_set_up_by_its_first_computation(tmp_path):
    code = ("import sys\nimport numpy as np\nimport minidl.layers as L\n"
            "assert 'minidl.backend.cython_ops' not in sys.modules\n"
            "assert L.Relu().forward(np.array([-1.0, 2.0])).tolist() == [0.0, 2.0]")
    loaded = loaded_after(code, tmp_path)
    assert "minidl.backend.cython_ops" in loaded and "minidl._core" in loaded
    loaded = loaded_after(code, tmp_path, {"MINIDL_BACKEND": "numpy"})
    assert "minidl.backend.cython_ops" not in loaded and "minidl._core" not in loaded


@pytest.mark.parametrize("first", ["minidl.layers", "minidl._conv_cython", "minidl._norm_cython",
                                   "minidl.backend.checks", "minidl.gradient", "minidl.engine",
                                   "minidl.networks", "minidl.optimizer", "minidl.convnets"])
def test_any_module_can_be_imported_first(tmp_path, first):
    # (the modules import each other; with nothing imported before, no order may loop)
    code = (f"import {first}\nimport numpy as np\nfrom minidl.layers import Affine\n"
            "a = Affine(np.ones((3, 2)), np.zeros(2))\n"
            "assert a.forward(np.ones((1, 3))).tolist() == [[3.0, 3.0]]")
    assert first in loaded_after(code, tmp_path)


def test_every_public_name_resolves():
    for name in minidl.__all__:
        assert getattr(minidl, name) is not None, name
    assert set(minidl.__all__) <= set(dir(minidl))
    namespace = {}
    exec("from minidl import *", namespace)  # noqa: S102
    assert set(minidl.__all__) <= set(namespace)
    from minidl import ExperimentConfig, compare, run_experiment, set_backend, show_config, train
    from minidl.backend import get_backend
    from minidl.experiments import ExperimentConfig as config_class
    from minidl.training import train as train_function

    assert minidl.get_backend is get_backend and train is train_function
    assert ExperimentConfig is config_class
    assert all(callable(f) for f in (compare, run_experiment, set_backend, show_config))


def test_submodules_after_a_plain_import(tmp_path):
    code = ("import minidl, numpy as np\n"
            "assert minidl.layers.Relu and minidl.networks.TwoLayerNet\n"
            "assert minidl.functions.softmax(np.zeros(2)).tolist() == [0.5, 0.5]\n"
            "assert minidl.backend.get_backend() == 'cython'\n"
            "assert minidl._config.build_config()['minidl'] == minidl.__version__")
    assert "minidl.networks" in loaded_after(code, tmp_path)


def test_unknown_names_and_the_hook_are_not_attributes(tmp_path):
    with pytest.raises(AttributeError, match="module 'minidl' has no attribute 'nope'"):
        minidl.nope  # noqa: B018
    # minidl.book installs an import hook: only ``import minidl.book`` may do that
    code = ("import minidl, sys\ntry:\n    minidl.book\nexcept AttributeError:\n"
            "    print('no attribute')\n"
            "assert not any(getattr(f, '_minidl_book', False) for f in sys.meta_path)")
    assert "minidl.book" not in loaded_after(code, tmp_path)
