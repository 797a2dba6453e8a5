"""Will a run fit in memory? An estimate before the network is built, and how much there is.

NumPy refuses an allocation larger than the machine can ever give with a
``MemoryError`` (``Unable to allocate 584. GiB ...``), but one that is merely
larger than what is free may succeed and be killed by the system later, while
drawing the initial weights. Checking the configuration first turns both into
one clear error that says how much the run needs.
"""

from __future__ import annotations

import os
from itertools import pairwise

import numpy as np

__all__ = ["NotEnoughMemory", "check_memory", "format_bytes", "memory_needed"]

EVAL_CHUNK = 8192  # rows per forward pass of an evaluation (networks.EVAL_CHUNK)


class NotEnoughMemory(MemoryError):
    """A run needs more memory than this machine has available (the message says how much)."""


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def memory_needed(sizes: list[int], dtype: str, batch_size: int) -> int:
    """Bytes a network of layer ``sizes`` needs at least to train.

    Its weights and biases, their gradients, the float64 draw the largest
    weight matrix is made from, and a batch's activations forward and backward.
    (Evaluation chunks and the compiled step's buffers come on top: this is a
    lower bound, so that only a run that cannot fit is refused.)
    """
    itemsize = np.dtype(dtype).itemsize
    n_params = sum(a * b + b for a, b in pairwise(sizes))
    largest = max(a * b for a, b in pairwise(sizes))
    return 2 * n_params * itemsize + largest * 8 + 2 * batch_size * sum(sizes) * itemsize


def available_memory() -> int | None:
    """Bytes this process could still get (free memory and swap), or None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh
                    if line.split(":")[0] in ("MemAvailable", "SwapFree")}
        if "MemAvailable" in info:
            return info["MemAvailable"] + info.get("SwapFree", 0)
    except (OSError, ValueError, IndexError):
        pass
    try:  # elsewhere: the physical memory, an upper bound
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(sizes: list[int], dtype: str, batch_size: int) -> None:
    """Raise ``NotEnoughMemory`` when the network cannot fit in what is available."""
    need = memory_needed(sizes, dtype, batch_size)
    have = available_memory()
    if have is not None and need > have:
        arch = "-".join(str(s) for s in sizes)
        weights = sum(a * b + b for a, b in pairwise(sizes)) * np.dtype(dtype).itemsize
        error = NotEnoughMemory(
            f"the network {arch} ({dtype}) needs at least {format_bytes(need)} to train "
            f"(its weights alone {format_bytes(weights)}); {format_bytes(have)} are available "
            "(fewer or smaller hidden layers, or float32, need less)")
        error.short = f"not enough memory (needs {format_bytes(need)})"
        raise error
