"""What a student reads: figures, progress defaults, reprs, the comparison note, tracebacks.

Runs train on the bundled ``mnist-mini`` for a few dozen iterations.
"""

import io
import traceback

import numpy as np
import pytest

from minidl import training
from minidl.convnets import DeepConvNet, SimpleConvNet
from minidl.datasets import DATASETS
from minidl.experiments import ExperimentConfig, compare, run_experiment
from minidl.experiments import run as run_module
from minidl.experiments.plotting import (
    plot_comparison,
    plot_curves,
    running_mean,
    zoomed_limits,
)
from minidl.networks import MultiLayerNet, ThreeLayerNet, TwoLayerNet

MINI = DATASETS["mnist-mini"]
BATCH = MINI.n_train // 20
QUICK = {"dataset": "mnist-mini", "hidden": (10,), "batch_size": BATCH, "iters": 30}


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIDL_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


def _metrics(n_iter=100, accs=((0.1, 0.1), (0.90, 0.88), (0.95, 0.91), (0.97, 0.92))):
    ipe = 30
    rows = [{"epoch": k, "iteration": k * ipe, "train_acc": a, "test_acc": b,
             "loss": 1.0, "elapsed": k} for k, (a, b) in enumerate(accs)]
    return {"config": {"dataset": "x", "lr": 0.1, "batch_size": 1}, "epochs": rows,
            "iteration_loss": list(np.linspace(2.3, 0.1, n_iter)), "iter_per_epoch": ipe,
            "status": "finished",
            "final": {"iterations": n_iter, "train_acc": 0.975, "test_acc": 0.925}}


# -- figures -----------------------------------------------------------------------------------


def test_figures_display_as_png_in_notebooks():
    for fig in (plot_curves(_metrics()), plot_comparison([_metrics()] * 2, ["a", "b"])):
        png = fig._repr_png_()  # what IPython's display calls
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000


def test_running_mean_is_centred_and_reaches_the_last_iteration():
    y = np.arange(50, dtype=float)
    m = running_mean(y, 11)
    # a line's centred mean is the line itself: no lag of half a window
    np.testing.assert_allclose(m, y)
    assert len(m) == len(y) and np.isfinite(m[-1])
    noisy = np.array([0.0, 10.0] * 20)
    m = running_mean(noisy, 9)
    np.testing.assert_allclose(m[4:-4], [5 + 5 * (1 if i % 2 else -1) / 9
                                         for i in range(4, 36)])
    # NaN (a diverged loss) is left out of the mean, not spread over the window
    y = np.ones(20)
    y[5] = np.nan
    assert np.allclose(running_mean(y, 5), 1.0)


def test_accuracy_axis_is_zoomed_on_the_later_evaluations():
    fig = plot_curves(_metrics())
    ax = fig.axes[1]
    lo, hi = ax.get_ylim()
    assert 0.8 < lo < 0.88 and 0.975 < hi <= 1.0  # epoch 0's 0.1 would flatten the gap
    assert "epoch 0 at 0.10" in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "final test 0.9250" in labels and "final train 0.9750" in labels
    assert zoomed_limits([0.5], []) == (pytest.approx(0.495), pytest.approx(0.505))


def test_loss_curve_covers_every_iteration():
    fig = plot_curves(_metrics(n_iter=333))
    lines = fig.axes[0].get_lines()
    assert [len(line.get_xdata()) for line in lines] == [333, 333]
    assert lines[1].get_xdata()[-1] == 332
    assert "centred" in lines[1].get_label()


def test_zoom_and_final_in_the_comparison_plot():
    fig = plot_comparison([_metrics(), _metrics()], ["a", "b"])
    lo, _ = fig.axes[1].get_ylim()
    assert lo > 0.8


