"""``python -m minidl.book script.py [args]``: run a script with the book's import paths.

The script runs as ``python script.py [args]`` would run it (``__name__`` is
``'__main__'``, ``sys.argv`` is ``[script.py, args...]``, the script's folder is
first on ``sys.path``), with ``minidl.book``'s finder installed, so that its
``common.*`` and ``dataset.*`` imports are minidl's.
"""

from __future__ import annotations

import builtins
import io
import os
import sys
import types

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
    sys.path[0] = os.path.dirname(os.path.realpath(script))
    exec(code, main.__dict__)  # noqa: S102 - running the user's script is the job


if __name__ == "__main__":
    sys.exit(main())
