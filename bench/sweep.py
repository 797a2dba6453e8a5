"""A comparison on Dask against the same comparison run serially (issue 18's target).

``python -m bench.sweep`` runs ``minidl compare --lr 0.1 0.05 0.01 --activation
relu sigmoid`` (six runs; ``--lr 0.1 0.01`` for four) as a user runs it: a
fresh ``python -m minidl`` process each time, interpreter, data loading and
cluster start-up included. Every round runs it serially and with ``--jobs 2``
(and on ``--scheduler ADDRESS`` if given), the order alternating from round to
round; it prints each round's wall times and ratio, then the medians and the
median of the rounds' ratios (the target: at most 0.6), whether every table is
the serial one (every column but the time), and the load averages before and
after (the machine is shared: a busy neighbour slows the serial run's two
threads more than two one-thread workers). Run it under the machine's
benchmark lock: ``flock /tmp/minidl-bench.lock python -m bench.sweep``.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


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


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--lr", nargs="+", default=["0.1", "0.05", "0.01"],
                    help="learning rates compared (default 0.1 0.05 0.01; with the two "
                         "activations: six runs)")
    ap.add_argument("--iters", type=int, default=None,
                    help="SGD steps per run (default: minidl's, 10000)")
    ap.add_argument("--jobs", default="2")
    ap.add_argument("--scheduler", default=None, metavar="ADDRESS",
                    help="also time the sweep on this running Dask scheduler")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    options = ["compare", "--lr", *args.lr, "--activation", "relu", "sigmoid", "--quiet",
               "--dataset", args.dataset]
    if args.iters is not None:
        options += ["--iters", str(args.iters)]
    variants = {"serial": [], f"--jobs {args.jobs}": ["--jobs", args.jobs]}
    if args.scheduler:
        variants["--scheduler"] = ["--scheduler", args.scheduler]
    n_runs = 2 * len(args.lr)
    print(f"{n_runs}-run compare on {args.dataset} (lr {' '.join(args.lr)} x relu, sigmoid), "
          f"{args.iters or 'default'} iterations a run, {os.cpu_count()} cores; "
          f"load averages {_load()}")
    times: dict[str, list[float]] = {name: [] for name in variants}
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            names = list(variants) if r % 2 == 0 else list(reversed(variants))
            tables = {}
            for name in names:
                seconds, tables[name] = _run([*options, *variants[name]],
                                             Path(tmp) / f"{r}-{name.strip('-').split()[0]}")
                times[name].append(seconds)
            same = same and all(same_table(tables["serial"], t) for t in tables.values())
            cells = "  ".join(f"{name} {times[name][-1]:6.1f} s" for name in variants)
            ratios = "  ".join(f"{times[name][-1] / times['serial'][-1]:.2f}"
                               for name in variants if name != "serial")
            print(f"  round {r + 1}: {cells}   ratio {ratios}   load {_load()}")
    print("median:")
    for name in variants:
        line = f"  {name:<12} {statistics.median(times[name]):7.1f} s"
        if name != "serial":
            ratio = statistics.median(a / b for a, b in zip(times[name], times["serial"]))
            line += f"   median ratio {ratio:.2f} (target <= 0.60)"
        print(line)
    print(f"the same table as serial in every round (every column but the time): {same}")
    print(f"load averages at the end {_load()}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
