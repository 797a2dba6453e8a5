"""What minidl knows about each dataset: shapes, classes, files, mirrors and checksums.

Every checksum below was either computed from the real file or taken from a public source,
named in the comment above it. ``CHECKSUMS`` is keyed by a file's path relative to a data
folder; for IDX files the key names the *uncompressed* file and the checksum is that of its
contents, so that a local file verifies whether it is gzip-compressed or not (Debian, for one,
recompresses the Fashion-MNIST files, which changes the ``.gz`` bytes but not their contents).
The ``.gz`` keys are the files as published on the mirrors and are checked on download.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset's facts, for the command line and for checking what was loaded.

    ``image_shape`` is (C, H, W) of the images as stored: for CIFAR-10 that is the colour shape
    (3, 32, 32), although ``load_cifar_10`` gives grayscale (1024 features) by default.
    ``n_features`` is the length of a flattened image as loaded by default.
    """

    name: str
    title: str
    image_shape: tuple[int, int, int]
    n_features: int
    n_classes: int
    class_names: tuple[str, ...]
    n_train: int
    n_test: int
    source: str


_MNIST_SOURCE = (
    "Yann LeCun, Corinna Cortes and Christopher J.C. Burges (CC BY-SA 3.0); "
    "the original host yann.lecun.com/exdb/mnist is gone, minidl downloads from mirrors"
)

DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        title="MNIST",
        image_shape=(1, 28, 28),
        n_features=784,
        n_classes=10,
        class_names=tuple(str(d) for d in range(10)),
        n_train=60000,
        n_test=10000,
        source=_MNIST_SOURCE,
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        title="Fashion-MNIST",
        image_shape=(1, 28, 28),
        n_features=784,
        n_classes=10,
        class_names=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        n_train=60000,
        n_test=10000,
        source="Zalando Research, github.com/zalandoresearch/fashion-mnist (MIT licence)",
    ),
    "cifar-10": DatasetInfo(
        name="cifar-10",
        title="CIFAR-10",
        image_shape=(3, 32, 32),
        n_features=1024,  # grayscale by default, as the course's loader gave
        n_classes=10,
        class_names=(
            "airplane", "automobile", "bird", "cat", "deer",
            "dog", "frog", "horse", "ship", "truck",
        ),
        n_train=50000,
        n_test=10000,
        source=(
            "Alex Krizhevsky, Vinod Nair and Geoffrey Hinton, www.cs.toronto.edu/~kriz/cifar.html "
            "(no licence stated; cite Krizhevsky 2009, 'Learning Multiple Layers of Features "
            "from Tiny Images')"
        ),
    ),
    "mnist-mini": DatasetInfo(
        name="mnist-mini",
        title="MNIST mini (shipped with minidl)",
        image_shape=(1, 28, 28),
        n_features=784,
        n_classes=10,
        class_names=tuple(str(d) for d in range(10)),
        n_train=10000,
        n_test=2000,
        source="a stratified sample of MNIST, shipped inside minidl; " + _MNIST_SOURCE,
    ),
}

# Other spellings people type for the same datasets.
_ALIASES = {
    "mnist_mini": "mnist-mini",
    "mnistmini": "mnist-mini",
    "fashion": "fashion-mnist",
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "cifar10": "cifar-10",
    "cifar_10": "cifar-10",
}


def canonical_name(name: object) -> str:
    """The registry key for ``name``; ``ValueError`` listing the names when it is unknown."""
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return key


# The four IDX files of MNIST and Fashion-MNIST, in the order (x_train, t_train, x_test, t_test).
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# CIFAR-10 folders and archives, as the Toronto page distributes them.
CIFAR_BIN_DIR = "cifar-10-batches-bin"
CIFAR_PY_DIR = "cifar-10-batches-py"
CIFAR_BIN_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR_PY_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_BIN_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_BIN_TEST = "test_batch.bin"
CIFAR_PY_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_PY_TEST = "test_batch"
# Published on the Toronto page: every batch (five training, one test) holds 10000 images; the
# test batch exactly 1000 of each class, the training batches between them exactly 5000 of each.
CIFAR_BATCH_RECORDS = 10000

