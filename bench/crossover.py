"""Where zero-skipping stops paying: the engine's sparse pass against its dense one.

``python -m bench.crossover``: a 784-50-10 (and 1024-50-10) network's
``gradient`` plus ``loss`` on batches of 100 rows thinned to a range of
nonzero fractions, through each pass forced, float64 and float32, one thread,
CPU time (robust on a shared machine), medians of many calls. The ratio
sparse/dense crosses 1 where ``minidl.backend.cython_ops.SPARSE_MAX_DENSITY``
should be. Run it under the benchmark lock: ``flock /tmp/minidl-bench.lock``.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("MINIDL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from minidl.engine import passes
from minidl.networks import TwoLayerNet

DENSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


def cpu_median(call, repeats: int) -> float:
    """The median CPU time of ``call()`` in microseconds."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        call()
        times.append(time.process_time() - start)
    return float(np.median(times)) * 1e6


def thinned_batch(rng, width: int, density: float, n: int = 100):
    """A batch of ``n`` rows with about ``density`` of its entries nonzero."""
    x = rng.random((n, width)).astype(np.float32)
    x[rng.random((n, width)) >= density] = 0
    return x, rng.integers(0, 10, n)


def forced(sparse: bool, net, x, t, repeats: int) -> float:
    """gradient + loss of ``net`` on (x, t) with the pass forced to one kind."""
    chosen = passes.zero_skipping_pays
    passes.zero_skipping_pays = lambda density, dtype: sparse
    try:
        return cpu_median(lambda: (net.gradient(x, t), net.loss(x, t)), repeats)
    finally:
        passes.zero_skipping_pays = chosen


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--widths", default="784,1024")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print("width  dtype    nonzeros  sparse us  dense us  sparse/dense")
    for width in (int(w) for w in args.widths.split(",")):
        for dtype in (np.float64, np.float32):
            net = TwoLayerNet(width, 50, 10, dtype=dtype)
            for density in DENSITIES:
                x, t = thinned_batch(rng, width, density)
                sparse = forced(True, net, x, t, args.repeats)
                dense = forced(False, net, x, t, args.repeats)
                print(f"{width:5d}  {np.dtype(dtype).name:7s}  {(x != 0).mean():8.2f}  "
                      f"{sparse:9.0f}  {dense:8.0f}  {sparse / dense:12.2f}", flush=True)


if __name__ == "__main__":
    main()