# -- progress ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("env, expected", [
    ({"MINIDL_PROGRESS": "1", "CI": "true"}, True),
    ({"MINIDL_PROGRESS": "0"}, False),
    ({"CI": "true"}, False),
    ({"CI": "1"}, False),
    ({}, False),  # stderr is not a terminal under pytest
])
def test_progress_default(monkeypatch, env, expected):
    for name in ("MINIDL_PROGRESS", "CI"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert run_module.progress_default() is expected


def test_progress_is_on_for_a_terminal_and_off_under_ci(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("MINIDL_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr("sys.stderr", Terminal())
    assert run_module.progress_default() is True
    monkeypatch.setenv("CI", "true")
    assert run_module.progress_default() is False


def test_progress_bar_is_written_when_asked(capsys):
    run_experiment(**{**QUICK, "iters": 5}, progress=True, verbose=False)
    assert "/5 [" in capsys.readouterr().err


# -- reprs ----------------------------------------------------------------------------------------------


def test_history_repr_is_short():
    history = training.History(train_loss=[2.3] * 10000, epochs=list(range(17)),
                               train_acc=[0.9] * 17, test_acc=[0.8765] * 17, iterations=10000,
                               seconds=25.04)
    text = repr(history)
    assert text == ("History(10000 iterations in 25.0 s, 17 evaluations, last train acc 0.9000, "
                    "test acc 0.8765, last loss 2.3)")
    assert repr(training.History()) == "History(0 iterations in 0.0 s, 0 evaluations)"


def test_network_reprs():
    np.random.seed(0)
    assert repr(TwoLayerNet(784, 50, 10)) == "TwoLayerNet(784-50-10, relu, float64, 39,760 parameters)"
    assert repr(ThreeLayerNet(4, 3, 2, 2, activation="sigmoid", dtype=np.float32)) == (
        "ThreeLayerNet(4-3-2-2, sigmoid, float32, 29 parameters)")
    net = MultiLayerNet(784, [100, 50], 10, weight_decay_lambda=0.1)
    assert repr(net) == ("MultiLayerNet(784-100-50-10, relu, float64, 84,060 parameters, "
                         "weight decay 0.1)")
    assert repr(SimpleConvNet(dtype=np.float32)) == (
        "SimpleConvNet(1x28x28, filters 30 5x5, hidden 100, 10 classes, float32, "
        "433,890 parameters)")
    assert repr(DeepConvNet()).startswith("DeepConvNet(1x28x28, filters 16 3x3, 16 3x3, 32 3x3, ")


def test_gradient_check_report_puts_the_reason_on_the_line():
    from minidl.gradient import gradient_check

    np.random.seed(3)
    net = TwoLayerNet(30, 20, 4)
    x = np.random.rand(3, 30) - 0.5
    # hidden unit 0 exactly at 0 for every image: p + h and p - h straddle the kink
    net.params["W1"][:, 0] = 0
    report = gradient_check(net, x, np.array([0, 1, 2]))
    assert report.ok and report.n_kink > 0
    lines = {line.split()[0]: line for line in str(report).splitlines()
             if line.startswith("  ") and line.split()[0] in net.params}
    for row in report.rows:
        entries = "1 entry" if row.n_kink == 1 else f"{row.n_kink} entries"
        expected = f"ok (ReLU kinks excluded: {entries})" if row.n_kink else "ok"
        assert lines[row.key].endswith(expected), lines[row.key]
        assert f"{row.max_rel_diff:10.2e}" in lines[row.key]  # on the same line as max rel
        # the book's per-parameter line, as ch05/gradient_check.py prints it
        assert f"    {row.key}:{row.mean_abs_diff!s}" in str(report).splitlines()
    assert repr(report).startswith("GradientCheckReport(TwoLayerNet 30-20-4 (relu), batch of 3: ok")
    assert "| W1 |" in report._repr_markdown_()


# -- the comparison's "best" and its note --------------------------------------------------------------


def test_best_includes_the_final_evaluation_and_the_note_says_so():
    # 30 steps: evaluations at 0 and 20; the final network is better than either
    table = compare(**QUICK, lr=[0.1, 0.05], progress=False, verbose=False)
    for row, result in zip(table.rows, table.results):
        assert row["best_test_acc"] >= row["final_test_acc"]
        assert row["best_test_acc"] == max(*result.history.test_acc, result.final_test_acc)
    assert any(row["best_epoch"] == "final" for row in table.rows)
    md = table.to_markdown()
    assert md.rstrip().endswith(table.note) and "the final one" in table.note
    assert "| final " in md


# -- tracebacks: the Python API validates at its entry ------------------------------------------------


def _frames(exc_info) -> int:
    return len(traceback.extract_tb(exc_info.tb))


@pytest.mark.parametrize("call", [
    lambda: run_experiment(lr=-1),
    lambda: run_experiment(ExperimentConfig(), lr="x"),
    lambda: run_experiment({"hidden": "10,x"}),
    lambda: run_experiment(**{**QUICK, "batch_size": MINI.n_train + 1}, progress=False),
    lambda: compare(lr=[0.1, -1]),
    lambda: compare(**{**QUICK, "batch_size": [10, MINI.n_train + 1]}, progress=False),
])
def test_api_errors_come_from_the_entry(call):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    # the test's lambda, the entry point, and nothing from dataclass or check internals
    assert _frames(info) <= 3, traceback.format_tb(info.tb)


def test_config_errors_stop_at_the_config():
    with pytest.raises(ValueError, match="lr") as info:
        ExperimentConfig(lr=0)
    assert _frames(info) <= 3  # the caller, the dataclass's __init__, __post_init__
