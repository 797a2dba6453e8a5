"""The networks' conv - relu - pool block, run as one where that computes what the
three layers compute.

``SimpleConvNet`` and ``DeepConvNet`` stack ``Convolution``, ``Relu`` and a 2 x 2
``Pooling`` (stride 2). Layer by layer, the block's backward pass streams the
convolution's whole output through memory several times (``minidl._convblock``);
``backward`` makes it one pass on the compiled backend, and calls the three
layers' ``backward`` in the book's order otherwise. It is taken only when the
three are minidl's own classes, none with its own ``backward``, and their state
is the one their last forward left (``Pooling``'s record of the maxima not yet
replaced by an ``arg_max`` someone read or set, the ``Relu``'s output the
pooling's input); the layers then end as the three calls leave them (only the
convolution keeps anything from backward: ``dW`` and ``db``), with the same
numbers.
"""

from __future__ import annotations

import numpy as np

from .backend import ops
from .layers import Convolution, Pooling, Relu

__all__ = ["backward", "is_block"]

_KINDS = (Convolution, Relu, Pooling)


def is_block(layers) -> bool:
    """Whether ``layers`` (three) are a convolution, a ReLU and a pooling."""
    return len(layers) == 3 and all(isinstance(layer, kind)
                                    for layer, kind in zip(layers, _KINDS))


def backward(conv, relu, pool, dout, need_dx=True):
    """``conv.backward(relu.backward(pool.backward(dout)), need_dx)``, in one pass when
    that is the same."""
    fused = _fused_backward(conv, relu, pool, dout, need_dx)
    if fused is not None:
        conv.dW, conv.db = fused[1], fused[2]
        return fused[0]
    dout = pool.backward(dout)
    dout = relu.backward(dout)
    return conv.backward(dout, need_dx=need_dx)


def _own(layer, kind) -> bool:
    return type(layer) is kind and "backward" not in vars(layer)


def _fused_backward(conv, relu, pool, dout, need_dx):
    """(dx, dW, db) from the compiled block, or None where the three calls must run
    (they also give every error: a dout of the wrong shape, a backward before forward)."""
    run = getattr(ops(), "conv_relu_pool_backward", None)
    if run is None or not (_own(conv, Convolution) and _own(relu, Relu)
                           and _own(pool, Pooling)):
        return None
    where, out = pool._where, relu.out
    if (where is None or where.ndim != 4 or out is None or pool.x is not out
            or conv.x is None or pool._geometry[:4] != (2, 2, 2, 0)):
        return None
    dtype = conv._dtype
    stride, pad, out_h, out_w = conv._geometry
    N, FN = conv.x.shape[0], conv.W.shape[0]
    if (not isinstance(out, np.ndarray) or out.dtype != dtype
            or out.shape != (N, FN, out_h, out_w) or not out.flags.c_contiguous
            or out_h % 2 or out_w % 2
            or not isinstance(dout, np.ndarray) or dout.dtype != dtype
            or dout.shape != (N, FN, out_h // 2, out_w // 2)
            or where.shape != dout.shape):
        return None
    return run(np.ascontiguousarray(dout), where, out, conv.W.astype(dtype, copy=False),
               stride, pad, out_h, out_w, need_dx, conv._state)
