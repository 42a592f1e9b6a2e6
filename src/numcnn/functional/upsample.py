"""Nearest-neighbour upsampling by integer factors, forward and backward.

Shapes: x (N, C, H, W) -> out (N, C, H*sh, W*sw) (any 4-D layout: only the last two axes move).

Forward: out[..., y, x] = in[..., y // sh, x // sw]: each pixel becomes an sh x sw block, which is
PyTorch's ``mode="nearest"`` for integer scale factors.  Done as a broadcast of a
(..., H, 1, W, 1) view to (..., H, sh, W, sw) and one reshape: no loop.
Backward: each input pixel was copied to sh*sw outputs, so it collects the sum of their
gradients (the chain rule's sum over every use): reshape dL/dO to (..., H, sh, W, sw) and sum
the two block axes.
"""
from __future__ import annotations

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
