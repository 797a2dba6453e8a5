"""Model files, damaged and hostile: records of every kind (format versions, sizes, dtypes,
weight decay, activations, classes), arrays of wrong shapes and dtypes (complex, integer,
object, big-endian), headers declaring huge arrays, files that are not zip archives. Each gives
the saved network or a clear error naming the file, checked before the network is built
(issue 16, item 7)."""

from __future__ import annotations

import io
import json
import math
import pickle
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minidl.networks import MultiLayerNet, MultiLayerNetExtend, TwoLayerNet, load_network

from .oracle import clear_error, clear_error_or_answer, example_dir, same_arrays

KNOWN = {"TwoLayerNet": (3, 3), "ThreeLayerNet": (4, 4), "MultiLayerNet": (2, 99),
         "MultiLayerNetExtend": (2, 99)}


def write_model(path, meta, arrays) -> None:
    np.savez(path, __architecture__=np.array(json.dumps(meta)), **arrays)


def params_for(sizes, dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for i in range(1, len(sizes)):
        arrays[f"W{i}"] = rng.standard_normal((sizes[i - 1], sizes[i])).astype(dtype)
        arrays[f"b{i}"] = rng.standard_normal(sizes[i]).astype(dtype)
    return arrays


def valid_record(meta) -> bool:
    """An independent statement of what load_network accepts (layer-stack networks)."""
    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    sizes, low_high = meta.get("sizes"), KNOWN.get(meta.get("class"))
    return (meta.get("format") == 1 and type(meta.get("format")) is int
            and low_high is not None and isinstance(sizes, list)
            and all(type(s) is int and s >= 1 for s in sizes)
            and low_high[0] <= len(sizes) <= low_high[1]
            and meta.get("dtype", "float64") in ("float32", "float64")
            and number(meta.get("weight_decay_lambda", 0.0))
            and math.isfinite(meta.get("weight_decay_lambda", 0.0))
            and meta.get("weight_decay_lambda", 0.0) >= 0
            and meta.get("activation", "relu") in ("relu", "sigmoid"))


RECORDS = st.fixed_dictionaries({
    "format": st.sampled_from([1, 1, 1, 2, 0, "1", True, 1.0, None]),
    "class": st.sampled_from(["TwoLayerNet", "ThreeLayerNet", "MultiLayerNet",
                              "MultiLayerNetExtend", "SimpleConvNet", "Net", 7]),
    "sizes": st.lists(st.integers(-1, 6) | st.sampled_from([True, 2.0, "3"]),
                      min_size=0, max_size=5),
    "activation": st.sampled_from(["relu", "sigmoid", "tanh", 3]),
    "dtype": st.sampled_from(["float64", "float32", "float16", "int32", "complex128"]),
    "weight_decay_lambda": st.sampled_from([0.0, 0, 0.01, 1e300, -0.1, float("nan"),
                                            float("inf"), "0.1", True, None, [0.1]]),
})


@settings(max_examples=80)  # cheap examples, a large space
@given(meta=RECORDS)
def test_any_architecture_record(tmp_path, meta):
    sizes = meta["sizes"]
    ok_sizes = all(type(s) is int and s >= 1 for s in sizes)
    dtype = meta["dtype"] if meta["dtype"] in ("float64", "float32") else "float64"
    arrays = params_for(sizes, dtype) if ok_sizes else {}
    with example_dir(tmp_path) as d:
        path = d / "model.npz"
        write_model(path, meta, arrays)

        def reference():
            if not valid_record(meta):
                raise ValueError("not a valid record")
            return arrays

        clear_error_or_answer(lambda: dict(load_network(path).params), reference,
                              words=[path])


PARAM_DTYPES = st.sampled_from(["float64", "float32", "float16", ">f8", "<f8", "complex128",
                                "complex64", "int64", "uint8", "bool", "O", "U3", "V8"])


@given(dtype=PARAM_DTYPES, key=st.sampled_from(["W1", "b1", "W2", "b2"]),
       shape_change=st.sampled_from([None, "transpose", "extra-row", "flat", "scalar"]))
def test_any_parameter_array(tmp_path, dtype, key, shape_change):
    sizes = [4, 3, 2]
    arrays = params_for(sizes)
    a = arrays[key]
    a = {"transpose": a.T, "extra-row": np.concatenate([a, a[:1]]), "flat": a.ravel(),
         "scalar": a.ravel()[0], None: a}[shape_change]
    if dtype == "O":
        arrays[key] = np.array([object()] * 3, dtype=object)
    else:
        arrays[key] = np.asarray(a).astype(dtype) if dtype[0] != "V" else np.zeros(2, dtype)
    meta = {"format": 1, "class": "TwoLayerNet", "sizes": sizes, "activation": "relu",
            "dtype": "float64", "weight_decay_lambda": 0.0}
    with example_dir(tmp_path) as d:
        path = d / "model.npz"
        np.savez(path, __architecture__=np.array(json.dumps(meta)), **arrays)
        right_shape = np.shape(arrays[key]) == params_for(sizes)[key].shape
        right_dtype = np.dtype(dtype).newbyteorder("=") == np.float64 if dtype != "O" else False

        def reference():
            if not (right_shape and right_dtype):
                raise ValueError("refused")
            return {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}

        clear_error_or_answer(lambda: dict(load_network(path).params), reference,
                              words=[path, key])


# --- the cases ------------------------------------------------------------------------

def test_huge_declared_network_over_small_arrays_is_refused_before_building(tmp_path):
    path = tmp_path / "model.npz"
    arrays = params_for([784, 40, 10])  # a 250 KB file...
    write_model(path, {"format": 1, "class": "TwoLayerNet", "sizes": [784, 400000, 10]},
                arrays)  # ...declaring 2.5 GB of weights
    tracemalloc.start()
    start = time.perf_counter()
    with clear_error(path, "W1 has shape (784, 40), expected (784, 400000)"):
        load_network(path)
    seconds, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 1 and peak < (8 << 20)


def npy_bytes(array=None, header=None) -> bytes:
    buf = io.BytesIO()
    if header is None:
        np.lib.format.write_array(buf, array)
    else:
        np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def test_headers_declaring_huge_arrays_in_small_members(tmp_path):
    good, path = tmp_path / "good.npz", tmp_path / "model.npz"
    TwoLayerNet(784, 5, 10).save(good)
    meta = json.loads(str(np.load(good)["__architecture__"]))
    meta["sizes"] = [784, 400000, 10]
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "__architecture__.npy":
                data = npy_bytes(np.array(json.dumps(meta)))
            elif item.filename == "W1.npy":  # a header declaring (784, 400000), 100 bytes
                data = npy_bytes(header={"descr": "<f8", "fortran_order": False,
                                         "shape": (784, 400000)}) + b"\0" * 100
            dst.writestr(item.filename, data)
    tracemalloc.start()
    with clear_error(path, "W1 declares (784, 400000) float64"):
        load_network(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < (8 << 20)


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_unknown_format_version(tmp_path, version):
    path = tmp_path / "model.npz"
    meta = {"class": "TwoLayerNet", "sizes": [4, 3, 2]}
    if version is not None:
        meta["format"] = version
    write_model(path, meta, params_for([4, 3, 2]))
    with clear_error(path, "no format version" if version is None else f"format {version!r}"):
        load_network(path)


@pytest.mark.parametrize("decay", ["0.1", None, [0.1], True, float("nan"), -1.0])
def test_weight_decay_that_is_not_a_finite_number(tmp_path, decay):
    path = tmp_path / "model.npz"
    write_model(path, {"format": 1, "class": "MultiLayerNet", "sizes": [4, 3, 2],
                       "weight_decay_lambda": decay}, params_for([4, 3, 2]))
    with clear_error(path, "weight_decay_lambda"):
        load_network(path)


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
def test_complex_weights(tmp_path, dtype):
    path = tmp_path / "model.npz"
    arrays = params_for([4, 3, 2])
    arrays["W2"] = arrays["W2"] + 1j
    arrays["W2"] = arrays["W2"].astype(dtype)
    write_model(path, {"format": 1, "class": "TwoLayerNet", "sizes": [4, 3, 2]}, arrays)
    with clear_error(path, "W2 is complex", "not real floating point"):
        load_network(path)


def not_zip_files(tmp_path):
    pickled = pickle.dumps({"W1": [1.0]})
    npy = tmp_path / "array.npy"
    np.save(npy, np.ones(3))
    return {"pickle": pickled, "npy": npy.read_bytes(), "empty": b"", "text": b"W1 = 1\n",
            "gzip": __import__("gzip").compress(b"x" * 100), "zip-header-only": b"PK\x03\x04"}


@pytest.mark.parametrize("kind", ["pickle", "npy", "empty", "text", "gzip", "zip-header-only"])
def test_a_file_that_is_not_a_zip_is_not_a_minidl_model(tmp_path, kind):
    path = tmp_path / "model.npz"
    path.write_bytes(not_zip_files(tmp_path)[kind])
    with clear_error(path, "not a minidl model file") as info:
        load_network(path)
    assert "pickled" not in str(info.value)


def test_a_folder_and_a_missing_file(tmp_path):
    (tmp_path / "model.npz").mkdir()
    with clear_error(tmp_path / "model.npz", "not a minidl model file"):
        load_network(tmp_path / "model.npz")
    with pytest.raises(FileNotFoundError):
        load_network(tmp_path / "missing.npz")


@given(cut=st.integers(0, 4000), flip=st.integers(0, 4000), bit=st.integers(0, 7))
def test_truncated_or_flipped_model_file(tmp_path, cut, flip, bit):
    with example_dir(tmp_path) as d:
        net = TwoLayerNet(8, 5, 3)
        good = d / "good.npz"
        net.save(good)
        data = bytearray(good.read_bytes())
        data[flip % len(data)] ^= 1 << bit
        path = d / "model.npz"
        path.write_bytes(bytes(data[: len(data) - cut % len(data)]))
        try:
            loaded = load_network(path)
        except ValueError as e:
            assert str(path) in str(e) and "\n" not in str(e)
        else:  # a flip the zip cannot see (its local header's extra bytes): the same model
            same_arrays(dict(loaded.params), dict(net.params))


def test_every_saved_kind_still_round_trips(tmp_path):
    nets = [TwoLayerNet(6, 5, 3, dtype=np.float32),
            MultiLayerNet(6, [5, 4], 3, activation="sigmoid", weight_decay_lambda=0.1),
            MultiLayerNetExtend(6, [5], 3, use_batchnorm=True, use_dropout=True)]
    for i, net in enumerate(nets):
        net.save(tmp_path / f"{i}.npz")
        loaded = load_network(tmp_path / f"{i}.npz")
        assert type(loaded) is type(net) and loaded.architecture() == net.architecture()
        same_arrays(dict(loaded.params), dict(net.params))
