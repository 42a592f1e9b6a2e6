"""Batch normalisation layers (PyTorch's BatchNorm1d / BatchNorm2d semantics)."""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..errors import ConfigError
from .base import Layer, Parameter, check_dtype, check_finite_number, check_positive_int


class _BatchNorm(Layer):
    param_names = ("weight", "bias")
    buffer_names = ("running_mean", "running_var")
    _ndim = 2
    _shape_text = "(N, C)"

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype="float32"):
        name = f"{type(self).__name__}({num_features})"
        self.num_features = check_positive_int(num_features, "num_features", name)
        check_dtype(dtype, name)
        eps = check_finite_number(eps, "eps", name)
        momentum = check_finite_number(momentum, "momentum", name)
        if not 0.0 <= momentum <= 1.0 or eps <= 0:
            raise ConfigError(f"{name}: need 0 <= momentum <= 1 and eps > 0, got {momentum}, {eps}")
        self.eps, self.momentum = float(eps), float(momentum)
        self.weight = Parameter(np.ones(num_features, dtype=dtype), "weight")    # gamma
        self.bias = Parameter(np.zeros(num_features, dtype=dtype), "bias")       # beta
        self.running_mean = np.zeros(num_features, dtype=dtype)
        self.running_var = np.ones(num_features, dtype=dtype)
        self._cache = None

    def config(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum}

    def __repr__(self):
        return f"{type(self).__name__}({self.num_features})"

    def flops(self, input_shape):
        return 4 * math.prod(input_shape)

    def forward(self, x, training=True, layout="NCHW"):
        self._check_input(x, self._ndim, self._shape_text.replace("C", str(self.num_features)),
                          self.num_features, layout)
        if training and x.size // self.num_features < 2:
            raise ConfigError(f"{self!r}: training needs more than one value per channel to "
                              f"compute batch statistics, got input shape {tuple(x.shape)}; use "
                              "a batch size > 1")
        y, self._cache = F.batch_norm_forward(x, self.weight.value, self.bias.value,
                                              self.running_mean, self.running_var, training,
                                              self.momentum, self.eps, layout)
        return y

    def backward(self, grad_out):
        dx, dgamma, dbeta = F.batch_norm_backward(grad_out, self._need_cache())
        self.weight.accumulate(dgamma)
        self.bias.accumulate(dbeta)
        return dx


class BatchNorm1D(_BatchNorm):
    """Batch norm over (N, features)."""
    _ndim = 2
    _shape_text = "(N, C)"


class BatchNorm2D(_BatchNorm):
    """Batch norm per channel over (N, C, H, W)."""
    _ndim = 4
    _shape_text = "(N, C, H, W)"
