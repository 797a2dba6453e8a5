"""``python -m minidl``: the same as the ``minidl`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
