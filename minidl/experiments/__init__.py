"""Experiments as function calls: train one configuration, or compare several.

``run_experiment`` is ``minidl train`` and ``compare`` is ``minidl compare``
without the command line, for notebooks::

    from minidl import run_experiment, compare

    result = run_experiment(lr=0.01, iters=2000)    # otherwise the assignment's experiment
    result.history.test_acc                         # per-epoch test accuracy
    table = compare(activation=["relu", "sigmoid"], iters=2000, out="runs/activation")
    print(table.to_markdown())

A run's defaults are the assignment's: MNIST, 784-50-10 ReLU, SGD with lr 0.1,
batches of 100, 10,000 iterations, weights drawn with std 0.01 after
``np.random.seed(1211)``. NumPy's global generator is seeded right before the
network is built, as the course notebook does, so two runs with the same
configuration give the same numbers.

The package, one job per module:

- ``config``: ``ExperimentConfig`` and its field table ``FIELDS``, which the
  command line is built from;
- ``run``: one run (``run_experiment``, ``RunResult``);
- ``compare``: a comparison (``compare``, ``ComparisonTable``);
- ``search``: the book's random hyperparameter search (``search``, ``SearchResult``);
- ``sweep``: the runs of a comparison or a search, one after another;
- ``memory``: whether a network fits in memory, before it is built;
- ``records``: what goes on disk (run folders, ``metrics.json``/``.csv``,
  atomic writes);
- ``plotting``: the curves (``plot_curves``, ``plot_comparison``).

(The function ``compare`` shadows the module of the same name as an attribute
of this package; ``sys.modules["minidl.experiments.compare"]`` is the module.)
"""

from .compare import ComparisonTable, compare, expand_configs
from .config import FIELDS, INIT_NAMES, SEED, ExperimentConfig, parse_hidden
from .records import metrics_json, new_run_dir, write_metrics
from .run import RunResult, format_epoch, run_experiment
from .search import SearchResult, search

__all__ = [
    "FIELDS",
    "INIT_NAMES",
    "SEED",
    "ComparisonTable",
    "ExperimentConfig",
    "RunResult",
    "SearchResult",
    "compare",
    "expand_configs",
    "format_epoch",
    "metrics_json",
    "new_run_dir",
    "parse_hidden",
    "run_experiment",
    "search",
    "write_metrics",
]
