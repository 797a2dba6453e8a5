"""``import minidl.book``: the book's ``common.*``/``dataset.*`` import paths resolve to minidl."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minidl.datasets
import minidl.functions
import minidl.gradient
import minidl.layers
import minidl.networks
import minidl.optimizer
import minidl.trainer
import minidl.util

HERE = Path(__file__).parent
BENCH = HERE.parent / "bench"
NUMBER = re.compile(r"-?\d+\.\d*(?:e-?\d+)?|-?\d+(?:e-?\d+)?|nan")

# every name the book's chapter 3-8 scripts and common/ modules import from these modules
BOOK_NAMES = {
    "common.functions": ["identity_function", "step_function", "sigmoid", "sigmoid_grad",
                         "relu", "relu_grad", "softmax", "sum_squared_error",
                         "cross_entropy_error", "softmax_loss"],
    "common.gradient": ["numerical_gradient", "numerical_gradient_2d", "_numerical_gradient_1d"],
    "common.layers": ["Relu", "Sigmoid", "Affine", "SoftmaxWithLoss", "Dropout",
                      "BatchNormalization", "Convolution", "Pooling"],
    "common.optimizer": ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"],
    "common.trainer": ["Trainer"],
    "common.util": ["smooth_curve", "shuffle_dataset", "conv_output_size", "im2col", "col2im"],
    "common.multi_layer_net": ["MultiLayerNet"],
    "common.multi_layer_net_extend": ["MultiLayerNetExtend"],
    "dataset.mnist": ["load_mnist"],
    "dataset.fashion_mnist": ["load_fashion_mnist"],
    "dataset.cifar_10": ["load_cifar_10"],
}
HOME = {"common.functions": minidl.functions, "common.gradient": minidl.gradient,
        "common.layers": minidl.layers, "common.optimizer": minidl.optimizer,
        "common.trainer": minidl.trainer, "common.util": minidl.util,
        "common.multi_layer_net": minidl.networks,
        "common.multi_layer_net_extend": minidl.networks}


def run(args, cwd, env_extra=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH), str(HERE)]),
           "MPLBACKEND": "Agg", **(env_extra or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.fixture
def hook():
    from minidl import book

    book.install()
    yield book
    book.uninstall()


def test_every_book_module_and_name_resolves_to_minidl(hook):
    import importlib

    for name, attrs in BOOK_NAMES.items():
        module = importlib.import_module(name)
        if name in HOME:
            assert module is HOME[name]
        for attr in attrs:
            value = getattr(module, attr)
            home = HOME.get(name, minidl.datasets)
            assert value is getattr(home, attr), f"{name}.{attr}"
    import common
    import dataset

    assert common.layers is minidl.layers and dataset.mnist.load_mnist is minidl.datasets.load_mnist
    # minidl's modules keep their own identity (reload and relative imports rely on it)
    assert minidl.layers.__spec__.name == "minidl.layers"
    assert minidl.networks.__name__ == "minidl.networks"


def test_star_imports_give_what_the_books_scripts_use(hook):
    scope = {}
    exec("from common.optimizer import *", scope)  # noqa: S102
    assert scope["np"] is np and scope["Adam"] is minidl.optimizer.Adam  # optimizer_compare_mnist
    scope = {}
    exec("from common.layers import *", scope)  # noqa: S102
    assert {"Affine", "Relu", "SoftmaxWithLoss", "Dropout", "BatchNormalization",
            "softmax", "cross_entropy_error"} <= set(scope)
    scope = {}
    exec("from common.functions import *", scope)  # noqa: S102
    assert {"sigmoid", "sigmoid_grad", "softmax", "cross_entropy_error"} <= set(scope)


def test_modules_minidl_does_not_provide_say_so(hook):
    with pytest.raises(ModuleNotFoundError, match="common.np_utils is not one of the book's "
                                                  "modules that minidl provides"):
        import common.np_utils  # noqa: F401
    with pytest.raises(ImportError, match="dataset.lena is not one of"):
        import dataset.lena  # noqa: F401
    with pytest.raises(ImportError, match="cannot import name 'load_mnist'"):
        from dataset.fashion_mnist import load_mnist  # noqa: F401  (no MNIST under that name)
    import json  # everything else is left alone

    assert json.dumps([1]) == "[1]"


def test_install_is_idempotent_and_uninstall_removes_it(hook):
    hook.install()
    hook.install()
    assert sum(getattr(f, "_minidl_book", False) is True for f in sys.meta_path) == 1
    assert getattr(sys.meta_path[0], "_minidl_book", False)
    import common.trainer

    hook.uninstall()
    assert not hook.installed()
    assert not any(m == "common" or m.startswith(("common.", "dataset")) for m in sys.modules)
    assert minidl.trainer.__spec__.name == "minidl.trainer"
    with pytest.raises(ModuleNotFoundError):
        import common.trainer  # noqa: F401


def test_plain_import_minidl_installs_nothing(tmp_path):
    code = ("import sys, minidl, minidl.networks, minidl.trainer, minidl.optimizer, "
            "minidl.layers, minidl.datasets\n"
            "assert not any(getattr(f, '_minidl_book', False) for f in sys.meta_path)\n"
            "try:\n    import common\nexcept ModuleNotFoundError:\n    print('no common')\n")
    out = run(["-c", code], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "no common"


def test_a_students_own_packages(tmp_path):
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "__init__.py").write_text("")
    (tmp_path / "common" / "layers.py").write_text("MINE = True\n")
    (tmp_path / "mylib").mkdir()
    (tmp_path / "mylib" / "__init__.py").write_text("VALUE = 42\n")
    check = "import common.layers, mylib; print(getattr(common.layers, 'MINE', False), mylib.VALUE)"
    without = run(["-c", check], cwd=tmp_path)
    assert without.stdout.split() == ["True", "42"], without.stderr  # untouched
    with_hook = run(["-c", "import minidl.book; " + check +
                     "; import minidl.layers; print(common.layers is minidl.layers)"],
                    cwd=tmp_path)
    assert with_hook.stdout.split() == ["False", "42", "True"], with_hook.stderr
    # imported before minidl.book: left as it was, with a warning saying so
    late = run(["-c", "import common.layers; import minidl.book; print(common.layers.MINE)"],
               cwd=tmp_path)
    assert late.stdout.split() == ["True"]
    assert "were imported before minidl.book" in late.stderr


def test_launcher_runs_a_script_as_python_does(tmp_path):
    folder = tmp_path / "ch99"
    folder.mkdir()
    (folder / "helper.py").write_text("WHERE = 'next to the script'\n")
    script = folder / "show.py"
    script.write_text(
        "import sys, os\n"
        "from helper import WHERE\n"
        "from common.layers import Affine\n"
        "print(__name__, sys.argv, WHERE, Affine.__module__, os.path.isabs(__file__))\n"
        "print(sys.path[0] == os.path.dirname(os.path.realpath(__file__)))\n"
        "if '--fail' in sys.argv:\n    sys.exit(3)\n")
    out = run(["-m", "minidl.book", "ch99/show.py", "a", "--b"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "__main__ ['ch99/show.py', 'a', '--b'] next to the script minidl.layers True", "True"]
    assert run(["-m", "minidl.book", "ch99/show.py", "--fail"], cwd=tmp_path).returncode == 3
    missing = run(["-m", "minidl.book", "nope.py"], cwd=tmp_path)
    assert missing.returncode == 2 and "can't open file 'nope.py'" in missing.stderr
    usage = run(["-m", "minidl.book"], cwd=tmp_path)
    assert usage.returncode == 2 and "usage: python -m minidl.book script.py" in usage.stderr


BOOK_COMMON = {  # a transcription of the book's common/, from bench/book_numpy.py and book_ch6.py
    "__init__.py": "",
    "functions.py": "from book_numpy import sigmoid, softmax, cross_entropy_error\n"
                    "from book_ch6 import sum_squared_error\n",
    "layers.py": "import numpy as np\nfrom common.functions import *\n"
                 "from book_numpy import Affine, Relu, Sigmoid, SoftmaxWithLoss\n"
                 "from book_ch6 import Dropout, BatchNormalization\n",
    "gradient.py": "from book_numpy import numerical_gradient\n"
                   "from book_ch6 import numerical_gradient_2d\n",
    "optimizer.py": "import numpy as np\n"
                    "from book_ch6 import SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam\n",
    "trainer.py": "from book_ch6 import Trainer\n",
    "util.py": "from book_ch6 import smooth_curve, shuffle_dataset\n",
    "multi_layer_net.py": "from book_ch6 import MultiLayerNet\n",
    "multi_layer_net_extend.py": "from book_ch6 import MultiLayerNetExtend\n",
}


def numbers_agree(ours, book, rtol=1e-7):
    ours = [line for line in ours.splitlines() if not line.startswith("networks from")]
    book = [line for line in book.splitlines() if not line.startswith("networks from")]
    assert len(ours) == len(book)
    for a, b in zip(ours, book):
        assert NUMBER.sub("#", a) == NUMBER.sub("#", b), (a, b)
        np.testing.assert_allclose([float(v) for v in NUMBER.findall(a)],
                                   [float(v) for v in NUMBER.findall(b)], rtol=rtol,
                                   atol=1e-12, err_msg=f"{a!r} vs {b!r}")


def test_a_book_style_chapter_6_script_runs_unchanged_with_the_books_results(tmp_path):
    # the book's layout: common/ beside the chapter folders, the script in ch06/
    common = tmp_path / "common"
    common.mkdir()
    for name, text in BOOK_COMMON.items():
        (common / name).write_text(text)
    ch06 = tmp_path / "ch06"
    ch06.mkdir()
    shutil.copy(HERE / "book_scripts" / "ch06_style.py", ch06 / "script.py")
    source = (ch06 / "script.py").read_text()
    (ch06 / "script_with_import.py").write_text("import minidl.book\n" + source)

    book = run(["script.py"], cwd=ch06)  # the book's own common/
    assert book.returncode == 0, book.stderr
    assert "networks from book_ch6" in book.stdout
    launched = run(["-m", "minidl.book", "script.py"], cwd=ch06)
    assert launched.returncode == 0, launched.stderr
    assert "networks from minidl.networks" in launched.stdout
    imported = run(["script_with_import.py"], cwd=ch06)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout == launched.stdout
    assert launched.stdout.count("train loss:") == 15
    assert "=============== Final Test Accuracy ===============" in launched.stdout
    numbers_agree(launched.stdout, book.stdout)