CHECKSUMS: dict[str, tuple[str, str]] = {
    # MNIST contents: sha256 that we computed from the uncompressed files of a copy whose md5s
    # (6bbc9ace..., a25bea73..., 2646ac64..., 27ae3e4e...) are those of the original MNIST
    # files as listed in public code, e.g. torchvision-based dataset scripts.
    "mnist/train-images-idx3-ubyte": (
        "sha256", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "mnist/train-labels-idx1-ubyte": (
        "sha256", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "mnist/t10k-images-idx3-ubyte": (
        "sha256", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "mnist/t10k-labels-idx1-ubyte": (
        "sha256", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    # MNIST as published (gzip): md5s from torchvision/datasets/mnist.py `MNIST.resources`.
    "mnist/train-images-idx3-ubyte.gz": ("md5", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "mnist/train-labels-idx1-ubyte.gz": ("md5", "d53e105ee54ea40749a09fcbcd1e9432"),
    "mnist/t10k-images-idx3-ubyte.gz": ("md5", "9fb629c4189551a2d022fa330f9573f3"),
    "mnist/t10k-labels-idx1-ubyte.gz": ("md5", "ec29112dd5afa0611ce80d1b7f02629c"),
    # Fashion-MNIST contents: sha256 that we computed from the decompressed files of Debian's
    # dataset-fashion-mnist. Their md5s (f4a8712d..., 9018921c..., 8181f547..., 15d48437...)
    # match the md5s of the uncompressed Fashion-MNIST files listed in public code.
    "fashion-mnist/train-images-idx3-ubyte": (
        "sha256", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "fashion-mnist/train-labels-idx1-ubyte": (
        "sha256", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "fashion-mnist/t10k-images-idx3-ubyte": (
        "sha256", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "fashion-mnist/t10k-labels-idx1-ubyte": (
        "sha256", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    # Fashion-MNIST as published (gzip): md5s from torchvision/datasets/mnist.py
    # `FashionMNIST.resources`, the same as the table in zalandoresearch/fashion-mnist's README.
    "fashion-mnist/train-images-idx3-ubyte.gz": ("md5", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    "fashion-mnist/train-labels-idx1-ubyte.gz": ("md5", "25c81989df183df01b3e8a0aad5dffbe"),
    "fashion-mnist/t10k-images-idx3-ubyte.gz": ("md5", "bef4ecab320f06d8554ea6380940ec79"),
    "fashion-mnist/t10k-labels-idx1-ubyte.gz": ("md5", "bb300cfdad3c16e7a12a480ee83cd310"),
    # CIFAR-10 archives: md5s published on www.cs.toronto.edu/~kriz/cifar.html.
    CIFAR_BIN_ARCHIVE: ("md5", "c32a1d4ab5d03f1284b67883e8d87530"),
    CIFAR_PY_ARCHIVE: ("md5", "c58f30108f718f92721af3b95e74349a"),
    # CIFAR-10 python-version batches: md5s from torchvision/datasets/cifar.py `CIFAR10.train_list`
    # and `test_list`. No public per-file checksums exist for the binary-version batches; those are
    # checked for structure only (whole 3073-byte records, labels 0-9).
    f"{CIFAR_PY_DIR}/data_batch_1": ("md5", "c99cafc152244af753f735de768cd75f"),
    f"{CIFAR_PY_DIR}/data_batch_2": ("md5", "d4bba439e000b95fd0a9bffe97cbabec"),
    f"{CIFAR_PY_DIR}/data_batch_3": ("md5", "54ebc095f3ab1f0389bbae665268c751"),
    f"{CIFAR_PY_DIR}/data_batch_4": ("md5", "634d18415352ddfa80567beed471001a"),
    f"{CIFAR_PY_DIR}/data_batch_5": ("md5", "482c414d41f54cd18b22e5b47cb7c3cb"),
    f"{CIFAR_PY_DIR}/test_batch": ("md5", "40351d587109b95175f43aff81a1287e"),
}


@dataclass(frozen=True)
class Download:
    """What to fetch for a dataset: files put in ``folder`` of the data folder ('' = top)."""

    folder: str
    files: tuple[str, ...]


DOWNLOADS: dict[str, Download] = {
    "mnist": Download("mnist", tuple(f + ".gz" for f in IDX_FILES)),
    "fashion-mnist": Download("fashion-mnist", tuple(f + ".gz" for f in IDX_FILES)),
    # The binary version: reading it needs no unpickling.
    "cifar-10": Download("", (CIFAR_BIN_ARCHIVE,)),
}

# Base URLs tried in turn; a file's URL is the base followed by its name.
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion-mnist": [  # https first; the S3 website endpoint serves only http
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
    "cifar-10": ["https://www.cs.toronto.edu/~kriz/"],
}
