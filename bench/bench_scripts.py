"""The book's chapter 3-6 scripts, unchanged: on the book's code and on minidl, in the same run.

``flock /tmp/minidl-bench.lock python -m bench.bench_scripts --book DIR [--rounds 3]
[--scripts ch03/neuralnet_mnist.py ...]`` (by default ``startup`` and chapters 3-5; the
chapter 6 scripts, minutes each on the book's code, by name or as ``ch06``)

``DIR`` is a checkout of the book's repository (``oreilly-japan/deep-learning-from-scratch``).
It is copied into a temporary folder, whose ``dataset/mnist.pkl`` is written from the real
MNIST files (``MINIDL_DATA_DIR``) as the book's ``dataset/mnist.py`` would pickle them after
its download (a dict of the uint8 arrays ``train_img`` (60000, 784), ``train_label``,
``test_img``, ``test_label``): the book's runs read that pickle, as on a student's machine
after the first run, and never download. Every script runs as a subprocess from its folder
(``MPLBACKEND=Agg``):

- ``book``: ``python script.py``: the book's ``common/`` and ``dataset/``;
- ``minidl``: ``python -m minidl.book script.py``: the same file, its ``common.*`` and
  ``dataset.*`` imports resolved to minidl (the folder's own modules, e.g. ``two_layer_net.py``,
  stay the book's).

Python writes and reuses its bytecode, as it does by default (``PYTHONDONTWRITEBYTECODE``
is removed from the runs' environment): minidl's package and the book's copy are compiled
before the first round, so that no run pays for compiling the other side's modules.

Each round runs every script once on the book, then once on minidl; the table gives the
median wall time over the rounds (the whole process: Python's start, the imports, loading
MNIST, the script) and the median of the per-round ratios minidl / book (a neighbour's
burst hits both runs of a round). ``startup`` is ``python -c "import numpy"`` against
``python -c "import numpy, minidl.book"``: what minidl adds to every run before the script's
own imports.
The last line each script printed is shown for both (the training scripts draw unseeded
batches, so their accuracies differ in the last digits).
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # (after PYTHONPATH: a minidl placed there is the one run)

import minidl

# the chapter 3-5 scripts that import the book's common/ or dataset/, and read MNIST
SCRIPTS = (
    "ch03/neuralnet_mnist.py",
    "ch03/neuralnet_mnist_batch.py",
    "ch04/train_neuralnet.py",
    "ch05/gradient_check.py",
    "ch05/train_neuralnet.py",
)
# chapter 6's scripts that read MNIST (optimizer_compare_naive and the activation histogram
# read none)
CH06 = (
    "ch06/batch_norm_gradient_check.py",
    "ch06/batch_norm_test.py",
    "ch06/hyperparameter_optimization.py",
    "ch06/optimizer_compare_mnist.py",
    "ch06/overfit_dropout.py",
    "ch06/overfit_weight_decay.py",
    "ch06/weight_init_compare.py",
)
STARTUP = "startup"


def book_tree(book: Path, root: Path) -> Path:
    """A copy of the book's tree in ``root`` with ``dataset/mnist.pkl`` made from real MNIST."""
    from minidl.datasets import load_mnist

    if not (book / "dataset" / "mnist.py").is_file() or not (book / "ch03").is_dir():
        raise SystemExit(f"--book {book}: not a checkout of the book's repository "
                         "(no dataset/mnist.py or ch03/)")
    tree = root / "book"
    shutil.copytree(book, tree, ignore=shutil.ignore_patterns(".git", "mnist.pkl", "*.gz"))
    (x_train, t_train), (x_test, t_test) = load_mnist(normalize=False, download=False)
    dataset = {"train_img": x_train, "train_label": t_train,
               "test_img": x_test, "test_label": t_test}
    with open(tree / "dataset" / "mnist.pkl", "wb") as f:
        pickle.dump(dataset, f, -1)  # as the book's init_mnist()
    return tree


def compile_sources(folders: list[Path], env: dict) -> None:
    """Write the bytecode of every module in ``folders``, as their first import would."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", *map(str, folders)], env=env,
                   check=True, stdout=subprocess.DEVNULL)


def commands(script: str) -> dict[str, list[str]]:
    if script == STARTUP:
        return {"book": [sys.executable, "-c", "import numpy"],
                "minidl": [sys.executable, "-c", "import numpy, minidl.book"]}
    name = Path(script).name
    return {"book": [sys.executable, name],
            "minidl": [sys.executable, "-m", "minidl.book", name]}


def run(command: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    """(wall seconds, the last line printed) of one run; a failed run stops the benchmark."""
    start = time.perf_counter()
    out = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} (in {cwd}) failed:\n{out.stderr}")
    lines = out.stdout.strip().splitlines()
    return seconds, lines[-1] if lines else ""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--book", type=Path, required=True,
                        help="a checkout of the book's repository")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of book + minidl")
    parser.add_argument("--scripts", nargs="+", default=[STARTUP, *SCRIPTS],
                        choices=[STARTUP, *SCRIPTS, *CH06, "ch06"],
                        help="what to run (default: startup and chapters 3-5; ch06: chapter 6's)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    args.scripts = [s for name in args.scripts for s in (CH06 if name == "ch06" else (name,))]

    from bench.run import machine

    print(machine())
    print(f"NumPy {np.__version__}, {os.cpu_count()} CPUs; {args.rounds} rounds; minidl from "
          f"{Path(minidl.__file__).parent}\n")

    env = {**os.environ, "MPLBACKEND": "Agg"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory(prefix="minidl-book-") as tmp:
        tree = book_tree(args.book.resolve(), Path(tmp))
        compile_sources([Path(minidl.__file__).parent, tree], env)
        times = {script: {"book": [], "minidl": []} for script in args.scripts}
        last = {script: {} for script in args.scripts}
        for _ in range(args.rounds):
            for script in args.scripts:
                cwd = tree / (Path(script).parent if script != STARTUP else ".")
                for side, command in commands(script).items():
                    seconds, last[script][side] = run(command, cwd, env)
                    times[script][side].append(seconds)
    print(f"{'script':30s} {'book s':>8s} {'minidl s':>9s} {'minidl/book':>12s}   rounds (ratios)")
    for script in args.scripts:
        book, ours = times[script]["book"], times[script]["minidl"]
        ratios = [m / b for m, b in zip(ours, book)]
        print(f"{script:30s} {statistics.median(book):8.2f} {statistics.median(ours):9.2f} "
              f"{statistics.median(ratios):11.2f}x   "
              f"({', '.join(f'{r:.2f}' for r in ratios)})")
    print("\nlast lines printed (book | minidl):")
    for script in args.scripts:
        if script != STARTUP:
            print(f"  {script}: {last[script]['book']} | {last[script]['minidl']}")
    print(f"\nload average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
