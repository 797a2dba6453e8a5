"""The experiment configuration: one table of fields for the API, ``compare`` and the command line.

Each field of ``ExperimentConfig`` is declared once, with an ``Option`` that
says everything else needs to know about it: how a value is checked and
normalised, how the command line reads it (flag, text conversion, choices,
help), whether ``minidl compare`` takes several values, and which commands
offer it. ``minidl/cli.py`` builds its options from ``FIELDS``; adding a field
here adds it to ``run_experiment``, ``compare`` and ``minidl train``/``compare``.

Defaults are the assignment's experiment (the course notebook's): MNIST,
784-50-10 ReLU, SGD with lr 0.1, batches of 100, 10,000 iterations, weights of
std 0.01 drawn after ``np.random.seed(1211)``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FIELDS", "ExperimentConfig", "Option", "parse_hidden"]

SEED = 1211
DEFAULT_ITERS = 10000
DTYPES = ("float64", "float32")
MODELS = ("mlp", "convnet")
INIT_NAMES = ("he", "relu", "xavier", "sigmoid")


# -- checks: each normalises a value or raises ValueError/TypeError naming the field ------------


def parse_hidden(value: Any, name: str = "hidden") -> tuple[int, ...]:
    """Hidden layer sizes from ``50``, ``(100, 50)`` or ``"100,50"``."""
    if isinstance(value, str):
        try:
            sizes = tuple(int(part) for part in value.split(","))
        except ValueError:
            raise ValueError(
                f"{name}: {value!r} is not a comma-separated list of layer sizes such as 100,50"
            ) from None
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        sizes = (int(value),)
    elif isinstance(value, (list, tuple)):
        sizes = tuple(_integer(name, v) for v in value)
    else:
        raise TypeError(f"{name}: expected sizes such as 50, (100, 50) or '100,50', got {value!r}")
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"{name}: layer sizes must be positive integers, got {value!r}")
    return sizes


def _integer(name: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value:g}")
    return value


def _one_of(name: str, value: Any, choices: Iterable[str], what: str = "") -> str:
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {what or name} {value!r}; choose from {', '.join(choices)}")
    return value


def _dataset_names() -> tuple[str, ...]:
    from ..datasets import DATASETS

    return tuple(DATASETS)


def _activations() -> tuple[str, ...]:
    from ..networks import ACTIVATIONS

    return tuple(ACTIVATIONS)


def _grad_methods() -> tuple[str, ...]:
    from ..training import GRAD_METHODS

    return tuple(GRAD_METHODS)


def _check_dataset(name, value):
    return _one_of(name, value, _dataset_names(), "dataset")


def _check_activation(name, value):
    return _one_of(name, value, _activations(), "activation")


def _check_grad(name, value):
    if value not in _grad_methods():
        raise ValueError(f"{name} must be one of {', '.join(_grad_methods())}, got {value!r}")
    return value


def _check_seed(name, value):
    seed = _integer(name, value, 0)
    if seed >= 2**32:
        raise ValueError(f"{name} must be below 2**32, got {seed}")
    return seed


def _check_dtype(name, value):
    try:
        dtype = np.dtype(value).name
    except TypeError:
        dtype = str(value)
    if dtype not in DTYPES:
        raise ValueError(f"{name} must be float32 or float64, got {value!r}")
    return dtype


def _check_init(name, value):
    if isinstance(value, str):
        if value.lower() in INIT_NAMES:
            return value.lower()
        try:
            value = float(value)
        except ValueError:
            raise ValueError(
                f"{name} must be a positive number or one of {', '.join(INIT_NAMES)}, "
                f"got {value!r}"
            ) from None
    return _positive_number(name, value)


def _check_non_negative(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a number >= 0, got {value:g}")
    return value


def _check_ratio(name, value):
    value = _check_non_negative(name, value)
    if value >= 1:
        raise ValueError(f"{name} must be a ratio in [0, 1) (0: no dropout), got {value:g}")
    return value


def _check_switch(name, value):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def parse_switch(text: str) -> bool:
    """``on``/``off`` (or yes/no, true/false, 1/0) from the command line."""
    key = text.strip().lower()
    if key in ("on", "yes", "true", "1"):
        return True
    if key in ("off", "no", "false", "0"):
        return False
    raise ValueError(f"{text!r} is not on or off")


# the book's defaults (common/optimizer.py); without an optimizer, the course's SGD at 0.1
OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
DEFAULT_LR = {None: 0.1, "sgd": 0.01, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.01,
              "rmsprop": 0.01, "adam": 0.001}


def _check_optimizer(name, value):
    if isinstance(value, str):
        value = value.lower()
    return _one_of(name, value, OPTIMIZER_NAMES, "optimizer")


def _check_model(name, value):
    return _one_of(name, value, MODELS, "model")


def _check_path(name, value):
    try:
        return os.fspath(value)
    except TypeError:
        raise TypeError(f"{name} must be a path, got {value!r}") from None


# -- the table ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """What the API, ``compare`` and the command line need to know about one field.

    ``check(name, value)``: the normalised value, or ``ValueError``/``TypeError``
    naming the field. ``type``: the command line's text-to-value conversion
    (before ``check``). ``choices``: the allowed values (a tuple, or a function
    returning one, for names known only at run time); the command line offers
    them as argparse choices when ``type`` is ``str`` and ``choices`` is a
    tuple. ``help``: for ``--help`` (``{choices}`` is filled in); the default is
    appended. ``vary``: how ``minidl compare`` takes the option, 'values'
    (several values are alternatives) or 'one' (one value for every run; the
    Python ``compare`` still varies a list). ``sequence``: the value is itself
    a tuple (``hidden=(100, 50)``), so only a list gives alternatives.
    ``nullable``: None is allowed (meaning "not given"). ``group``: fields of
    one group are mutually exclusive on the command line. ``commands``: which
    ``minidl`` commands offer it. ``flag``: the command line's flag (default
    ``--`` and the name with dashes); ``flags``: more spellings of it.
    ``shown_default``: the default as ``--help`` shows it.
    """

    check: Callable[[str, Any], Any]
    help: str
    type: Callable[[str], Any] = str
    choices: tuple | Callable[[], tuple] | None = None
    cli_choices: bool = True
    metavar: str | None = None
    vary: str = "values"
    sequence: bool = False
    nullable: bool = False
    group: str | None = None
    commands: tuple[str, ...] = ("train", "compare", "gradcheck")
    flag: str | None = None
    flags: tuple[str, ...] = ()
    shown_default: str | None = None
    switch: bool = False  # a yes/no option: '--flag' alone means on ('on'/'off' in compare)

    def choice_list(self) -> tuple | None:
        return self.choices() if callable(self.choices) else self.choices


def option(default: Any, **kwargs) -> Any:
    """A dataclass field of ``ExperimentConfig`` with its ``Option`` as metadata."""
    return dataclasses.field(default=default, metadata={"option": Option(**kwargs)})


TRAINING = ("train", "compare")  # options of the SGD loop: not gradcheck's


@dataclass(frozen=True)
class ExperimentConfig:
    """One training run; every field defaults to the assignment's experiment.

    ``dataset``: a name from ``minidl.datasets.DATASETS`` ('mnist',
    'fashion-mnist', 'cifar-10', 'mnist-mini'). ``hidden``: hidden layer sizes,
    ``50``, ``(100, 50)`` or ``"100,50"``. ``activation``: 'relu' or 'sigmoid'.
    ``lr``, ``batch_size``: of the SGD loop. ``iters`` or ``epochs``: how long
    (give at most one; neither means 10,000 iterations; ``epochs`` becomes
    ``ceil(epochs * max(n_train / batch_size, 1))`` iterations). ``seed``: for
    ``np.random.seed`` before the network is built. ``dtype``: 'float32' or
    'float64'. ``grad``: 'backprop' or 'numerical'. ``weight_init_std``: a
    number, or 'he'/'xavier' (the book's scaled initialisations).
    ``data_dir``: where to look for the dataset first.

    Values are checked and normalised on construction (``ValueError`` or
    ``TypeError`` naming the field). Each field's ``Option`` (its metadata,
    listed in ``FIELDS``) is what the command line is built from.
    """

    dataset: str = option(
        "mnist", check=_check_dataset, choices=_dataset_names, cli_choices=False,
        metavar="NAME", help="one of: {choices}")
    model: str = option(
        "mlp", check=_check_model, choices=MODELS,
        help="mlp: MultiLayerNet of the --hidden layers; convnet: the book's SimpleConvNet "
             "(conv 30 5x5 filters - relu - 2x2 max pool - affine of one --hidden size - relu - "
             "affine) on the images as (C, H, W), CIFAR-10 in colour")
    hidden: tuple[int, ...] = option(
        (50,), check=lambda name, v: parse_hidden(v, name), type=parse_hidden, metavar="SIZES",
        sequence=True, shown_default="50",
        help="hidden layer sizes, comma-separated: 50 or 100,50")
    activation: str = option(
        "relu", check=_check_activation, choices=_activations,
        help="activation of the hidden layers")
    optimizer: str | None = option(
        None, check=_check_optimizer, choices=OPTIMIZER_NAMES, nullable=True,
        commands=TRAINING, shown_default="the course's SGD loop, params -= lr * grad",
        help="the book's optimizer (minidl.optimizer), with its default learning rate unless "
             "--lr")
    lr: float | None = option(
        None, check=_positive_number, type=float, metavar="RATE", commands=TRAINING,
        nullable=True, shown_default="0.1; with --optimizer, the book's default for it",
        help="learning rate")
    batch_size: int = option(
        100, check=lambda name, v: _integer(name, v, 1), type=int, metavar="N",
        help="images per batch")
    iters: int | None = option(
        None, check=lambda name, v: _integer(name, v, 0), type=int, metavar="N", nullable=True,
        vary="one", group="length", commands=TRAINING, shown_default="10000",
        help="SGD steps")
    epochs: float | None = option(
        None, check=_positive_number, type=float, metavar="E", nullable=True, vary="one",
        group="length", commands=TRAINING,
        help="train for E epochs of max(n_train / batch_size, 1) steps")
    seed: int = option(
        SEED, check=_check_seed, type=int, vary="one",
        help="seed of NumPy's generator, set before the network is built")
    dtype: str = option(
        "float64", check=_check_dtype, choices=DTYPES, help="precision of the network")
    grad: str = option(
        "backprop", check=_check_grad, choices=_grad_methods, vary="one",
        commands=TRAINING, help="how gradients are computed; numerical is slow")
    weight_init_std: float | str = option(
        0.01, check=_check_init, metavar="STD", flags=("--weight-init",),
        help="std of the initial weights, or he / xavier (the book's sqrt(2/n), sqrt(1/n))")
    weight_decay: float = option(
        0.0, check=_check_non_negative, type=float, metavar="LAMBDA",
        help="L2 weight decay: 0.5 * LAMBDA * sum(W**2) added to the loss (the book's "
             "weight_decay_lambda)")
    dropout: float = option(
        0.0, check=_check_ratio, type=float, metavar="RATIO",
        help="a Dropout(RATIO) after each hidden activation (MultiLayerNetExtend); 0: none")
    batchnorm: bool = option(
        False, check=_check_switch, type=parse_switch, switch=True,
        help="batch normalisation before each hidden activation (MultiLayerNetExtend)")
    data_dir: str | None = option(
        None, check=_check_path, metavar="DIR", nullable=True, vary="one",
        help="look for datasets here first (then $MINIDL_DATA_DIR and the cache)")

    def __post_init__(self) -> None:
        try:
            for f in FIELDS:
                value = getattr(self, f.name)
                if value is None and f.option.nullable:
                    continue
                # frozen: normalise through object.__setattr__
                object.__setattr__(self, f.name, f.option.check(f.name, value))
            if self.lr is None:  # the optimizer's own default
                object.__setattr__(self, "lr", DEFAULT_LR[self.optimizer])
            if self.iters is not None and self.epochs is not None:
                raise ValueError("give iters or epochs, not both")
            if self.model == "convnet":
                _check_convnet(self)
                if self.weight_decay or self.dropout or self.batchnorm:
                    raise ValueError("model convnet: the book's SimpleConvNet has no weight "
                                     "decay, dropout or batchnorm")
        except (ValueError, TypeError) as exc:
            # the error names the field; the checks' frames would only hide where it came from
            raise exc.with_traceback(None) from None

    def iter_per_epoch(self, n_train: int) -> float:
        """The course notebook's epoch size: ``max(n_train / batch_size, 1)`` iterations."""
        return max(n_train / self.batch_size, 1)

    def iterations(self, n_train: int) -> int:
        """How many SGD steps this run takes on a training set of ``n_train``."""
        if self.epochs is not None:
            # round first: 0.1 * 600 is 60.000000000000007, which must stay 60
            return math.ceil(round(self.epochs * self.iter_per_epoch(n_train), 9))
        return DEFAULT_ITERS if self.iters is None else self.iters

    def label(self, names: Iterable[str] | None = None) -> str:
        """``"lr=0.01 activation=sigmoid"`` for the fields ``names`` (all of them by default)."""
        if names is None:
            names = field_names()
        return " ".join(f"{name}={format_value(getattr(self, name))}" for name in names)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d


