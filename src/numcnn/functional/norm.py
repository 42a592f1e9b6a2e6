"""Batch normalisation (1-D over (N, F), 2-D over (N, C, H, W)), forward and backward.

For each feature (channel) c, with m values per channel in the batch (N, or N*H*W):
    mu = mean(x),  var = mean((x - mu)^2)             (biased, used to normalise)
    x_hat = (x - mu) / sqrt(var + eps)
    y = gamma * x_hat + beta
Running statistics (used at evaluation), as PyTorch does:
    running_mean <- (1 - momentum) running_mean + momentum mu
    running_var  <- (1 - momentum) running_var  + momentum var * m / (m - 1)   (unbiased)
Backward (training mode, with g = dL/dy):
    dL/dgamma = sum g x_hat,   dL/dbeta = sum g
    dL/dx = gamma / sqrt(var + eps) * (g - mean(g) - x_hat * mean(g x_hat))
(the two mean terms are there because mu and var themselves depend on every x in the batch).
In evaluation mode mu and var are constants, so dL/dx = g * gamma / sqrt(running_var + eps).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..backend import get_array_module


@dataclass
class NormCache:
    x_hat: object
    inv_std: object    # shaped to broadcast against x
    gamma: object      # shaped to broadcast against x
    axes: tuple
    training: bool


def _axes_and_shape(x, layout="NCHW"):
    if x.ndim == 2:
        return (0,), (1, -1)
    if layout == "CNHW":
        return (1, 2, 3), (-1, 1, 1, 1)
    return (0, 2, 3), (1, -1, 1, 1)


def batch_norm_forward(x, gamma, beta, running_mean, running_var, training=True,
                       momentum=0.1, eps=1e-5, layout="NCHW"):
    """Returns ``(y, cache)``; updates ``running_mean``/``running_var`` in place when training.

    ``layout="CNHW"`` takes (C, N, H, W) input (channels on axis 0).
    """
    xp = get_array_module(x)
    axes, bshape = _axes_and_shape(x, layout)
    if training:
        mu = x.mean(axis=axes)
        xc = x - mu.reshape(bshape)
        var = (xc * xc).mean(axis=axes)
        m = x.size // gamma.shape[0]
        running_mean *= 1 - momentum
        running_mean += momentum * mu
        running_var *= 1 - momentum
        running_var += momentum * var * (m / max(m - 1, 1))
    else:
        xc = x - running_mean.reshape(bshape)
        var = running_var
    inv_std = (x.dtype.type(1) / xp.sqrt(var + x.dtype.type(eps))).reshape(bshape)
    x_hat = xc * inv_std
    g = gamma.reshape(bshape)
    y = x_hat * g + beta.reshape(bshape)
    return y, NormCache(x_hat, inv_std, g, axes, training)


def batch_norm_backward(grad_out, cache: NormCache):
    """Returns ``(dx, dgamma, dbeta)``."""
    axes = cache.axes
    dbeta = grad_out.sum(axis=axes)
    dgamma = (grad_out * cache.x_hat).sum(axis=axes)
    scale = cache.gamma * cache.inv_std
    if not cache.training:
        return grad_out * scale, dgamma, dbeta
    bshape = cache.gamma.shape
    m = grad_out.size // cache.gamma.size
    mean_g = (dbeta / m).reshape(bshape)
    mean_gx = (dgamma / m).reshape(bshape)
    dx = scale * (grad_out - mean_g - cache.x_hat * mean_gx)
    return dx, dgamma, dbeta
