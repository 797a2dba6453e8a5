"""The book's own chapter 3 and 6 scripts, unchanged, on minidl (``python -m minidl.book``)
and on a transcription of the book's ``common/``: from the same NumPy seed they print the same.

The scripts are the book's files (``book_scripts/oreilly``, see its README); MNIST is replaced
by small random images in its format (the tests need no download), read on the book's side by
a transcription of the book's ``dataset/mnist.py`` and on minidl's by ``minidl.datasets``.
"""

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from _datasets_helpers import small_idx_arrays, write_idx
from test_book_hook import BOOK_COMMON, numbers_agree, run

HERE = Path(__file__).parent
SCRIPTS = HERE / "book_scripts" / "oreilly"

# The book's dataset/mnist.py as it reads its files (its download and pickle cache left out):
# the same arrays, dtypes and conversions.
BOOK_MNIST = '''
import gzip, os
import numpy as np
dataset_dir = os.path.dirname(os.path.abspath(__file__))
key_file = {'train_img': 'train-images-idx3-ubyte.gz', 'train_label': 'train-labels-idx1-ubyte.gz',
            'test_img': 't10k-images-idx3-ubyte.gz', 'test_label': 't10k-labels-idx1-ubyte.gz'}

def _load(file_name, offset):
    with gzip.open(dataset_dir + "/" + file_name, 'rb') as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)

def _change_one_hot_label(X):
    T = np.zeros((X.size, 10))
    for idx, row in enumerate(T):
        row[X[idx]] = 1
    return T

def load_mnist(normalize=True, flatten=True, one_hot_label=False):
    dataset = {key: _load(name, 16 if key.endswith('img') else 8) for key, name in key_file.items()}
    for key in ('train_img', 'test_img'):
        dataset[key] = dataset[key].reshape(-1, 784)
    if normalize:
        for key in ('train_img', 'test_img'):
            dataset[key] = dataset[key].astype(np.float32)
            dataset[key] /= 255.0
    if one_hot_label:
        dataset['train_label'] = _change_one_hot_label(dataset['train_label'])
        dataset['test_label'] = _change_one_hot_label(dataset['test_label'])
    if not flatten:
        for key in ('train_img', 'test_img'):
            dataset[key] = dataset[key].reshape(-1, 1, 28, 28)
    return (dataset['train_img'], dataset['train_label']), (dataset['test_img'], dataset['test_label'])
'''

# Seeds NumPy, then runs the script as `python script.py` would (book) or through minidl.book's
# launcher (minidl); minidl's checksums of the real MNIST files are dropped for the small ones.
RUNNER = '''
import os, runpy, sys
import numpy as np
seed, side, script = int(sys.argv[1]), sys.argv[2], sys.argv[3]
np.random.seed(seed)
if side == "minidl":
    from minidl.datasets import _registry
    for key in [k for k in _registry.CHECKSUMS if k.startswith("mnist/")]:
        del _registry.CHECKSUMS[key]
    from minidl.book.__main__ import main
    sys.exit(main([script]))
sys.argv = [script]
sys.path[0] = os.path.dirname(os.path.realpath(script))
runpy.run_path(script, run_name="__main__")
'''


# small products: BLAS threads would only wait for each other on a busy machine
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def book_tree(tmp_path_factory):
    """The book's layout: chXX/ with the scripts, common/ (transcribed), dataset/mnist.py
    reading small MNIST files, and the same files in a minidl data folder."""
    root = tmp_path_factory.mktemp("book")
    for script in SCRIPTS.glob("ch*/*.py.txt"):
        folder = root / script.parent.name
        folder.mkdir(exist_ok=True)
        shutil.copyfile(script, folder / script.name[:-len(".txt")])
    (root / "common").mkdir()
    for name, text in BOOK_COMMON.items():
        (root / "common" / name).write_text(text)
    (root / "dataset").mkdir()
    (root / "dataset" / "__init__.py").write_text("")
    (root / "dataset" / "mnist.py").write_text(BOOK_MNIST)
    # 100 training images: the ch06 scripts' epochs are one batch of 100 (300 on MNIST)
    arrays = small_idx_arrays(seed=3, n_train=100, n_test=30)
    write_idx(root / "dataset", arrays, gz=True)
    write_idx(root / "data" / "mnist", arrays, gz=True)
    # ch03's sample_weight.pkl: a dict of float32 arrays as the book's (784-50-100-10)
    rng = np.random.default_rng(0)
    weights = {}
    for i, (m, n) in enumerate([(784, 50), (50, 100), (100, 10)], start=1):
        weights[f"W{i}"] = rng.normal(0, 0.1, (m, n)).astype(np.float32)
        weights[f"b{i}"] = rng.normal(0, 0.1, n).astype(np.float32)
    with open(root / "ch03" / "sample_weight.pkl", "wb") as f:
        pickle.dump(weights, f, -1)
    (root / "run_seeded.py").write_text(RUNNER)
    return root


