"""minidl: "Deep Learning from Scratch", done properly.

The book's layer and network API (``minidl.layers``, ``minidl.networks``,
``minidl.functions``, ``minidl.gradient``) on compiled Cython kernels, with a
pure-NumPy reference backend for checking them. ``run_experiment`` and
``compare`` train and compare networks from Python as the ``minidl`` command
does from a shell.

``import minidl`` loads nothing but this file: each name below, and each
submodule, is imported on first use (PEP 562), so that a program (or a book
script under ``minidl.book``) pays only for the parts it uses.
"""

from . import _env

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

# name -> the submodule that defines it, imported when the name is first used
_LAZY = {
    "ExperimentConfig": "experiments",
    "compare": "experiments",
    "get_backend": "backend",
    "run_experiment": "experiments",
    "set_backend": "backend",
    "show_config": "_config",
    "train": "training",
}

# Any submodule is found as ``minidl.<name>`` after a plain ``import minidl``, as when
# importing minidl loaded them; not ``minidl.book``: importing it installs its import
# hook, which only ``import minidl.book`` should do.
_NOT_ATTRIBUTES = frozenset({"book", "__main__"})

# a bad MINIDL_BACKEND, MINIDL_GEMM or MINIDL_NUM_THREADS fails here, as it did
# when the backend was set up on import
_env.check()


def __getattr__(name):
    import importlib

    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        globals()[name] = value  # the next use finds it without this function
        return value
    if not name.startswith("__") and name not in _NOT_ATTRIBUTES:
        try:  # a submodule (importing it sets the attribute)
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module 'minidl' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
