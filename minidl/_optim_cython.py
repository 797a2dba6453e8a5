"""The book's update rules on minidl's kernels (``minidl._optim``), where they give its numbers.

``Optimizer.update`` asks ``kernel_for(optimizer)`` once per update and, for each
parameter, calls the kernel; a kernel returns False (and the book's NumPy lines
in ``update_one`` run instead) unless the case is one where it computes exactly
what NumPy does:

* the optimizer is an instance of exactly one of the book's classes whose
  ``update_one`` is still the one defined here (subclasses and patched methods
  run their own code);
* the parameter, its gradient and its state arrays share one dtype (float32 or
  float64), are C-contiguous and do not overlap in memory;
* for float32, the hyperparameters are Python numbers (NumPy scalars such as
  ``10 ** np.random.uniform(...)`` promote the book's arithmetic to float64).

The kernels update the parameter and the state arrays in place.

``update_all`` runs a whole update in one compiled call (``_optim.update_all``)
when every parameter is such a case, with the same dtype throughout: the
parameters one after another in ``params``' order, each exactly as its own
kernel would (a network's twenty small arrays cost a few microseconds each
through the per-parameter path, most of it in the checks); a big update's
elements are shared out between two threads (below), which computes the same
numbers: each element gets the same operations wherever it runs.
"""

from __future__ import annotations

import weakref

import numpy as np

from . import _optim, backend
from .engine.threads import ThreadChoice
from .optimizer import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_WEAK = (int, float)  # Python numbers: NumPy casts them to the array's dtype
_SCALARS64 = (int, float, np.float64, np.float32, np.integer)


def _arrays_ok(param, grad, *state) -> bool:
    dtype = param.dtype
    if dtype not in _FLOATS:
        return False
    arrays = (param, grad, *state)
    shape = param.shape
    own = True  # every array owns its memory: distinct ones cannot overlap
    for a in arrays:
        if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != shape:
            return False
        flags = a.flags
        if not flags.c_contiguous:
            return False
        own = own and flags.owndata
    for a in (param, *state):
        if not a.flags.writeable:
            return False
    if own and len({id(a) for a in arrays}) == len(arrays):
        return True
    for i, a in enumerate(arrays):
        for b in arrays[i + 1:]:
            if np.may_share_memory(a, b):
                return False
    return True


def _scalars_ok(dtype, *values) -> bool:
    kinds = _WEAK if dtype == np.float32 else _SCALARS64
    return all(type(v) in kinds or (kinds is _SCALARS64 and isinstance(v, np.integer))
               for v in values)


def _flat(a):
    return a.reshape(-1)


def _per_parameter(kernel):
    """The update of one parameter by ``kernel`` (one of ``_optim``'s): the parameter,
    its gradient and its state arrays (the rule's ``state_names``), then the rule's
    scalars (``_scalars``); False, nothing changed, where the kernel would not give
    NumPy's numbers."""
    def update(opt, key, param, grad):
        states = [getattr(opt, name)[key] for name in type(opt).state_names]
        scalars = _scalars(opt, param.dtype)
        if scalars is None or not _arrays_ok(param, grad, *states):
            return False
        kernel(_flat(param), _flat(grad), *map(_flat, states), *scalars)
        return True
    return update


# each class, the update_one its kernel stands in for, the kernel
_KERNELS = {cls: (cls.update_one, _per_parameter(kernel)) for cls, kernel in (
    (SGD, _optim.sgd), (Momentum, _optim.momentum), (Nesterov, _optim.nesterov),
    (AdaGrad, _optim.adagrad), (RMSprop, _optim.rmsprop), (Adam, _optim.adam))}


def kernel_for(opt):
    """The kernel for ``opt``'s rule, or None (a subclass, or ``update_one`` replaced)."""
    entry = _KERNELS.get(type(opt))
    if entry is None or type(opt).update_one is not entry[0]:
        return None
    return entry[1]


def _scalars(opt, dtype):
    """The scalars ``opt``'s rule passes to its kernels (each parameter's and
    ``_optim.update_all``), or None where they would not give NumPy's numbers."""
    rule = type(opt)
    if rule is SGD or rule is AdaGrad:
        return (opt.lr,) if _scalars_ok(dtype, opt.lr) else None
    if rule is Momentum:
        return (opt.lr, opt.momentum) if _scalars_ok(dtype, opt.lr, opt.momentum) else None
    if rule is Nesterov:
        if not _scalars_ok(dtype, opt.lr, opt.momentum):
            return None
        return (opt.lr, opt.momentum, opt.momentum * opt.momentum, (1 + opt.momentum) * opt.lr)
    if rule is RMSprop:
        if not _scalars_ok(dtype, opt.lr, opt.decay_rate):
            return None
        return (opt.lr, opt.decay_rate, 1 - opt.decay_rate)
    if type(opt.lr_t) is not np.float64 or not _scalars_ok(dtype, opt.beta1, opt.beta2):
        return None
    return (float(opt.lr_t), 1 - opt.beta1, 1 - opt.beta2)


def update_all(opt, params, grads) -> bool:
    """Update every parameter of ``params`` (checked: same keys as ``grads``, state
    made) in one compiled call, or return False, nothing changed, when any of
    them is not a case the kernels take (``kernel_for(opt)`` must not be None)."""
    first = next(iter(params.values()), None)
    if type(first) is not np.ndarray or first.dtype not in _FLOATS:
        return False
    scalars = _scalars(opt, first.dtype)
    if scalars is None:
        return False
    keys = list(params)
    states = [[getattr(opt, name)[k] for k in keys] for name in type(opt).state_names]
    states += [None] * (2 - len(states))
    args = (_optim.RULES[type(opt).__name__], [params[k] for k in keys],
            [grads[k] for k in keys], states[0], states[1], *scalars)
    if backend.STEP_THREADS > 1 and sum(p.size for p in args[1]) >= _optim.THREADS_MIN:
        choice = _update_threads.get(opt)
        if choice is None:
            choice = _update_threads[opt] = ThreadChoice(pool=None, owner=opt)
        return choice.timed(_update_on, args)
    return _optim.update_all(*args)


# An update of _optim.THREADS_MIN elements or more runs on two threads where that
# is faster: each optimizer measures both counts as it runs (minidl.engine.threads),
# so a busy neighbour finds it on one. Chapter 6's 5-layer network (110 000
# parameters, 2 cores, Zen 3, the kernel's time): Adam 118 -> 65 us warm and 125 ->
# 79 us in optimizer_compare's loop; SGD 24 -> 16 us warm, about the same in the
# loop (its gradients come from the other core's cache).
_update_threads: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _update_on(threads, args):
    return _optim.update_all(*args, num_threads=threads)
