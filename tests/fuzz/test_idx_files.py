"""Damaged and hostile IDX files (MNIST, Fashion-MNIST), raw and gzip: every header and length
gives the right array or a clear error naming the file; oversized files and gzip bombs are
refused at the first byte too many, in bounded memory (issue 16, item 2)."""

from __future__ import annotations

import gzip
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from _datasets_helpers import (  # noqa: F401 - isolated is an autouse fixture
    IDX_FILES,
    cache_root,
    idx_bytes,
    isolated,
    register_idx,
    small_idx_arrays,
    write_idx,
)
from hypothesis import given
from hypothesis import strategies as st

from minidl.cli import main
from minidl.datasets import _idx, load_mnist

from .hostile import write_gzip_bomb, write_sparse
from .oracle import clear_error, clear_error_or_answer, no_partial_files

MNIST_TRAIN_BYTES = 16 + 60000 * 784  # the real train-images-idx3-ubyte


def header(magic: int, dims) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)


def reference_parse(raw: bytes, ndim: int, item_shape, max_items):
    """An independent reading of IDX bytes: the array, or an exception for any inconsistency."""
    want_magic = 0x0800 | ndim
    if len(raw) < 4 + 4 * ndim or struct.unpack(">I", raw[:4])[0] != want_magic:
        raise ValueError("bad header")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    if tuple(dims[1:]) != tuple(item_shape) or dims[0] > max_items:
        raise ValueError("bad dims")
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)):
        raise ValueError("bad length")
    item = int(np.prod(dims[1:]))
    return np.frombuffer(body, np.uint8).reshape((dims[0], item) if ndim > 1 else (dims[0],))


