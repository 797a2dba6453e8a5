"""The ``minidl`` command: train, compare, gradcheck, datasets.

Each command is a thin shell over a Python function (``minidl.experiments``,
``minidl.gradient``, ``minidl.datasets``), so that notebooks get the same
behaviour. Exit statuses:

- 0: done;
- 1: ``gradcheck``: the two gradients disagree;
- 2: an error in what was asked (an unknown dataset, an impossible size, an
  output folder that cannot be written or already holds results, a dataset that
  cannot be found offline, not enough memory), said in one line on stderr; for
  ``compare``, a run that failed (its row says why; the table is written);
- 3: the loss became NaN or infinite (said once, with the iteration);
- 130: Ctrl-C; 143: SIGTERM; 129: SIGHUP. Each ends a run as Ctrl-C does: what it
  recorded is written (metrics, model, curves; status 'interrupted').
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
STOP_SIGNALS = ("SIGTERM", "SIGHUP")  # those a system or a closed terminal sends


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C's KeyboardInterrupt would be.

    Everything that keeps a run's record on Ctrl-C (the training loop's History,
    the run's files, a comparison's table) then keeps it for these too.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.signal_name = signal.Signals(signum).name


@contextlib.contextmanager
def _signals_end_the_run():
    """SIGTERM and SIGHUP raise ``Terminated`` while a command runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def stop(signum, frame):
        for sig in previous:  # once: the record being written is not cut short by another
            signal.signal(sig, signal.SIG_IGN)
        raise Terminated(signum)

    for name in STOP_SIGNALS:
        sig = getattr(signal, name, None)  # no SIGHUP on Windows
        if sig is not None:
            previous[sig] = signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Parser(argparse.ArgumentParser):
    """argparse with errors on one line: ``minidl train: error: ... (see --help)``."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


_Formatter = argparse.RawDescriptionHelpFormatter  # keeps the examples' layout


def _dataset_names() -> list[str]:
    from .datasets import DATASETS

    return list(DATASETS)


# -- options from the experiment configuration's field table ----------------------------------


def _converter(field):
    """argparse ``type=`` for a field: its text conversion, then its check.

    argparse turns the ``ArgumentTypeError`` into a one-line usage error naming the flag.
    """
    opt = field.option

    def convert(text: str):
        try:
            value = opt.type(text)
        except (ValueError, TypeError) as exc:
            what = {int: "an integer", float: "a number"}.get(opt.type)
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {what}" if what else str(exc)) from None
        try:
            return opt.check(field.name, value)
        except (ValueError, TypeError) as exc:
            message = str(exc)
            for prefix in (f"{field.name}: ", f"{field.name} "):  # the flag already names it
                message = message.removeprefix(prefix)
            raise argparse.ArgumentTypeError(message) from None

    convert.__name__ = field.name  # argparse's "invalid <name> value" wording
    return convert


def _add_config_options(p: argparse.ArgumentParser, command: str, *, like: str | None = None,
                        skip: tuple[str, ...] = (), **defaults) -> None:
    """The configuration's options for ``command``, from ``FIELDS`` (``defaults`` override).

    In ``compare``, a field that varies by values takes several (``nargs='+'``).
    ``like``: offer the fields of that command (``search`` takes ``train``'s),
    less ``skip``.
    """
    from .experiments.config import FIELDS, format_value

    groups = {}
    for field in FIELDS:
        opt = field.option
        if (like or command) not in opt.commands or field.name in skip:
            continue
        several = command == "compare" and opt.vary == "values"
        default = defaults.get(field.name, field.default)
        shown = opt.shown_default if field.name not in defaults else None
        if shown is None and default is not None:
            shown = format_value(default)
        choices = opt.choice_list()
        notes = ([f"default {shown}"] if shown is not None else []) + (
            ["several: compare them"] if several else [])
        text = opt.help.format(choices=", ".join(map(str, choices or ())))
        kwargs = {"default": [default] if several else default,
                  "help": text + (f" ({'; '.join(notes)})" if notes else "")}
        if opt.switch and not several:
            kwargs.pop("default")
            target = groups.get(opt.group, p)
            target.add_argument(field.flag, *opt.flags, dest=field.name, action="store_true",
                                default=default, help=kwargs["help"])
            continue
        if several:
            # a switch alone ('--batchnorm') is on; 'on off' compares both
            kwargs["nargs"] = "*" if opt.switch else "+"
        if choices and opt.cli_choices:
            kwargs["choices"] = choices
        else:
            kwargs["type"] = _converter(field)
            kwargs["metavar"] = opt.metavar or field.name.upper()
        target = p
        if opt.group is not None:
            if opt.group not in groups:
                groups[opt.group] = p.add_mutually_exclusive_group()
            target = groups[opt.group]
        target.add_argument(field.flag, *opt.flags, dest=field.name, **kwargs)


def _config_options(args: argparse.Namespace, command: str,
                    skip: tuple[str, ...] = ()) -> dict:
    """The configuration fields ``command`` offers, as parsed (lists in compare)."""
    from .experiments.config import FIELDS

    options = {f.name: getattr(args, f.name) for f in FIELDS
               if command in f.option.commands and f.name not in skip}
    for f in FIELDS:
        if f.option.switch and options.get(f.name) == []:  # '--batchnorm' with no values
            options[f.name] = [True]
    return options


def _dataset(text: str) -> str:
    names = _dataset_names()
    if text not in names:
        raise argparse.ArgumentTypeError(f"unknown dataset {text!r}; choose from {', '.join(names)}")
    return text


# -- the parser -----------------------------------------------------------------------

TRAIN_EXAMPLES = """\
examples:
  minidl train                                  the assignment's experiment: MNIST, 784-50-10 ReLU,
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

SEARCH_EXAMPLES = """\
The defaults are the book's: the first 500 training images, 20% of them for
validation, 784-100x6-10 ReLU with He initialisation, 50 epochs of SGD, batches
of 100, 100 trials of lr in [1e-6, 1e-2] and weight decay in [1e-8, 1e-4].

examples:
  minidl search                                   the book's search
  minidl search --trials 20 --lr 1e-3 1e-1        a narrower learning rate range
  minidl search --dataset fashion-mnist --train-size 5000 --epochs 10

prints the book's line per trial and its 'Best-N' lines, a table best first, and
writes to --out: search.md, search.csv, search.json, search.png (the best trials'
curves, as the book plots them) and trials/NNN/metrics.json.
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
  minidl train                               the assignment's experiment, with curves, metrics
  minidl compare --lr 0.1 0.01               two learning rates side by side
  minidl compare --activation relu sigmoid
  minidl compare --hidden 50 100,50
  minidl gradcheck                           numerical gradients against backprop
  minidl datasets                            what is on this machine

'minidl COMMAND --help' describes each command. 'python -m minidl' works the same.
"""


def _positive_range(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive finite number "
                                         "(ranges are drawn log-uniformly)")
    return value


def _add_search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=_converter_for("trials", int, 1), default=100, metavar="N",
                   help="how many random trials (default 100)")
    p.add_argument("--lr", type=_positive_range, nargs=2, default=[1e-6, 1e-2],
                   metavar=("LOW", "HIGH"), help="learning rate range (default 1e-6 1e-2)")
    p.add_argument("--weight-decay", type=_positive_range, nargs=2, default=[1e-8, 1e-4],
                   metavar=("LOW", "HIGH"), help="weight decay range (default 1e-8 1e-4)")
    p.add_argument("--validation", type=float, default=0.2, metavar="FRACTION",
                   help="the fraction of the training images held out (default 0.2)")
    p.add_argument("--train-size", type=_converter_for("train-size", int, 2), default=500,
                   metavar="N", help="use the first N training images (default 500, the "
                                     "book's; 0: all)")
    p.add_argument("--top", type=_converter_for("top", int, 1), default=20, metavar="N",
                   help="how many of the best trials to list and plot (default 20)")


