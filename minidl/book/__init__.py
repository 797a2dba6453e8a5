"""The book's import paths, opt-in: ``common.*`` and ``dataset.*`` resolve to minidl.

``import minidl.book`` puts a finder at the front of ``sys.meta_path`` under which
the modules of the book's ``common/`` and ``dataset/`` folders are minidl's::

    import minidl.book
    from common.multi_layer_net_extend import MultiLayerNetExtend   # minidl.networks'
    from common.optimizer import *                                  # minidl.optimizer's
    from dataset.mnist import load_mnist                            # minidl.datasets'

so the book's chapter scripts and a course's notebooks run unchanged on minidl,
even beside a copy of the book's folders (the finder comes before ``sys.path``).
The chapter 7 and 8 networks the scripts import from their own folder,
``simple_convnet`` (``ch07/simple_convnet.py``) and ``deep_convnet``
(``ch08/deep_convnet.py``), are minidl's too (``minidl.convnets``): the same
classes, whose ``load_params`` reads the book's pickled parameters through
minidl's restricted unpickler instead of ``pickle.load``.
``python -m minidl.book script.py [args]`` runs a script with the finder
installed, as ``python script.py [args]`` would run it.

Only ``common``, ``dataset``, the modules of ``MODULES`` and those of
``CHAPTER_MODULES`` are claimed: any
other ``common.*`` or ``dataset.*`` module raises a ``ModuleNotFoundError``
that says minidl does not provide it, and every other import is left alone.
Plain ``import minidl`` never installs the finder; ``uninstall()`` removes it.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
import warnings

__all__ = ["CHAPTER_MODULES", "DATASET_MODULES", "MODULES", "PACKAGES", "install", "installed",
           "uninstall"]

PACKAGES = ("common", "dataset")

# the book's module -> the minidl module that holds its names
MODULES = {
    "common.functions": "minidl.functions",
    "common.gradient": "minidl.gradient",
    "common.layers": "minidl.layers",
    "common.multi_layer_net": "minidl.networks",
    "common.multi_layer_net_extend": "minidl.networks",
    "common.optimizer": "minidl.optimizer",
    "common.trainer": "minidl.trainer",
    "common.util": "minidl.util",
}

# dataset/*.py: each gives its own loader (so that no module loads another dataset
# under the name a course's copy of mnist.py may have kept)
DATASET_MODULES = {
    "dataset.mnist": ("load_mnist",),
    "dataset.fashion_mnist": ("load_fashion_mnist",),
    "dataset.cifar_10": ("load_cifar_10",),
}


# the chapter folders' own modules (top-level names, imported from the script's folder)
# -> the minidl module and the names it gives
CHAPTER_MODULES = {
    "simple_convnet": ("minidl.convnets", ("SimpleConvNet",)),
    "deep_convnet": ("minidl.convnets", ("DeepConvNet",)),
}


def _provided() -> str:
    return ", ".join([*MODULES, *DATASET_MODULES])


# The finder and loader are plain classes with the methods the import system calls:
# importlib.abc's base classes would add nothing but their import (~6 ms: tempfile,
# shutil, random), which every book script under minidl.book would pay.
class _Loader:
    """Gives the book's module: the minidl module itself, or a small package/dataset module."""

    def __init__(self):
        self._specs = {}  # minidl module name -> its own __spec__

    def create_module(self, spec):
        name = spec.name
        if name in PACKAGES:
            return types.ModuleType(name, f"The book's {name}/ folder, resolved to minidl by "
                                          "minidl.book: " + _provided())
        if name in MODULES:
            target = MODULES[name]
            try:
                module = importlib.import_module(target)
            except ModuleNotFoundError as exc:
                if exc.name != target:
                    raise
                raise ModuleNotFoundError(
                    f"minidl.book: the book's {name} would be {target}, which this "
                    "installation of minidl does not have yet", name=name) from None
            # the import system sets __spec__ to the book's name's spec after this call:
            # exec_module puts minidl's own back (reload, relative imports rely on it)
            self._specs[target] = module.__spec__
            return module
        if name in CHAPTER_MODULES:
            target, attrs = CHAPTER_MODULES[name]
            source = importlib.import_module(target)
            module = types.ModuleType(name, f"The book's {name}.py, resolved by minidl.book to "
                                            f"{target}.")
            for attr in attrs:
                setattr(module, attr, getattr(source, attr))
            module.__all__ = list(attrs)
            return module
        from .. import datasets

        module = types.ModuleType(name, f"The book's {name.replace('.', '/')}.py, resolved by "
                                        "minidl.book to minidl.datasets.")
        for attr in DATASET_MODULES[name]:
            setattr(module, attr, getattr(datasets, attr))
        module.__all__ = list(DATASET_MODULES[name])
        return module

    def exec_module(self, module):
        # nothing to run: create_module gave the finished module
        spec = self._specs.get(module.__name__)
        if spec is not None:
            module.__spec__ = spec


class BookFinder:
    """Resolves ``common``, ``dataset`` and the modules in ``MODULES``/``DATASET_MODULES``."""

    _minidl_book = True  # how install() recognises a finder of any copy of this module

    def find_spec(self, fullname, path=None, target=None):
        if fullname in CHAPTER_MODULES:
            return importlib.machinery.ModuleSpec(fullname, _LOADER)
        top = fullname.partition(".")[0]
        if top not in PACKAGES:
            return None  # not the book's: the other finders decide
        if fullname in PACKAGES:
            return importlib.machinery.ModuleSpec(fullname, _LOADER, is_package=True)
        if fullname in MODULES or fullname in DATASET_MODULES:
            return importlib.machinery.ModuleSpec(fullname, _LOADER)
        raise ModuleNotFoundError(
            f"minidl.book: {fullname} is not one of the book's modules that minidl provides "
            f"({_provided()}); without minidl.book, Python would look for your own "
            f"{top}/ folder", name=fullname)

    def __repr__(self) -> str:
        return "<minidl.book finder for the book's common.* and dataset.*>"


_LOADER = _Loader()


def _ours(finder) -> bool:
    return getattr(finder, "_minidl_book", False) is True


def installed() -> bool:
    """Whether the finder is on ``sys.meta_path``."""
    return any(_ours(f) for f in sys.meta_path)


def install() -> None:
    """Put the finder at the front of ``sys.meta_path`` (once; importing this module does it)."""
    if installed():
        return
    before = sorted(m for m in sys.modules if m.partition(".")[0] in PACKAGES
                    and not _from_hook(sys.modules[m], m))
    if before:
        warnings.warn(f"minidl.book: {', '.join(before)} were imported before minidl.book "
                      "and stay as they are; import minidl.book first", stacklevel=2)
    sys.meta_path.insert(0, BookFinder())


def uninstall() -> None:
    """Remove the finder, and the modules it gave from ``sys.modules``."""
    sys.meta_path[:] = [f for f in sys.meta_path if not _ours(f)]
    for name in [m for m in sys.modules
                 if m.partition(".")[0] in PACKAGES or m in CHAPTER_MODULES]:
        if _from_hook(sys.modules[name], name):
            del sys.modules[name]


def _from_hook(module, name=None) -> bool:
    """Whether ``module`` is one the finder gave (under ``name``, if given)."""
    spec = getattr(module, "__spec__", None)
    if spec is not None and spec.loader is _LOADER:
        return True
    return name is not None and MODULES.get(name) == getattr(module, "__name__", None)


install()
