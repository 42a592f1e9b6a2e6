"""Activation layers: ReLU (the deck's), LeakyReLU, ELU, GELU, SiLU, Sigmoid, Tanh and Softmax."""
from __future__ import annotations

import math

from .. import functional as F
from ..errors import ConfigError
from .base import Layer, check_finite_number


class _Elementwise(Layer):
    """An activation whose backward needs only its own output (or input) and grad_out."""

    def __init__(self):
        self._cache = None

    def flops(self, input_shape):
        return math.prod(input_shape)

    def forward(self, x, training=True, layout="NCHW"):
        self._check_input(x, (2, 3, 4), "(N, ...)", layout=layout)
        out = self._f(x)
        self._cache = out
        return out

    def backward(self, grad_out):
        return self._df(grad_out, self._need_cache())


class ReLU(_Elementwise):
    """ReLU(x) = max(0, x)."""
    _f = staticmethod(F.relu)
    _df = staticmethod(F.relu_backward)


class Sigmoid(_Elementwise):
    """sigma(x) = 1 / (1 + e^-x)."""
    _f = staticmethod(F.sigmoid)
    _df = staticmethod(F.sigmoid_backward)


class Tanh(_Elementwise):
    """tanh(x)."""
    _f = staticmethod(F.tanh)
    _df = staticmethod(F.tanh_backward)


class LeakyReLU(_Elementwise):
    """x if x > 0 else negative_slope * x."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = check_finite_number(negative_slope, "negative_slope", "LeakyReLU")

    def config(self):
        return {"negative_slope": self.negative_slope}

    def forward(self, x, training=True, layout="NCHW"):
        self._check_input(x, (2, 3, 4), "(N, ...)", layout=layout)
        self._cache = x
        return F.leaky_relu(x, self.negative_slope)

    def backward(self, grad_out):
        return F.leaky_relu_backward(grad_out, self._need_cache(), self.negative_slope)


class Softmax(_Elementwise):
    """The deck's softmax over the class axis: turns scores into a probability distribution.

    For training, prefer raw logits plus :class:`numcnn.losses.CrossEntropy` (fused and stable);
    ``Sequential.predict`` applies softmax itself.
    """

    def forward(self, x, training=True, layout="NCHW"):
        self._check_input(x, 2, "(N, classes)")
        out = F.softmax(x, axis=1)
        self._cache = out
        return out

    def backward(self, grad_out):
        return F.softmax_backward(grad_out, self._need_cache(), axis=1)


class ELU(_Elementwise):
    """ELU(x) = x if x > 0 else alpha (e^x - 1) (PyTorch's ``nn.ELU``, alpha = 1 by default)."""

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = check_finite_number(alpha, "alpha", "ELU")

    def config(self):
        return {"alpha": self.alpha}

    def forward(self, x, training=True, layout="NCHW"):
        self._check_input(x, (2, 3, 4), "(N, ...)", layout=layout)
        self._cache = x
        return F.elu(x, self.alpha)

    def backward(self, grad_out):
        return F.elu_backward(grad_out, self._need_cache(), self.alpha)


class SiLU(_Elementwise):
    """SiLU(x) = x sigma(x), also called swish (EfficientNet, MobileNetV3)."""

    def forward(self, x, training=True, layout="NCHW"):
        self._check_input(x, (2, 3, 4), "(N, ...)", layout=layout)
        self._cache = x
        return F.silu(x)

    def backward(self, grad_out):
        return F.silu_backward(grad_out, self._need_cache())


class GELU(_Elementwise):
    """GELU(x) = x Phi(x) with Phi the standard normal CDF, exactly (through erf) or, with
    ``approximate="tanh"``, by PyTorch's tanh formula."""

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ConfigError(f"GELU: approximate must be 'none' (exact, through erf) or 'tanh', "
                              f"got {approximate!r}")
        self.approximate = approximate

    def config(self):
        return {"approximate": self.approximate}

    def forward(self, x, training=True, layout="NCHW"):
        self._check_input(x, (2, 3, 4), "(N, ...)", layout=layout)
        self._cache = x
        return F.gelu(x, self.approximate)

    def backward(self, grad_out):
        return F.gelu_backward(grad_out, self._need_cache(), self.approximate)
