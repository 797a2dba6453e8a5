"""minidl's one restricted unpickler, for the pickles students already have.

``pickle.load`` runs whatever code a file asks for. Two kinds of pickle reach
minidl from outside: CIFAR-10's python-version batches (``minidl.datasets``)
and the book's parameter files (``network.save_params`` in the book,
``ch08/deep_convnet_params.pkl``: a dict of NumPy arrays). ``SafeUnpickler``
builds what those hold, dicts, lists, tuples, bytes, strings, numbers and
NumPy arrays of plain dtypes, and refuses every other global before anything
is called.
"""

from __future__ import annotations

import codecs
import pickle

import numpy as np

__all__ = ["RefusedPickle", "SafeUnpickler"]

try:  # NumPy >= 2 moved the module; old pickles name numpy.core, new ones numpy._core.
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer


class RefusedPickle(pickle.UnpicklingError):
    """The pickle asks for something the formats minidl reads never hold."""


def _safe_dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise RefusedPickle("object arrays are not allowed")
    return dtype


def _safe_frombuffer(buf, dtype, shape, order, axis_order=None):
    # pickle protocol 5 (pickle.dump(..., -1) on Python 3.8+) writes an array as its bytes
    # and _frombuffer(bytes, dtype, shape, order)
    return _frombuffer(buf, _safe_dtype(dtype), shape, order, axis_order)


def _latin1_encode(text, encoding="latin1"):
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedPickle("_codecs.encode is only allowed for latin-1 text")
    return codecs.encode(text, "latin1")


# The only globals these files refer to: what rebuilds a NumPy array (numpy.core in files
# pickled by NumPy 1 or Python 2, numpy._core in pickles written by NumPy 2; _reconstruct up
# to protocol 4, _frombuffer for protocol 5), and
# _codecs.encode, with which Python 3 writes bytes into a protocol-2 pickle.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, bytes, strings, numbers and NumPy arrays.

    Only the globals that pickled NumPy arrays need are resolved; any other (``os.system``,
    ``builtins.eval``, ...) raises ``RefusedPickle`` before anything is called. ``what``
    names the kind of file in that message (e.g. ``"a CIFAR-10 batch"``).
    """

    def __init__(self, file, *, what: str = "this file", **kwargs):
        super().__init__(file, **kwargs)
        self.what = what

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedPickle(
                f"refused to load '{module}.{name}': {self.what} holds only dicts, lists, "
                "bytes, numbers and NumPy arrays"
            ) from None

    def persistent_load(self, pid):
        raise RefusedPickle("persistent ids are not allowed")
