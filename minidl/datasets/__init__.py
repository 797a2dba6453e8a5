"""Datasets for "Deep Learning from Scratch": MNIST, Fashion-MNIST, CIFAR-10 and a mini MNIST.

The loaders keep the book's signature and return ``(x_train, t_train), (x_test, t_test)``::

    from minidl.datasets import load_mnist
    (x_train, t_train), (x_test, t_test) = load_mnist(normalize=True, one_hot_label=True)

Data is found, in order, in the ``data_dir=`` argument, ``$MINIDL_DATA_DIR``, minidl's cache
folder (``$XDG_CACHE_HOME/minidl``, default ``~/.cache/minidl``) and system folders
(``/usr/local/share/datasets``, ``/usr/share/datasets``); otherwise it is downloaded from mirrors
with checksums verified, unless ``download=False`` or ``MINIDL_OFFLINE=1``. A data folder holds
``mnist/`` and ``fashion-mnist/`` (the four IDX files, gzip or not) and CIFAR-10 as
``cifar-10-batches-bin/``, ``cifar-10-batches-py/`` or their original archives. Parsed arrays are
cached as ``.npz`` (no pickle), so a second load is quick. ``mnist-mini`` ships inside minidl
and needs nothing.
"""

from ._errors import DatasetNotFoundError
from ._load import (
    dataset_status,
    fetch,
    load_cifar_10,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
    load_mnist_mini,
)
from ._registry import DATASETS, DatasetInfo

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetNotFoundError",
    "dataset_status",
    "fetch",
    "load_cifar_10",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "load_mnist_mini",
]
