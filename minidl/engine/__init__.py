"""minidl's engine: the one rule that lets compiled passes stand in for the book's code.

- ``rule``: decides, for a network and an input, whether a compiled pass
  computes what the book's layer-by-layer code would (``why_not(net)`` says
  why not); every shortcut asks it and nowhere else.
- ``passes``: a network's gradient, loss and accuracy in one compiled call
  each, the plan cache, and the code that leaves the layers as the book's
  path would (``minidl.backend.ops().fused(net)``).
- ``runner``: whole training steps in one compiled call each, for
  ``minidl.train`` (``StepRunner``), with the optimizer as a parameter.
- ``netgrad``: the exact network numerical gradient from one cached forward pass.

The rule imports nothing compiled; the other three are the Cython backend's
and are imported only when it runs.
"""

from .rule import Stack, examine, why_not

__all__ = ["Stack", "StepRunner", "examine", "why_not"]


def __getattr__(name):
    if name == "StepRunner":  # compiled: imported on first use
        from .runner import StepRunner

        return StepRunner
    raise AttributeError(f"module 'minidl.engine' has no attribute {name!r}")