def _check_convnet(config: ExperimentConfig) -> None:
    """What the book's SimpleConvNet takes: one hidden layer, ReLU, a number as init std."""
    if len(config.hidden) != 1:
        raise ValueError(f"model convnet: hidden must be one size (its affine layer), "
                         f"got {format_value(config.hidden)}")
    if config.activation != "relu":
        raise ValueError(f"model convnet: the book's SimpleConvNet uses relu, "
                         f"got activation {config.activation}")
    if isinstance(config.weight_init_std, str):
        raise ValueError(  # noqa: TRY004 - a valid value, not for this model
            f"model convnet: weight_init_std must be a number (the book's SimpleConvNet "
            f"takes one), got {config.weight_init_std}")


@dataclass(frozen=True)
class Field:
    """One row of the table: a field's name, default and ``Option``."""

    name: str
    default: Any
    option: Option

    @property
    def flag(self) -> str:
        return self.option.flag or "--" + self.name.replace("_", "-")


FIELDS: tuple[Field, ...] = tuple(
    Field(f.name, f.default, f.metadata["option"]) for f in dataclasses.fields(ExperimentConfig))


def field_names() -> list[str]:
    return [f.name for f in FIELDS]


def alternatives(name: str, value: Any) -> list:
    """The values an option takes in a comparison: a list gives several, anything else one.

    For a field whose value is itself a tuple (``hidden=(100, 50)``), only a list
    gives alternatives.
    """
    sequence = {f.name: f.option.sequence for f in FIELDS}.get(name, False)
    if sequence:
        return list(value) if isinstance(value, list) else [value]
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    return [value]


