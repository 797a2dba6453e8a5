"""One call at a time on a network: what makes a network safe to share between threads.

The book's networks keep each layer's forward state (inputs, masks, outputs) on
the layer for its backward pass, and minidl's compiled passes keep buffers per
network: two threads calling one network at once would mix them. A method
decorated with ``serialized`` holds the network's re-entrant lock for the call,
so that concurrent calls on one network give, call by call, what serial calls
give (different networks still run in parallel). The lock is made on first use
and is left out of copies and pickles (``network_state`` in ``__getstate__``).
"""

from __future__ import annotations

import functools
import threading

_LOCK_FOR_LOCKS = threading.Lock()


def lock_of(network) -> threading.RLock:
    """The lock a call on ``network`` holds (made on first use)."""
    lock = network.__dict__.get("_call_lock")
    if lock is None:
        with _LOCK_FOR_LOCKS:
            lock = network.__dict__.setdefault("_call_lock", threading.RLock())
    return lock


def serialized(method):
    """``method``, holding its network's lock for the call."""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with lock_of(self):
            return method(self, *args, **kwargs)
    return locked


def network_state(network) -> dict:
    """``network.__dict__`` without its lock, for ``__getstate__``."""
    state = network.__dict__.copy()
    state.pop("_call_lock", None)
    return state
