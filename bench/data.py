"""The benchmark's datasets, as the course's loop gets them from the loaders.

Images float32 in [0, 1] (the book's ``normalize=True``: a float32 division by
255), flattened; labels one-hot float32 rows (``one_hot_label=True``, as the
course notebook uses). ``mnist`` and ``fashion`` are the real files (found as minidl's
loaders find them: ``$MINIDL_DATA_DIR``, the cache folder, ...), ``mnist-mini``
ships with minidl, and ``cifar`` is a synthetic stand-in for CIFAR-10 in
grayscale: what matters for speed is its shape (50,000 + 10,000 dense images of
1024 pixels, hardly a zero among them), and its labels are a fixed function of
the pixels, so that accuracy means something.
"""

from __future__ import annotations

import numpy as np

# name -> (title, loader of minidl.datasets or None for the synthetic set, training images)
DATASETS = {
    "mnist": ("MNIST", "load_mnist", 60000),
    "fashion": ("Fashion-MNIST", "load_fashion_mnist", 60000),
    "cifar": ("CIFAR-10 gray (synthetic)", None, 50000),
    "mnist-mini": ("MNIST mini", "load_mnist_mini", 10000),
}


def train_size(name, n_train=None):
    full = DATASETS[name][2]
    return full if n_train is None else min(n_train, full)

CIFAR_SEED = 13


def synthetic_cifar_gray(n_train=50000, n_test=10000, width=1024, n_classes=10,
                         seed=CIFAR_SEED, components=16, signal=35.0, noise=15.0):
    """``(x_train, t_train), (x_test, t_test)``: uint8 images (N, width), int64 labels (N,).

    Drawn from ``numpy.random.default_rng(seed)``: each image is 128 plus a random
    combination of ``components`` fixed random patterns (about ``signal`` grey levels
    per pixel) plus pixel noise (``noise`` levels), rounded and clipped to 0..255: dense
    as CIFAR-10 is (under 0.1% zeros), its variance in a few directions as a photo's.
    The label is the class whose fixed random direction the image (centred at 127.5)
    projects onto most: a function of the pixels that a 1024-50-10 network learns to
    about 60% in 3000 iterations of the course's loop, so accuracy means something. The
    same arguments give the same arrays.
    """
    if min(n_train, n_test, width, n_classes, components) < 1:
        raise ValueError("sizes must be at least 1")
    rng = np.random.default_rng(seed)
    patterns = rng.standard_normal((components, width), dtype=np.float32)
    patterns *= np.float32(signal / np.sqrt(components))
    proj = rng.standard_normal((width, n_classes), dtype=np.float32)
    n = n_train + n_test
    x = np.empty((n, width), dtype=np.uint8)
    t = np.empty(n, dtype=np.int64)
    step = 8192  # rows at a time: the float32 temporaries stay small
    for start in range(0, n, step):
        m = min(step, n - start)
        v = rng.standard_normal((m, components), dtype=np.float32) @ patterns
        v += rng.standard_normal((m, width), dtype=np.float32) * np.float32(noise)
        v += np.float32(128.0)
        np.clip(v, 0, 255, out=v)
        rows = x[start:start + m]
        np.rint(v, out=v)
        rows[...] = v
        t[start:start + m] = np.argmax((rows - np.float32(127.5)) @ proj, axis=1)
    return (x[:n_train], t[:n_train]), (x[n_train:], t[n_train:])


def one_hot(t, n_classes=10):
    rows = np.zeros((len(t), n_classes), dtype=np.float32)
    rows[np.arange(len(t)), t] = 1.0
    return rows


def normalize(x):
    """The loaders' ``normalize=True``: float32 division by 255 in one pass."""
    return np.divide(x, np.float32(255.0), dtype=np.float32)


def load(name, n_train=None, n_test=None):
    """``(x_train, t_train, x_test, t_test)`` for the course's loop: float32 images,
    one-hot float32 labels. ``n_train``/``n_test`` keep the first images only
    (the synthetic set is generated at that size)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    loader = DATASETS[name][1]
    if loader is None:
        (x_train, t_train), (x_test, t_test) = synthetic_cifar_gray(
            50000 if n_train is None else n_train, 10000 if n_test is None else n_test)
        return (normalize(x_train), one_hot(t_train), normalize(x_test), one_hot(t_test))
    import minidl.datasets

    (x_train, t_train), (x_test, t_test) = getattr(minidl.datasets, loader)(
        normalize=True, flatten=True, one_hot_label=True)
    return (x_train[:n_train], t_train[:n_train], x_test[:n_test], t_test[:n_test])


def zero_fraction(x):
    return float(np.count_nonzero(x == 0)) / x.size
