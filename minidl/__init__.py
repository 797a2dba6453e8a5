"""minidl: "Deep Learning from Scratch", done properly.

The book's layer and network API (``minidl.layers``, ``minidl.networks``,
``minidl.functions``, ``minidl.gradient``) on compiled Cython kernels, with a
pure-NumPy reference backend for checking them. ``run_experiment`` and
``compare`` train and compare networks from Python as the ``minidl`` command
does from a shell.
"""

from ._config import show_config
from .backend import get_backend, set_backend
from .training import train

__version__ = "0.1.0"

__all__ = [
    "ExperimentConfig",
    "__version__",
    "compare",
    "get_backend",
    "run_experiment",
    "set_backend",
    "show_config",
    "train",
]

_EXPERIMENTS = ("run_experiment", "compare", "ExperimentConfig")


def __getattr__(name):
    # experiments are loaded on first use, so that ``import minidl`` stays quick
    if name in _EXPERIMENTS:
        from . import experiments

        return getattr(experiments, name)
    raise AttributeError(f"module 'minidl' has no attribute {name!r}")
