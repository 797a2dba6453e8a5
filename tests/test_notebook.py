"""minidl in a real notebook: executed through nbclient on an IPython kernel.

What a student sees in Jupyter or Colab: a figure that displays as an image
(not ``<Figure size ...>``), a progress display on by default, per-epoch lines
that read as on a terminal, and short reprs.
"""

import base64
import os
import re
import sys
from pathlib import Path

import pytest

import minidl

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs the test extra "
                               "(pip install -e '.[test]': nbformat, nbclient, ipykernel)")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs nbclient (test extra)")
pytest.importorskip("ipykernel", reason="the notebook test needs ipykernel (test extra)")

PACKAGE_PARENT = Path(minidl.__file__).resolve().parents[1]
EPOCH_LINE = re.compile(r"^epoch +\d+  iter +\d+  train acc 0\.\d{4}  test acc 0\.\d{4}  "
                        r"loss \d+\.\d{4} +\d+\.\d s$")

CELLS = [
    ("from minidl import run_experiment, compare\n"
     "from minidl.plotting import plot_curves\n"
     "from minidl.networks import MultiLayerNet"),
    # the progress default of a notebook: no progress= argument
    "result = run_experiment(dataset='mnist-mini', hidden=10, batch_size=500, iters=45)",
    "plot_curves(result.metrics)",
    "result.history",
    "result.network",
    ("table = compare(dataset='mnist-mini', hidden=10, batch_size=500, iters=5,\n"
     "                lr=[0.1, 0.05], verbose=False, progress=False)\n"
     "table"),
    "import minidl\nminidl.__file__",
]


def _kernel_env(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("CI", "MINIDL_PROGRESS", "MPLBACKEND")}  # a student's notebook
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_PARENT), env.get("PYTHONPATH", "")])
    # the python3 kernel runs "python" from PATH: this interpreter's, as in an activated venv
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MINIDL_OFFLINE"] = "1"
    env["HOME"] = str(tmp_path)  # no user matplotlib or IPython configuration
    return env


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("notebook")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code) for code in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=_kernel_env(tmp_path))
    return nb


def _outputs(nb, k):
    return nb.cells[k].outputs


def _streams(outputs, name):
    return "".join(o.get("text", "") for o in outputs
                   if o.output_type == "stream" and o.name == name)


def test_progress_shows_by_default_in_a_notebook(executed):
    outputs = _outputs(executed, 1)
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json"
               in o.get("data", {})]
    stderr = _streams(outputs, "stderr")
    # a widget where ipywidgets is installed (Colab), tqdm's text on stderr otherwise
    assert widgets or re.search(r"45/45 \[", stderr), (widgets, stderr)
    assert "Traceback" not in stderr and "Warning" not in stderr, stderr


def test_epoch_lines_in_a_notebook(executed):
    lines = _streams(_outputs(executed, 1), "stdout").splitlines()
    # mnist-mini: 10,000 images, batches of 500: evaluations at 0, 20, 40
    assert len(lines) == 3, lines
    for line in lines:
        assert EPOCH_LINE.match(line), line
    assert [int(line.split()[3]) for line in lines] == [0, 20, 40]


def test_a_figure_shows_as_an_image(executed):
    outputs = _outputs(executed, 2)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1, outputs
    png = base64.b64decode(images[0]["data"]["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width >= 800 and height >= 300


def test_short_reprs(executed):
    history = executed.cells[3].outputs[0]["data"]["text/plain"]
    assert history.startswith("History(45 iterations in ") and len(history) < 200, history
    assert "3 evaluations" in history and "test acc 0." in history
    network = executed.cells[4].outputs[0]["data"]["text/plain"]
    assert network == "MultiLayerNet(784-10-10, relu, float64, 7,960 parameters)"
    table = executed.cells[5].outputs[0]["data"]
    assert table["text/markdown"].startswith("| run ") and "lr=0.05" in table["text/markdown"]
    assert table["text/plain"] == "ComparisonTable(2 runs, varied: lr)"


def test_the_kernel_ran_the_minidl_under_test(executed):
    path = executed.cells[6].outputs[0]["data"]["text/plain"].strip("'\"")
    assert Path(path).resolve() == Path(minidl.__file__).resolve()