def measured(call):
    """(exception raised by ``call``, seconds, peak bytes allocated meanwhile)."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        call()
    except Exception as e:  # noqa: BLE001 - returned for the caller to judge
        error = e
    else:
        error = None
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return error, seconds, peak


# --- the space of headers and lengths ---------------------------------------------------------

MAGICS = st.sampled_from([0x0803, 0x0801, 0x0C03, 0x0803_0000, 0xFFFF_FFFF, 0])
COUNTS = st.integers(0, 40) | st.sampled_from([60000, 60001, 2**31, 2**32 - 1])
SIDES = st.sampled_from([28, 28, 28, 27, 0, 1, 2**16, 2**32 - 1])


@given(magic=MAGICS, n=COUNTS, rows=SIDES, cols=SIDES, slack=st.integers(-30, 30),
       cut=st.integers(0, 20), gz=st.booleans())
def test_image_files(tmp_path, magic, n, rows, cols, slack, cut, gz):
    head = header(magic, (n, rows, cols))[: max(0, 16 - cut) if cut < 16 else 16]
    declared = min(n * rows * cols, 41 * 784)  # never write more than a few KiB
    body = np.random.default_rng(n).integers(0, 256, max(0, declared + slack), np.uint8)
    raw = head + body.tobytes()
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(raw) if gz else raw)
    clear_error_or_answer(
        lambda: _idx.read_file(path, 3, (28, 28), max_items=60000),
        lambda: reference_parse(raw, 3, (28, 28), 60000),
        words=[path],
    )


@given(magic=MAGICS, n=COUNTS, slack=st.integers(-5, 5), gz=st.booleans())
def test_label_files(tmp_path, magic, n, slack, gz):
    raw = header(magic, (n,)) + bytes(max(0, min(n, 50) + slack))
    path = tmp_path / ("t10k-labels-idx1-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(raw) if gz else raw)
    clear_error_or_answer(
        lambda: _idx.read_file(path, 1, max_items=10000),
        lambda: reference_parse(raw, 1, (), 10000),
        words=[path],
    )


@given(data=st.binary(max_size=64), gz=st.booleans())
def test_arbitrary_bytes(tmp_path, data, gz):
    path = tmp_path / ("x" + (".gz" if gz else ""))
    path.write_bytes(data)
    clear_error_or_answer(
        lambda: _idx.read_file(path, 3, (28, 28), max_items=60000),
        lambda: reference_parse(gzip.decompress(data) if gz else data, 3, (28, 28), 60000),
        words=[path],
    )


@given(flip=st.integers(0, 16 + 3 * 784 - 1), bit=st.integers(0, 7))
def test_damaged_gzip_stream(tmp_path, flip, bit):
    a = np.arange(3 * 784, dtype=np.uint8).reshape(3, 28, 28)
    packed = bytearray(gzip.compress(idx_bytes(a)))
    packed[flip % len(packed)] ^= 1 << bit
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(bytes(packed))

    def reference():
        return reference_parse(gzip.decompress(bytes(packed)), 3, (28, 28), 60000)

    clear_error_or_answer(lambda: _idx.read_file(path, 3, (28, 28), max_items=60000),
                          reference, words=[path])


# --- oversized files and bombs: refused at once, in bounded memory ---------------------------

def test_sparse_4gib_file_behind_a_valid_header(tmp_path):
    path = write_sparse(tmp_path / "train-images-idx3-ubyte", header(0x0803, (60000, 28, 28)),
                        4 << 30)
    error, seconds, peak = measured(
        lambda: _idx.read_file(path, 3, (28, 28), max_items=60000))
    assert isinstance(error, ValueError), repr(error)
    for word in (path, MNIST_TRAIN_BYTES, 4 << 30):
        assert str(word) in str(error)
    assert seconds < 1.0 and peak < (1 << 20)


@pytest.mark.parametrize("n_declared", [60000, 30])
def test_gzip_bomb_stops_at_the_first_byte_too_many(tmp_path, n_declared):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_gzip_bomb(path, header(0x0803, (n_declared, 28, 28)), 2048)  # 2 GiB of zeros, ~2 MiB
    assert path.stat().st_size < 8 << 20
    error, seconds, peak = measured(
        lambda: _idx.read_file(path, 3, (28, 28), max_items=60000))
    assert isinstance(error, ValueError), repr(error)
    assert str(path) in str(error) and "unexpected bytes after the" in str(error)
    assert peak < n_declared * 784 + (16 << 20)  # the declared images and a few buffers
    assert seconds < 10


def test_gzip_declaring_more_images_than_mnist_has_reads_nothing(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_gzip_bomb(path, header(0x0803, (2**32 - 1, 28, 28)), 64)
    error, _, peak = measured(lambda: _idx.read_file(path, 3, (28, 28), max_items=60000))
    assert isinstance(error, ValueError), repr(error)
    assert "declares 4294967295 images, more than the 60000" in str(error)
    assert peak < (4 << 20)


def test_corrupt_deflate_stream(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    good = gzip.compress(idx_bytes(np.zeros((5, 28, 28), np.uint8)))
    path.write_bytes(good[:10] + b"\xff" * 8 + good[18:])
    with clear_error(path, "unreadable gzip file"):
        _idx.read_file(path, 3, (28, 28), max_items=60000)
    assert isinstance(zlib.error("x"), Exception)


# --- through the loader and the command line ------------------------------------------------

@pytest.fixture
def bombed_mnist(tmp_path, monkeypatch):
    """A small MNIST whose training images are a 1 GiB-of-zeros gzip behind a valid header."""
    arrays = small_idx_arrays()
    folder = tmp_path / "data" / "mnist"
    write_idx(folder, arrays, gz=True)
    register_idx(monkeypatch, "mnist", arrays)
    bomb = folder / (IDX_FILES[0] + ".gz")
    write_gzip_bomb(bomb, header(0x0803, (30, 28, 28)), 1024)
    return tmp_path / "data", bomb


def test_loader_refuses_a_bomb_and_caches_nothing(bombed_mnist, tmp_path):
    data_dir, bomb = bombed_mnist
    error, seconds, peak = measured(lambda: load_mnist(data_dir=data_dir))
    assert isinstance(error, ValueError), repr(error)
    assert str(bomb) in str(error) and "unexpected bytes" in str(error)
    assert peak < (16 << 20) and seconds < 5  # the GiB of zeros is never read
    assert not (cache_root(tmp_path) / "parsed" / "mnist.npz").exists()
    no_partial_files(tmp_path)


def test_command_line_says_it_in_one_line(bombed_mnist, capsys, monkeypatch, tmp_path):
    data_dir, bomb = bombed_mnist
    monkeypatch.chdir(tmp_path)
    status = main(["train", "--dataset", "mnist", "--data-dir", str(data_dir), "--iters", "1",
                   "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert err.startswith("minidl: error: ") and "\n" not in err and str(bomb) in err
