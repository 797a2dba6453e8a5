"""The networks' conv - relu - pool block, run as one where that computes what the
three layers compute.

``SimpleConvNet`` and ``DeepConvNet`` stack ``Convolution``, ``Relu`` and a 2 x 2
``Pooling`` (stride 2). Layer by layer, the block streams the convolution's whole
output through memory several times (``minidl._convblock``); ``forward`` and
``backward`` make each one pass on the compiled backend, and call the three
layers' methods in the book's order otherwise. A pass is taken only when the
three are minidl's own classes with their own methods (none replaced on the
class or on the instance), and for ``backward`` when their state is the one
their last forward left (``Pooling``'s record of the maxima not yet replaced by
an ``arg_max`` someone read or set, the ``Relu``'s output the pooling's input).
The layers then hold what the three calls leave, with the same numbers: forward,
``Convolution.x``, ``Relu.out`` (and so its ``mask``), ``Pooling.x`` (the ReLU's
output, as in the book) and its record (``arg_max`` made from it when read); the
convolution's own output, which the book keeps nowhere, is not made. Backward,
only the convolution keeps anything: ``dW`` and ``db``.
"""

from __future__ import annotations

import numpy as np

from .backend import ops
from .layers import Convolution, Dropout, Pooling, Relu

__all__ = ["backward", "forward", "forward_layers", "is_block"]

_KINDS = (Convolution, Relu, Pooling)
# the methods the passes stand in for, as minidl defines them
_METHODS = {kind: (kind.forward, kind.backward) for kind in _KINDS}


def is_block(layers) -> bool:
    """Whether ``layers`` (three) are a convolution, a ReLU and a pooling."""
    return len(layers) == 3 and all(isinstance(layer, kind)
                                    for layer, kind in zip(layers, _KINDS))


def forward_layers(layers, x, train_flg=None):
    """``x`` through ``layers`` in order, each conv - relu - pool block by ``forward``;
    ``train_flg`` (not None) is given to the ``Dropout`` layers, as DeepConvNet does."""
    i = 0
    while i < len(layers):
        if is_block(layers[i:i + 3]):
            x = forward(*layers[i:i + 3], x)
            i += 3
            continue
        layer = layers[i]
        if train_flg is not None and isinstance(layer, Dropout):
            x = layer.forward(x, train_flg)
        else:
            x = layer.forward(x)
        i += 1
    return x


def forward(conv, relu, pool, x):
    """``pool.forward(relu.forward(conv.forward(x)))``, in one pass when that is the same."""
    run = getattr(ops(), "conv_relu_pool_forward", None)
    if (run is None or not all(map(_own, (conv, relu, pool), _KINDS))
            or not all(type(v) is int and v == want for v, want in
                       zip((pool.pool_h, pool.pool_w, pool.stride, pool.pad), (2, 2, 2, 0)))):
        return pool.forward(relu.forward(conv.forward(x)))
    args = conv._forward_args(x)  # the convolution's checks, and its state for backward
    out_h, out_w = args[-2:]
    if out_h % 2 or out_w % 2:  # the last row or column is in no window
        return pool.forward(relu.forward(ops().conv_forward(*args, conv._state)))
    out, pooled, where = run(*args, conv._state)
    relu.out = out
    pool.x, pool._where, pool._arg_max = out, where, None
    pool._geometry = (2, 2, 2, 0, out_h // 2, out_w // 2)
    return pooled


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
    """``layer`` is a ``kind`` as minidl defines it, methods and all."""
    return (type(layer) is kind and (kind.forward, kind.backward) == _METHODS[kind]
            and "forward" not in vars(layer) and "backward" not in vars(layer))


def _fused_backward(conv, relu, pool, dout, need_dx):
    """(dx, dW, db) from the compiled block, or None where the three calls must run
    (they also give every error: a dout of the wrong shape, a backward before forward)."""
    run = getattr(ops(), "conv_relu_pool_backward", None)
    if run is None or not all(map(_own, (conv, relu, pool), _KINDS)):
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
