"""Concurrent cache fills and saves: processes and threads loading the same dataset for the
first time all get the right arrays, and the cache is complete (or absent) at every moment;
processes saving the same model leave one whole model."""

from __future__ import annotations

import hashlib
import threading
import time

import numpy as np
import pytest
from _datasets_helpers import small_idx_arrays, unregister_idx, write_idx

from minidl.datasets import _cache, load_mnist
from minidl.networks import load_network

from .oracle import no_partial_files, start_python

N_TRAIN = 3000  # enough that a parse and a save overlap between processes


def digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str((a.dtype, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@pytest.fixture
def mnist(tmp_path, monkeypatch):
    arrays = small_idx_arrays(n_train=N_TRAIN, n_test=100)
    write_idx(tmp_path / "data" / "mnist", arrays, gz=True)
    unregister_idx(monkeypatch, "mnist")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("MINIDL_OFFLINE", "1")
    x = arrays["x_train"].reshape(N_TRAIN, -1)
    want = digest(x, arrays["t_train"].astype(np.uint8))
    return tmp_path / "data", want


CHILD = """
import hashlib, os, sys, time
import numpy as np
from minidl.datasets import _registry, load_mnist
for name in _registry.IDX_FILES:
    _registry.CHECKSUMS.pop("mnist/" + name, None)
while not os.path.exists({go!r}):
    time.sleep(0.001)
for _ in range(3):  # first fill, then reads racing the others' writes
    (x, t), _ = load_mnist(normalize=False, data_dir={data!r})
    h = hashlib.sha256()
    for a in (x, t):
        h.update(str((a.dtype, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    print(h.hexdigest(), flush=True)
"""


def test_processes_filling_the_cache_at_once(mnist, tmp_path):
    data_dir, want = mnist
    go = tmp_path / "go"
    children = [start_python(CHILD.format(go=str(go), data=str(data_dir))) for _ in range(3)]
    time.sleep(0.5)  # let them all start and wait
    go.touch()
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert out.split() == [want] * 3, err
    assert _cache.parsed_path("mnist").is_file()
    no_partial_files(tmp_path / "cache")


def test_threads_filling_the_cache_at_once(mnist, tmp_path):
    data_dir, want = mnist
    start = threading.Barrier(4)
    results, errors = [], []

    def load():
        try:
            start.wait(30)
            for _ in range(3):
                (x, t), _ = load_mnist(normalize=False, data_dir=data_dir)
                results.append(digest(x, t))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors and results == [want] * 12
    no_partial_files(tmp_path / "cache")


SAVER = """
import os, time
import numpy as np
from minidl.networks import TwoLayerNet
np.random.seed({seed})
net = TwoLayerNet(784, 100, 10)
while not os.path.exists({go!r}):
    time.sleep(0.001)
for _ in range(5):
    net.save({target!r})
print(float(net.params["W1"].sum()), flush=True)
"""


def test_processes_saving_the_same_model(tmp_path):
    target, go = tmp_path / "model.npz", tmp_path / "go"
    children = [start_python(SAVER.format(seed=s, go=str(go), target=str(target)))
                for s in range(3)]
    time.sleep(0.5)
    go.touch()
    sums = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        sums.append(float(out))
    assert float(load_network(target).params["W1"].sum()) in sums  # one whole model
    no_partial_files(tmp_path)
