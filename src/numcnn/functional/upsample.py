"""Upsampling by integer factors, nearest-neighbour and bilinear, forward and backward.

Shapes: x (N, C, H, W) -> out (N, C, H*sh, W*sw) (any 4-D layout: only the last two axes move).

Forward: out[..., y, x] = in[..., y // sh, x // sw]: each pixel becomes an sh x sw block, which is
PyTorch's ``mode="nearest"`` for integer scale factors.  Done as a broadcast of a
(..., H, 1, W, 1) view to (..., H, sh, W, sw) and one reshape: no loop.
Backward: each input pixel was copied to sh*sw outputs, so it collects the sum of their
gradients (the chain rule's sum over every use): reshape dL/dO to (..., H, sh, W, sw) and sum
the two block axes.

Bilinear (PyTorch's ``mode="bilinear"``): each output is a weighted mean of the 2x2 input pixels
around its source position; along one axis that is a fixed matrix, so the whole map is
``A_h @ x @ A_w^T`` and the backward pass the transposed product (see :func:`bilinear_matrix`).
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module


def upsample_nearest2d(x, scale):
    """``(a, b, H, W) -> (a, b, H*sh, W*sw)``, ``scale = (sh, sw)``."""
    xp = get_array_module(x)
    a, b, h, w = x.shape
    sh, sw = scale
    big = xp.broadcast_to(x[:, :, :, None, :, None], (a, b, h, sh, w, sw))
    return xp.ascontiguousarray(big).reshape(a, b, h * sh, w * sw)


def upsample_nearest2d_backward(grad_out, scale):
    """dL/dx: the sum of dL/dO over each sh x sw block."""
    a, b, hs, ws = grad_out.shape
    sh, sw = scale
    return grad_out.reshape(a, b, hs // sh, sh, ws // sw, sw).sum(axis=(3, 5))


def bilinear_matrix(size, scale, align_corners=False, dtype=np.float64):
    """The (size*scale, size) matrix A with ``out = A @ in`` along one axis, PyTorch's rule:

    * ``align_corners=False``: output pixel y sits at source position
      ``max(0, (y + 0.5) / s - 0.5)`` (pixel centres line up, clamped at the top edge);
    * ``align_corners=True``: at ``y (H - 1) / (H' - 1)`` (corner pixels line up).
    It reads the two source rows around that position, ``floor`` and the next (the last row
    repeats at the bottom edge), weighted by ``1 - frac`` and ``frac``.
    """
    out = size * scale
    y = np.arange(out, dtype=np.float64)
    if align_corners:
        src = y * ((size - 1) / (out - 1) if out > 1 else 0.0)
    else:
        src = np.maximum((y + 0.5) / scale - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), size - 1)
    hi = np.minimum(lo + 1, size - 1)
    frac = src - lo
    a = np.zeros((out, size), dtype=np.float64)
    np.add.at(a, (np.arange(out), lo), 1.0 - frac)
    np.add.at(a, (np.arange(out), hi), frac)
    return a.astype(dtype)


def upsample_bilinear2d(x, scale, align_corners=False):
    """Bilinear upsampling, separable: ``out = A_h @ x @ A_w^T`` on the last two axes, with
    :func:`bilinear_matrix`'s interpolation matrices; returns ``(out, (A_h, A_w))``.

    Two small GEMMs (A is dense, H' x H): simple and fast at the sizes CNNs upsample, and the
    same code on a GPU.
    """
    xp = get_array_module(x)
    h, w = x.shape[2:]
    a_h, a_w = (xp.asarray(bilinear_matrix(n, s, align_corners, x.dtype))
                for n, s in zip((h, w), scale))
    return xp.matmul(xp.matmul(a_h, x), a_w.T), (a_h, a_w)


def upsample_bilinear2d_backward(grad_out, mats):
    """The adjoint: dL/dx = A_h^T @ dL/dO @ A_w (each input pixel collects its weighted shares)."""
    xp = get_array_module(grad_out)
    a_h, a_w = mats
    return xp.matmul(xp.matmul(a_h.T, grad_out), a_w)
