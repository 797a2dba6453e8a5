"""minidl: "Deep Learning from Scratch", done properly.

The book's layer and network API (``minidl.layers``, ``minidl.networks``,
``minidl.functions``, ``minidl.gradient``) on compiled Cython kernels, with a
pure-NumPy reference backend for checking them.
"""

from ._backend import get_backend, set_backend

__version__ = "0.1.0"

__all__ = ["__version__", "get_backend", "set_backend"]
