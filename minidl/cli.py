"""The ``minidl`` command: train, compare, gradcheck, datasets.

Each command is a thin shell over a Python function (``minidl.experiments``,
``minidl.gradient``, ``minidl.datasets``), so that notebooks get the same
behaviour. Errors in what the user asked for (an unknown dataset, an
impossible size, an output folder that cannot be written, a dataset that
cannot be found offline) print one line on stderr and exit with status 2;
Ctrl-C exits with 130 after saving what the run recorded; ``gradcheck`` exits
with 1 when the two gradients disagree.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse with errors on one line: ``minidl train: error: ... (see --help)``."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


_Formatter = argparse.RawDescriptionHelpFormatter  # keeps the examples' layout


def _dataset_names() -> list[str]:
    from .datasets import DATASETS

    return list(DATASETS)


# -- argument types: argparse turns their ArgumentTypeError into a one-line usage error --


def _number(text: str, kind=float, minimum=None, strict=False):
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise argparse.ArgumentTypeError(f"{text!r}: must be {'>' if strict else '>='} {minimum}")
    return value


def _positive_float(text: str) -> float:
    return _number(text, float, 0, strict=True)


def _positive_int(text: str) -> int:
    return _number(text, int, 1)


def _count(text: str) -> int:
    return _number(text, int, 0)


def _hidden(text: str) -> tuple[int, ...]:
    from .experiments import parse_hidden

    try:
        return parse_hidden(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _dataset(text: str) -> str:
    names = _dataset_names()
    if text not in names:
        raise argparse.ArgumentTypeError(f"unknown dataset {text!r}; choose from {', '.join(names)}")
    return text


def _init_std(text: str):
    from .experiments import INIT_NAMES

    if text.lower() in INIT_NAMES:
        return text.lower()
    try:
        return _positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a positive number or one of {', '.join(INIT_NAMES)}"
        ) from None


# -- the parser -----------------------------------------------------------------------

TRAIN_EXAMPLES = """\
examples:
  minidl train                                  the seed's experiment: MNIST, 784-50-10 ReLU,
                                                lr 0.1, batch 100, 10,000 iterations
  minidl train --lr 0.01 --out runs/lr-0.01     one change, files in runs/lr-0.01/
  minidl train --dataset fashion-mnist --hidden 100,50 --epochs 5
  minidl train --dataset cifar-10 --activation sigmoid
  minidl train --dataset mnist-mini --iters 200 --quiet     a quick try, offline

writes to --out: metrics.json and metrics.csv (accuracy and loss per epoch, loss per
iteration, configuration, timings, versions), curves.png, and model.npz (load it with
minidl.networks.MultiLayerNet.load). Ctrl-C stops the run and keeps what it recorded.
"""

COMPARE_EXAMPLES = """\
Give an option several values to compare them; every other option is as in
'minidl train', and every run starts from the same seed. When several options
have several values, every combination is run (their cartesian product).

