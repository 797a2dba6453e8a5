"""The parsed-array cache, damaged or altered: wrong shapes, dtypes and counts, labels out of
range, headers declaring huge arrays, object arrays, flipped bytes, not a zip. Every read gives
the source's arrays, parsing it again when the cache does not match (issue 16, item 6)."""

from __future__ import annotations

import struct
import warnings
import zipfile

import numpy as np
import pytest
from _datasets_helpers import (  # noqa: F401 - isolated is an autouse fixture
    isolated,
    register_idx,
    small_cifar,
    small_idx_arrays,
    write_cifar_bin,
    write_idx,
)
from hypothesis import given
from hypothesis import strategies as st

from minidl.datasets import _cache, load_cifar_10, load_mnist

from .oracle import example_dir, no_partial_files, same_arrays

KEYS = ("x_train", "t_train", "x_test", "t_test")


def raw(arrays):
    """The uint8 arrays load_mnist(normalize=False) gives for ``arrays``."""
    return {k: (a.reshape(len(a), -1) if k.startswith("x") else a).astype(np.uint8)
            for k, a in arrays.items()}


def loaded(data_dir):
    (x, t), (xt, tt) = load_mnist(normalize=False, data_dir=data_dir)
    return {"x_train": x, "t_train": t, "x_test": xt, "t_test": tt}


def rewrite_cache(name: str, **replace) -> None:
    """The cache of ``name`` rewritten with its fingerprint kept and some arrays replaced."""
    path = _cache.parsed_path(name)
    with np.load(path, allow_pickle=False) as npz:
        content = {k: npz[k] for k in npz.files}
    content.update(replace)
    np.savez(path, **content)


@pytest.fixture
def mnist(tmp_path, monkeypatch):
    arrays = small_idx_arrays()
    write_idx(tmp_path / "data" / "mnist", arrays, gz=False)
    register_idx(monkeypatch, "mnist", arrays)
    return tmp_path / "data", raw(arrays)


def reparsed_with_warning(data_dir, want, *words):
    with pytest.warns(UserWarning, match="does not match its source") as record:
        same_arrays(loaded(data_dir), want)
    for word in words:
        assert any(word in str(w.message) for w in record), (word, [str(w.message)
                                                                    for w in record])
    with warnings.catch_warnings():  # the cache was rewritten: the next read is silent
        warnings.simplefilter("error")
        same_arrays(loaded(data_dir), want)


# The cases, at the small dataset's scale (30 training images).
@pytest.mark.parametrize("key,value,named", [
    ("x_train", np.zeros((100, 784), np.uint8), "x_train is uint8 (100, 784)"),
    ("x_train", np.zeros((30, 5), np.uint8), "x_train is uint8 (30, 5)"),
    ("t_train", np.zeros(200, np.uint8), "t_train is uint8 (200,)"),
    ("t_train", np.zeros(10, np.uint8), "t_train is uint8 (10,)"),
    ("t_test", np.zeros(12, np.int64), "t_test is int64 (12,)"),
    ("x_test", np.zeros((12, 784), np.float32), "x_test is float32"),
    ("t_test", np.full(12, 10, np.uint8), "t_test holds label 10"),
])
def test_altered_cache_is_parsed_again(mnist, key, value, named):
    data_dir, want = mnist
    same_arrays(loaded(data_dir), want)  # parses and caches
    rewrite_cache("mnist", **{key: value})
    reparsed_with_warning(data_dir, want, named)


def test_missing_array_in_the_cache(mnist):
    data_dir, want = mnist
    loaded(data_dir)
    path = _cache.parsed_path("mnist")
    with np.load(path) as npz:
        content = {k: npz[k] for k in npz.files if k != "t_test"}
    np.savez(path, **content)
    same_arrays(loaded(data_dir), want)


