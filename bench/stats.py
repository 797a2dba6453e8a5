"""Arithmetic on the benchmark's runs (no imports beyond NumPy: the tests load it)."""

import numpy as np


def float32_speedups(cases, results):
    """(name, median over rounds of float64 est / float32 est) for each kind run in both
    dtypes: the two runs of a round share the machine's mood of that moment."""
    out = []
    for kind, name in (("loop", "course loop"), ("train", "minidl.train"), ("torch", "PyTorch")):
        labels = {dtype: label for k, dtype, label in cases if k == kind}
        if len(labels) == 2:
            pairs = zip(results[labels[np.float64]], results[labels[np.float32]])
            out.append((name, float(np.median([a[1] / b[1] for a, b in pairs]))))
    return out


def robust_estimate(wall, marks, iters, per_epoch):
    """The median epoch (``per_epoch`` iterations and an evaluation) times
    ``iters / per_epoch``: a neighbour's burst spoils one epoch, not the figure.

    ``marks`` are the start and the time after each evaluation; the first span
    (one iteration and the first evaluation) is dropped. With fewer than three
    whole epochs, the wall time."""
    spans = np.diff(marks)[1:]
    if len(spans) < 3:
        return wall
    return float(np.median(spans)) * iters / per_epoch


def per_step_after_first_eval(wall, marks, iters):
    """Seconds per step of the iterations after the first evaluation (iteration 0's),
    for a run of at most one epoch: ``marks`` as for ``robust_estimate``, the run
    ending ``wall`` seconds after ``marks[0]``."""
    if len(marks) != 2 or iters < 2:
        raise ValueError("need a run of 2 or more iterations with a single evaluation")
    return (marks[0] + wall - marks[1]) / (iters - 1)


def median_ratio(numerators, denominators):
    """Median over rounds of numerator / denominator of the same round."""
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError("need the same number (> 0) of both")
    return float(np.median([a / b for a, b in zip(numerators, denominators)]))


def gemm_flops(sizes, n_train, n_test, batch=100):
    """(flops per step, flops per evaluation) of the dense matrix products the course's
    loop needs: per step the forward pass, the weight gradients, the input gradients
    of the layers above the first, and the loss's forward pass after the update; per
    evaluation a forward pass over the training and the test set."""
    layer = [2 * sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1)]
    per_step = batch * (3 * sum(layer) + sum(layer[1:]))
    per_eval = (n_train + n_test) * sum(layer)
    return per_step, per_eval


def gemm_floor(sizes, iters, n_train, n_test, gflops, batch=100, per_epoch=None):
    """Seconds the loop's products alone take at ``gflops`` = (GFLOP/s on a batch's
    product, GFLOP/s on an evaluation's): ``iters`` steps and ``iters / per_epoch``
    evaluations, as ``robust_estimate`` counts them."""
    small, big = gflops
    per_epoch = per_epoch or max(n_train / batch, 1)
    per_step, per_eval = gemm_flops(sizes, n_train, n_test, batch)
    return iters * per_step / (small * 1e9) + iters / per_epoch * per_eval / (big * 1e9)


def markdown_table(header, rows):
    """A GitHub markdown table: ``header`` a list of strings, ``rows`` lists of strings."""
    if any(len(r) != len(header) for r in rows):
        raise ValueError("every row needs one cell per column")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
