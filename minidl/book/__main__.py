"""``python -m minidl.book script.py [args]``: run a script with the book's import paths.

The script runs as ``python script.py [args]`` would run it (``__name__`` is
``'__main__'``, ``sys.argv`` is ``[script.py, args...]``, the script's folder is
first on ``sys.path``), with ``minidl.book``'s finder installed, so that its
``common.*`` and ``dataset.*`` imports are minidl's.

The ``pickle.load``/``pickle.loads`` calls of the script and of the modules beside
it (the book's ``ch03/sample_weight.pkl``, a network's ``load_params``) go
through minidl's restricted unpickler: they give the dicts, lists, numbers,
strings and NumPy arrays those files hold, and refuse anything else
(``RefusedPickle``) before it runs. Other modules' calls are pickle's own; to
trust a script's pickles entirely, run it with ``python`` and ``import minidl.book``
at its top instead.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import pickle
import sys
import types

from .._safe_pickle import SafeUnpickler
from . import install

USAGE = "usage: python -m minidl.book script.py [args ...]"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE + "\n\n" + __doc__.strip().split("\n\n", 1)[1],
              file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    script = argv[0]
    if not os.path.isfile(script):
        print(f"python -m minidl.book: can't open file {script!r}: no such file",
              file=sys.stderr)
        return 2
    install()
    run_script(script, argv[1:])
    return 0


def run_script(script: str, args: list[str]) -> None:
    """Run ``script`` as ``python script args...`` does: a fresh ``__main__`` module with
    an absolute ``__file__``, ``sys.argv[0]`` as given, the script's folder (links
    resolved) first on ``sys.path``."""
    path = os.path.abspath(script)
    with io.open_code(path) as fh:
        code = compile(fh.read(), path, "exec")  # (compile reads the coding cookie)
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = builtins
    main.__spec__ = None  # as for `python script.py`
    sys.modules["__main__"] = main  # (pickle and multiprocessing find the script's classes)
    sys.argv = [script, *args]
    folder = os.path.dirname(os.path.realpath(script))
    sys.path[0] = folder
    with restricted_pickles(folder):
        exec(code, main.__dict__)  # noqa: S102 - running the user's script is the job


def _called_from(folder: str) -> bool:
    """Whether the caller of the pickle function that calls this is code in ``folder``."""
    filename = sys._getframe(2).f_code.co_filename
    return not filename.startswith("<") and os.path.dirname(os.path.realpath(filename)) == folder


@contextlib.contextmanager
def restricted_pickles(folder: str):
    """``pickle.load``/``loads`` called from code in ``folder`` use ``SafeUnpickler``."""
    load, loads = pickle.load, pickle.loads

    def safe_load(file, **kwargs):
        if _called_from(folder):
            return SafeUnpickler(file, what="a pickle read by the script", **kwargs).load()
        return load(file, **kwargs)

    def safe_loads(data, /, **kwargs):
        if _called_from(folder):
            return SafeUnpickler(io.BytesIO(data), what="a pickle read by the script",
                                 **kwargs).load()
        return loads(data, **kwargs)

    safe_load.__doc__ = load.__doc__
    safe_loads.__doc__ = loads.__doc__
    pickle.load, pickle.loads = safe_load, safe_loads
    try:
        yield
    finally:
        if pickle.load is safe_load:
            pickle.load = load
        if pickle.loads is safe_loads:
            pickle.loads = loads


if __name__ == "__main__":
    sys.exit(main())
