"""Vectorised data augmentation on whole batches.

Every function takes a batch ``x`` of shape ``(N, C, H, W)`` (any dtype; the result has the
same dtype and shape) and a ``numpy.random.Generator``, and never loops over images in
Python.  The random draws are documented exactly so that a run can be reproduced (and a
per-image reference written) from the same generator state:

* :func:`random_shift` draws ``oy = rng.integers(0, 2*s + 1, size=N)`` and then
  ``ox = rng.integers(0, 2*s + 1, size=N)``;
* :func:`random_flip` draws ``rng.random(N)``.

:class:`Augment` chains them (shift first, then flip) and is what :class:`DataLoader` takes.
The DataLoader applies augmentation to the *raw* batch, before scaling and normalisation, so
the zero padding of a shift is black in the picture.
"""
from __future__ import annotations

import numbers

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ConfigError, ShapeError

__all__ = ["random_shift", "random_crop", "random_flip", "Augment"]


def _check_batch(x, where):
    x = np.asarray(x)
    if x.ndim != 4:
        raise ShapeError(f"{where}: expected a batch of shape (N, C, H, W), got shape {x.shape}")
    return x


def _check_rng(rng, where):
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(f"{where}: rng must be a numpy.random.Generator (e.g. "
                          f"numpy.random.default_rng(0)), got {type(rng).__name__}")
    return rng


def random_shift(x, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Shift each image by its own random offset, filling the uncovered border with zeros.

    Equivalent to a random crop of size ``(H, W)`` from the image zero-padded by
    ``s = max_shift`` pixels on every side: for image ``n`` with offsets
    ``oy[n], ox[n]`` in ``0..2s`` (drawn as ``oy = rng.integers(0, 2s+1, size=N)`` then
    ``ox = rng.integers(0, 2s+1, size=N)``)::

        out[n, c, i, j] = x[n, c, i + oy[n] - s, j + ox[n] - s]   (0 outside the image)

    so every shift in ``-s..s`` along each axis is equally likely.  Implemented as a zero pad
    then one gather from a sliding-window view (no Python loop over images).

    Parameters
    ----------
    x : array (N, C, H, W), any dtype.
    max_shift : int >= 0.  0 returns a copy.
    rng : numpy.random.Generator.

    Returns a new array, same shape and dtype as ``x``.
    """
    x = _check_batch(x, "random_shift")
    rng = _check_rng(rng, "random_shift")
    if not isinstance(max_shift, numbers.Integral) or isinstance(max_shift, bool) \
            or max_shift < 0:
        raise ConfigError(f"random_shift: max_shift must be an integer >= 0, got {max_shift!r}")
    s = int(max_shift)
    n, _, h, w = x.shape
    if s == 0 or n == 0:
        return x.copy()
    oy = rng.integers(0, 2 * s + 1, size=n)
    ox = rng.integers(0, 2 * s + 1, size=n)
    padded = np.pad(x, ((0, 0), (0, 0), (s, s), (s, s)))
    windows = sliding_window_view(padded, (h, w), axis=(2, 3))   # (N, C, 2s+1, 2s+1, H, W)
    return np.ascontiguousarray(windows[np.arange(n), :, oy, ox])  # -> (N, C, H, W)


def random_crop(x, padding: int, rng: np.random.Generator) -> np.ndarray:
    """Random ``(H, W)`` crop of ``x`` zero-padded by ``padding`` pixels: the same operation
    (and the same random draws) as :func:`random_shift` with ``max_shift=padding``."""
    return random_shift(x, padding, rng)


def random_flip(x, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror each image left-right with probability ``p``.

    Draws ``u = rng.random(N)``; image ``n`` is flipped when ``u[n] < p``.  Returns a new
    array, same shape and dtype as ``x``.
    """
    x = _check_batch(x, "random_flip")
    rng = _check_rng(rng, "random_flip")
    if not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
        raise ConfigError(f"random_flip: p must be a probability in [0, 1], got {p!r}")
    flip = rng.random(x.shape[0]) < p
    return np.where(flip[:, None, None, None], x[..., ::-1], x)


class Augment:
    """Callable batch augmentation: ``Augment(shift=2, flip=False)(x, rng) -> x_aug``.

    Applies :func:`random_shift` with ``max_shift=shift`` (skipped when 0), then
    :func:`random_flip` with p = 0.5 when ``flip`` is true.  ``config()`` returns a plain
    dict that :meth:`from_config` turns back into an equal object (stored with runs).
    Horizontal flips suit photos (CIFAR-10), not digits.
    """

    def __init__(self, shift: int = 2, flip: bool = False):
        if not isinstance(shift, numbers.Integral) or isinstance(shift, bool) or shift < 0:
            raise ConfigError(f"Augment: shift must be an integer >= 0 (pixels), got {shift!r}")
        if not isinstance(flip, (bool, np.bool_)):
            raise ConfigError(f"Augment: flip must be True or False, got {flip!r}")
        self.shift = int(shift)
        self.flip = bool(flip)

    def __call__(self, x, rng: np.random.Generator) -> np.ndarray:
        x = _check_batch(x, "Augment")
        if self.shift:
            x = random_shift(x, self.shift, rng)
        if self.flip:
            x = random_flip(x, rng, 0.5)
        return x

    def config(self) -> dict:
        """``{'shift': int, 'flip': bool}``."""
        return {"shift": self.shift, "flip": self.flip}

    @classmethod
    def from_config(cls, config: dict) -> "Augment":
        """Inverse of :meth:`config`; unknown keys are a ConfigError."""
        extra = set(config) - {"shift", "flip"}
        if extra:
            raise ConfigError(f"Augment.from_config: unknown key(s) {sorted(extra)}; expected "
                              f"'shift' and 'flip'")
        return cls(**config)

    def __eq__(self, other):
        return isinstance(other, Augment) and self.config() == other.config()

    def __hash__(self):
        return hash((self.shift, self.flip))

    def __repr__(self):
        return f"Augment(shift={self.shift}, flip={self.flip})"
