"""DataLoader, normalisation and batch augmentation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numcnn.data.augment import Augment, random_crop, random_flip, random_shift
from numcnn.data.loader import DataLoader, compute_normalization, normalize
from numcnn.errors import ConfigError, DataError, ShapeError


def _data(n=23, c=2, h=4, w=3, seed=0):
    r = np.random.default_rng(seed)
    x = r.integers(0, 256, size=(n, c, h, w), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(n)                       # sample id written into a pixel
    y = np.arange(n) % 5
    return x, y


def _ids(xb):
    return np.rint(xb[:, 0, 0, 0] * 255).astype(int)


# ------------------------------------------------------------------------------ DataLoader

def test_batches_shapes_dtypes_and_each_sample_once():
    x, y = _data()
    dl = DataLoader(x, y, batch_size=5, seed=1)
    assert len(dl) == 5
    seen = []
    sizes = []
    for xb, yb in dl:
        assert xb.dtype == np.float32 and xb.shape[1:] == (2, 4, 3)
        assert yb.dtype == np.int64 and yb.shape == (xb.shape[0],)
        ids = _ids(xb)
        np.testing.assert_array_equal(yb, y[ids])        # labels travel with their images
        np.testing.assert_allclose(xb, x[ids] / np.float32(255), rtol=0, atol=0)
        seen.extend(ids)
        sizes.append(len(ids))
    assert sizes == [5, 5, 5, 5, 3]
    assert sorted(seen) == list(range(23))
    assert seen != list(range(23))                        # shuffled


def test_drop_last_and_len():
    x, y = _data()
    dl = DataLoader(x, y, batch_size=5, drop_last=True)
    assert len(dl) == 4
    batches = list(dl)
    assert [len(b[1]) for b in batches] == [5, 5, 5, 5]
    ids = np.concatenate([_ids(b[0]) for b in batches])
    assert len(set(ids.tolist())) == 20
    assert len(DataLoader(x, y, batch_size=23, drop_last=True)) == 1
    assert len(DataLoader(x, y, batch_size=100)) == 1
    with pytest.raises(ConfigError, match="no batch"):
        DataLoader(x, y, batch_size=24, drop_last=True)


def test_order_is_deterministic_per_seed_and_epoch():
    x, y = _data(n=50)
    a = DataLoader(x, y, batch_size=7, seed=3)
    b = DataLoader(x, y, batch_size=7, seed=3)
    e0a = np.concatenate([_ids(xb) for xb, _ in a])
    e1a = np.concatenate([_ids(xb) for xb, _ in a])      # plain iteration advances the epoch
    assert a.epoch == 2
    b.set_epoch(1)
    e1b = np.concatenate([_ids(xb) for xb, _ in b])
    b.set_epoch(0)
    e0b = np.concatenate([_ids(xb) for xb, _ in b])
    np.testing.assert_array_equal(e0a, e0b)
    np.testing.assert_array_equal(e1a, e1b)
    assert not np.array_equal(e0a, e1a)
    np.testing.assert_array_equal(a.order(1), e1a)
    other = DataLoader(x, y, batch_size=7, seed=4)
    assert not np.array_equal(other.order(0), a.order(0))
    plain = DataLoader(x, y, batch_size=7, shuffle=False)
    np.testing.assert_array_equal(np.concatenate([_ids(xb) for xb, _ in plain]), np.arange(50))


def test_resume_mid_epoch_reproduces_batches_including_augmentation():
    x, y = _data(n=40, h=8, w=8)
    aug = Augment(shift=2, flip=True)
    full = DataLoader(x, y, batch_size=6, seed=11, augment=aug)
    full.set_epoch(2)
    ref = list(full)
    resumed = DataLoader(x, y, batch_size=6, seed=11, augment=aug)
    tail = list(resumed.iter_from(2, 4))
    assert len(tail) == len(ref) - 4
    for (xa, ya), (xb, yb) in zip(ref[4:], tail):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert resumed.epoch == 3
    assert list(resumed.iter_from(2, len(resumed))) == []
    with pytest.raises(ConfigError):
        resumed.iter_from(0, len(resumed) + 1)
    with pytest.raises(ConfigError):
        resumed.set_epoch(-1)


def test_float_input_is_not_divided_and_normalize_is_applied():
    x = np.arange(2 * 2 * 2 * 2, dtype=np.float32).reshape(2, 2, 2, 2)
    y = np.array([0, 1])
    (xb, _), = DataLoader(x, y, batch_size=2, shuffle=False)
    np.testing.assert_array_equal(xb, x)
    mean, std = np.array([1.0, 2.0]), np.array([2.0, 4.0])
    (xb, _), = DataLoader(x, y, batch_size=2, shuffle=False, normalize=(mean, std),
                          dtype=np.float64)
    assert xb.dtype == np.float64
    np.testing.assert_allclose(xb, (x - mean[None, :, None, None]) / std[None, :, None, None])


def test_loader_argument_errors():
    x, y = _data()
    with pytest.raises(ConfigError, match="batch_size"):
        DataLoader(x, y, batch_size=0)
    with pytest.raises(ConfigError, match="batch_size"):
        DataLoader(x, y, batch_size=-3)
    with pytest.raises(DataError, match="23 samples but y has 22"):
        DataLoader(x, y[:-1])
    with pytest.raises(DataError, match="empty"):
        DataLoader(x[:0], y[:0])
    with pytest.raises(ShapeError):
        DataLoader(x[:, 0], y)
    with pytest.raises(ConfigError, match="dtype"):
        DataLoader(x, y, dtype=np.int32)
    with pytest.raises(ShapeError, match="channel"):
        DataLoader(x, y, normalize=([0.5, 0.5, 0.5], [1, 1, 1]))
    with pytest.raises(ConfigError, match="std"):
        DataLoader(x, y, normalize=([0.5, 0.5], [1, 0]))
    with pytest.raises(ConfigError, match="integer"):
        DataLoader(x, y.astype(float))


# ------------------------------------------------------------------------------ normalisation

def test_compute_normalization_by_hand():
    # channel 0 holds 0 and 255 -> scaled 0, 1 -> mean 0.5, std 0.5
    # channel 1 holds 51 everywhere -> 0.2, std 0 -> replaced by 1
    x = np.zeros((2, 2, 1, 2), dtype=np.uint8)
    x[0, 0] = 0
    x[1, 0] = 255
    x[:, 1] = 51
    mean, std = compute_normalization(x)
    assert mean.dtype == np.float32 and std.dtype == np.float32 and mean.shape == (2,)
    np.testing.assert_allclose(mean, [0.5, 0.2], rtol=1e-6)
    np.testing.assert_allclose(std, [0.5, 1.0], rtol=1e-6)
    out = normalize(x, mean, std)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], [[[-1.0, -1.0]], [[1.0, 1.0]]], atol=1e-6)
    np.testing.assert_allclose(out[:, 1], 0.0, atol=1e-6)
    # float input: no /255.  values 1, 2, 3, 6 -> mean 3, var (4 + 1 + 0 + 9) / 4 = 3.5
    xf = np.array([1, 2, 3, 6], dtype=np.float64).reshape(1, 1, 2, 2)
    m, s = compute_normalization(xf)
    np.testing.assert_allclose(m, [3.0])
    np.testing.assert_allclose(s, [np.sqrt(3.5)], rtol=1e-6)
    # a single image (C, H, W) is normalised too, and the input is not modified
    img = xf[0].copy()
    np.testing.assert_allclose(normalize(img, m, s), (img - 3.0) / np.sqrt(3.5), rtol=1e-6)
    np.testing.assert_array_equal(img, xf[0])


@pytest.mark.parametrize("x", [np.full((5000, 1, 4, 4), 37, np.uint8),
                               np.full((3000, 2, 3, 3), 0.3, np.float64)])
def test_a_constant_channel_gets_std_exactly_1_despite_rounding(x):
    """Chunked float64 sums leave ~1e-17 instead of 0 for a constant channel; dividing by that
    turned a constant image into values of 2e8."""
    mean, std = compute_normalization(x, chunk=777)
    np.testing.assert_array_equal(std, 1.0)
    assert np.abs(normalize(x[:2], mean, std, np.float64)).max() < 1e-7   # (float32 mean)
    xb, _ = next(iter(DataLoader(x, np.zeros(len(x), int), 8, normalize=(mean, std), dtype=np.float64)))
    assert np.abs(xb).max() < 1e-6


@pytest.mark.parametrize("dtype", [np.int16, np.int64, np.uint16])
def test_compute_normalization_refuses_integer_images_other_than_uint8(dtype):
    with pytest.raises(ConfigError, match="uint8 .* or float"):
        compute_normalization(np.zeros((2, 1, 2, 2), dtype))


def test_compute_normalization_chunked_matches_numpy():
    r = np.random.default_rng(0)
    x = r.integers(0, 256, size=(101, 3, 5, 4), dtype=np.uint8)
    mean, std = compute_normalization(x, chunk=7)
    xs = x / 255.0
    np.testing.assert_allclose(mean, xs.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(std, xs.std(axis=(0, 2, 3)), rtol=1e-5)
    with pytest.raises(DataError):
        compute_normalization(x[:0])
    with pytest.raises(ShapeError):
        compute_normalization(x[0])


# ------------------------------------------------------------------------------- augmentation

def _shift_reference(x, max_shift, rng):
    """Per-image loop: the documented definition of random_shift."""
    n, c, h, w = x.shape
    s = max_shift
    oy = rng.integers(0, 2 * s + 1, size=n)
    ox = rng.integers(0, 2 * s + 1, size=n)
    out = np.zeros_like(x)
    for k in range(n):
        dy, dx = oy[k] - s, ox[k] - s
        for i in range(h):
            for j in range(w):
                si, sj = i + dy, j + dx
                if 0 <= si < h and 0 <= sj < w:
                    out[k, :, i, j] = x[k, :, si, sj]
    return out


def _flip_reference(x, rng, p):
    u = rng.random(x.shape[0])
    out = x.copy()
    for k in range(x.shape[0]):
        if u[k] < p:
            out[k] = x[k, :, :, ::-1]
    return out


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("s", [1, 2, 3])
def test_random_shift_matches_per_image_loop(dtype, s):
    x = np.random.default_rng(5).integers(1, 256, size=(17, 3, 6, 7)).astype(dtype)
    got = random_shift(x, s, np.random.default_rng(42))
    ref = _shift_reference(x, s, np.random.default_rng(42))
    assert got.dtype == x.dtype and got.shape == x.shape
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(random_crop(x, s, np.random.default_rng(42)), ref)
    # the shifts really vary between images
    assert len({(got[k] == 0).sum() for k in range(17)}) > 1


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 6), h=st.integers(1, 6), w=st.integers(1, 6), s=st.integers(0, 7),
       seed=st.integers(0, 2 ** 32 - 1))
def test_random_shift_property(n, h, w, s, seed):
    x = np.random.default_rng(seed).integers(1, 256, size=(n, 2, h, w), dtype=np.uint8)
    got = random_shift(x, s, np.random.default_rng(seed))
    if s == 0:
        np.testing.assert_array_equal(got, x)
    else:
        np.testing.assert_array_equal(got, _shift_reference(x, s, np.random.default_rng(seed)))


def test_random_flip_matches_per_image_loop():
    x = np.random.default_rng(1).integers(0, 256, size=(20, 2, 3, 5), dtype=np.uint8)
    for p in (0.0, 0.3, 0.5, 1.0):
        got = random_flip(x, np.random.default_rng(7), p)
        np.testing.assert_array_equal(got, _flip_reference(x, np.random.default_rng(7), p))
    np.testing.assert_array_equal(random_flip(x, np.random.default_rng(0), 1.0),
                                  x[..., ::-1])
    with pytest.raises(ConfigError):
        random_flip(x, np.random.default_rng(0), 1.5)


def test_augment_object():
    x = np.random.default_rng(2).integers(0, 256, size=(9, 1, 5, 5), dtype=np.uint8)
    aug = Augment(shift=2, flip=True)
    assert aug.config() == {"shift": 2, "flip": True}
    assert Augment.from_config(aug.config()) == aug
    got = aug(x, np.random.default_rng(3))
    r = np.random.default_rng(3)
    ref = _flip_reference(_shift_reference(x, 2, r), r, 0.5)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(Augment(shift=0)(x, np.random.default_rng(0)), x)
    with pytest.raises(ConfigError):
        Augment(shift=-1)
    with pytest.raises(ConfigError):
        Augment(flip="yes")
    with pytest.raises(ConfigError):
        Augment.from_config({"shift": 1, "rotate": 5})
    with pytest.raises(ConfigError):
        random_shift(x, 1, rng=np.random.RandomState(0))
    with pytest.raises(ShapeError):
        random_shift(x[0], 1, np.random.default_rng(0))
