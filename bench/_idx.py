"""A stop-gap MNIST reader for the benchmarks (raw IDX files under MINIDL_DATA_DIR).

Removed once ``minidl.datasets.load_mnist`` is available on this branch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _read(path: Path, header: int) -> np.ndarray:
    return np.frombuffer(path.read_bytes(), dtype=np.uint8, offset=header)


def load_mnist(normalize=True, flatten=True, one_hot_label=False):
    root = Path(os.environ.get("MINIDL_DATA_DIR", "/work/shared/datasets")) / "mnist"
    out = []
    for prefix in ("train", "t10k"):
        x = _read(root / f"{prefix}-images-idx3-ubyte", 16).reshape(-1, 784)
        t = _read(root / f"{prefix}-labels-idx1-ubyte", 8).astype(np.int64)
        x = x.astype(np.float32)
        if normalize:
            x /= 255.0
        if not flatten:
            x = x.reshape(-1, 1, 28, 28)
        if one_hot_label:
            t = np.eye(10, dtype=np.float32)[t]
        out.append((x, t))
    return tuple(out)
