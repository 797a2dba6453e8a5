import os
from pathlib import Path

import numpy as np
import pytest

import minidl

DTYPES = [np.float32, np.float64]
# Tolerances the kernels are held to against the NumPy reference.
RTOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}


def real_data_dir(dataset: str = "mnist") -> Path | None:
    """The folder of ``$MINIDL_DATA_DIR`` that holds the real ``dataset``, or None.

    Tests find real data through ``MINIDL_DATA_DIR`` only (one folder, or several separated by
    ``os.pathsep``, as minidl reads it) and skip without it.
    """
    for folder in os.environ.get("MINIDL_DATA_DIR", "").split(os.pathsep):
        if folder and (Path(folder) / dataset).is_dir():
            return Path(folder)
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


def assert_sums_close(ours, theirs, magnitude, dtype):
    """Sums computed in ``dtype`` against the book's float64 ones: float64 at the
    kernels' rtol, float32 within a few of its rounding errors of ``magnitude``
    (the sums of the terms' absolute values, where cancellation makes rtol useless)."""
    assert ours.dtype == dtype
    if dtype == np.float64:
        np.testing.assert_allclose(ours, theirs, rtol=RTOL[np.dtype(dtype)], atol=0)
    else:
        assert np.all(np.abs(ours - theirs) <= 4 * np.finfo(dtype).eps * magnitude)
