"""The loaders: find the data (or download it), parse or take it from the cache, shape it.

``_raw_arrays`` gives the uint8 arrays as stored (images flattened; CIFAR-10 in colour or
grayscale); ``_finish`` turns them into what the caller asked for (normalised, shaped, one-hot),
so that the cache holds one copy whatever the options.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import _cache, _idx, _locate, _registry
from ._errors import DatasetChecksumError, DatasetNotFoundError
from ._registry import DATASETS, IDX_FILES, MIRRORS, DatasetInfo, canonical_name

MINI = "mnist-mini"
MINI_FILE = "mnist-mini.npz"
_TRUE = ("1", "true", "yes", "on")

Arrays = dict[str, np.ndarray]
Split = tuple[np.ndarray, np.ndarray]


# --- arguments -------------------------------------------------------------------------------

def _flag(name: str, value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _data_dir(data_dir: object) -> str | os.PathLike | None:
    if data_dir is None:
        return None
    if not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"data_dir must be a path (str or os.PathLike), got {data_dir!r}")
    if not os.fspath(data_dir):
        raise ValueError("data_dir is an empty string; pass None to use the usual places")
    return data_dir


def _download_allowed(download: object) -> tuple[bool, str]:
    """Whether to download, and why not."""
    if download is None:
        env = os.environ.get("MINIDL_OFFLINE", "")
        if env.strip().lower() in _TRUE:
            return False, f"turned off (MINIDL_OFFLINE={env})"
        return True, ""
    if not _flag("download", download):
        return False, "turned off (download=False)"
    return True, ""


# --- finding and reading ---------------------------------------------------------------------

def _layout(name: str) -> str:
    if name == "cifar-10":
        return ("cifar-10-batches-bin/ or cifar-10-batches-py/ (or the archive "
                "cifar-10-binary.tar.gz or cifar-10-python.tar.gz)")
    return f"{name}/ with the four IDX files ({', '.join(IDX_FILES)}; gzip or not)"


def _short_layout(name: str) -> str:
    if name == "cifar-10":
        return "cifar-10-batches-bin/ (or the archive cifar-10-binary.tar.gz)"
    return f"{name}/ (the four IDX files)"


_MINI_HINT = "--dataset mnist-mini (a sample of MNIST shipped with minidl, no download needed)"


def _not_found(
    info: DatasetInfo, search: _locate.Search, download_note: str, tried: bool = False
) -> str:
    lines = [f"{info.title} ({info.name}) was not found. Searched, in order:"]
    for i, (origin, root, looked) in enumerate(search.places, 1):
        if root is None:
            lines.append(f"  {i}. {origin}: not set")
            continue
        if len(looked) == 1:
            path, what = looked[0]
            lines.append(f"  {i}. {origin}: {path}: {what}")
        elif all(what == "absent" for _, what in looked):
            names = ", ".join(path.name for path, _ in looked)
            lines.append(f"  {i}. {origin}: {root}: absent (none of {names})")
        else:
            lines.append(f"  {i}. {origin}: {root}")
            lines.extend(f"       {path}: {what}" for path, what in looked)
    lines.append(f"  {len(search.places) + 1}. download: {download_note}")
    put = (f"put {_layout(info.name)} in a folder and set MINIDL_DATA_DIR to that folder or "
           "pass data_dir=")
    if tried:
        lines.append(f"To fix it: check the network and try again, or {put} (the files can be "
                     "downloaded by hand from the URLs above).")
    else:
        lines.append(f"To fix it: {put}; or allow the download (download=True, or unset "
                     "MINIDL_OFFLINE).")
    lines.append("Or use load_mnist_mini() (--dataset mnist-mini on the command line): a sample "
                 "of MNIST shipped with minidl.")
    return "\n".join(lines)


def _summary(info: DatasetInfo, download_note: str, attempts=None, problems=()) -> str:
    """The not-found error in one line, for the command line: what failed, what to do.

    ``problems``: the places that held something unusable (an incomplete folder, a folder
    where a file should be), named after what failed.
    """
    put = f"set MINIDL_DATA_DIR to a folder holding {_short_layout(info.name)}"
    if attempts is not None:  # a download was tried
        first = " ".join(f"{attempts[0][0]}: {attempts[0][1]}".split()) if attempts else ""
        more = f" and {len(attempts) - 1} more" if len(attempts) > 1 else ""
        head = (f"{info.title} ({info.name}) was not found and could not be downloaded "
                f"({first}{more})")
        fix = f"check the network and try again, or download the files by hand and {put}"
    else:
        head = f"{info.title} ({info.name}) was not found; download {download_note}"
        allow = ("unset MINIDL_OFFLINE" if "MINIDL_OFFLINE" in download_note
                 else "allow the download")
        fix = f"{put}, or {allow}"
    found = "".join(f"; {path}: {what}" for path, what in problems)
    return f"{head}{found}; to fix it: {fix}; or try {_MINI_HINT}"


def _not_found_error(info: DatasetInfo, search: _locate.Search, download_note: str,
                     attempts=None, error=DatasetNotFoundError) -> DatasetNotFoundError:
    exc = error(_not_found(info, search, download_note, tried=attempts is not None))
    exc.summary = _summary(info, download_note, attempts, search.problems)
    return exc


def _download_into(name: str, data_dir, search: _locate.Search) -> _locate.Source:
    """Download ``name`` into ``data_dir`` (or the cache folder) and return the copy there."""
    from . import _download  # (http.client and urllib load only for a download)

    root = Path(data_dir).expanduser() if data_dir is not None else _cache.cache_dir()
    try:
        _download.download(name, root)
    except _download.DownloadFailed as failed:
        note = "failed:\n" + "\n".join(f"       {url}: {why}" for url, why in failed.attempts)
        error = DatasetChecksumError if failed.bad_checksum else DatasetNotFoundError
        raise _not_found_error(DATASETS[name], search, note, failed.attempts, error) from None
    source, looked = _locate.look(name, root)
    if source is None:  # only if the folder changed under us
        raise DatasetNotFoundError(f"{name}: downloaded to {root} but then not found: {looked}")
    return source


def _read_source(name: str, source: _locate.Source) -> Arrays:
    info = DATASETS[name]
    if source.kind == "idx":
        files = dict(zip(IDX_FILES, source.files))
        return _idx.read_dataset(files, name, info.image_shape[1:], info.n_classes,
                                 (info.n_train, info.n_test))
    from . import _cifar  # (tarfile and the unpickler load only for CIFAR-10)

    if source.kind == "cifar-bin":
        return _cifar.read_bin_folder(source.path)
    if source.kind == "cifar-py":
        return _cifar.read_py_folder(source.path)
    return _cifar.read_archive(source.path)


def _keys(name: str, grayscale: bool) -> tuple[str, ...]:
    if name == "cifar-10" and grayscale:
        return ("x_train_gray", "t_train", "x_test_gray", "t_test")
    return _cache.KEYS


def _source_shapes(name: str, source: _locate.Source) -> dict[str, tuple[int, ...]] | None:
    """The shapes of the arrays ``source`` holds, without parsing it (None: unreadable).

    MNIST-style: the counts its IDX headers declare; CIFAR-10: the published counts, which
    parsing insists on. The cache is checked against these on every read.
    """
    info = DATASETS[name]
    if source.kind == "idx":
        counts = [_idx.declared_count(path, 3 if i % 2 == 0 else 1)
                  for i, path in enumerate(source.files)]
        if None in counts:
            return None
        features = info.image_shape[1] * info.image_shape[2]
        return {"x_train": (counts[0], features), "t_train": (counts[1],),
                "x_test": (counts[2], features), "t_test": (counts[3],)}
    from . import _cifar

    n = _registry.CIFAR_BATCH_RECORDS
    shapes = {}
    for split, count in (("train", 5 * n), ("test", n)):
        shapes.update({f"x_{split}": (count, _cifar.N_PIXELS), f"t_{split}": (count,),
                       f"x_{split}_gray": (count, _cifar.N_PIXELS // 3)})
    return shapes


def _raw_arrays(name: str, data_dir, download, grayscale: bool) -> Arrays:
    """uint8 ``x_train``, ``t_train``, ``x_test``, ``t_test``; CIFAR-10 in grayscale if asked."""
    search = _locate.find(name, data_dir, warn=True)
    source = search.source
    if source is None:
        allowed, why_not = _download_allowed(download)
        if not allowed:
            raise _not_found_error(DATASETS[name], search, why_not)
        source = _download_into(name, data_dir, search)
    fingerprint = _cache.fingerprint(list(source.files))
    keys = _keys(name, grayscale)
    shapes = _source_shapes(name, source)
    arrays = None
    if shapes is not None:  # else the source is damaged: parsing it says how
        arrays = _cache.load(name, fingerprint, keys, {k: shapes[k] for k in keys},
                             DATASETS[name].n_classes)
    if arrays is None:
        arrays = _read_source(name, source)
        if name == "cifar-10":  # cached too: the conversion takes longer than reading
            arrays["x_train_gray"] = luma(arrays["x_train"])
            arrays["x_test_gray"] = luma(arrays["x_test"])
        _cache.save(name, fingerprint, arrays)
        arrays = {key: arrays[key] for key in keys}
    return {standard: arrays[key] for standard, key in zip(_cache.KEYS, keys)}


def _mini_path() -> Path:
    from importlib import resources  # (~6 ms to import; only mnist-mini needs it)

    return Path(str(resources.files("minidl.datasets").joinpath("data", MINI_FILE)))


def _read_mini() -> Arrays:
    path = _mini_path()
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{path}: the MNIST sample shipped with minidl is missing; reinstall minidl"
        )
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in _cache.KEYS}
    for key, a in arrays.items():
        ndim = 2 if key.startswith("x") else 1
        if a.dtype != np.uint8 or a.ndim != ndim or (ndim == 2 and a.shape[1] != 784):
            raise ValueError(f"{path}: {key} is {a.dtype} {a.shape}; the file is damaged")
    return arrays


# --- shaping ---------------------------------------------------------------------------------

def luma(x: np.ndarray) -> np.ndarray:
    """Grayscale (N, 1024) uint8 of colour CIFAR-10 (N, 3072) uint8 images.

    0.299 R + 0.587 G + 0.114 B rounded half up, computed exactly in integers.
    """
    out = np.empty((len(x), 1024), dtype=np.uint8)
    step = 4096  # rows at a time, to bound the uint32 temporaries
    for start in range(0, len(x), step):
        rgb = x[start:start + step].reshape(-1, 3, 1024).astype(np.uint32)
        out[start:start + step] = (
            299 * rgb[:, 0] + 587 * rgb[:, 1] + 114 * rgb[:, 2] + 500
        ) // 1000
    return out


def one_hot(t: np.ndarray, n_classes: int) -> np.ndarray:
    """float32 rows (N, n_classes) with a 1 at each label."""
    rows = np.zeros((len(t), n_classes), dtype=np.float32)
    rows[np.arange(len(t)), t] = 1.0
    return rows


def _finish(
    arrays: Arrays, info: DatasetInfo, normalize: bool, flatten: bool, one_hot_label: bool,
) -> tuple[Split, Split]:
    out = []
    for split in ("train", "test"):
        x, t = arrays["x_" + split], arrays["t_" + split]
        channels = x.shape[1] // (info.image_shape[1] * info.image_shape[2])
        if not flatten:
            x = x.reshape(len(x), channels, *info.image_shape[1:])
        if normalize:  # as the book: float32 division by 255, here in one pass
            x = np.divide(x, np.float32(255.0), dtype=np.float32)
        if one_hot_label:
            t = one_hot(t, info.n_classes)
        out.append((x, t))
    return out[0], out[1]


# --- public ----------------------------------------------------------------------------------

def load_dataset(
    name: str,
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool | None = None,
    **options,
) -> tuple[Split, Split]:
    """Load any dataset of ``DATASETS`` by name: ``(x_train, t_train), (x_test, t_test)``.

    ``options`` are the dataset's own (``grayscale=`` for CIFAR-10). For ``mnist-mini``,
    which ships with minidl, ``data_dir`` and ``download`` are ignored. See ``load_mnist``.
    """
    name = canonical_name(name)
    info = DATASETS[name]
    normalize = _flag("normalize", normalize)
    flatten = _flag("flatten", flatten)
    one_hot_label = _flag("one_hot_label", one_hot_label)
    allowed = {"grayscale"} if name == "cifar-10" else set()
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(
            f"{name}: unexpected option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(sorted(unknown))}"
            + (f" (it takes {', '.join(sorted(allowed))})" if allowed else "")
        )
    grayscale = _flag("grayscale", options.get("grayscale", True))
    data_dir = _data_dir(data_dir)
    if name == MINI:
        arrays = _read_mini()
    else:
        _download_allowed(download)  # type check before any search
        arrays = _raw_arrays(name, data_dir, download, grayscale)
    return _finish(arrays, info, normalize, flatten, one_hot_label)


def load_mnist(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool | None = None,
) -> tuple[Split, Split]:
    """MNIST, as the book's ``load_mnist``: ``(x_train, t_train), (x_test, t_test)``.

    Images: ``normalize=True`` gives float32 in [0, 1], ``False`` the uint8 pixels;
    ``flatten=True`` gives (N, 784), ``False`` (N, 1, 28, 28). Labels: uint8 (N,) class
    indices, or float32 one-hot rows (N, 10) with ``one_hot_label=True``. N is 60000 and 10000.

    The files are looked for in ``data_dir``, then ``$MINIDL_DATA_DIR``, then minidl's cache
    folder (``$XDG_CACHE_HOME/minidl``), then system folders (``/usr/share/datasets``), and
    downloaded from a mirror (checksums verified; into ``data_dir`` when given, else the cache
    folder) unless ``download=False`` or, when ``download`` is None, ``MINIDL_OFFLINE=1``.
    Raises ``DatasetNotFoundError`` naming every place searched, and ``ValueError`` for a
    damaged file.
    """
    return load_dataset("mnist", normalize, flatten, one_hot_label,
                        data_dir=data_dir, download=download)


def load_fashion_mnist(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool | None = None,
) -> tuple[Split, Split]:
    """Fashion-MNIST (Zalando), in the same shapes and types as ``load_mnist``.

    Debian's ``dataset-fashion-mnist`` package is found in ``/usr/share/datasets``.
    """
    return load_dataset("fashion-mnist", normalize, flatten, one_hot_label,
                        data_dir=data_dir, download=download)


def load_cifar_10(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    grayscale: bool = True,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool | None = None,
) -> tuple[Split, Split]:
    """CIFAR-10: 50000 training and 10000 test images of 32x32 pixels, 10 classes.

    ``grayscale=True`` (the default, as the course's loader) gives 1024 features per image:
    luma 0.299 R + 0.587 G + 0.114 B rounded to uint8, then normalised; ``flatten=False``
    gives (N, 1, 32, 32). ``grayscale=False`` gives the 3072 colour features (red plane, green,
    blue) or (N, 3, 32, 32). Otherwise as ``load_mnist``. Reads ``cifar-10-batches-bin/``,
    ``cifar-10-batches-py/`` (with an unpickler that builds only arrays, lists, dicts, bytes and
    ints) or their archives; downloads the binary version.
    """
    return load_dataset("cifar-10", normalize, flatten, one_hot_label, grayscale=grayscale,
                        data_dir=data_dir, download=download)


def load_mnist_mini(
    normalize: bool = True, flatten: bool = True, one_hot_label: bool = False
) -> tuple[Split, Split]:
    """A stratified sample of MNIST (10000 training, 2000 test images) shipped with minidl.

    Needs no network and no download; shapes and types as ``load_mnist``.
    """
    return load_dataset(MINI, normalize, flatten, one_hot_label)


def dataset_status(name: str, data_dir: str | os.PathLike | None = None) -> dict:
    """Where dataset ``name`` is, without loading or downloading it.

    Returns a dict: ``name``; ``found``, the folder or archive that would be read (None when
    there is none; 'shipped with minidl' for mnist-mini); ``searched``, the places looked at in
    order; ``cached``, whether parsed arrays of that copy are in the cache; ``urls``, the
    download mirrors; ``hint``, how to get it when it is not found (one line).
    """
    name = canonical_name(name)
    data_dir = _data_dir(data_dir)
    if name == MINI:
        path = _mini_path()
        return {"name": name, "found": "shipped with minidl" if path.is_file() else None,
                "searched": [str(path)], "cached": False, "urls": [],
                "hint": "reinstall minidl (the sample ships inside it)"}
    search = _locate.find(name, data_dir)
    source = search.source
    cached = source is not None and _cache.is_cached(
        name, _cache.fingerprint(list(source.files)))
    hint = (f"get it with: minidl datasets fetch {name}, or set MINIDL_DATA_DIR to a folder "
            f"holding {_short_layout(name)}")
    return {"name": name, "found": str(source.path) if source else None,
            "searched": search.searched, "cached": cached, "urls": list(MIRRORS.get(name, [])),
            "hint": hint}


def fetch(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Find dataset ``name``, or download it (into ``data_dir``, else the cache folder).

    Returns the folder or archive where it is. Downloads even when ``MINIDL_OFFLINE`` is set:
    calling ``fetch`` is an explicit request.
    """
    name = canonical_name(name)
    data_dir = _data_dir(data_dir)
    if name == MINI:
        path = _mini_path()
        if not path.is_file():
            _read_mini()  # raises the error
        return path
    search = _locate.find(name, data_dir, warn=True)
    source = search.source if search.source is not None else _download_into(name, data_dir, search)
    return source.path