examples (the assignment's comparisons, one command each):
  minidl compare --lr 0.1 0.01                      learning rate
  minidl compare --activation relu sigmoid          activation
  minidl compare --hidden 50 100,50                 depth: 784-50-10 against 784-100-50-10
  minidl compare --dataset mnist fashion-mnist cifar-10
  minidl compare --batch-size 100 500 --epochs 5
  minidl compare --lr 0.1 0.01 --activation relu sigmoid    4 runs

prints a table: the final network's test and train accuracy, the best per-epoch test
accuracy and its epoch, the training time (per-epoch evaluations included); and writes
to --out: comparison.md, comparison.csv, comparison.json, comparison.png (every run's
curves), and a folder per run with its metrics, curves and model.
"""

GRADCHECK_EXAMPLES = """\
The batch is the first N training images, as in the book's gradient_check.py; the
network is built after seeding NumPy. Exit status 1 when the two gradients disagree.

examples:
  minidl gradcheck                                  784-50-10 on 3 images of mnist-mini
  minidl gradcheck --hidden 100,50 --activation sigmoid --batch-size 10
  minidl gradcheck --dataset mnist --dtype float32
"""

DATASETS_EXAMPLES = """\
examples:
  minidl datasets                        every dataset: where it was found, or where it
                                         would be downloaded from
  minidl datasets --data-dir ~/data      look in ~/data first
  minidl datasets fetch fashion-mnist    download (or find) it and say where it is
"""

MAIN_EXAMPLES = """\
examples:
  minidl train                               the seed's experiment, with curves and metrics
  minidl compare --lr 0.1 0.01               two learning rates side by side
  minidl compare --activation relu sigmoid
  minidl compare --hidden 50 100,50
  minidl gradcheck                           numerical gradients against backprop
  minidl datasets                            what is on this machine

'minidl COMMAND --help' describes each command. 'python -m minidl' works the same.
"""


def _add_model_options(p: argparse.ArgumentParser, several: bool, *,
                       dataset: str = "mnist", batch_size: int = 100) -> None:
    """The options that describe a network and its data; ``several``: nargs='+' (compare)."""
    many = {"nargs": "+"} if several else {}
    also = "; several: compare them" if several else ""

    def default(value):
        return [value] if several else value

    p.add_argument("--dataset", type=_dataset, default=default(dataset), metavar="NAME", **many,
                   help=f"one of: {', '.join(_dataset_names())} (default {dataset}{also})")
    p.add_argument("--hidden", type=_hidden, default=default((50,)), metavar="SIZES", **many,
                   help=f"hidden layer sizes, comma-separated: 50 or 100,50 (default 50{also})")
    p.add_argument("--activation", choices=("relu", "sigmoid"), default=default("relu"),
                   **many, help=f"activation of the hidden layers (default relu{also})")
    p.add_argument("--batch-size", type=_positive_int, default=default(batch_size),
                   metavar="N", **many, help=f"images per batch (default {batch_size}{also})")
    p.add_argument("--dtype", choices=("float64", "float32"), default=default("float64"),
                   **many, help=f"precision of the network (default float64{also})")
    p.add_argument("--weight-init-std", type=_init_std, default=default(0.01), metavar="STD",
                   **many, help=f"std of the initial weights, or he / xavier (default 0.01{also})")
    p.add_argument("--seed", type=_count, default=1211,
                   help="seed of NumPy's generator, set before the network is built "
                        "(default 1211)")
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="look for datasets here first (then $MINIDL_DATA_DIR and the cache)")


def _add_training_options(p: argparse.ArgumentParser, several: bool) -> None:
    many = {"nargs": "+"} if several else {}
    also = "; several: compare them" if several else ""
    p.add_argument("--lr", type=_positive_float, default=[0.1] if several else 0.1,
                   metavar="RATE", **many, help=f"learning rate (default 0.1{also})")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--iters", type=_count, default=None, metavar="N",
                        help="SGD steps (default 10000)")
    length.add_argument("--epochs", type=_positive_float, default=None, metavar="E",
                        help="train for E epochs of max(n_train / batch_size, 1) steps")
    p.add_argument("--grad", choices=("backprop", "numerical"), default="backprop",
                   help="how gradients are computed (default backprop; numerical is slow)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for the results (default: a new folder under runs/)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar and no per-epoch lines (results are still printed)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="minidl",
        description="minidl: train, compare and check the networks of 'Deep Learning from "
                    "Scratch' from one command.",
        epilog=MAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"minidl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser("train", help="train one network, write metrics, curves, model",
                            description="Train one network with the seed's SGD loop.",
                            epilog=TRAIN_EXAMPLES, formatter_class=_Formatter)
    _add_model_options(p, several=False)
    _add_training_options(p, several=False)
    p.set_defaults(func=_cmd_train)

    p = commands.add_parser("compare", help="train several configurations and compare them",
                            description="Train several configurations and compare them: give "
                                        "options several values.",
                            epilog=COMPARE_EXAMPLES, formatter_class=_Formatter)
    _add_model_options(p, several=True)
    _add_training_options(p, several=True)
    p.set_defaults(func=_cmd_compare)

    p = commands.add_parser(
        "gradcheck", help="numerical gradients against backpropagation, with timings",
        description="Compare the numerical gradient of every parameter with\n"
                    "backpropagation's on one batch, and time both.",
        epilog=GRADCHECK_EXAMPLES, formatter_class=_Formatter)
    _add_model_options(p, several=False, dataset="mnist-mini", batch_size=3)
    p.set_defaults(func=_cmd_gradcheck)

    p = commands.add_parser("datasets", help="list the datasets and where they are; fetch one",
                            description="List every dataset: where it was found, whether it "
                                        "is cached,\nwhere it would be downloaded from.",
                            epilog=DATASETS_EXAMPLES, formatter_class=_Formatter)
    p.add_argument("--data-dir", metavar="DIR", default=None, help="look here first")
    p.set_defaults(func=_cmd_datasets)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    f = actions.add_parser("fetch", help="download a dataset (or find it) and print its folder",
                           description="Download a dataset into the cache, or into --data-dir,"
                                       "\nunless it is already there; print where it is.",
                           epilog=DATASETS_EXAMPLES, formatter_class=_Formatter)
    f.add_argument("name", type=_dataset, metavar="NAME",
                   help=f"one of: {', '.join(_dataset_names())}")
    f.add_argument("--data-dir", metavar="DIR", default=argparse.SUPPRESS,
                   help="download here instead of the cache")
    f.set_defaults(func=_cmd_fetch)
    return parser


# -- commands -----------------------------------------------------------------------------


def _config_options(args: argparse.Namespace) -> dict:
    return {"dataset": args.dataset, "hidden": args.hidden, "activation": args.activation,
                "lr": args.lr, "batch_size": args.batch_size, "iters": args.iters, "epochs": args.epochs,
                "seed": args.seed, "dtype": args.dtype, "grad": args.grad,
                "weight_init_std": args.weight_init_std, "data_dir": args.data_dir}


def _cmd_train(args: argparse.Namespace) -> int:
    from .experiments import ExperimentConfig, new_run_dir, run_experiment

    config = ExperimentConfig(**_config_options(args))  # checked before anything is created
    out = Path(args.out) if args.out else new_run_dir("train")
    result = run_experiment(config, out=out, progress=False if args.quiet else None,
                            verbose=not args.quiet)
    final = result.metrics["final"]
    print(f"final: train acc {final['train_acc']:.4f}, test acc {final['test_acc']:.4f} "
          f"after {result.history.iterations} iterations in {result.seconds:.1f} s")
    print(f"wrote {out}/: metrics.json, metrics.csv, curves.png, model.npz")
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    from .experiments import compare, new_run_dir

    options = _config_options(args)
    # one value: fixed; several: alternatives (lists are what compare() varies)
    options = {k: (v if isinstance(v, list) and len(v) > 1 else
                   (v[0] if isinstance(v, list) else v)) for k, v in options.items()}
    out = Path(args.out) if args.out else new_run_dir("compare")
    table = compare(out=out, progress=False if args.quiet else None, verbose=not args.quiet,
                    **options)
    print()
    print(table.to_markdown(), end="")
    print(f"\nwrote {out}/: comparison.md, comparison.csv, comparison.json, comparison.png, "
          f"and a folder per run")
    return EXIT_OK


def _cmd_gradcheck(args: argparse.Namespace) -> int:
    import numpy as np

    from .experiments import ExperimentConfig, _build_network, _check_sizes, _load
    from .gradient import gradient_check

    config = ExperimentConfig(dataset=args.dataset, hidden=args.hidden,
                              activation=args.activation, batch_size=args.batch_size,
                              seed=args.seed, dtype=args.dtype, data_dir=args.data_dir,
                              weight_init_std=args.weight_init_std)
    data = _load(config)
    _check_sizes(config, data.info["n_train"])
    network = _build_network(config, data)  # seeds NumPy, then builds
    # the first images, as the book's gradient_check.py takes x_train[:3]
    x = data.x_train[:config.batch_size]
    if config.dtype == "float32":
        x = x.astype(np.float32, copy=False)
    t = data.t_train[:config.batch_size]
    print(f"data: the first {config.batch_size} training images of {data.info['title']}; "
          f"weights drawn with seed {config.seed}, {config.dtype}")
    report = gradient_check(network, x, t)
    print(report)
    return EXIT_OK if getattr(report, "ok", True) else EXIT_MISMATCH


def _cmd_datasets(args: argparse.Namespace) -> int:
    from .datasets import DATASETS, dataset_status

    pad = " " * 15
    for name, info in DATASETS.items():
        status = dataset_status(name, data_dir=args.data_dir)
        shape = "x".join(str(s) for s in info.image_shape)
        print(f"{name:14s} {info.title}: {info.n_train} train and {info.n_test} test images, "
              f"{shape}, {info.n_classes} classes")
        if status["found"]:
            cached = " (parsed copy cached)" if status["cached"] else ""
            print(f"{pad}found: {status['found']}{cached}")
            continue
        # the places are folders times file names: show the folders once
        folders = list(dict.fromkeys(str(Path(p).parent) for p in status["searched"]))
        print(f"{pad}not found in: {', '.join(folders) or '-'}")
        for k, url in enumerate(status["urls"]):
            print(f"{pad}{'would download from:' if k == 0 else '                 or:'} {url}")
        print(f"{pad}get it with: minidl datasets fetch {name}")
    return EXIT_OK


def _cmd_fetch(args: argparse.Namespace) -> int:
    from .datasets import fetch

    path = fetch(args.name, data_dir=args.data_dir)
    print(f"{args.name}: {path}")
    return EXIT_OK


# -- entry point ---------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    """The error as one line; a dataset not found is summed up, 'minidl datasets' has the rest."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    from .datasets import DatasetNotFoundError

    if isinstance(exc, DatasetNotFoundError) and len(lines) > 1:
        # the loader's message lists every place searched, one per line
        summary = [lines[0].split(" Searched")[0].rstrip(".:")]
        for k, line in enumerate(lines):
            if ". download: " in line:
                note = line.split(". download: ", 1)[1].rstrip(":")
                if note == "failed" and k + 1 < len(lines):
                    note += f" ({lines[k + 1]})"
                summary.append(f"download {note}")
        summary.append("'minidl datasets' shows where minidl looks and how to fetch it")
        return "; ".join(summary)
    return "; ".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the ``minidl`` command with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors (already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except KeyboardInterrupt as exc:
        out = getattr(exc, "out", None)
        where = f"; what it recorded is in {out}/" if out is not None else ""
        print(f"\nminidl: interrupted{where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, OSError) as exc:
        print(f"minidl: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
