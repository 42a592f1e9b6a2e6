"""Pooling layers: shrink each feature map (the deck: less computation, less overfitting)."""
from __future__ import annotations

from .. import functional as F
from ..errors import ConfigError, ShapeError
from .base import Layer


class _Pool2D(Layer):
    _forward = _backward = None

    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size = F.pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else F.pair(stride, "stride")
        self.padding = F.pair(padding, "padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ConfigError(f"{type(self).__name__}: kernel_size and stride must be >= 1 and "
                              f"padding >= 0, got {self.kernel_size}, {self.stride}, {self.padding}")
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ConfigError(f"{type(self).__name__}: padding {self.padding} must be at most half "
                              f"the kernel size {self.kernel_size} (as in PyTorch)")
        self._cache = None

    def config(self):
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding)}

    def __repr__(self):
        s = f"{type(self).__name__}(kernel_size={self.kernel_size[0] if self.kernel_size[0] == self.kernel_size[1] else self.kernel_size}"
        if self.stride != self.kernel_size:
            s += f", stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        return s + ")"

    def output_shape(self, input_shape):
        c, h, w = input_shape
        return (c, F.conv_output_size(h, self.kernel_size[0], self.stride[0], self.padding[0]),
                F.conv_output_size(w, self.kernel_size[1], self.stride[1], self.padding[1]))

    def flops(self, input_shape):
        c, ho, wo = self.output_shape(input_shape)
        return c * ho * wo * self.kernel_size[0] * self.kernel_size[1]

    def forward(self, x, training=True, layout="NCHW"):
        self._check_input(x, 4, "(N, C, H, W)", layout=layout)
        h, w = x.shape[2:]
        if h + 2 * self.padding[0] < self.kernel_size[0] or w + 2 * self.padding[1] < self.kernel_size[1]:
            raise ShapeError(f"{self!r}: the window {self.kernel_size} is larger than the padded "
                             f"input (input shape {tuple(x.shape)}); the image is too small for "
                             "this many pooling layers")
        if isinstance(self, MaxPool2D):      # the winners are recorded only for training
            out, cache = F.max_pool2d_forward(x, self.kernel_size, self.stride, self.padding,
                                              need_argmax=training)
        else:
            out, cache = type(self)._forward(x, self.kernel_size, self.stride, self.padding)
        self._cache = cache
        return out

    def backward(self, grad_out):
        cache = self._need_cache()
        if isinstance(self, MaxPool2D) and cache.argmax is None:
            # an inference-mode forward skipped recording the winners: find them now
            _, cache = F.max_pool2d_forward(cache.x, cache.kernel, cache.stride, cache.padding)
        return type(self)._backward(grad_out, cache)


class MaxPool2D(_Pool2D):
    """Max over each window; ``stride`` defaults to ``kernel_size``. Padding is with -inf."""
    _forward = staticmethod(F.max_pool2d_forward)
    _backward = staticmethod(F.max_pool2d_backward)


class AvgPool2D(_Pool2D):
    """Mean over each window (zero padding counts in the divisor, as in PyTorch)."""
    _forward = staticmethod(F.avg_pool2d_forward)
    _backward = staticmethod(F.avg_pool2d_backward)
