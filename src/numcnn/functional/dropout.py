"""Inverted dropout.

Training: each element is kept with probability 1 - p and scaled by 1 / (1 - p), so the expected
output equals the input and nothing needs rescaling at test time.  Evaluation: identity.
Backward: dL/dx = dL/dy * mask (the same kept-and-scaled mask).
"""
from __future__ import annotations

import numpy

from ..backend import get_array_module


def dropout_mask(shape, p, rng, dtype, xp=None):
    """A mask of ``0`` (dropped) and ``1/(1-p)`` (kept) drawn from ``rng``.

    ``rng`` is a NumPy Generator, so the mask is drawn with NumPy (the same masks on every
    device) and then moved to ``xp`` when that is another array module.
    """
    keep = rng.random(shape) >= p
    scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
    mask = keep.astype(dtype) * numpy.asarray(scale, dtype=dtype)
    if xp is not None and xp is not numpy:
        mask = xp.asarray(mask)
    return mask


def dropout_forward(x, p, rng):
    """Returns ``(out, mask)``: ``out = x * mask``."""
    mask = dropout_mask(x.shape, p, rng, x.dtype, get_array_module(x))
    return x * mask, mask


def dropout_backward(grad_out, mask):
    """dL/dx = dL/dy * mask."""
    return grad_out * mask