def npy_header(shape, descr="|u1") -> bytes:
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    text += " " * (-(len(text) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


@pytest.mark.parametrize("shape", [(10**9, 784), (2**62,), (-1, 784), (30, 784, 0)])
def test_cache_header_declaring_a_huge_or_odd_array(mnist, shape):
    data_dir, want = mnist
    loaded(data_dir)
    path = _cache.parsed_path("mnist")
    with np.load(path) as npz:
        content = {k: npz[k] for k in npz.files if k != "x_train"}
    np.savez(path, **content)
    with zipfile.ZipFile(path, "a") as z:  # a header declaring much more than its few bytes
        z.writestr("x_train.npy", npy_header(shape) + b"\0" * 100)
    same_arrays(loaded(data_dir), want)  # no MemoryError: the header is checked first


def test_object_array_in_the_cache_is_never_unpickled(mnist, tmp_path):
    data_dir, want = mnist
    loaded(data_dir)
    rewrite_cache("mnist", x_train=np.array([object()] * 3, dtype=object))
    same_arrays(loaded(data_dir), want)


@given(position=st.integers(0, 10**9), bit=st.integers(0, 7))
def test_any_flipped_bit_of_the_cache(tmp_path, monkeypatch, position, bit):
    with example_dir(tmp_path) as d:
        arrays = small_idx_arrays(n_train=12, n_test=4)
        write_idx(d / "mnist", arrays, gz=False)
        register_idx(monkeypatch, "mnist", arrays)
        want = raw(arrays)
        loaded(d)
        path = _cache.parsed_path("mnist")
        data = bytearray(path.read_bytes())
        data[position % len(data)] ^= 1 << bit
        path.write_bytes(bytes(data))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a flip in a label can be out of range: warned
            same_arrays(loaded(d), want)
        no_partial_files(d)


SHAPES = st.lists(st.integers(0, 40), min_size=0, max_size=3).map(tuple)
DTYPES = st.sampled_from([np.uint8, np.int8, np.uint16, np.float32, np.float64, np.bool_,
                          np.complex64, ">u2"])


@given(key=st.sampled_from(KEYS), shape=SHAPES, dtype=DTYPES)
def test_any_shape_and_dtype_in_the_cache(tmp_path, monkeypatch, key, shape, dtype):
    with example_dir(tmp_path) as d:
        arrays = small_idx_arrays(n_train=12, n_test=4)
        write_idx(d / "mnist", arrays, gz=False)
        register_idx(monkeypatch, "mnist", arrays)
        want = raw(arrays)
        loaded(d)
        replacement = np.zeros(shape, dtype)
        rewrite_cache("mnist", **{key: replacement})
        if replacement.dtype == np.uint8 and shape == want[key].shape:
            # Well-formed: the cache is trusted (it names its source by path, size and
            # modification time; the zip's CRCs catch damage), so its arrays are returned.
            want = {**want, key: replacement}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (the warning itself is tested above)
            same_arrays(loaded(d), want)


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04" + b"\0" * 100])
def test_cache_that_is_not_a_zip(mnist, content):
    data_dir, want = mnist
    loaded(data_dir)
    _cache.parsed_path("mnist").write_bytes(content)
    same_arrays(loaded(data_dir), want)
    same_arrays(loaded(data_dir), want)


def test_cache_path_taken_by_a_folder(mnist):
    data_dir, want = mnist
    _cache.parsed_path("mnist").mkdir(parents=True)
    with pytest.warns(UserWarning, match="could not write the dataset cache"):
        same_arrays(loaded(data_dir), want)


def test_cifar_cache_of_another_count(tmp_path):
    data = small_cifar()
    write_cifar_bin(tmp_path, data)
    load_cifar_10(data_dir=tmp_path)
    rewrite_cache("cifar-10", x_train_gray=np.zeros((49, 1024), np.uint8))
    with pytest.warns(UserWarning, match="x_train_gray is uint8 \\(49, 1024\\)"):
        (x, _), _ = load_cifar_10(normalize=False, data_dir=tmp_path)
    assert x.shape == (50, 1024)