def _converter_for(name: str, kind, minimum):
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum and not (name == "train-size" and value == 0):
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return convert


def _jobs(text: str):
    from .experiments.distributed import parse_jobs

    try:
        return parse_jobs(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("jobs must be", "must be")) from None


def _add_parallel_options(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--jobs", "-j", type=_jobs, default=None, metavar="N",
                       help="run N runs at once on a local Dask cluster, 'auto': one per "
                            "usable core (default: one after another; needs "
                            "minidl[distributed])")
    where.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="send the runs to a running Dask scheduler, e.g. "
                            "tcp://127.0.0.1:8786 (files are still written here)")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Options of a run that are not part of its configuration."""
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for the results (default: a new folder under runs/); "
                        "one that already holds results is refused")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results already in --out")
    p.add_argument("--keep-going", action="store_true",
                   help="train on when the loss becomes NaN or infinite (default: stop there)")
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
                            description="Train one network with the course notebook's SGD loop.",
                            epilog=TRAIN_EXAMPLES, formatter_class=_Formatter)
    _add_config_options(p, "train")
    _add_run_options(p)
    p.set_defaults(func=_cmd_train)

    p = commands.add_parser("compare", help="train several configurations and compare them",
                            description="Train several configurations and compare them: give "
                                        "options several values.",
                            epilog=COMPARE_EXAMPLES, formatter_class=_Formatter)
    _add_config_options(p, "compare")
    _add_run_options(p)
    _add_parallel_options(p)
    p.set_defaults(func=_cmd_compare)

    p = commands.add_parser("search", help="the book's random search of lr and weight decay",
                            description="The book's random hyperparameter search "
                                        "(ch06/hyperparameter_optimization.py):\nlearning rate "
                                        "and weight decay drawn log-uniformly, each trial judged"
                                        "\non a validation split taken from the training set.",
                            epilog=SEARCH_EXAMPLES, formatter_class=_Formatter)
    from .experiments.search import BOOK_SEARCH

    _add_config_options(p, "search", like="train", skip=("lr", "weight_decay"), **BOOK_SEARCH)
    _add_search_options(p)
    _add_run_options(p)
    _add_parallel_options(p)
    p.set_defaults(func=_cmd_search)

    p = commands.add_parser(
        "gradcheck", help="numerical gradients against backpropagation, with timings",
        description="Compare the numerical gradient of every parameter with\n"
                    "backpropagation's on one batch, and time both.",
        epilog=GRADCHECK_EXAMPLES, formatter_class=_Formatter)
    _add_config_options(p, "gradcheck", dataset="mnist-mini", batch_size=3)
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


def _cmd_train(args: argparse.Namespace) -> int:
    from .experiments import ExperimentConfig, new_run_dir, run_experiment

    config = ExperimentConfig(**_config_options(args, "train"))  # checked before anything is created
    out = Path(args.out) if args.out else new_run_dir("train")
    result = run_experiment(config, out=out, progress=False if args.quiet else None,
                            verbose=not args.quiet, keep_going=args.keep_going,
                            overwrite=args.overwrite)
    final = result.metrics["final"]
    print(f"final: train acc {final['train_acc']:.4f}, test acc {final['test_acc']:.4f} "
          f"after {result.history.iterations} iterations in {result.seconds:.1f} s")
    print(f"wrote {out}/: metrics.json, metrics.csv, curves.png, model.npz")
    if result.diverged:
        if args.quiet:  # otherwise it was said when it happened
            print(f"minidl: {result.metrics['divergence']['message']}", file=sys.stderr)
        return EXIT_DIVERGED
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    from .experiments import compare, new_run_dir

    options = _config_options(args, "compare")
    # one value: fixed; several: alternatives (lists are what compare() varies)
    options = {k: (v if isinstance(v, list) and len(v) > 1 else
                   (v[0] if isinstance(v, list) else v)) for k, v in options.items()}
    out = Path(args.out) if args.out else new_run_dir("compare")
    table = compare(out=out, progress=False if args.quiet else None, verbose=not args.quiet,
                    keep_going=args.keep_going, overwrite=args.overwrite, jobs=args.jobs,
                    scheduler=args.scheduler, **options)
    print()
    print(table.to_markdown(), end="")
    print(f"\nwrote {out}/: comparison.md, comparison.csv, comparison.json, comparison.png, "
          f"and a folder per run")
    failed = [r for r in table.results if r.status == "failed"]
    for r in failed:
        print(f"minidl: error: run {r.label}: {r.metrics['error']}", file=sys.stderr)
    if failed:
        return EXIT_USAGE
    return EXIT_DIVERGED if any(r.diverged for r in table.results) else EXIT_OK


def _cmd_search(args: argparse.Namespace) -> int:
    from .experiments import ExperimentConfig, new_run_dir, search

    config = ExperimentConfig(**_config_options(args, "train", skip=("lr", "weight_decay")))
    out = Path(args.out) if args.out else new_run_dir("search")
    table = search(config, trials=args.trials, lr=tuple(args.lr),
                   weight_decay=tuple(args.weight_decay), validation=args.validation,
                   train_size=args.train_size or None, top=args.top, out=out,
                   progress=False if args.quiet else None, verbose=not args.quiet,
                   keep_going=args.keep_going, overwrite=args.overwrite, jobs=args.jobs,
                   scheduler=args.scheduler)
    print()
    print(table.to_markdown(), end="")
    print(f"\nwrote {out}/: search.md, search.csv, search.json, search.png, trials/")
    failed = [r for r in table.results if r.status == "failed"]
    for r in failed:
        print(f"minidl: error: {r.label}: {r.metrics['error']}", file=sys.stderr)
    return EXIT_USAGE if failed else EXIT_OK


def _cmd_gradcheck(args: argparse.Namespace) -> int:
    import numpy as np

    from .experiments import ExperimentConfig
    from .experiments.run import build_network, check_sizes, load
    from .gradient import gradient_check

    config = ExperimentConfig(**_config_options(args, "gradcheck"))
    data = load(config)
    check_sizes(config, data.info["n_train"])
    network = build_network(config, data)  # checks the memory it needs, seeds NumPy, builds
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
        print(f"{pad}{status['hint']}")
    return EXIT_OK


def _cmd_fetch(args: argparse.Namespace) -> int:
    from .datasets import fetch

    path = fetch(args.name, data_dir=args.data_dir)
    print(f"{args.name}: {path}")
    return EXIT_OK


# -- entry point ---------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    """The error as one line; a dataset not found gives its loader's one-line summary."""
    if getattr(exc, "summary", None):  # DatasetNotFoundError: its message lists every place
        return exc.summary
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(exc).__name__


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
        with _signals_end_the_run():
            return args.func(args)
    except KeyboardInterrupt as exc:
        out = getattr(exc, "out", None)
        where = f"; what it recorded is in {out}/" if out is not None else ""
        if isinstance(exc, Terminated):
            print(f"\nminidl: stopped by {exc.signal_name}{where}", file=sys.stderr)
            return 128 + exc.signum
        print(f"\nminidl: interrupted{where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError as exc:
        # NumPy's message says how much ("Unable to allocate 584. GiB for an array ...")
        reason = _one_line(exc) if str(exc).strip() else "Python could not allocate memory"
        print(f"minidl: error: not enough memory: {reason}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, TypeError, OSError, ImportError) as exc:
        # ImportError: --jobs/--scheduler without Dask (the message says what to install)
        print(f"minidl: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
