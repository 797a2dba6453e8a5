"""Arithmetic on the benchmark's runs (no imports beyond NumPy: the tests load it)."""

import numpy as np


def float32_speedups(cases, results):
    """(name, median over rounds of float64 est / float32 est) for each kind run in both
    dtypes: the two runs of a round share the machine's mood of that moment."""
    out = []
    for kind, name in (("loop", "seed loop"), ("train", "minidl.train"), ("torch", "PyTorch")):
        labels = {dtype: label for k, dtype, label in cases if k == kind}
        if len(labels) == 2:
            pairs = zip(results[labels[np.float64]], results[labels[np.float32]])
            out.append((name, float(np.median([a[1] / b[1] for a, b in pairs]))))
    return out
