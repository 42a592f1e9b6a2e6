"""Conv2D: the deck's convolution layer, n kernels spanning all input channels -> depth n."""
from __future__ import annotations

from .. import functional as F
from ..errors import ConfigError, ShapeError
from ..init import as_generator, init_bias, init_weight
from .base import Layer, Parameter, check_bool, check_dtype, check_positive_int


class Conv2D(Layer):
    """2-D convolution over an (N, C, H, W) batch.

    Args:
        in_channels: C, the depth of the input.
        out_channels: the number of kernels, which is the depth of the output.
        kernel_size, stride, padding, dilation: ints or (h, w) pairs; zero padding.
        bias: add a learned bias per kernel.
        init: weight initialisation scheme (see :mod:`numcnn.init`), He/Kaiming by default.
        rng: seed or ``numpy.random.Generator`` for the initial weights.
        dtype: parameter dtype (float32 unless asked otherwise).

    Shape: (N, in_channels, H, W) -> (N, out_channels, H', W'),
    H' = 1 + (H + 2*padding - dilation*(kernel_size - 1) - 1) // stride.
    Parameters: ``weight`` (out_channels, in_channels, kh, kw) and ``bias`` (out_channels,).
    """

    param_names = ("weight", "bias")

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, init="kaiming_uniform", rng=None, dtype="float32"):
        name = f"Conv2D({in_channels}, {out_channels}, kernel_size={kernel_size})"
        check_dtype(dtype, name)
        self.in_channels = check_positive_int(in_channels, "in_channels", name)
        self.out_channels = check_positive_int(out_channels, "out_channels", name)
        self.kernel_size = F.pair(kernel_size, "kernel_size")
        self.stride = F.pair(stride, "stride")
        self.padding = F.pair(padding, "padding")
        self.dilation = F.pair(dilation, "dilation")
        for label, v, lo in (("kernel_size", self.kernel_size, 1), ("stride", self.stride, 1),
                             ("padding", self.padding, 0), ("dilation", self.dilation, 1)):
            if min(v) < lo:
                raise ConfigError(f"{name}: {label} must be >= {lo}, got {v}")
        self.init = init
        rng = as_generator(rng)
        shape = (self.out_channels, self.in_channels) + self.kernel_size
        self.weight = Parameter(init_weight(shape, init, rng, dtype), "weight")
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        bias = check_bool(bias, "bias", "Conv2D")
        self.bias = Parameter(init_bias(self.out_channels, fan_in, init, rng, dtype), "bias") if bias else None
        self._cache = None
        self.needs_input_grad = True

    def config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "dilation": list(self.dilation),
                "bias": self.bias is not None}

    def __repr__(self):
        s = f"Conv2D({self.in_channels}, {self.out_channels}, kernel_size={_short(self.kernel_size)}"
        for k in ("stride", "padding", "dilation"):
            v, default = getattr(self, k), (0, 0) if k == "padding" else (1, 1)
            if v != default:
                s += f", {k}={_short(v)}"
        return s + ("" if self.bias is not None else ", bias=False") + ")"

    def output_shape(self, input_shape):
        c, h, w = input_shape
        return (self.out_channels,
                F.conv_output_size(h, self.kernel_size[0], self.stride[0], self.padding[0], self.dilation[0]),
                F.conv_output_size(w, self.kernel_size[1], self.stride[1], self.padding[1], self.dilation[1]))

    def flops(self, input_shape):
        o, ho, wo = self.output_shape(input_shape)
        k = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        return 2 * k * o * ho * wo + (o * ho * wo if self.bias is not None else 0)

    def forward(self, x, training=True, layout="NCHW"):
        self._check_input(x, 4, f"(N, {self.in_channels}, H, W)", self.in_channels, layout)
        h, w = x.shape[2:]
        eff = [self.dilation[i] * (self.kernel_size[i] - 1) + 1 for i in range(2)]
        if h + 2 * self.padding[0] < eff[0] or w + 2 * self.padding[1] < eff[1]:
            raise ShapeError(f"{self!r}: the kernel ({eff[0]}x{eff[1]} with dilation) is larger than "
                             f"the padded input ({h + 2 * self.padding[0]}x{w + 2 * self.padding[1]}, "
                             f"from input shape {tuple(x.shape)}); use a larger image, more "
                             "padding or a smaller kernel")
        out, self._cache = F.conv2d_forward(
            x, self.weight.value, None if self.bias is None else self.bias.value,
            self.stride, self.padding, self.dilation, layout, training)
        return out

    def backward(self, grad_out):
        cache = self._need_cache()
        dx, dw, db = F.conv2d_backward(grad_out, self.weight.value, cache,
                                       need_bias=self.bias is not None,
                                       need_input=self.needs_input_grad)
        self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx


def _short(v):
    return v[0] if v[0] == v[1] else tuple(v)
