"""A comparison on Dask against the same comparison run serially (issue 18's target).

``python -m bench.sweep`` runs ``minidl compare --lr 0.1 0.05 0.01 --activation
relu sigmoid`` (six runs) twice, as a user runs it (a fresh ``python -m minidl``
process each time, cluster start-up included): serially, then with
``--jobs 2``. It prints both wall times, their ratio (the target: at most 0.6)
and whether the two tables agree (every column but the time). Run it under the
machine's benchmark lock: ``flock /tmp/minidl-bench.lock python -m bench.sweep``.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMPARE = ["compare", "--lr", "0.1", "0.05", "0.01", "--activation", "relu", "sigmoid",
           "--quiet"]


def _run(args: list[str], out: Path) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "minidl", *args, "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    with open(out / "comparison.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return seconds, rows


def same_table(a: list[dict], b: list[dict]) -> bool:
    """Every column but the wall time, row by row in order."""
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in a]
    return strip == [{k: v for k, v in row.items() if k != "seconds"} for row in b]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--iters", type=int, default=3000, help="SGD steps per run (default 3000)")
    ap.add_argument("--jobs", default="2")
    args = ap.parse_args(argv)
    options = [*COMPARE, "--dataset", args.dataset, "--iters", str(args.iters)]
    with tempfile.TemporaryDirectory() as tmp:
        serial_s, serial = _run(options, Path(tmp) / "serial")
        jobs_s, parallel = _run([*options, "--jobs", args.jobs], Path(tmp) / "jobs")
    ratio = jobs_s / serial_s
    print(f"six-run compare on {args.dataset}, {args.iters} iterations a run, "
          f"{os.cpu_count()} cores")
    print(f"  serial      {serial_s:7.1f} s")
    print(f"  --jobs {args.jobs:<4} {jobs_s:7.1f} s   ratio {ratio:.2f} (target <= 0.60)")
    print(f"  the same table (every column but the time): {same_table(serial, parallel)}")
    return 0 if same_table(serial, parallel) else 1


if __name__ == "__main__":
    sys.exit(main())