def run_both(root, chapter, script, seed=0):
    env = {"MINIDL_DATA_DIR": str(root / "data"), "XDG_CACHE_HOME": str(root / "cache"),
           "MINIDL_OFFLINE": "1", **ONE_THREAD}
    outs = {}
    for side in ("book", "minidl"):
        out = run([str(root / "run_seeded.py"), str(seed), side, script], cwd=root / chapter,
                  env_extra=env)
        assert out.returncode == 0, f"{side}: {out.stderr}"
        outs[side] = out.stdout
    return outs["book"], outs["minidl"]


def test_the_scripts_are_the_books_files():
    names = sorted(str(p.relative_to(SCRIPTS)) for p in SCRIPTS.glob("ch*/*.py.txt"))
    assert names == ["ch03/neuralnet_mnist.py.txt", "ch03/neuralnet_mnist_batch.py.txt",
                     "ch06/overfit_dropout.py.txt", "ch06/overfit_weight_decay.py.txt"]
    for path in SCRIPTS.glob("ch*/*.py.txt"):
        text = path.read_text(encoding="utf-8")
        assert "sys.path.append(os.pardir)" in text and "minidl" not in text


@pytest.mark.parametrize("script", ["neuralnet_mnist.py", "neuralnet_mnist_batch.py"])
def test_ch03_inference_on_the_books_pickle(book_tree, script):
    book, ours = run_both(book_tree, "ch03", script)
    assert book.startswith("Accuracy:") and ours == book


def test_ch03_pickle_asking_for_code_is_refused_under_the_launcher(book_tree, tmp_path):
    ch03 = tmp_path / "ch03"
    shutil.copytree(book_tree / "ch03", ch03)
    for name in ("common", "dataset", "data", "run_seeded.py"):
        (tmp_path / name).symlink_to(book_tree / name)
    (ch03 / "sample_weight.pkl").write_bytes(
        b"cposix\nsystem\n(S'echo unpickled-code-ran'\ntR.")  # os.system(...) when loaded
    out = run([str(tmp_path / "run_seeded.py"), "0", "minidl", "neuralnet_mnist.py"], cwd=ch03,
              env_extra={"MINIDL_DATA_DIR": str(tmp_path / "data"), "MINIDL_OFFLINE": "1",
                         "XDG_CACHE_HOME": str(tmp_path / "cache"), **ONE_THREAD})
    assert out.returncode == 1
    assert "unpickled-code-ran" not in out.stdout
    assert "RefusedPickle: refused to load 'posix.system'" in out.stderr


def test_ch06_overfit_weight_decay(book_tree):
    book, ours = run_both(book_tree, "ch06", "overfit_weight_decay.py", seed=1)
    assert ours.count("epoch:") == 201 and ours.splitlines()[-1].startswith("epoch:200, train")
    numbers_agree(ours, book, rtol=1e-6)


def test_ch06_overfit_dropout(book_tree):
    book, ours = run_both(book_tree, "ch06", "overfit_dropout.py", seed=2)
    assert "=============== Final Test Accuracy ===============" in ours
    assert ours.count("=== epoch:") == 301
    numbers_agree(ours, book, rtol=1e-6)



def test_protocol_5_pickles_load_and_object_arrays_are_refused():
    # pickle.dump(params, f, -1), as the book's dataset/mnist.py writes, is protocol 5 on
    # Python 3.8+: arrays as their bytes and numpy._core.numeric._frombuffer
    import io

    from minidl._safe_pickle import RefusedPickle, SafeUnpickler, _frombuffer

    params = {"W1": np.arange(6.0).reshape(2, 3), "b1": np.ones(3, np.float32),
              "F": np.asfortranarray(np.arange(6).reshape(2, 3)),
              "T": np.arange(6.0).reshape(2, 3).T}
    loaded = SafeUnpickler(io.BytesIO(pickle.dumps(params, protocol=5))).load()
    for key, value in params.items():
        assert loaded[key].dtype == value.dtype
        np.testing.assert_array_equal(loaded[key], value)

    class ObjectArray:
        def __reduce__(self):  # NumPy's own _frombuffer with an object dtype
            return (_frombuffer, (b"\0" * 8, "O", (1,), "C"))

    with pytest.raises(RefusedPickle, match="object arrays are not allowed"):
        SafeUnpickler(io.BytesIO(pickle.dumps(ObjectArray(), protocol=5))).load()
