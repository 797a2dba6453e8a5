"""The benchmark's own arithmetic (the runs themselves are too slow for tests)."""

import importlib.util
from pathlib import Path

import numpy as np

# by path, as book_common loads the book's code: bench/ is not installed
_spec = importlib.util.spec_from_file_location(
    "bench_stats", Path(__file__).resolve().parents[1] / "bench" / "stats.py")
_stats = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_stats)
float32_speedups = _stats.float32_speedups


def test_float32_speedup_pairs_the_runs_of_each_round():
    cases = [("book", np.float64, "book"), ("loop", np.float64, "loop64"),
             ("loop", np.float32, "loop32"), ("train", np.float64, "train64")]
    # (wall, est, ratio, acc) per round: a slow second round hits both dtypes
    results = {"book": [], "loop64": [(0, 2.0, 0, 0), (0, 8.0, 0, 0), (0, 3.0, 0, 0)],
               "loop32": [(0, 1.0, 0, 0), (0, 5.0, 0, 0), (0, 2.0, 0, 0)],
               "train64": [(0, 1.0, 0, 0)] * 3}
    # rounds: 2.0, 1.6, 1.5 -> median 1.6 (the medians of est alone would give 1.5);
    # train has no float32 runs: no speedup
    assert float32_speedups(cases, results) == [("seed loop", 1.6)]
