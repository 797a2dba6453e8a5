"""The benchmark suite: its arithmetic, its synthetic dataset, and one tiny run end to end.

No timing is asserted: the numbers of a tiny run on a shared machine mean nothing.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is not installed; appended, so that the installed
    sys.path.append(str(ROOT))  # minidl stays first

from bench import contention, data, stats
from bench import run as bench_run


# -- stats ---------------------------------------------------------------------------------
def test_float32_speedup_pairs_the_runs_of_each_round():
    cases = [("book", np.float64, "book"), ("loop", np.float64, "loop64"),
             ("loop", np.float32, "loop32"), ("train", np.float64, "train64")]
    # (wall, est, ratio, acc) per round: a slow second round hits both dtypes
    results = {"book": [], "loop64": [(0, 2.0, 0, 0), (0, 8.0, 0, 0), (0, 3.0, 0, 0)],
               "loop32": [(0, 1.0, 0, 0), (0, 5.0, 0, 0), (0, 2.0, 0, 0)],
               "train64": [(0, 1.0, 0, 0)] * 3}
    # rounds: 2.0, 1.6, 1.5 -> median 1.6 (the medians of est alone would give 1.5);
    # train has no float32 runs: no speedup
    assert stats.float32_speedups(cases, results) == [("course loop", 1.6)]


def test_robust_estimate_is_the_median_epoch_scaled():
    # start, first evaluation (dropped), then epochs of 2, 9 (a burst), 3 seconds
    marks = [0.0, 0.5, 2.5, 11.5, 14.5]
    assert stats.robust_estimate(99.0, marks, iters=3000, per_epoch=600) == 3.0 * 5
    # fewer than three whole epochs: the wall time
    assert stats.robust_estimate(99.0, marks[:4], iters=3000, per_epoch=600) == 99.0
    # one epoch from 0.5: its evaluation done at 1.0, the run 2.0 s long, 5 steps after it
    assert stats.per_step_after_first_eval(2.0, [0.5, 1.0], 6) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        stats.per_step_after_first_eval(2.0, marks, 6)


def test_median_ratio_pairs_rounds():
    assert stats.median_ratio([2.0, 10.0, 3.0], [1.0, 2.0, 3.0]) == 2.0
    with pytest.raises(ValueError):
        stats.median_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        stats.median_ratio([], [])


def test_gemm_flops_count_the_loops_products():
    # 784-50-10: layers of 2*784*50 and 2*50*10 flops per image
    l1, l2 = 2 * 784 * 50, 2 * 50 * 10
    per_step, per_eval = stats.gemm_flops([784, 50, 10], 60000, 10000)
    # forward, weight gradients and the loss's forward for both, the input gradient of
    # the second only, for a batch of 100
    assert per_step == 100 * (3 * (l1 + l2) + l2)
    assert per_eval == 70000 * (l1 + l2)
    # at 1 GFLOP/s for both: 600 steps and one evaluation per epoch of 600
    floor = stats.gemm_floor([784, 50, 10], 1200, 60000, 10000, (1.0, 1.0))
    assert floor == pytest.approx((1200 * per_step + 2 * per_eval) / 1e9)
    # the input width counts: 1024 pixels, 50,000 training images (epochs of 500)
    per_step_c, per_eval_c = stats.gemm_flops([1024, 50, 10], 50000, 10000)
    assert per_eval_c == 60000 * (2 * 1024 * 50 + l2)
    assert stats.gemm_floor([1024, 50, 10], 1000, 50000, 10000, (2.0, 4.0)) == pytest.approx(
        1000 * per_step_c / 2e9 + 2 * per_eval_c / 4e9)


def test_markdown_table():
    assert stats.markdown_table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
    with pytest.raises(ValueError):
        stats.markdown_table(["a", "b"], [["1"]])


# -- the synthetic CIFAR-10-gray stand-in --------------------------------------------------
def test_synthetic_cifar_shape_dtype_and_determinism():
    (x, t), (xt, tt) = data.synthetic_cifar_gray(3000, 500)
    assert x.shape == (3000, 1024) and xt.shape == (500, 1024)
    assert x.dtype == np.uint8 and t.shape == (3000,) and tt.shape == (500,)
    assert t.min() >= 0 and t.max() <= 9
    (x2, t2), (xt2, tt2) = data.synthetic_cifar_gray(3000, 500)
    assert np.array_equal(x, x2) and np.array_equal(t, t2)
    assert np.array_equal(xt, xt2) and np.array_equal(tt, tt2)
    (x3, _), _ = data.synthetic_cifar_gray(3000, 500, seed=data.CIFAR_SEED + 1)
    assert not np.array_equal(x, x3)
    # dense, as CIFAR-10: about one pixel in 256 is zero, and all values occur
    assert data.zero_fraction(x) < 0.01
    assert len(np.unique(x)) == 256
    # every class, none dominating
    counts = np.bincount(t, minlength=10)
    assert counts.min() > 0.03 * len(t) and counts.max() < 0.3 * len(t)


def test_synthetic_cifar_labels_are_learnable():
    # a least-squares linear fit on the training images predicts the test labels far
    # above chance: accuracy measures learning, not luck
    (x, t), (xt, tt) = data.synthetic_cifar_gray(4000, 1000)
    a = np.c_[x / 255.0, np.ones(len(x))]
    w, *_ = np.linalg.lstsq(a, np.eye(10)[t], rcond=None)
    pred = np.argmax(np.c_[xt / 255.0, np.ones(len(xt))] @ w, axis=1)
    assert np.mean(pred == tt) > 0.3  # chance: 0.1


def test_load_gives_what_the_course_loop_gets():
    x, t, _, _ = data.load("cifar", n_train=200, n_test=50)
    assert x.dtype == np.float32 and x.shape == (200, 1024)
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert t.dtype == np.float32 and t.shape == (200, 10) and np.all(t.sum(axis=1) == 1)
    (xr, tr), _ = data.synthetic_cifar_gray(200, 50)
    assert np.array_equal(x, xr.astype(np.float32) / np.float32(255))
    assert np.array_equal(t.argmax(axis=1), tr)
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("cifar-100")


# -- the contention row's machinery --------------------------------------------------------
def test_thread_env(monkeypatch):
    monkeypatch.setenv("MINIDL_NUM_THREADS", "2")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    default = contention.thread_env(single=False)
    assert not set(contention.THREAD_VARS) & set(default)
    single = contention.thread_env(single=True)
    assert all(single[v] == "1" for v in contention.THREAD_VARS)


def test_busy_neighbour_is_stopped():
    with contention.busy_neighbour() as proc:
        assert proc.poll() is None
    assert proc.poll() is not None
    with pytest.raises(KeyError), contention.busy_neighbour() as proc:
        raise KeyError  # stopped on an error too
    assert proc.poll() is not None
    with contention.busy_neighbour(active=False) as none:
        assert none is None


# -- the whole suite, tiny -----------------------------------------------------------------
def test_suite_runs_end_to_end(capsys):
    results, cont = bench_run.main([
        "--quick", "--datasets", "cifar", "--n-train", "400", "--n-test", "100",
        "--iters", "20", "--no-torch", "--contention", "cifar", "--contention-loops", "loop"])
    out = capsys.readouterr().out
    assert "minidl benchmark, " in out and " UTC" in out and "CPUs" in out  # date, machine
    labels = ["book NumPy (baseline)", "course loop, minidl network", "minidl.train",
              "minidl.train, float32"]
    assert list(results) == [("cifar", "main")]
    rows = results["cifar", "main"]
    assert list(rows) == labels
    for label in labels:
        assert f"CIFAR-10 gray (synthetic) 1024-50-10 {label} " in out
        assert set(rows[label]) == {"kind", "dtype", "wall", "est", "ratio", "acc",
                                    "d_images", "floor", "floor_ratio"}
        assert rows[label]["floor"] > 0
    assert rows["book NumPy (baseline)"]["ratio"] == 1.0
    # float64 is the book's arithmetic on the same batches: the same accuracy
    assert all(r["d_images"] == 0 for r in rows.values() if r["dtype"] == "float64")
    assert 0.0 <= rows["minidl.train, float32"]["acc"] <= 1.0
    # the contention row: busy and idle, default and one thread
    busy, idle = cont["cifar", "loop"]["busy"], cont["cifar", "loop"]["idle"]
    assert len(busy) == len(idle) == 3 and min(busy + idle) > 0
    assert "Contention" in out
    # the markdown summary: a column per dataset, a row per loop
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0] == "| loop | CIFAR-10 gray (synthetic) (0% zeros) |"
    names = [line.split(" | ")[0][2:] for line in table[2:]]
    assert names == ["the book's code (est s)",
                     "the course loop on minidl's networks (float64)",
                     "`minidl.train` float64", "`minidl.train` float32",
                     "matrix products alone (GEMM floor) float64 / float32",
                     ("course loop, minidl network: default / 1 thread per step, busy neighbour "
                      "(idle)")]
    assert all(line.count("|") == 3 for line in table)


def test_suite_refuses_unknown_names():
    with pytest.raises(SystemExit):
        bench_run.main(["--datasets", "imagenet"])
    with pytest.raises(SystemExit):
        bench_run.main(["--mnist-groups", "Q9"])
