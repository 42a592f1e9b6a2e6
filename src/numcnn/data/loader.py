"""Mini-batches, normalisation statistics and the normalisation function.

Scaling convention (used by :func:`normalize`, :func:`compute_normalization` and
:class:`DataLoader`, and stored with models):

* **uint8 input** is first scaled to [0, 1]: ``x / 255``;
* **float input** is used as it is (no ``/255``);
* then, if statistics are given, per channel: ``normalized = (scaled - mean[c]) / std[c]``.

So for uint8 data ``normalized = (x/255 - mean) / std`` with ``mean``/``std`` computed by
``compute_normalization(x_train)`` on the same convention.  (The "digits" dataset stores
0..16 in uint8, so it too is divided by 255; its statistics absorb the scale.)

Reproducible order: epoch ``e`` of a ``DataLoader(seed=s)`` is always shuffled by a
generator seeded from ``(s, e)`` alone, and the augmentation of batch ``b`` of epoch ``e``
by one seeded from ``(s, e, b)`` alone - so a run resumed at any epoch/batch with
:meth:`DataLoader.iter_from` sees exactly the batches the uninterrupted run would have seen.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..errors import ConfigError, DataError, ShapeError

__all__ = ["DataLoader", "compute_normalization", "normalize", "scale"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def scale(x, dtype=np.float32) -> np.ndarray:
    """``x / 255`` as ``dtype`` for uint8 input; other input just cast to ``dtype``."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        out = x.astype(dtype)
        out /= np.asarray(255, dtype=dtype)
        return out
    return x.astype(dtype, copy=False)


def _channel_stats(mean, std, channels, where):
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    std = np.asarray(std, dtype=np.float64).reshape(-1)
    for name, v in (("mean", mean), ("std", std)):
        if v.size not in (1, channels):
            raise ShapeError(f"{where}: {name} has {v.size} values but the data has {channels} "
                             f"channel(s); give one value per channel (or one for all)")
        if not np.all(np.isfinite(v)):
            raise ConfigError(f"{where}: {name} must be finite, got {v.tolist()}")
    if np.any(std <= 0):
        raise ConfigError(f"{where}: std must be > 0 in every channel, got {std.tolist()}")
    return mean, std


def normalize(x, mean, std, dtype=np.float32) -> np.ndarray:
    """Scale and standardise images: ``(scale(x) - mean[c]) / std[c]``.

    Parameters
    ----------
    x : array (..., C, H, W) - a batch ``(N, C, H, W)`` or one image ``(C, H, W)``.
        uint8 is divided by 255 first; floats are used as they are.
    mean, std : per-channel values, shape ``(C,)`` (or a single value for all channels),
        as returned by :func:`compute_normalization`.  ``std`` must be > 0.
    dtype : float32 (default) or float64, the result's dtype.

    Returns a new array of ``dtype`` with the shape of ``x``.
    """
    x = np.asarray(x)
    if x.ndim < 3:
        raise ShapeError(f"normalize: expected (N, C, H, W) or (C, H, W), got shape {x.shape}")
    dtype = np.dtype(dtype)
    if dtype not in _FLOAT_DTYPES:
        raise ConfigError(f"normalize: dtype must be float32 or float64, got {dtype}")
    mean, std = _channel_stats(mean, std, x.shape[-3], "normalize")
    m = mean.astype(dtype)[:, None, None] if mean.size > 1 else dtype.type(mean[0])
    s = std.astype(dtype)[:, None, None] if std.size > 1 else dtype.type(std[0])
    out = scale(x, dtype)
    if out is x:
        out = out.copy()
    out -= m
    out /= s
    return out


