"""The contention row: minidl's default threads beside one busy neighbour process.

Issue 13's target: with one busy process on the machine, the default thread
count must take at most 1.15x the single-threaded time per step, and keep its
gain on an idle machine. Each measurement is a fresh interpreter (the thread
counts are read at import), running the course's loop or ``minidl.train`` for its
first epoch, with the environment either as the user has it minus the thread
variables ("default") or with ``MINIDL_NUM_THREADS=1`` and NumPy's BLAS on one
thread too ("1 thread"). Its time per step is that of the epoch's steps after
the first evaluation (599 steps on MNIST; no evaluation among them). The
neighbour is
``python -c 'while True: pass'``, started by the bench before the measurement
and killed after it; "idle" runs without it (the machine's other load, if any,
stays: see the load average in the header).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

THREAD_VARS = ("MINIDL_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "MKL_NUM_THREADS")
LOOPS = {"loop": "course loop, minidl network", "train": "minidl.train"}


def thread_env(single):
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    if single:
        env.update(dict.fromkeys(THREAD_VARS, "1"))
    return env


@contextlib.contextmanager
def busy_neighbour(active=True):
    """A process spinning on a core while the block runs (nothing when not ``active``)."""
    if not active:
        yield None
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                            stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.2)  # let it start spinning
        yield proc
    finally:
        proc.kill()
        proc.wait()


def measure(dataset, kind, iters, single, n_train=None, n_test=None, dtype="float64"):
    """Seconds per step of one child run."""
    spec = {"dataset": dataset, "kind": kind, "iters": iters, "n_train": n_train,
            "n_test": n_test, "dtype": dtype}
    out = subprocess.run([sys.executable, str(HERE / "contention.py"), "--child",
                          json.dumps(spec)], env=thread_env(single), capture_output=True,
                         text=True, stdin=subprocess.DEVNULL, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"contention child failed ({spec}):\n{out.stderr[-2000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["per_step"])


def child(spec):
    # not bench/ itself first (its data.py would be `data`), and the source tree after an
    # installed minidl
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    sys.path.append(str(HERE.parent))
    from bench import cases, data
    from bench.stats import per_step_after_first_eval

    arrays = data.load(spec["dataset"], spec["n_train"], spec["n_test"])
    width = arrays[0].shape[1]
    wall, marks, _ = cases.run_case(spec["kind"], [width, 50, 10], "relu",
                                    np.dtype(spec["dtype"]).type, arrays, spec["iters"])
    print(json.dumps({"per_step": per_step_after_first_eval(wall, marks, spec["iters"])}))


def run(datasets, loops, rounds, n_train=None, n_test=None):
    """Per (dataset, loop): the medians over rounds of the per-step times and of the
    ratio default / 1 thread of the same round, busy and idle. Returns
    ``{(dataset, loop): {"busy": (default_s, single_s, ratio), "idle": (...)}}``."""
    from bench.data import DATASETS, train_size
    from bench.stats import median_ratio

    results = {}
    print(f"\nContention: time per step (the first epoch's, after its evaluation) of the "
          f"784/1024-50-10 ReLU loop, "
          f"default threads vs 1 thread ({' '.join(v + '=1' for v in THREAD_VARS)}), with one "
          f"busy neighbour process (python -c 'while True: pass') and without; {rounds} "
          f"round(s), medians")
    header = (f"{'case':50s} {'busy def us':>11s} {'busy 1t us':>10s} {'ratio':>6s} "
              f"{'idle def us':>11s} {'idle 1t us':>10s} {'ratio':>6s}")
    print(header)
    print("-" * len(header))
    for dataset in datasets:
        iters = max(train_size(dataset, n_train) // 100, 2)  # one epoch: one evaluation
        for kind in loops:
            times = {(c, s): [] for c in ("busy", "idle") for s in (False, True)}
            for r in range(rounds):
                for busy in (r % 2 == 0, r % 2 != 0):  # alternate which goes first
                    with busy_neighbour(busy):
                        for single in (r % 2 == 0, r % 2 != 0):
                            t = measure(dataset, kind, iters, single, n_train, n_test)
                            times["busy" if busy else "idle", single].append(t)
            row = {}
            for cond in ("busy", "idle"):
                d, s = times[cond, False], times[cond, True]
                row[cond] = (float(np.median(d)), float(np.median(s)), median_ratio(d, s))
            results[dataset, kind] = row
            name = f"{DATASETS[dataset][0]} {LOOPS[kind]} (load {os.getloadavg()[0]:.1f})"
            b, i = row["busy"], row["idle"]
            print(f"{name:50s} {b[0] * 1e6:11.0f} {b[1] * 1e6:10.0f} {b[2]:6.2f} "
                  f"{i[0] * 1e6:11.0f} {i[1] * 1e6:10.0f} {i[2]:6.2f}", flush=True)
    return results


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
    else:
        sys.exit("usage: run by bench/run.py (python -m bench --no-groups for this row alone)")
