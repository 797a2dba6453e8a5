import os
from pathlib import Path

import numpy as np
import pytest

import minidl

DTYPES = [np.float32, np.float64]
# Tolerances the kernels are held to against the NumPy reference.
RTOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}


def real_data_dir() -> Path | None:
    """The folder with the real MNIST files, or None (tests that need it skip)."""
    candidates = [os.environ.get("MINIDL_DATA_DIR"), Path(__file__).parents[2] / "shared/datasets"]
    for c in candidates:
        if c and (Path(c) / "mnist").is_dir():
            return Path(c)
    return None


@pytest.fixture(params=["cython", "numpy"])
def backend(request):
    """Run a test on each backend, restoring the default afterwards."""
    before = minidl.get_backend()
    minidl.set_backend(request.param)
    yield request.param
    minidl.set_backend(before)


@pytest.fixture
def rng():
    return np.random.default_rng(1211)
