"""Pooling layers: shrink each feature map (the deck: less computation, less overfitting)."""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..errors import ConfigError, ShapeError
from ._padding import parse_padding
from .base import Layer, check_bool


class _Pool2D(Layer):
    _backward = None

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        name = type(self).__name__
        self.kernel_size = F.pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else F.pair(stride, "stride")
        self.dilation = F.pair(dilation, "dilation")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.dilation) < 1:
            raise ConfigError(f"{name}: kernel_size, stride and dilation must be >= 1, got "
                              f"{self.kernel_size}, {self.stride}, {self.dilation}")
        self._padding_arg, self.padding, self.pads = parse_padding(
            padding, name, self.kernel_size, allow_same=False)
        if any(2 * p > k for side, k in zip(self.pads, self.kernel_size) for p in side):
            raise ConfigError(f"{name}: padding {self.padding} must be at most half the kernel "
                              f"size {self.kernel_size} on every side (as in PyTorch): a window "
                              "must always cover some of the input")
        self.ceil_mode = check_bool(ceil_mode, "ceil_mode", name)
        self._cache = None

    def config(self):
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": self._padding_arg, "ceil_mode": self.ceil_mode}

    def __repr__(self):
        s = f"{type(self).__name__}(kernel_size={self.kernel_size[0] if self.kernel_size[0] == self.kernel_size[1] else self.kernel_size}"
        if self.stride != self.kernel_size:
            s += f", stride={self.stride}"
        if self.pads != ((0, 0), (0, 0)):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.ceil_mode:
            s += ", ceil_mode=True"
        if not getattr(self, "count_include_pad", True):
            s += ", count_include_pad=False"
        return s + ")"

    def _out_hw(self, h, w):
        return tuple(F.pool_output_size(size, self.kernel_size[a], self.stride[a], *self.pads[a],
                                        self.dilation[a], self.ceil_mode)
                     for a, size in enumerate((h, w)))

    def output_shape(self, input_shape):
        c, h, w = input_shape
        return (c,) + self._out_hw(h, w)

    def flops(self, input_shape):
        c, ho, wo = self.output_shape(input_shape)
        return c * ho * wo * self.kernel_size[0] * self.kernel_size[1]

    def _check_windows(self, x):
        h, w = x.shape[2:]
        eff = [self.dilation[a] * (self.kernel_size[a] - 1) + 1 for a in range(2)]
        if h + sum(self.pads[0]) < eff[0] or w + sum(self.pads[1]) < eff[1]:
            raise ShapeError(f"{self!r}: the window {tuple(eff)} is larger than the padded "
                             f"input (input shape {tuple(x.shape)}); the image is too small for "
                             "this many pooling layers")
        if self.dilation != (1, 1):
            # a dilated window can fall between the input's rows, on padding alone
            for a, size in enumerate((h, w)):
                o = self._out_hw(h, w)[a]
                taps = (np.arange(o)[:, None] * self.stride[a] - self.pads[a][0]
                        + np.arange(self.kernel_size[a])[None, :] * self.dilation[a])
                if not ((taps >= 0) & (taps < size)).any(axis=1).all():
                    raise ShapeError(f"{self!r}: with input shape {tuple(x.shape)} some window "
                                     "covers only padding (its max would be -inf); use less "
                                     "padding or dilation, or a larger input")

    def forward(self, x, training=True, layout="NCHW"):
        self._check_input(x, 4, "(N, C, H, W)", layout=layout)
        self._check_windows(x)
        out, self._cache = self._run(x, training)
        return out

    def backward(self, grad_out):
        cache = self._need_cache()
        if isinstance(self, MaxPool2D) and cache.argmax is None:
            # an inference-mode forward skipped recording the winners: find them now
            _, cache = F.max_pool2d_forward(cache.x, cache.kernel, cache.stride, cache.padding,
                                            dilation=cache.dilation)
        return type(self)._backward(grad_out, cache)


class MaxPool2D(_Pool2D):
    """Max over each window; ``stride`` defaults to ``kernel_size``. Padding is with -inf.

    Args (PyTorch's): ``kernel_size``, ``stride``, ``padding`` (an int, an (h, w) pair,
    ``((top, bottom), (left, right))`` or ``"valid"``; at most half the kernel on each side),
    ``dilation`` (spacing of the window's taps), ``ceil_mode`` (round the output size up).
    """
    _backward = staticmethod(F.max_pool2d_backward)

    def config(self):
        return {**super().config(), "dilation": list(self.dilation)}

    def _run(self, x, training):      # the winners are recorded only for training
        return F.max_pool2d_forward(x, self.kernel_size, self.stride, self.pads,
                                    need_argmax=training, dilation=self.dilation,
                                    ceil_mode=self.ceil_mode)


class AvgPool2D(_Pool2D):
    """Mean over each window (zero padding counts in the divisor, as in PyTorch).

    Args (PyTorch's): ``kernel_size``, ``stride``, ``padding`` (forms as in MaxPool2D),
    ``ceil_mode``, and ``count_include_pad``: False divides each window's sum by the number of
    input pixels it covers instead of ``kh * kw``.
    """
    _backward = staticmethod(F.avg_pool2d_backward)

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        super().__init__(kernel_size, stride, padding, 1, ceil_mode)
        self.count_include_pad = check_bool(count_include_pad, "count_include_pad", "AvgPool2D")

    def config(self):
        return {**super().config(), "count_include_pad": self.count_include_pad}

    def _run(self, x, training):
        return F.avg_pool2d_forward(x, self.kernel_size, self.stride, self.pads, self.ceil_mode,
                                    self.count_include_pad)


class _GlobalPool2D(Layer):
    def __init__(self):
        self._cache = None

    def output_shape(self, input_shape):
        return (input_shape[0],)

    def flops(self, input_shape):
        return math.prod(input_shape)


class GlobalAvgPool2D(_GlobalPool2D):
    """Mean over each whole feature map: (N, C, H, W) -> (N, C), for any H and W (ResNet's
    head).  Backward: each of a map's H*W pixels gets dL/dO / (H*W)."""

    def forward(self, x, training=True, layout="NCHW"):
        self._check_input(x, 4, "(N, C, H, W)", layout=layout)
        self._cache = (tuple(x.shape), layout)
        return F.global_avg_pool2d(x, layout)

    def backward(self, grad_out):
        shape, layout = self._need_cache()
        return F.global_avg_pool2d_backward(grad_out, shape, layout)


class GlobalMaxPool2D(_GlobalPool2D):
    """Max over each whole feature map: (N, C, H, W) -> (N, C), for any H and W.  Backward: the
    gradient goes to the map's first maximum (PyTorch's tie rule, as in MaxPool2D)."""

    def forward(self, x, training=True, layout="NCHW"):
        self._check_input(x, 4, "(N, C, H, W)", layout=layout)
        out, argmax = F.global_max_pool2d(x, layout)
        self._cache = (argmax, tuple(x.shape), layout)
        return out

    def backward(self, grad_out):
        argmax, shape, layout = self._need_cache()
        return F.global_max_pool2d_backward(grad_out, argmax, shape, layout)