def compute_normalization(x, chunk: int = 4096):
    """Per-channel mean and standard deviation of a dataset, on the scaling convention.

    uint8 data is scaled to [0, 1] first (``x / 255``), float data is used as it is; the
    statistics are over all images and pixels of each channel, population std (ddof = 0),
    accumulated in float64 chunk by chunk (Chan et al.'s pairwise update), so even CIFAR-10
    needs little extra memory.  A constant channel (std below 1e-7 of its mean's size) gets
    std = 1, so it normalises to 0 rather than dividing by (almost) zero.

    Parameters
    ----------
    x : array (N, C, H, W), N >= 1.

    Returns ``(mean, std)``: two float32 arrays of shape ``(C,)``.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ShapeError(f"compute_normalization: expected (N, C, H, W), got shape {x.shape}")
    if x.shape[0] == 0 or x.size == 0:
        raise DataError("compute_normalization: the dataset is empty")
    if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
        raise ConfigError(f"compute_normalization: images must be uint8 (0..255) or float, got "
                          f"dtype {x.dtype}; convert them first")
    c = x.shape[1]
    count = 0
    mean = np.zeros(c)
    m2 = np.zeros(c)
    step = max(1, int(chunk))
    for start in range(0, x.shape[0], step):      # bounded memory: one chunk in float64
        xb = scale(x[start:start + step], np.float64)
        if not np.all(np.isfinite(xb)):
            raise DataError("compute_normalization: the data contains NaN or infinity")
        nb = xb.shape[0] * xb.shape[2] * xb.shape[3]
        mb = xb.mean(axis=(0, 2, 3))
        m2b = ((xb - mb[None, :, None, None]) ** 2).sum(axis=(0, 2, 3))
        delta = mb - mean
        tot = count + nb
        mean = mean + delta * (nb / tot)
        m2 = m2 + m2b + delta ** 2 * (count * nb / tot)
        count = tot
    std = np.sqrt(m2 / count)
    # a constant channel: rounding leaves a std of ~1e-17, not 0, which would blow its values up
    std[std <= 1e-7 * np.maximum(np.abs(mean), 1.0)] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


class DataLoader:
    """Iterate over ``(x, y)`` in mini-batches, shuffled reproducibly, optionally augmented
    and normalised.

    Parameters
    ----------
    x : array (N, C, H, W), uint8 or float.  Kept by reference, never modified.
    y : array (N,) of integer class ids.
    batch_size : int > 0.
    shuffle : bool.  If False every epoch goes in index order.
    seed : int >= 0.  Epoch ``e`` is shuffled by ``default_rng(SeedSequence(seed,
        spawn_key=(0, e)))``; batch ``b``'s augmentation uses ``SeedSequence(seed,
        spawn_key=(1, e, b))``.
    normalize : None or (mean, std).  None only scales (uint8 / 255); (mean, std) applies
        :func:`normalize` - see the module docstring for the convention.
    augment : None or a callable ``augment(x_batch, rng) -> x_batch`` such as
        :class:`numcnn.data.augment.Augment`; applied to the raw batch before scaling.
    drop_last : bool.  Drop the final short batch.
    dtype : float32 (default) or float64 for the yielded images.

    Iterating yields ``(xb, yb)``: ``xb`` of ``dtype`` and shape ``(B, C, H, W)``, ``yb``
    int64 of shape ``(B,)``; every sample appears exactly once per epoch (except those in a
    dropped last batch).  ``len(loader)`` is the number of batches per epoch.

    Epochs: ``iter(loader)`` runs epoch ``loader.epoch`` and then advances it by one, so
    ``for epoch in range(E): for xb, yb in loader: ...`` sees epochs 0, 1, 2...;
    ``set_epoch(e)`` (as with PyTorch samplers) picks the next one explicitly, and
    ``iter_from(epoch, batch_index)`` resumes in the middle of an epoch.
    """

    def __init__(self, x, y, batch_size: int = 64, shuffle: bool = True, seed: int = 0,
                 normalize=None, augment=None, drop_last: bool = False, dtype=np.float32):
        x = np.asarray(x)
        y = np.asarray(y)
        if x.ndim != 4:
            raise ShapeError(f"DataLoader: x must have shape (N, C, H, W), got {x.shape}; add "
                             f"a channel axis with x[:, None] for grey (N, H, W) images")
        if y.ndim != 1:
            raise ShapeError(f"DataLoader: y must have shape (N,), got {y.shape}")
        if len(x) != len(y):
            raise DataError(f"DataLoader: x has {len(x)} samples but y has {len(y)}; they must "
                            f"match")
        if len(x) == 0:
            raise DataError("DataLoader: the dataset is empty (0 samples)")
        if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
            raise ConfigError(f"DataLoader: x must be uint8 or float, got {x.dtype}")
        if not np.issubdtype(y.dtype, np.integer):
            raise ConfigError(f"DataLoader: y must hold integer class ids, got {y.dtype}")
        if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) \
                or batch_size <= 0:
            raise ConfigError(f"DataLoader: batch_size must be a positive integer, got "
                              f"{batch_size!r}")
        if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"DataLoader: seed must be an integer >= 0, got {seed!r}")
        if drop_last and batch_size > len(x):
            raise ConfigError(f"DataLoader: drop_last=True with batch_size={batch_size} > "
                              f"{len(x)} samples would yield no batch at all")
        self.dtype = np.dtype(dtype)
        if self.dtype not in _FLOAT_DTYPES:
            raise ConfigError(f"DataLoader: dtype must be float32 or float64, got {dtype}")
        if augment is not None and not callable(augment):
            raise ConfigError(f"DataLoader: augment must be callable (x, rng) -> x, got "
                              f"{type(augment).__name__}")
        if normalize is not None:
            try:
                mean, std = normalize
            except (TypeError, ValueError) as exc:
                raise ConfigError("DataLoader: normalize must be None or a (mean, std) "
                                  "pair") from exc
            mean, std = _channel_stats(mean, std, x.shape[1], "DataLoader")
            normalize = (mean.astype(np.float32), std.astype(np.float32))
        self.x, self.y = x, y.astype(np.int64, copy=False)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.normalize = normalize
        self.augment = augment
        self.drop_last = bool(drop_last)
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        """N, the number of samples."""
        return len(self.x)

    def __len__(self) -> int:
        n, b = len(self.x), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter(loader)`` run epoch ``epoch`` (>= 0)."""
        if not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ConfigError(f"DataLoader.set_epoch: epoch must be an integer >= 0, got "
                              f"{epoch!r}")
        self.epoch = int(epoch)

    def order(self, epoch: int) -> np.ndarray:
        """The sample order (a permutation of ``0..N-1``, int64) of epoch ``epoch``."""
        n = len(self.x)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        ss = np.random.SeedSequence(self.seed, spawn_key=(0, int(epoch)))
        return np.random.default_rng(ss).permutation(n).astype(np.int64)

    def batch_rng(self, epoch: int, batch_index: int) -> np.random.Generator:
        """The generator given to ``augment`` for batch ``batch_index`` of ``epoch``."""
        ss = np.random.SeedSequence(self.seed, spawn_key=(1, int(epoch), int(batch_index)))
        return np.random.default_rng(ss)

    def __iter__(self):
        epoch = self.epoch
        self.epoch = epoch + 1
        return self._batches(epoch, 0)

    def iter_from(self, epoch: int, batch_index: int = 0):
        """Iterate epoch ``epoch`` starting at batch ``batch_index`` (0 <= batch_index <=
        len(self)), yielding exactly what the full epoch would have yielded from there;
        afterwards plain iteration continues with epoch ``epoch + 1``."""
        if not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ConfigError(f"DataLoader.iter_from: epoch must be an integer >= 0, got "
                              f"{epoch!r}")
        if not isinstance(batch_index, numbers.Integral) or not 0 <= batch_index <= len(self):
            raise ConfigError(f"DataLoader.iter_from: batch_index must be in 0..{len(self)}, "
                              f"got {batch_index!r}")
        self.epoch = int(epoch) + 1
        return self._batches(int(epoch), int(batch_index))

    def _batches(self, epoch, first):
        idx = self.order(epoch)
        b = self.batch_size
        for k in range(first, len(self)):
            sel = idx[k * b:(k + 1) * b]
            yield self._make_batch(self.x[sel], epoch, k), self.y[sel]

    def _make_batch(self, xb, epoch, k):
        if self.augment is not None:
            xb = np.asarray(self.augment(xb, self.batch_rng(epoch, k)))
        if self.normalize is not None:
            return normalize(xb, self.normalize[0], self.normalize[1], self.dtype)
        return np.ascontiguousarray(scale(xb, self.dtype))

    def __repr__(self):
        return (f"DataLoader(N={len(self.x)}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last}, "
                f"augment={self.augment!r}, normalize={self.normalize is not None})")
