"""Build ``minidl/datasets/data/mnist-mini.npz``, the MNIST sample shipped with minidl.

A stratified sample of the real MNIST: 10,000 training and 2,000 test images, drawn per class in
proportion to the class sizes of each set (largest remainders round), with a fixed seed, and
kept in their original order. The file holds ``x_train`` (10000, 784) and ``x_test`` (2000, 784)
uint8 pixels, ``t_train`` and ``t_test`` uint8 labels, ``train_indices`` and ``test_indices``
(int32: where each image is in the real sets), ``seed`` and ``source`` (the sha256 of the four
IDX files read). Saved with ``np.savez_compressed``; it must stay under 3 MB.

Run from the repository root, with minidl importable (``pip install -e .`` or ``PYTHONPATH=.``
after ``python3 setup.py build_ext --inplace``)::

    python3 tools/build_mnist_mini.py --source ../shared/datasets/mnist
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import numpy as np

from minidl._atomic import atomic_write
from minidl.datasets._idx import read_dataset
from minidl.datasets._locate import _idx_files
from minidl.datasets._registry import IDX_FILES

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "datasets" / "mnist"
DEFAULT_OUT = REPO / "minidl" / "datasets" / "data" / "mnist-mini.npz"
SEED = 20161128
N_TRAIN, N_TEST = 10_000, 2_000
MAX_BYTES = 3 * 1024 * 1024


def stratified_indices(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices into ``labels``, per class in proportion to its size, sorted."""
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / counts.sum()
    take = np.floor(quota).astype(np.int64)
    # Largest remainders get the places left, ties to the lower class.
    take[np.argsort(-(quota - take), kind="stable")[: n - take.sum()]] += 1
    picked = [
        rng.choice(np.flatnonzero(labels == c), size=k, replace=False)
        for c, k in zip(classes, take)
    ]
    return np.sort(np.concatenate(picked)).astype(np.int32)


def find_files(source: Path) -> dict[str, Path]:
    files, missing = _idx_files(source)
    if missing:
        raise SystemExit(f"{source}: {', '.join(missing)} missing")
    return files


def build(source: Path, out: Path) -> Path:
    files = find_files(source)
    # read_dataset verifies each file against the checksums of the real MNIST.
    arrays = read_dataset(files, "mnist", (28, 28), 10)
    rng = np.random.default_rng(SEED)
    train = stratified_indices(arrays["t_train"], N_TRAIN, rng)
    test = stratified_indices(arrays["t_test"], N_TEST, rng)
    digests = [f"{name}:{hashlib.sha256(files[name].read_bytes()).hexdigest()}"
               for name in IDX_FILES]
    with atomic_write(out) as f:
        np.savez_compressed(
            f,
            x_train=arrays["x_train"][train], t_train=arrays["t_train"][train],
            x_test=arrays["x_test"][test], t_test=arrays["t_test"][test],
            train_indices=train, test_indices=test,
            seed=np.int64(SEED), source=np.array(" ".join(digests)),
        )
        f.flush()
        if f.tell() > MAX_BYTES:  # raising here leaves the old file in place
            raise SystemExit(f"{out}: {f.tell()} bytes, over the limit of {MAX_BYTES}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help=f"folder with the four MNIST IDX files (default {DEFAULT_SOURCE})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the .npz to write")
    args = parser.parse_args()
    out = build(args.source, args.out)
    print(f"{out}: {os.path.getsize(out) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