def config_from(config: ExperimentConfig | dict | None, options: dict) -> ExperimentConfig:
    """``config`` (a configuration, a dict of fields or None) with ``options`` applied."""
    unknown = [name for name in options if name not in field_names()]
    if unknown:
        raise TypeError(f"unknown option {unknown[0]!r}; options are {', '.join(field_names())}")
    if config is None:
        return ExperimentConfig(**options)
    if isinstance(config, dict):
        unknown = [name for name in config if name not in field_names()]
        if unknown:
            raise TypeError(f"unknown option {unknown[0]!r}; options are "
                            f"{', '.join(field_names())}")
        return ExperimentConfig(**{**config, **options})
    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"expected an ExperimentConfig or a dict, got {type(config).__name__}")
    return dataclasses.replace(config, **options) if options else config


def format_value(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def architecture(config: ExperimentConfig, n_features: int | str, n_classes: int | str) -> str:
    if config.model == "convnet":
        return f"conv 30x5x5 - relu - pool 2x2 - {config.hidden[0]} - relu - {n_classes}"
    sizes = "-".join(str(s) for s in (n_features, *config.hidden, n_classes))
    extras = [config.optimizer] if config.optimizer else []
    extras += [f"weight decay {config.weight_decay:g}"] if config.weight_decay else []
    extras += [f"dropout {config.dropout:g}"] if config.dropout else []
    extras += ["batchnorm"] if config.batchnorm else []
    return " ".join([sizes, config.activation, *extras])
